//! Causal self-attention: naive f64 references, PyTorch parity, `c_attn`'s bias added by
//! the heads, bad-input errors.
//!
//! Tolerances: against the float64 PyTorch fixtures `|got - want| <= 1e-5·|want| + 1e-6`
//! (1e-5 absolute where a value sums more than 32 products); against naive f64 loops the same.

mod common;

use common::{assert_close, is_invalid, is_shape, normal, Fixture};
use resnorm::kernels::column_sums::add_column_sums;
use resnorm::nn::CausalSelfAttention;

const RTOL: f32 = 1e-5;
const ATOL: f32 = 1e-6;

/// nanoGPT's causal attention in f64: output and probabilities.
fn naive_attention(qkv: &[f32], b_: usize, t_: usize, c: usize, h_: usize) -> (Vec<f32>, Vec<f32>) {
    let d = c / h_;
    let at = |b: usize, t: usize, col: usize| qkv[(b * t_ + t) * 3 * c + col] as f64;
    let (mut out, mut att) = (vec![0.0; b_ * t_ * c], vec![0.0; b_ * h_ * t_ * t_]);
    for b in 0..b_ {
        for h in 0..h_ {
            for t in 0..t_ {
                let s: Vec<f64> = (0..=t)
                    .map(|s| {
                        (0..d)
                            .map(|i| at(b, t, h * d + i) * at(b, s, c + h * d + i))
                            .sum::<f64>()
                    })
                    .map(|v| v / (d as f64).sqrt())
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = s.iter().map(|v| (v - max).exp()).sum();
                for (j, v) in s.iter().enumerate() {
                    att[((b * h_ + h) * t_ + t) * t_ + j] = ((v - max).exp() / total) as f32;
                }
                for i in 0..d {
                    let o: f64 = (0..=t)
                        .map(|j| {
                            att[((b * h_ + h) * t_ + t) * t_ + j] as f64
                                * at(b, j, 2 * c + h * d + i)
                        })
                        .sum();
                    out[(b * t_ + t) * c + h * d + i] = o as f32;
                }
            }
        }
    }
    (out, att)
}

#[test]
fn attention_matches_pytorch() {
    let f = Fixture::load("layers_attention");
    let (batch, seq, c3) = (
        f.get("qkv").shape[0],
        f.get("qkv").shape[1],
        f.get("qkv").shape[2],
    );
    let attn = CausalSelfAttention::new(c3 / 3, f.meta_f32("heads") as usize).unwrap();
    let qkv = &f.get("qkv").data;
    let mut out = vec![0.0; f.get("out").data.len()];
    let mut att = vec![f32::NAN; f.get("att").data.len()];
    attn.forward(&mut out, &mut att, qkv, batch, seq).unwrap();
    let (lower, above) = triangles(&att, seq);
    let want = triangles(&f.get("att").data, seq).0;
    assert_close("att", &lower, &want, RTOL, ATOL);
    // Not written, and (below) not read by the backward: NaN would reach dqkv.
    assert!(
        above.iter().all(|p| p.is_nan()),
        "att above the diagonal was written"
    );
    assert_close("out", &out, &f.get("out").data, RTOL, ATOL);
    let mut dqkv = vec![f32::NAN; qkv.len()];
    attn.backward(&mut dqkv, &f.get("dout").data, &att, qkv, batch, seq)
        .unwrap();
    assert_close("dqkv", &dqkv, &f.get("dqkv").data, RTOL, 1e-5);
    let first = dqkv.clone();
    attn.backward(&mut dqkv, &f.get("dout").data, &att, qkv, batch, seq)
        .unwrap();
    assert_eq!(dqkv, first, "dqkv is overwritten, bit-for-bit the same");
}

/// The entries of `att` (`[·, seq, seq]` blocks) on or below each block's diagonal, and
/// those above it.
fn triangles(att: &[f32], seq: usize) -> (Vec<f32>, Vec<f32>) {
    let (lower, above): (Vec<_>, Vec<_>) = att
        .iter()
        .enumerate()
        .partition(|(i, _)| i % seq <= (i / seq) % seq);
    let values = |v: Vec<(usize, &f32)>| v.into_iter().map(|(_, &p)| p).collect();
    (values(lower), values(above))
}

