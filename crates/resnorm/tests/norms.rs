//! LayerNorm, RMSNorm and fused add+norm kernels: against the naive f64 reference, against
//! PyTorch fixtures, on rows with a large offset, and for determinism. Bad input is tested in
//! `norms_errors.rs`.

mod common;

use common::{assert_close, Fixture};
use resnorm::gradcheck::norms::{checks, norm_reference, row_stats_reference};
use resnorm::kernels::add_norm::{add_norm_backward, add_norm_forward, UpstreamGrads};
use resnorm::kernels::layer_norm::{layer_norm_backward, layer_norm_forward};
use resnorm::kernels::norm::{
    NormGrads, NormKind, NormStats, NormStatsMut, NormWeights, DEFAULT_EPS,
};
use resnorm::kernels::rms_norm::{rms_norm_backward, rms_norm_forward};
use resnorm::rng::Rng;

fn normal(rng: &mut Rng, len: usize, mean: f32, std: f32) -> Vec<f32> {
    let mut v = vec![0.0; len];
    rng.fill_normal(&mut v, mean, std);
    v
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&e| e as f64).collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&e| e as f32).collect()
}

/// Output of one forward call: `(out, mean, rstd)`; `mean` is empty for RMSNorm.
type Forward = (Vec<f32>, Vec<f32>, Vec<f32>);

/// Runs the plain forward kernel of `kind`.
fn forward(kind: NormKind, x: &[f32], weights: &NormWeights) -> Forward {
    let rows = x.len() / weights.cols();
    let (mut out, mut rstd) = (vec![0.0; x.len()], vec![0.0; rows]);
    let mut mean = vec![0.0; if kind == NormKind::Layer { rows } else { 0 }];
    match kind {
        NormKind::Layer => layer_norm_forward(x, weights, &mut out, &mut mean, &mut rstd),
        NormKind::Rms => rms_norm_forward(x, weights, &mut out, &mut rstd),
    }
    .unwrap();
    (out, mean, rstd)
}

/// Asserts a forward result against the f64 reference on the same `x`.
fn assert_matches_reference(what: &str, kind: NormKind, x: &[f32], w: &NormWeights, got: &Forward) {
    let cols = w.cols();
    let x64 = to_f64(x);
    let bias = w.bias.map(to_f64);
    let y = norm_reference(kind, &x64, &to_f64(w.weight), bias.as_deref(), w.eps as f64);
    let stats = row_stats_reference(kind, &x64, cols, w.eps as f64);
    assert_close(&format!("{what} out"), &got.0, &to_f32(&y), 1e-5, 1e-5);
    let rstd: Vec<f64> = stats.iter().map(|s| s.1).collect();
    assert_close(&format!("{what} rstd"), &got.2, &to_f32(&rstd), 1e-5, 0.0);
    if kind == NormKind::Layer {
        let mean: Vec<f64> = stats.iter().map(|s| s.0).collect();
        assert_close(&format!("{what} mean"), &got.1, &to_f32(&mean), 1e-6, 1e-6);
    }
}

const SHAPES: [(usize, usize); 8] = [
    (1, 1),
    (4, 1),
    (1, 13),
    (5, 37),
    (3, 8),
    (6, 64),
    (2, 768),
    (0, 5),
];

#[test]
fn forward_kernels_match_the_f64_reference_on_many_shapes() {
    let mut rng = Rng::new(1);
    for (rows, cols) in SHAPES {
        let x = normal(&mut rng, rows * cols, 0.7, 2.0);
        let weight = normal(&mut rng, cols, 1.0, 0.5);
        let bias = normal(&mut rng, cols, 0.0, 0.5);
        for (kind, bias) in [
            (NormKind::Layer, Some(&bias[..])),
            (NormKind::Layer, None),
            (NormKind::Rms, None),
        ] {
            let w = NormWeights {
                weight: &weight,
                bias,
                eps: DEFAULT_EPS,
            };
            let what = format!("{kind} {rows}x{cols} bias={}", bias.is_some());
            assert_matches_reference(&what, kind, &x, &w, &forward(kind, &x, &w));
        }
    }
}

