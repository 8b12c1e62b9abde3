//! Naive `f64` references of LayerNorm, RMSNorm and the fused add+norm, and the
//! finite-difference checks of their backward kernels.
//!
//! The references follow the textbook definitions row by row (mean, then the biased variance
//! of the centred values, all in `f64`), with no concern for speed; the tests in
//! `tests/norms.rs` reuse them as the ground truth for the forward kernels.
//!
//! ```
//! use resnorm::gradcheck::norms::{checks, norm_reference};
//! use resnorm::kernels::norm::NormKind;
//! let y = norm_reference(NormKind::Layer, &[1.0, 3.0], &[2.0, 2.0], Some(&[0.0, 1.0]), 0.0);
//! assert_eq!(y, vec![-2.0, 3.0]);
//! assert!(checks().iter().all(|c| c.passed));
//! ```

use super::{compare, numeric_gradient, CheckResult};
use crate::kernels::add_norm::{add_norm_backward, add_norm_forward, UpstreamGrads};
use crate::kernels::layer_norm::{layer_norm_backward, layer_norm_forward};
use crate::kernels::norm::{NormGrads, NormKind, NormStats, NormStatsMut, NormWeights};
use crate::kernels::rms_norm::{rms_norm_backward, rms_norm_forward};
use crate::rng::Rng;

/// Relative error the `f32` kernels must stay under against central differences.
const TOLERANCE: f64 = 1e-4;
/// Central-difference step on `f64` inputs of size ~1.
const STEP: f64 = 1e-4;
/// A shape with a vectorized part and a tail (37 = 4·8 + 5) and several rows.
const ROWS: usize = 3;
const COLS: usize = 37;
const EPS: f32 = 1e-5;

/// Per-row `(mean, rstd)` of `x` (`[rows, cols]`): LayerNorm's biased statistics, or for
/// RMSNorm a zero mean and `1 / sqrt(mean(x²) + eps)`.
pub fn row_stats_reference(kind: NormKind, x: &[f64], cols: usize, eps: f64) -> Vec<(f64, f64)> {
    x.chunks_exact(cols)
        .map(|row| {
            let n = cols as f64;
            let mean = match kind {
                NormKind::Layer => row.iter().sum::<f64>() / n,
                NormKind::Rms => 0.0,
            };
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            (mean, 1.0 / (var + eps).sqrt())
        })
        .collect()
}

/// `Norm(x) ⊙ weight + bias` row by row; `cols = weight.len()`.
pub fn norm_reference(
    kind: NormKind,
    x: &[f64],
    weight: &[f64],
    bias: Option<&[f64]>,
    eps: f64,
) -> Vec<f64> {
    let cols = weight.len();
    let stats = row_stats_reference(kind, x, cols, eps);
    let mut y = Vec::with_capacity(x.len());
    for (row, (mean, rstd)) in x.chunks_exact(cols).zip(stats) {
        for (j, v) in row.iter().enumerate() {
            y.push((v - mean) * rstd * weight[j] + bias.map_or(0.0, |b| b[j]));
        }
    }
    y
}

/// Every norm check, in a fixed order.
pub fn checks() -> Vec<CheckResult> {
    let mut results = Vec::new();
    results.extend(norm_checks(NormKind::Layer, true));
    results.extend(norm_checks(NormKind::Layer, false));
    results.extend(norm_checks(NormKind::Rms, false));
    results.extend(add_norm_checks(NormKind::Layer));
    results.extend(add_norm_checks(NormKind::Rms));
    results
}

/// Inputs of one check, drawn in `f32` so that kernel and reference see the same numbers.
struct Case {
    x: Vec<f32>,
    residual: Vec<f32>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    dout: Vec<f32>,
    dsum: Vec<f32>,
}

impl Case {
    fn draw(seed: u64, with_bias: bool) -> Case {
        let mut rng = Rng::new(seed);
        let mut draw = |len: usize, mean: f32, std: f32| {
            let mut v = vec![0.0; len];
            rng.fill_normal(&mut v, mean, std);
            v
        };
        Case {
            x: draw(ROWS * COLS, 0.3, 1.5),
            residual: draw(ROWS * COLS, -0.2, 1.0),
            weight: draw(COLS, 1.0, 0.5),
            bias: with_bias.then(|| draw(COLS, 0.0, 0.5)),
            dout: draw(ROWS * COLS, 0.0, 1.0),
            dsum: draw(ROWS * COLS, 0.0, 1.0),
        }
    }

    fn weights(&self) -> NormWeights<'_> {
        NormWeights {
            weight: &self.weight,
            bias: self.bias.as_deref(),
            eps: EPS,
        }
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&e| e as f64).collect()
}

fn dot(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(a, &b)| a * b as f64).sum()
}

