//! Decoder layers (Linear, GELU, cross-entropy, embeddings; attention in `attention.rs`):
//! naive references, PyTorch parity, bad-input errors and determinism.
//!
//! Tolerances: against the float64 PyTorch fixtures `|got - want| <= 1e-5·|want| + 1e-6`
//! (1e-5 absolute where a value sums more than 32 products); against naive f64 loops the same.

mod common;

use common::{assert_close, is_invalid, is_shape, normal, Fixture};
use resnorm::kernels::column_sums::add_column_sums;
use resnorm::kernels::gelu::{
    bias_gelu_backward_from_slope, bias_gelu_forward_keeping_slope, gelu_backward_from_slope,
    gelu_forward_keeping_slope,
};
use resnorm::kernels::{
    cross_entropy_backward, cross_entropy_backward_in_place, cross_entropy_forward, gelu_backward,
    gelu_forward, smoothed_cross_entropy_backward_in_place, smoothed_cross_entropy_forward,
    MatDims, Trans,
};
use resnorm::nn::{Embedding, Linear};
use resnorm::rng::Rng;

const RTOL: f32 = 1e-5;
const ATOL: f32 = 1e-6;

fn tokens(f: &common::FixtureTensor) -> Vec<u32> {
    f.data.iter().map(|&t| t as u32).collect()
}

/// `A·B` with `A` read as `[m,k]` (or stored `[k,m]`), `B` as `[k,n]` (or `[n,k]`), in f64.
fn naive_matmul(a: &[f32], b: &[f32], d: MatDims, t: Trans) -> Vec<f32> {
    let at = |i: usize, p: usize| if t.a { a[p * d.m + i] } else { a[i * d.k + p] } as f64;
    let bt = |p: usize, j: usize| if t.b { b[j * d.k + p] } else { b[p * d.n + j] } as f64;
    let mut c = vec![0.0; d.m * d.n];
    for i in 0..d.m {
        for j in 0..d.n {
            c[i * d.n + j] = (0..d.k).map(|p| at(i, p) * bt(p, j)).sum::<f64>() as f32;
        }
    }
    c
}

#[test]
fn linear_matches_pytorch() {
    let f = Fixture::load("layers_linear");
    let (n_in, n_out) = (f.get("weight").shape[0], f.get("weight").shape[1]);
    let mut fc = Linear::new("h.0.mlp.c_fc", n_in, n_out, true).unwrap();
    fc.weight.value.copy_from_slice(&f.get("weight").data);
    fc.bias
        .as_mut()
        .unwrap()
        .value
        .copy_from_slice(&f.get("bias").data);
    let x = &f.get("x").data;
    let mut y = vec![0.0; f.get("y").data.len()];
    fc.forward(&mut y, x).unwrap();
    assert_close("y", &y, &f.get("y").data, RTOL, ATOL);
    let mut dx = vec![f32::NAN; x.len()];
    fc.backward(&mut dx, x, &f.get("dy").data).unwrap();
    assert_close("dx", &dx, &f.get("dx").data, RTOL, ATOL);
    assert_close(
        "dweight",
        &fc.weight.grad,
        &f.get("dweight").data,
        RTOL,
        ATOL,
    );
    let dbias = &fc.bias.as_ref().unwrap().grad;
    assert_close("dbias", dbias, &f.get("dbias").data, RTOL, ATOL);
    // Backward adds into parameter gradients and overwrites dx.
    fc.backward(&mut dx, x, &f.get("dy").data).unwrap();
    let twice: Vec<f32> = f.get("dweight").data.iter().map(|v| 2.0 * v).collect();
    assert_close("dweight twice", &fc.weight.grad, &twice, RTOL, ATOL);
    assert_close("dx again", &dx, &f.get("dx").data, RTOL, ATOL);
    let mut names = Vec::new();
    fc.visit_params(&mut |p| names.push(p.name.clone()));
    assert_eq!(names, ["h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias"]);
}