#[test]
fn add_norm_forward_writes_the_sum_and_its_norm() {
    let mut rng = Rng::new(2);
    for (rows, cols) in SHAPES {
        let x = normal(&mut rng, rows * cols, 0.5, 1.0);
        let residual = normal(&mut rng, rows * cols, -1.0, 2.0);
        let weight = normal(&mut rng, cols, 1.0, 0.5);
        let bias = normal(&mut rng, cols, 0.0, 0.5);
        for (kind, bias) in [(NormKind::Layer, Some(&bias[..])), (NormKind::Rms, None)] {
            let w = NormWeights {
                weight: &weight,
                bias,
                eps: DEFAULT_EPS,
            };
            let (mut sum, mut out) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            let (mut mean, mut rstd) = (vec![f32::NAN; rows], vec![0.0; rows]);
            let stats = NormStatsMut {
                mean: &mut mean,
                rstd: &mut rstd,
            };
            add_norm_forward(kind, &x, &residual, &w, &mut sum, &mut out, stats).unwrap();
            let expected_sum: Vec<f32> = x.iter().zip(&residual).map(|(a, b)| a + b).collect();
            assert_eq!(
                sum, expected_sum,
                "{kind} {rows}x{cols}: the sum is one f32 add"
            );
            if kind == NormKind::Rms {
                assert!(mean.iter().all(|&m| m == 0.0), "RMSNorm's mean is zero");
                mean.clear();
            }
            let what = format!("add {kind} {rows}x{cols}");
            assert_matches_reference(&what, kind, &sum, &w, &(out, mean, rstd));
        }
    }
}

#[test]
fn every_finite_difference_check_passes() {
    let results = checks();
    assert_eq!(results.len(), 14);
    for r in &results {
        assert!(r.passed, "{r:?}");
        assert!(r.max_rel_err < 1e-4, "{r:?}");
    }
    let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    for name in [
        "layer_norm dx",
        "layer_norm dweight",
        "layer_norm dbias",
        "rms_norm dx",
        "add_rms_norm dweight",
    ] {
        assert!(names.contains(&name), "missing check {name}");
    }
}

/// Rows of mean 1e4 and std 1e-2: `E[x²] - E[x]²` cancels every digit in f32, the corrected
/// two-pass statistics keep them, and the backward removes the rounding of the saved mean.
#[test]
fn large_offsets_keep_their_digits() {
    let mut rng = Rng::new(3);
    let (rows, cols) = (4, 768);
    let x = normal(&mut rng, rows * cols, 1e4, 1e-2);
    let weight = normal(&mut rng, cols, 1.0, 0.5);
    let bias = normal(&mut rng, cols, 0.0, 0.5);
    let w = NormWeights {
        weight: &weight,
        bias: Some(&bias),
        eps: DEFAULT_EPS,
    };
    let got = forward(NormKind::Layer, &x, &w);
    // Outputs are O(1); ~1e-5 absolute is f32 rounding of (x - mean) · rstd.
    assert_matches_reference("offset 1e4", NormKind::Layer, &x, &w, &got);

    let stats = row_stats_reference(NormKind::Layer, &to_f64(&x), cols, DEFAULT_EPS as f64);
    let row = &x[..cols];
    let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / cols as f32;
    let mean = row.iter().sum::<f32>() / cols as f32;
    let one_pass_var = mean_sq - mean * mean;
    let true_var = 1.0 / (stats[0].1 * stats[0].1) - DEFAULT_EPS as f64;
    assert!(
        (one_pass_var as f64 - true_var).abs() > 10.0 * true_var,
        "this test must be one where the one-pass variance fails ({one_pass_var} vs {true_var})"
    );

    let mut rng = Rng::new(4);
    let dy = normal(&mut rng, x.len(), 0.0, 1.0);
    let (mut dx, mut dweight, mut dbias) = (vec![0.0; x.len()], vec![0.0; cols], vec![0.0; cols]);
    let grads = NormGrads {
        dweight: &mut dweight,
        dbias: Some(&mut dbias),
    };
    layer_norm_backward(&dy, &x, &w, &got.1, &got.2, &mut dx, grads).unwrap();
    let x64 = to_f64(&x);
    let (w64, b64) = (to_f64(&weight), to_f64(&bias));
    let loss = |x: &[f64]| {
        let y = norm_reference(NormKind::Layer, x, &w64, Some(&b64), DEFAULT_EPS as f64);
        y.iter().zip(&dy).map(|(y, &g)| y * g as f64).sum::<f64>()
    };
    let numeric = resnorm::gradcheck::numeric_gradient(loss, &x64, 1e-5);
    let check = resnorm::gradcheck::compare("offset dx", &dx, &numeric, 1e-3);
    assert!(check.passed, "{check:?}");
    let dw_numeric: Vec<f64> = (0..cols)
        .map(|j| {
            (0..rows)
                .map(|r| dy[r * cols + j] as f64 * (x64[r * cols + j] - stats[r].0) * stats[r].1)
                .sum()
        })
        .collect();
    let check = resnorm::gradcheck::compare("offset dweight", &dweight, &dw_numeric, 1e-3);
    assert!(check.passed, "{check:?}");
}