#[test]
fn attention_matches_naive_on_odd_shapes() {
    for (batch, seq, c, heads) in [(1, 1, 3, 1), (3, 7, 6, 3), (1, 70, 8, 2), (2, 37, 160, 2)] {
        let attn = CausalSelfAttention::new(c, heads).unwrap();
        let qkv: Vec<f32> = normal(13, batch * seq * 3 * c)
            .iter()
            .map(|v| 2.0 * v)
            .collect();
        let (want_out, want_att) = naive_attention(&qkv, batch, seq, c, heads);
        let mut out = vec![0.0; want_out.len()];
        let mut att = vec![0.0; want_att.len()];
        attn.forward(&mut out, &mut att, &qkv, batch, seq).unwrap();
        assert_close(&format!("att {seq}"), &att, &want_att, RTOL, ATOL);
        assert_close(&format!("out {seq}"), &out, &want_out, RTOL, 1e-5);
    }
}

/// The backward of [`naive_attention`] in f64, from the output gradient `dout`.
fn naive_attention_backward(
    qkv: &[f32],
    dout: &[f32],
    (b_, t_, c, h_): (usize, usize, usize, usize),
) -> Vec<f32> {
    let d = c / h_;
    let (_, att) = naive_attention(qkv, b_, t_, c, h_);
    let at = |b: usize, t: usize, col: usize| qkv[(b * t_ + t) * 3 * c + col] as f64;
    let mut dqkv = vec![0.0f64; qkv.len()];
    for b in 0..b_ {
        for h in 0..h_ {
            let p = |t: usize, s: usize| att[((b * h_ + h) * t_ + t) * t_ + s] as f64;
            let d_o = |t: usize, i: usize| dout[(b * t_ + t) * c + h * d + i] as f64;
            for t in 0..t_ {
                // dP[t, s] = dO[t]·V[s]; dS = P ⊙ (dP - Σ P ⊙ dP) / √d
                let dp: Vec<f64> = (0..=t)
                    .map(|s| {
                        (0..d)
                            .map(|i| d_o(t, i) * at(b, s, 2 * c + h * d + i))
                            .sum()
                    })
                    .collect();
                let dot: f64 = (0..=t).map(|s| p(t, s) * dp[s]).sum();
                for (s, &dp_s) in dp.iter().enumerate() {
                    let ds = p(t, s) * (dp_s - dot) / (d as f64).sqrt();
                    for i in 0..d {
                        let (row_t, row_s) = ((b * t_ + t) * 3 * c, (b * t_ + s) * 3 * c);
                        dqkv[row_t + h * d + i] += ds * at(b, s, c + h * d + i);
                        dqkv[row_s + c + h * d + i] += ds * at(b, t, h * d + i);
                        dqkv[row_s + 2 * c + h * d + i] += p(t, s) * d_o(t, i);
                    }
                }
            }
        }
    }
    dqkv.iter().map(|&v| v as f32).collect()
}

#[test]
fn attention_backward_matches_naive_on_odd_shapes() {
    // Positions and head sizes that are not whole vectors of 16 (padding), heads of more
    // than four vectors (80: a tile of four and one of one), a single position.
    for (batch, seq, c, heads) in [(1, 1, 3, 1), (3, 7, 6, 3), (1, 70, 8, 2), (2, 37, 160, 2)] {
        let attn = CausalSelfAttention::new(c, heads).unwrap();
        let qkv = normal(17, batch * seq * 3 * c);
        let dout = normal(18, batch * seq * c);
        let want = naive_attention_backward(&qkv, &dout, (batch, seq, c, heads));
        let mut out = vec![0.0; dout.len()];
        let mut att = vec![0.0; batch * heads * seq * seq];
        attn.forward(&mut out, &mut att, &qkv, batch, seq).unwrap();
        let mut dqkv = vec![f32::NAN; qkv.len()];
        attn.backward(&mut dqkv, &dout, &att, &qkv, batch, seq)
            .unwrap();
        assert_close(&format!("dqkv {seq}x{c}"), &dqkv, &want, RTOL, 1e-5);
    }
}