#[test]
fn linear_without_bias_matches_naive_and_is_deterministic() {
    // 300 rows x 40 -> 90: the weight gradient product is large enough to use the pool.
    let (rows, n_in, n_out) = (300, 40, 90);
    let mut fc = Linear::new("lm_head", n_in, n_out, false).unwrap();
    fc.init(&mut Rng::new(6), 0.2);
    let x = normal(7, rows * n_in);
    let dy = normal(8, rows * n_out);
    let mut y = vec![0.0; rows * n_out];
    fc.forward(&mut y, &x).unwrap();
    let dims = MatDims {
        m: rows,
        k: n_in,
        n: n_out,
    };
    assert_close(
        "y",
        &y,
        &naive_matmul(&x, &fc.weight.value, dims, Trans::NONE),
        RTOL,
        1e-5,
    );
    let mut dx = vec![0.0; x.len()];
    fc.backward(&mut dx, &x, &dy).unwrap();
    let first = fc.weight.grad.clone();
    fc.weight.zero_grad();
    fc.backward(&mut dx, &x, &dy).unwrap();
    assert_eq!(
        fc.weight.grad, first,
        "weight gradient is bit-for-bit reproducible"
    );
    let dw_dims = MatDims {
        m: n_in,
        k: rows,
        n: n_out,
    };
    let want = naive_matmul(&x, &dy, dw_dims, Trans { a: true, b: false });
    assert_close("dweight", &first, &want, RTOL, 1e-4);
}

#[test]
fn linear_bias_gradient_is_deterministic_on_the_pool() {
    let (rows, n_in, n_out) = (700, 3, 64); // 44800 dy elements: row blocks on the pool
    let mut fc = Linear::new("c_proj", n_in, n_out, true).unwrap();
    let x = normal(9, rows * n_in);
    let dy = normal(10, rows * n_out);
    let mut dx = vec![0.0; x.len()];
    fc.backward(&mut dx, &x, &dy).unwrap();
    let want: Vec<f32> = (0..n_out)
        .map(|j| (0..rows).map(|r| dy[r * n_out + j] as f64).sum::<f64>() as f32)
        .collect();
    let first = fc.bias.as_ref().unwrap().grad.clone();
    assert_close("dbias", &first, &want, RTOL, 1e-4);
    fc.bias.as_mut().unwrap().zero_grad();
    fc.backward(&mut dx, &x, &dy).unwrap();
    assert_eq!(fc.bias.as_ref().unwrap().grad, first);
}

#[test]
fn linear_rejects_bad_sizes() {
    assert!(is_invalid(Linear::new("fc", 0, 3, true)));
    assert!(is_invalid(Linear::new("fc", 3, 0, true)));
    let mut fc = Linear::new("fc", 3, 2, true).unwrap();
    let (x, mut y, mut dx) = (vec![1.0; 6], vec![0.0; 4], vec![0.0; 6]);
    assert!(is_shape(fc.forward(&mut y, &x[..5])));
    assert!(is_shape(fc.forward(&mut y[..3], &x)));
    assert!(is_shape(fc.backward(&mut dx[..5], &x, &y)));
    assert!(is_shape(fc.backward(&mut dx, &x, &y[..2])));
    assert!(
        fc.weight.grad.iter().all(|&g| g == 0.0),
        "nothing added on error"
    );
}

#[test]
fn gelu_matches_pytorch() {
    let f = Fixture::load("layers_gelu");
    let x = &f.get("x").data;
    let mut y = vec![0.0; x.len()];
    gelu_forward(&mut y, x).unwrap();
    assert_close("y", &y, &f.get("y").data, RTOL, ATOL);
    let mut dx = vec![0.0; x.len()];
    gelu_backward(&mut dx, x, &f.get("dy").data).unwrap();
    assert_close("dx", &dx, &f.get("dx").data, RTOL, ATOL);
}

#[test]
fn gelu_on_the_pool_equals_element_by_element() {
    let x: Vec<f32> = normal(11, 40_000).iter().map(|v| 4.0 * v).collect();
    let dy = normal(12, x.len());
    let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    gelu_forward(&mut y, &x).unwrap();
    gelu_backward(&mut dx, &x, &dy).unwrap();
    for i in (0..x.len()).step_by(997) {
        let (mut yi, mut dxi) = ([0.0], [0.0]);
        gelu_forward(&mut yi, &x[i..=i]).unwrap();
        gelu_backward(&mut dxi, &x[i..=i], &dy[i..=i]).unwrap();
        assert_eq!((y[i], dx[i]), (yi[0], dxi[0]), "element {i}");
    }
}