/// PyTorch computes in f32 too (other summation orders): agreement to ~1e-5 relative, plus
/// a small absolute floor for entries near zero and for sums over rows (dweight, dbias).
const PARITY_RTOL: f32 = 1e-5;
const PARITY_ATOL: f32 = 2e-5;

fn parity(fix: &Fixture, key: &str, got: &[f32]) {
    assert_close(
        &format!("{} {key}", fix.name),
        got,
        &fix.get(key).data,
        PARITY_RTOL,
        PARITY_ATOL,
    );
}

fn norm_parity(name: &str, kind: NormKind) {
    let fix = Fixture::load(name);
    let eps = fix.meta_f32("eps");
    let (x, dy, weight) = (
        &fix.get("x").data,
        &fix.get("dy").data,
        &fix.get("weight").data,
    );
    let bias = fix.tensors.get("bias").map(|b| &b.data[..]);
    let w = NormWeights { weight, bias, eps };
    let cols = w.cols();
    assert_eq!(*fix.get("x").shape.last().unwrap(), cols);
    let (out, mean, rstd) = forward(kind, x, &w);
    parity(&fix, "y", &out);
    parity(&fix, "rstd", &rstd);
    let (mut dx, mut dweight, mut dbias) = (vec![0.0; x.len()], vec![0.0; cols], vec![0.0; cols]);
    let grads = NormGrads {
        dweight: &mut dweight,
        dbias: bias.map(|_| &mut dbias[..]),
    };
    match kind {
        NormKind::Layer => {
            parity(&fix, "mean", &mean);
            layer_norm_backward(dy, x, &w, &mean, &rstd, &mut dx, grads).unwrap();
        }
        NormKind::Rms => rms_norm_backward(dy, x, &w, &rstd, &mut dx, grads).unwrap(),
    }
    parity(&fix, "dx", &dx);
    parity(&fix, "dweight", &dweight);
    if bias.is_some() {
        parity(&fix, "dbias", &dbias);
    }
}

#[test]
fn layer_norm_matches_pytorch() {
    norm_parity("norms_layer_norm", NormKind::Layer);
}

#[test]
fn layer_norm_without_bias_matches_pytorch() {
    norm_parity("norms_layer_norm_no_bias", NormKind::Layer);
}

#[test]
fn rms_norm_matches_pytorch() {
    norm_parity("norms_rms_norm", NormKind::Rms);
}