/// Gradients of `L = Σ dout ⊙ Norm(x)` by the kernel, checked for x, weight and bias.
fn norm_checks(kind: NormKind, with_bias: bool) -> Vec<CheckResult> {
    let case = Case::draw(11 + with_bias as u64, with_bias);
    let weights = case.weights();
    let (mut out, mut mean, mut rstd) = (vec![0.0; case.x.len()], vec![0.0; ROWS], vec![0.0; ROWS]);
    let mut dx = vec![0.0; case.x.len()];
    let mut dweight = vec![0.0; COLS];
    let mut dbias = vec![0.0; COLS];
    let grads = NormGrads {
        dweight: &mut dweight,
        dbias: with_bias.then_some(&mut dbias[..]),
    };
    let (dout, x) = (&case.dout, &case.x);
    let ran = match kind {
        NormKind::Layer => layer_norm_forward(x, &weights, &mut out, &mut mean, &mut rstd)
            .and_then(|()| layer_norm_backward(dout, x, &weights, &mean, &rstd, &mut dx, grads)),
        NormKind::Rms => rms_norm_forward(x, &weights, &mut out, &mut rstd)
            .and_then(|()| rms_norm_backward(dout, x, &weights, &rstd, &mut dx, grads)),
    };
    ran.expect("the check's shapes are consistent");

    let (x64, w64, b64) = (
        to_f64(x),
        to_f64(&case.weight),
        case.bias.as_deref().map(to_f64),
    );
    let loss = |x: &[f64], w: &[f64], b: Option<&[f64]>| {
        dot(&norm_reference(kind, x, w, b, EPS as f64), dout)
    };
    let name = match (kind, with_bias) {
        (NormKind::Layer, true) => "layer_norm",
        (NormKind::Layer, false) => "layer_norm (no bias)",
        (NormKind::Rms, _) => "rms_norm",
    };
    let mut results = vec![
        compare(
            &format!("{name} dx"),
            &dx,
            &numeric_gradient(|x| loss(x, &w64, b64.as_deref()), &x64, STEP),
            TOLERANCE,
        ),
        compare(
            &format!("{name} dweight"),
            &dweight,
            &numeric_gradient(|w| loss(&x64, w, b64.as_deref()), &w64, STEP),
            TOLERANCE,
        ),
    ];
    if let Some(b64) = &b64 {
        let numeric = numeric_gradient(|b| loss(&x64, &w64, Some(b)), b64, STEP);
        results.push(compare(
            &format!("{name} dbias"),
            &dbias,
            &numeric,
            TOLERANCE,
        ));
    }
    results
}

/// Gradients of `L = Σ dout ⊙ Norm(x + residual) + Σ dsum ⊙ (x + residual)` by the fused
/// kernel, checked for x, residual, weight and (LayerNorm) bias.
fn add_norm_checks(kind: NormKind) -> Vec<CheckResult> {
    let with_bias = kind == NormKind::Layer;
    let case = Case::draw(21 + with_bias as u64, with_bias);
    let weights = case.weights();
    let len = case.x.len();
    let (mut sum, mut out) = (vec![0.0; len], vec![0.0; len]);
    let (mut mean, mut rstd) = (vec![0.0; ROWS], vec![0.0; ROWS]);
    let mut dx = vec![0.0; len];
    let mut dweight = vec![0.0; COLS];
    let mut dbias = vec![0.0; COLS];
    let stats = NormStatsMut {
        mean: &mut mean,
        rstd: &mut rstd,
    };
    add_norm_forward(
        kind,
        &case.x,
        &case.residual,
        &weights,
        &mut sum,
        &mut out,
        stats,
    )
    .expect("the check's shapes are consistent");
    let upstream = UpstreamGrads {
        dout: &case.dout,
        dsum: Some(&case.dsum),
    };
    let stats = NormStats {
        mean: &mean,
        rstd: &rstd,
    };
    let grads = NormGrads {
        dweight: &mut dweight,
        dbias: with_bias.then_some(&mut dbias[..]),
    };
    add_norm_backward(kind, upstream, &sum, &weights, stats, &mut dx, grads)
        .expect("the check's shapes are consistent");

    let (x64, r64) = (to_f64(&case.x), to_f64(&case.residual));
    let (w64, b64) = (to_f64(&case.weight), case.bias.as_deref().map(to_f64));
    let loss = |x: &[f64], r: &[f64], w: &[f64], b: Option<&[f64]>| {
        let s: Vec<f64> = x.iter().zip(r).map(|(a, b)| a + b).collect();
        let y = norm_reference(kind, &s, w, b, EPS as f64);
        dot(&y, &case.dout) + dot(&s, &case.dsum)
    };
    let name = match kind {
        NormKind::Layer => "add_layer_norm",
        NormKind::Rms => "add_rms_norm",
    };
    let b = b64.as_deref();
    let mut results = vec![
        compare(
            &format!("{name} dx"),
            &dx,
            &numeric_gradient(|x| loss(x, &r64, &w64, b), &x64, STEP),
            TOLERANCE,
        ),
        compare(
            &format!("{name} dresidual"),
            &dx,
            &numeric_gradient(|r| loss(&x64, r, &w64, b), &r64, STEP),
            TOLERANCE,
        ),
        compare(
            &format!("{name} dweight"),
            &dweight,
            &numeric_gradient(|w| loss(&x64, &r64, w, b), &w64, STEP),
            TOLERANCE,
        ),
    ];
    if let Some(b64) = &b64 {
        let numeric = numeric_gradient(|b| loss(&x64, &r64, &w64, Some(b)), b64, STEP);
        results.push(compare(
            &format!("{name} dbias"),
            &dbias,
            &numeric,
            TOLERANCE,
        ));
    }
    results
}