/// The layer's route, the forward keeping the slope in place of `x` and the backward
/// multiplying by it, gives the same bits as the forward and backward from `x`: on the pool
/// (40 000 elements) and on one thread (100), tails included.
#[test]
fn gelu_through_the_slope_equals_gelu_from_x() {
    for (len, scale) in [(40_000, 4.0), (100, 30.0)] {
        let x: Vec<f32> = normal(13, len).iter().map(|v| scale * v).collect();
        let dy = normal(14, len);
        let (mut y, mut dx) = (vec![0.0; len], vec![0.0; len]);
        gelu_forward(&mut y, &x).unwrap();
        gelu_backward(&mut dx, &x, &dy).unwrap();
        let (mut y_s, mut slope, mut dx_s) = (vec![f32::NAN; len], x.clone(), vec![f32::NAN; len]);
        gelu_forward_keeping_slope(&mut y_s, &mut slope).unwrap();
        gelu_backward_from_slope(&mut dx_s, &slope, &dy).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y_s), bits(&y), "forward, {len} elements");
        assert_eq!(bits(&dx_s), bits(&dx), "backward, {len} elements");
    }
}

/// A bias fused into the GELU gives the same bits as adding it first and running the GELU,
/// and its gradient the same bits as summing the columns of the GELU's `dx` afterwards: on
/// the pool (700 rows of 64: two full sum blocks and a short one) and on one thread.
#[test]
fn bias_gelu_equals_the_bias_added_first() {
    for (rows, cols) in [(700, 64), (3, 5)] {
        let len = rows * cols;
        let u: Vec<f32> = normal(15, len).iter().map(|v| 3.0 * v).collect();
        let bias = normal(16, cols);
        let dy = normal(17, len);
        let mut x_then_slope: Vec<f32> = u
            .chunks_exact(cols)
            .flat_map(|row| row.iter().zip(&bias).map(|(u, b)| u + b))
            .collect();
        let (mut y, mut dx) = (vec![0.0; len], vec![0.0; len]);
        gelu_forward_keeping_slope(&mut y, &mut x_then_slope).unwrap();
        gelu_backward_from_slope(&mut dx, &x_then_slope, &dy).unwrap();
        let mut dbias = normal(18, cols);
        let mut dbias_fused = dbias.clone();
        add_column_sums(&mut dbias, &dx).unwrap();

        let (mut y_f, mut slope, mut dx_f) = (vec![f32::NAN; len], u, vec![f32::NAN; len]);
        bias_gelu_forward_keeping_slope(&mut y_f, &mut slope, &bias).unwrap();
        bias_gelu_backward_from_slope(&mut dx_f, &slope, &dy, &mut dbias_fused).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y_f), bits(&y), "forward, {rows}x{cols}");
        assert_eq!(bits(&slope), bits(&x_then_slope), "slope, {rows}x{cols}");
        assert_eq!(bits(&dx_f), bits(&dx), "backward, {rows}x{cols}");
        assert_eq!(
            bits(&dbias_fused),
            bits(&dbias),
            "bias gradient, {rows}x{cols}"
        );
    }
    let mut out = vec![0.0; 6];
    let bias = [0.0; 4];
    assert!(is_shape(bias_gelu_forward_keeping_slope(
        &mut out,
        &mut [0.0; 6],
        &bias
    )));
    assert!(is_shape(bias_gelu_forward_keeping_slope(
        &mut out,
        &mut [0.0; 6],
        &[]
    )));
    let mut dbias = [0.0; 3];
    assert!(is_shape(bias_gelu_backward_from_slope(
        &mut out, &[0.0; 6], &[0.0; 3], &mut dbias
    )));
}