fn add_norm_parity(name: &str, kind: NormKind) {
    let fix = Fixture::load(name);
    let (x, residual) = (&fix.get("x").data, &fix.get("residual").data);
    let weight = &fix.get("weight").data;
    let bias = fix.tensors.get("bias").map(|b| &b.data[..]);
    let w = NormWeights {
        weight,
        bias,
        eps: fix.meta_f32("eps"),
    };
    let (cols, len) = (w.cols(), x.len());
    let rows = len / cols;
    let (mut sum, mut out) = (vec![0.0; len], vec![0.0; len]);
    let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
    let stats = NormStatsMut {
        mean: &mut mean,
        rstd: &mut rstd,
    };
    add_norm_forward(kind, x, residual, &w, &mut sum, &mut out, stats).unwrap();
    parity(&fix, "sum", &sum);
    parity(&fix, "y", &out);
    parity(&fix, "rstd", &rstd);
    if kind == NormKind::Layer {
        parity(&fix, "mean", &mean);
    }
    let upstream = UpstreamGrads {
        dout: &fix.get("dy").data,
        dsum: Some(&fix.get("dsum").data),
    };
    let (mut dx, mut dweight, mut dbias) = (vec![0.0; len], vec![0.0; cols], vec![0.0; cols]);
    let grads = NormGrads {
        dweight: &mut dweight,
        dbias: bias.map(|_| &mut dbias[..]),
    };
    let stats = NormStats {
        mean: &mean,
        rstd: &rstd,
    };
    add_norm_backward(kind, upstream, &sum, &w, stats, &mut dx, grads).unwrap();
    parity(&fix, "dx", &dx);
    parity(&fix, "dresidual", &dx);
    parity(&fix, "dweight", &dweight);
    if bias.is_some() {
        parity(&fix, "dbias", &dbias);
    }
}

#[test]
fn add_layer_norm_matches_pytorch() {
    add_norm_parity("norms_add_layer_norm", NormKind::Layer);
}

#[test]
fn add_rms_norm_matches_pytorch() {
    add_norm_parity("norms_add_rms_norm", NormKind::Rms);
}

/// Enough rows and elements that the kernels split them over the thread pool.
const POOL_ROWS: usize = 256;
const POOL_COLS: usize = 160;

/// `(dx, dweight, dbias)` of one LayerNorm backward over `rows` of the inputs.
fn layer_norm_grads(
    dy: &[f32],
    x: &[f32],
    w: &NormWeights,
    fwd: &Forward,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let cols = w.cols();
    let (mut dx, mut dweight, mut dbias) = (vec![0.0; x.len()], vec![0.0; cols], vec![0.0; cols]);
    let grads = NormGrads {
        dweight: &mut dweight,
        dbias: Some(&mut dbias),
    };
    layer_norm_backward(dy, x, w, &fwd.1, &fwd.2, &mut dx, grads).unwrap();
    (dx, dweight, dbias)
}

#[test]
fn backward_is_bitwise_deterministic() {
    let mut rng = Rng::new(5);
    let x = normal(&mut rng, POOL_ROWS * POOL_COLS, 0.0, 1.0);
    let dy = normal(&mut rng, x.len(), 0.0, 1.0);
    let weight = normal(&mut rng, POOL_COLS, 1.0, 0.5);
    let bias = normal(&mut rng, POOL_COLS, 0.0, 0.5);
    let w = NormWeights {
        weight: &weight,
        bias: Some(&bias),
        eps: DEFAULT_EPS,
    };
    let fwd = forward(NormKind::Layer, &x, &w);
    assert_eq!(fwd, forward(NormKind::Layer, &x, &w));
    let first = layer_norm_grads(&dy, &x, &w, &fwd);
    assert_eq!(
        first,
        layer_norm_grads(&dy, &x, &w, &fwd),
        "LayerNorm backward"
    );

    let rms_w = NormWeights { bias: None, ..w };
    let (_, _, rstd) = forward(NormKind::Rms, &x, &rms_w);
    let rms_dweight = || {
        let (mut dx, mut dweight) = (vec![0.0; x.len()], vec![0.0; POOL_COLS]);
        let grads = NormGrads {
            dweight: &mut dweight,
            dbias: None,
        };
        rms_norm_backward(&dy, &x, &rms_w, &rstd, &mut dx, grads).unwrap();
        (dx, dweight)
    };
    assert_eq!(rms_dweight(), rms_dweight(), "RMSNorm backward");
}