/// `c_attn`'s bias added as the heads read `qkv` gives what adding it to `qkv` first gives,
/// and its gradient the column sums of `dqkv`: bit for bit forward (the same additions),
/// to rounding for the sums (summed per head and sequence, then over sequences).
#[test]
fn attention_adding_bias_equals_the_bias_added_first() {
    for (batch, seq, c, heads) in [(1, 1, 3, 1), (3, 7, 6, 3), (2, 37, 160, 2)] {
        let attn = CausalSelfAttention::new(c, heads).unwrap();
        let qkv = normal(19, batch * seq * 3 * c);
        let bias = normal(20, 3 * c);
        let dout = normal(21, batch * seq * c);
        let biased: Vec<f32> = qkv
            .chunks_exact(3 * c)
            .flat_map(|row| row.iter().zip(&bias).map(|(v, b)| v + b))
            .collect();
        let (mut out, mut att) = (vec![0.0; dout.len()], vec![0.0; batch * heads * seq * seq]);
        attn.forward(&mut out, &mut att, &biased, batch, seq)
            .unwrap();
        let mut dqkv = vec![0.0; qkv.len()];
        attn.backward(&mut dqkv, &dout, &att, &biased, batch, seq)
            .unwrap();
        let start = normal(22, 3 * c);
        let mut dbias = start.clone();
        add_column_sums(&mut dbias, &dqkv).unwrap();

        let (mut out_f, mut att_f) = (vec![f32::NAN; out.len()], vec![0.0; att.len()]);
        attn.forward_adding_bias(&mut out_f, &mut att_f, &qkv, &bias, batch, seq)
            .unwrap();
        let (mut dqkv_f, mut dbias_f) = (vec![f32::NAN; qkv.len()], start);
        let from = (&qkv[..], &bias[..]);
        attn.backward_adding_bias(&mut dqkv_f, &mut dbias_f, &dout, &att_f, from, batch, seq)
            .unwrap();
        let what = format!("{batch}x{seq}, {heads} heads of {c} channels");
        assert_eq!(out_f, out, "out, {what}");
        assert_eq!(att_f, att, "att, {what}");
        assert_eq!(dqkv_f, dqkv, "dqkv, {what}");
        assert_close(&format!("dbias, {what}"), &dbias_f, &dbias, RTOL, 1e-5);
    }
    let attn = CausalSelfAttention::new(4, 2).unwrap();
    let (qkv, dout) = (vec![0.5; 12], vec![0.5; 4]);
    let (mut out, mut att, mut dqkv) = (vec![0.0; 4], vec![0.0; 2], vec![0.0; 12]);
    let short = [0.0; 11];
    assert!(is_shape(
        attn.forward_adding_bias(&mut out, &mut att, &qkv, &short, 1, 1)
    ));
    let mut dbias = vec![0.0; 12];
    let from = (&qkv[..], &short[..]);
    assert!(is_shape(attn.backward_adding_bias(
        &mut dqkv, &mut dbias, &dout, &att, from, 1, 1
    )));
    let from = (&qkv[..], &dbias.clone()[..]);
    assert!(is_shape(attn.backward_adding_bias(
        &mut dqkv,
        &mut dbias[1..],
        &dout,
        &att,
        from,
        1,
        1
    )));
}

#[test]
fn attention_rejects_bad_sizes() {
    assert!(is_invalid(CausalSelfAttention::new(6, 4)));
    assert!(is_invalid(CausalSelfAttention::new(6, 0)));
    assert!(is_invalid(CausalSelfAttention::new(0, 1)));
    let attn = CausalSelfAttention::new(4, 2).unwrap();
    let (b, t) = (2, 3);
    let qkv = vec![0.5; b * t * 12];
    let (mut out, mut att) = (vec![0.0; b * t * 4], vec![0.0; b * 2 * t * t]);
    let mut dqkv = vec![0.0; qkv.len()];
    assert!(is_shape(attn.forward(&mut out, &mut att, &qkv[1..], b, t)));
    assert!(is_shape(attn.forward(&mut out[1..], &mut att, &qkv, b, t)));
    assert!(is_shape(attn.forward(&mut out, &mut att[1..], &qkv, b, t)));
    assert!(is_shape(attn.forward(&mut out, &mut att, &qkv, b, t + 1)));
    assert!(is_shape(attn.forward(
        &mut out,
        &mut att,
        &qkv,
        usize::MAX,
        2
    )));
    assert!(att.iter().all(|&p| p == 0.0), "nothing written on error");
    assert!(is_shape(attn.backward(
        &mut dqkv[1..],
        &out,
        &att,
        &qkv,
        b,
        t
    )));
    assert!(is_shape(attn.backward(
        &mut dqkv,
        &out[1..],
        &att,
        &qkv,
        b,
        t
    )));
    assert!(is_shape(attn.backward(
        &mut dqkv,
        &out,
        &att[1..],
        &qkv,
        b,
        t
    )));
    attn.forward(&mut out, &mut att, &[], 0, 3).unwrap_err();
    attn.forward(&mut [], &mut [], &[], 0, 3).unwrap();
}