#[test]
fn gelu_rejects_bad_sizes() {
    let mut out = vec![0.0; 3];
    assert!(is_shape(gelu_forward(&mut out, &[1.0; 4])));
    assert!(is_shape(gelu_backward(&mut out, &[1.0; 3], &[1.0; 2])));
    assert!(is_shape(gelu_backward(&mut out, &[1.0; 2], &[1.0; 3])));
    assert!(is_shape(gelu_forward_keeping_slope(
        &mut out,
        &mut [1.0; 4]
    )));
    assert!(is_shape(gelu_backward_from_slope(
        &mut out, &[1.0; 3], &[1.0; 2]
    )));
    assert!(is_shape(gelu_backward_from_slope(
        &mut out, &[1.0; 2], &[1.0; 3]
    )));
}

#[test]
fn cross_entropy_matches_pytorch() {
    let f = Fixture::load("layers_cross_entropy");
    let (rows, vocab) = (f.get("logits").shape[0], f.get("logits").shape[1]);
    let logits = &f.get("logits").data;
    let targets = tokens(f.get("targets"));
    let (mut losses, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
    let loss = cross_entropy_forward(logits, &targets, vocab, &mut losses, &mut lse).unwrap();
    assert_close("losses", &losses, &f.get("losses").data, RTOL, ATOL);
    assert_close("loss", &[loss], &f.get("loss").data, RTOL, ATOL);
    let dloss = f.meta_f32("dloss");
    let mut dlogits = vec![f32::NAN; logits.len()];
    cross_entropy_backward(&mut dlogits, logits, &lse, &targets, vocab, dloss).unwrap();
    assert_close("dlogits", &dlogits, &f.get("dlogits").data, RTOL, ATOL);
    let mut in_place = logits.clone();
    cross_entropy_backward_in_place(&mut in_place, &lse, &targets, vocab, dloss).unwrap();
    assert_eq!(in_place, dlogits, "in place gives the same bits");
}

#[test]
fn cross_entropy_on_the_pool_is_stable_for_huge_logits() {
    let (rows, vocab) = (64, 517); // 33k logits: row blocks on the pool
    let mut logits: Vec<f32> = normal(14, rows * vocab).iter().map(|v| 3.0 * v).collect();
    logits[5] = 1e4; // exp(1e4) overflows without max subtraction
    let targets: Vec<u32> = (0..rows as u32).map(|r| (r * 37) % vocab as u32).collect();
    let (mut losses, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
    let loss = cross_entropy_forward(&logits, &targets, vocab, &mut losses, &mut lse).unwrap();
    let want: Vec<f32> = logits
        .chunks_exact(vocab)
        .zip(&targets)
        .map(|(z, &t)| {
            let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let lse = max + z.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            (lse - z[t as usize] as f64) as f32
        })
        .collect();
    assert_close("losses", &losses, &want, RTOL, 1e-5);
    let mean = want.iter().map(|&v| v as f64).sum::<f64>() / rows as f64;
    assert_close("loss", &[loss], &[mean as f32], RTOL, ATOL);
    let mut dlogits = vec![0.0; logits.len()];
    cross_entropy_backward(&mut dlogits, &logits, &lse, &targets, vocab, 1.0).unwrap();
    for (r, row) in dlogits.chunks_exact(vocab).enumerate() {
        let sum: f32 = row.iter().sum();
        assert!(
            sum.abs() < 1e-6 && row.iter().all(|v| v.is_finite()),
            "row {r}: sum {sum}"
        );
    }
}

#[test]
fn cross_entropy_rejects_bad_input() {
    let (logits, targets) = (vec![0.0; 6], [1u32, 2]);
    let (mut losses, mut lse, mut d) = (vec![0.0; 2], vec![0.0; 2], vec![0.0; 6]);
    assert!(is_invalid(cross_entropy_forward(
        &logits,
        &[1, 3],
        3,
        &mut losses,
        &mut lse
    )));
    assert!(is_invalid(cross_entropy_forward(
        &[],
        &[],
        3,
        &mut [],
        &mut []
    )));
    assert!(is_invalid(cross_entropy_forward(
        &logits,
        &targets,
        0,
        &mut losses,
        &mut lse
    )));
    assert!(is_shape(cross_entropy_forward(
        &logits[1..],
        &targets,
        3,
        &mut losses,
        &mut lse
    )));
    assert!(is_shape(cross_entropy_forward(
        &logits,
        &targets,
        3,
        &mut losses[1..],
        &mut lse
    )));
    assert!(is_shape(cross_entropy_forward(
        &logits,
        &targets,
        3,
        &mut losses,
        &mut lse[1..]
    )));
    assert!(is_invalid(cross_entropy_backward(
        &mut d,
        &logits,
        &lse,
        &[3, 0],
        3,
        1.0
    )));
    assert!(is_shape(cross_entropy_backward(
        &mut d[1..],
        &logits,
        &lse,
        &targets,
        3,
        1.0
    )));
    assert!(is_shape(cross_entropy_backward(
        &mut d,
        &logits,
        &lse[1..],
        &targets,
        3,
        1.0
    )));
    let mut z = logits.clone();
    assert!(is_invalid(cross_entropy_backward_in_place(
        &mut z,
        &lse,
        &[0, 9],
        3,
        1.0
    )));
    assert!(is_shape(cross_entropy_backward_in_place(
        &mut z,
        &lse[..1],
        &targets,
        3,
        1.0
    )));
    assert_eq!((z, d), (logits, vec![0.0; 6]), "nothing written on error");
}

#[test]
fn embedding_matches_pytorch_and_accumulates() {
    let f = Fixture::load("layers_embedding");
    let (vocab, channels) = (f.get("wte").shape[0], f.get("wte").shape[1]);
    let (batch, seq) = (f.get("tokens").shape[0], f.get("tokens").shape[1]);
    let mut emb = Embedding::new(vocab, f.get("wpe").shape[0], channels).unwrap();
    emb.wte.value.copy_from_slice(&f.get("wte").data);
    emb.wpe.value.copy_from_slice(&f.get("wpe").data);
    let toks = tokens(f.get("tokens"));
    let mut out = vec![0.0; f.get("out").data.len()];
    emb.forward(&mut out, &toks, batch, seq).unwrap();
    assert_close("out", &out, &f.get("out").data, RTOL, ATOL);
    emb.backward(&f.get("dout").data, &toks, batch, seq)
        .unwrap();
    assert_close("dwte", &emb.wte.grad, &f.get("dwte").data, RTOL, ATOL);
    assert_close("dwpe", &emb.wpe.grad, &f.get("dwpe").data, RTOL, ATOL);
    let first = (emb.wte.grad.clone(), emb.wpe.grad.clone());
    emb.backward(&f.get("dout").data, &toks, batch, seq)
        .unwrap();
    let twice: Vec<f32> = first.0.iter().map(|v| 2.0 * v).collect();
    assert_close("dwte added twice", &emb.wte.grad, &twice, RTOL, ATOL);
    emb.visit_params_mut(&mut |p| p.zero_grad());
    emb.backward(&f.get("dout").data, &toks, batch, seq)
        .unwrap();
    assert_eq!(
        (emb.wte.grad.clone(), emb.wpe.grad.clone()),
        first,
        "bit-for-bit reproducible"
    );
    let mut names = Vec::new();
    emb.visit_params(&mut |p| names.push(p.name.clone()));
    assert_eq!(names, ["wte.weight", "wpe.weight"]);
}

#[test]
fn embedding_rejects_bad_input() {
    assert!(is_invalid(Embedding::new(0, 4, 2)));
    assert!(is_invalid(Embedding::new(5, 0, 2)));
    assert!(is_invalid(Embedding::new(5, 4, 0)));
    let mut emb = Embedding::new(5, 4, 2).unwrap();
    let mut out = vec![0.0; 2 * 3 * 2];
    let toks = [0u32, 1, 2, 3, 4, 0];
    assert!(is_invalid(emb.forward(&mut out, &[0, 1, 5, 3, 4, 0], 2, 3)));
    assert!(is_invalid(emb.forward(&mut [0.0; 20], &[0; 10], 2, 5)));
    assert!(is_shape(emb.forward(&mut out[1..], &toks, 2, 3)));
    assert!(is_shape(emb.forward(&mut out, &toks[1..], 2, 3)));
    assert!(is_invalid(emb.backward(&out, &[0, 1, 5, 3, 4, 0], 2, 3)));
    assert!(is_shape(emb.backward(&out[1..], &toks, 2, 3)));
    assert!(
        emb.wte.grad.iter().all(|&g| g == 0.0),
        "nothing added on error"
    );
}

#[test]
fn layer_gradient_checks_pass() {
    for check in resnorm::gradcheck::layers::checks() {
        assert!(check.passed, "{check:?}");
    }
}

#[test]
fn label_smoothing_matches_pytorch_with_padded_targets() {
    let f = Fixture::load("label_smoothing");
    let vocab = f.get("logits").shape[1];
    let (eps, dloss, pad) = (
        f.meta_f32("eps"),
        f.meta_f32("dloss"),
        f.meta_f32("pad") as u32,
    );
    let all = tokens(f.get("targets"));
    let valid: Vec<usize> = (0..all.len()).filter(|&r| all[r] != pad).collect();
    let rows = |t: &[f32]| -> Vec<f32> {
        valid
            .iter()
            .flat_map(|&r| t[r * vocab..][..vocab].to_vec())
            .collect()
    };
    let mut logits = rows(&f.get("logits").data);
    let targets: Vec<u32> = valid.iter().map(|&r| all[r]).collect();
    let n = targets.len();
    let (mut losses, mut lse) = (vec![0.0; n], vec![0.0; n]);
    let loss = smoothed_cross_entropy_forward(&logits, &targets, vocab, eps, &mut losses, &mut lse)
        .unwrap();
    let want: Vec<f32> = valid.iter().map(|&r| f.get("losses").data[r]).collect();
    assert_close("losses", &losses, &want, RTOL, ATOL);
    assert_close("loss", &[loss], &f.get("loss").data, RTOL, ATOL);
    smoothed_cross_entropy_backward_in_place(&mut logits, &lse, &targets, vocab, eps, dloss)
        .unwrap();
    assert_close(
        "dlogits",
        &logits,
        &rows(&f.get("dlogits").data),
        RTOL,
        ATOL,
    );
    for r in (0..all.len()).filter(|&r| all[r] == pad) {
        assert!(f.get("dlogits").data[r * vocab..][..vocab]
            .iter()
            .all(|&g| g == 0.0));
    }
}

#[test]
fn label_smoothing_zero_is_the_plain_loss_and_its_gradient_checks() {
    let (rows, vocab) = (5, 9);
    let logits: Vec<f32> = normal(21, rows * vocab).iter().map(|v| 2.0 * v).collect();
    let targets = [0u32, 8, 3, 3, 5];
    let (mut l0, mut l1, mut lse) = (vec![0.0; rows], vec![0.0; rows], vec![0.0; rows]);
    let plain = cross_entropy_forward(&logits, &targets, vocab, &mut l0, &mut lse).unwrap();
    let zero =
        smoothed_cross_entropy_forward(&logits, &targets, vocab, 0.0, &mut l1, &mut lse).unwrap();
    assert_eq!((plain, &l0), (zero, &l1));
    // Finite differences of the smoothed loss, in f64 from the f32 kernel's own formula.
    let eps = 0.2;
    let loss_at = |z: &[f32]| -> f64 {
        let (mut l, mut s) = (vec![0.0; rows], vec![0.0; rows]);
        smoothed_cross_entropy_forward(z, &targets, vocab, eps, &mut l, &mut s).unwrap() as f64
    };
    let mut grad = logits.clone();
    let mut s = vec![0.0; rows];
    smoothed_cross_entropy_forward(&logits, &targets, vocab, eps, &mut l1, &mut s).unwrap();
    smoothed_cross_entropy_backward_in_place(&mut grad, &s, &targets, vocab, eps, 1.0).unwrap();
    let h = 1e-2f32;
    for i in 0..logits.len() {
        let (mut up, mut down) = (logits.clone(), logits.clone());
        up[i] += h;
        down[i] -= h;
        let numeric = (loss_at(&up) - loss_at(&down)) / (2.0 * h as f64);
        assert!(
            (numeric - grad[i] as f64).abs() < 5e-4,
            "{i}: {numeric} vs {}",
            grad[i]
        );
    }
    assert!(
        smoothed_cross_entropy_forward(&logits, &targets, vocab, 1.5, &mut l1, &mut s).is_err()
    );
}