/// One call over all rows (split in one block per thread) against one call per row (one
/// block per row): the same per-row results bit for bit, and parameter gradients that differ
/// only by the order of f32 additions.
#[test]
fn one_block_per_row_agrees_with_one_block_per_thread() {
    let mut rng = Rng::new(6);
    let cols = POOL_COLS;
    let x = normal(&mut rng, POOL_ROWS * cols, 0.0, 1.0);
    let dy = normal(&mut rng, x.len(), 0.0, 1.0);
    let weight = normal(&mut rng, cols, 1.0, 0.5);
    let bias = normal(&mut rng, cols, 0.0, 0.5);
    let w = NormWeights {
        weight: &weight,
        bias: Some(&bias),
        eps: DEFAULT_EPS,
    };
    let whole = forward(NormKind::Layer, &x, &w);
    let (dx, dweight, dbias) = layer_norm_grads(&dy, &x, &w, &whole);

    let (mut row_dweight, mut row_dbias) = (vec![0.0; cols], vec![0.0; cols]);
    for r in 0..POOL_ROWS {
        let span = r * cols..(r + 1) * cols;
        let row = forward(NormKind::Layer, &x[span.clone()], &w);
        assert_eq!(row.0, whole.0[span.clone()], "row {r} forward");
        let mut row_dx = vec![0.0; cols];
        let grads = NormGrads {
            dweight: &mut row_dweight,
            dbias: Some(&mut row_dbias),
        };
        layer_norm_backward(
            &dy[span.clone()],
            &x[span.clone()],
            &w,
            &row.1,
            &row.2,
            &mut row_dx,
            grads,
        )
        .unwrap();
        assert_eq!(row_dx, dx[span], "row {r} dx");
    }
    // Sums of 256 O(1) terms in two orders: ~1e-6 relative apart, bounded here by 1e-5.
    assert_close("dweight", &row_dweight, &dweight, 1e-5, 1e-5);
    assert_close("dbias", &row_dbias, &dbias, 1e-5, 1e-5);
}

#[test]
fn backward_adds_into_parameter_gradients() {
    let mut rng = Rng::new(7);
    let x = normal(&mut rng, 6 * 13, 0.0, 1.0);
    let dy = normal(&mut rng, x.len(), 0.0, 1.0);
    let weight = normal(&mut rng, 13, 1.0, 0.5);
    let bias = vec![0.0; 13];
    let w = NormWeights {
        weight: &weight,
        bias: Some(&bias),
        eps: DEFAULT_EPS,
    };
    let fwd = forward(NormKind::Layer, &x, &w);
    let (_, once_w, once_b) = layer_norm_grads(&dy, &x, &w, &fwd);
    let (mut dx, mut dweight, mut dbias) = (vec![7.0; x.len()], once_w.clone(), once_b.clone());
    let grads = NormGrads {
        dweight: &mut dweight,
        dbias: Some(&mut dbias),
    };
    layer_norm_backward(&dy, &x, &w, &fwd.1, &fwd.2, &mut dx, grads).unwrap();
    let twice = |v: &[f32]| v.iter().map(|g| 2.0 * g).collect::<Vec<f32>>();
    assert_close("dweight accumulates", &dweight, &twice(&once_w), 1e-6, 1e-6);
    assert_close("dbias accumulates", &dbias, &twice(&once_b), 1e-6, 1e-6);
    assert!(dx.iter().all(|&g| g != 7.0), "dx is overwritten");
}
