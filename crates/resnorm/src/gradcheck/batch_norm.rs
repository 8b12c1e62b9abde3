//! Naive `f64` references for BatchNorm and the finite-difference checks of its backward
//! pass.
//!
//! The references follow the definitions literally (one channel at a time, mean then
//! centered variance); tests reuse them to check the fast kernels' forward passes.
//!
//! ```
//! use resnorm::gradcheck::batch_norm::batch_norm_train_reference;
//! use resnorm::kernels::batch_norm::BatchNormShape;
//! let shape = BatchNormShape { batch: 2, channels: 1, spatial: 1 };
//! let y = batch_norm_train_reference(&[1.0, 3.0], shape, &[1.0], &[0.0], 0.0);
//! assert_eq!(y, vec![-1.0, 1.0]);
//! ```

use super::{compare, numeric_gradient, CheckResult};
use crate::kernels::batch_norm::{
    batch_norm_backward, batch_norm_forward_train, batch_norm_relu_backward, Activation,
    BatchNormGrads, BatchNormParams, BatchNormShape, RunningStats, SavedStats, SavedStatsMut,
};
use crate::rng::Rng;

/// Index of element `(n, c, s)` in an NCHW buffer.
fn index(shape: BatchNormShape, n: usize, c: usize, s: usize) -> usize {
    (n * shape.channels + c) * shape.spatial + s
}

/// Every index of channel `c`, in sample order.
fn channel_indices(shape: BatchNormShape, c: usize) -> impl Iterator<Item = usize> {
    (0..shape.batch).flat_map(move |n| (0..shape.spatial).map(move |s| index(shape, n, c, s)))
}

/// Per-channel batch mean and *biased* variance (two passes).
pub fn batch_norm_stats_reference(x: &[f64], shape: BatchNormShape) -> (Vec<f64>, Vec<f64>) {
    let count = shape.per_channel() as f64;
    (0..shape.channels)
        .map(|c| {
            let mean = channel_indices(shape, c).map(|i| x[i]).sum::<f64>() / count;
            let var = channel_indices(shape, c)
                .map(|i| (x[i] - mean).powi(2))
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .unzip()
}

/// Training-mode output `w·(x - μ)/√(σ² + ε) + b` with the batch statistics.
pub fn batch_norm_train_reference(
    x: &[f64],
    shape: BatchNormShape,
    weight: &[f64],
    bias: &[f64],
    eps: f64,
) -> Vec<f64> {
    let (mean, var) = batch_norm_stats_reference(x, shape);
    batch_norm_eval_reference(x, shape, weight, bias, &mean, &var, eps)
}

/// Output `w·(x - mean)/√(var + ε) + b` with given per-channel statistics (evaluation mode
/// with the running statistics).
pub fn batch_norm_eval_reference(
    x: &[f64],
    shape: BatchNormShape,
    weight: &[f64],
    bias: &[f64],
    mean: &[f64],
    var: &[f64],
    eps: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for c in 0..shape.channels {
        let rstd = 1.0 / (var[c] + eps).sqrt();
        for i in channel_indices(shape, c) {
            out[i] = weight[c] * (x[i] - mean[c]) * rstd + bias[c];
        }
    }
    out
}

/// Training-mode input gradient by the closed form
/// `dx = w·rstd·(ȳ - mean(ȳ) - x̂·mean(ȳ·x̂))`, per channel.
pub fn batch_norm_backward_reference(
    dy: &[f64],
    x: &[f64],
    shape: BatchNormShape,
    weight: &[f64],
    eps: f64,
) -> Vec<f64> {
    let (mean, var) = batch_norm_stats_reference(x, shape);
    let count = shape.per_channel() as f64;
    let mut dx = vec![0.0; x.len()];
    for c in 0..shape.channels {
        let rstd = 1.0 / (var[c] + eps).sqrt();
        let xhat = |i: usize| (x[i] - mean[c]) * rstd;
        let mean_dy = channel_indices(shape, c).map(|i| dy[i]).sum::<f64>() / count;
        let mean_dy_xhat = channel_indices(shape, c)
            .map(|i| dy[i] * xhat(i))
            .sum::<f64>()
            / count;
        for i in channel_indices(shape, c) {
            dx[i] = weight[c] * rstd * (dy[i] - mean_dy - xhat(i) * mean_dy_xhat);
        }
    }
    dx
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

/// Checks `dx`, `dweight` and `dbias` of [`batch_norm_backward`] and of
/// [`batch_norm_relu_backward`] (the backward of `relu(batch_norm(x))`) on a small NCHW input.
pub fn checks() -> Vec<CheckResult> {
    let mut results = check(false);
    results.extend(check(true));
    results
}

fn check(relu: bool) -> Vec<CheckResult> {
    const TOLERANCE: f64 = 1e-4;
    const STEP: f64 = 1e-4;
    let shape = BatchNormShape {
        batch: 3,
        channels: 2,
        spatial: 5,
    };
    let eps = 1e-5f32;
    let len = shape.batch * shape.channels * shape.spatial;
    let mut rng = Rng::new(0xB7);
    let (mut x, mut upstream) = (vec![0.0; len], vec![0.0; len]);
    let (mut weight, mut bias) = (vec![0.0; shape.channels], vec![0.0; shape.channels]);
    rng.fill_normal(&mut x, 0.5, 2.0);
    rng.fill_normal(&mut upstream, 0.0, 1.0);
    rng.fill_normal(&mut weight, 1.0, 0.5);
    rng.fill_normal(&mut bias, 0.0, 0.5);

    let mut out = vec![0.0; len];
    let (mut mean, mut rstd, mut shift) = (vec![0.0; 2], vec![0.0; 2], vec![0.0; 2]);
    let (mut running_mean, mut running_var) = (vec![0.0; 2], vec![1.0; 2]);
    let params = BatchNormParams {
        weight: &weight,
        bias: &bias,
        eps,
    };
    let running = RunningStats {
        mean: &mut running_mean,
        var: &mut running_var,
        momentum: 0.1,
    };
    let saved = SavedStatsMut {
        mean: &mut mean,
        rstd: &mut rstd,
        shift: &mut shift,
    };
    let activation = if relu {
        Activation::Relu
    } else {
        Activation::Identity
    };
    batch_norm_forward_train(&x, shape, params, running, activation, &mut out, saved)
        .expect("valid batch_norm input");
    let (mut dx, mut dweight, mut dbias) = (vec![0.0; len], vec![0.0; 2], vec![0.0; 2]);
    let saved = SavedStats {
        mean: &mean,
        rstd: &rstd,
        shift: &shift,
    };
    let grads = BatchNormGrads {
        dweight: &mut dweight,
        dbias: &mut dbias,
    };
    let backward = if relu {
        batch_norm_relu_backward
    } else {
        batch_norm_backward
    };
    backward(&upstream, &x, shape, &weight, saved, &mut dx, grads)
        .expect("valid batch_norm gradients");

    let (x64, w64, b64, g64) = (
        to_f64(&x),
        to_f64(&weight),
        to_f64(&bias),
        to_f64(&upstream),
    );
    let eps64 = eps as f64;
    let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
        let y = batch_norm_train_reference(x, shape, w, b, eps64);
        let act = |v: f64| if relu { v.max(0.0) } else { v };
        y.iter().zip(&g64).map(|(&y, g)| act(y) * g).sum()
    };
    let numeric_dx = numeric_gradient(|v| loss(v, &w64, &b64), &x64, STEP);
    let numeric_dweight = numeric_gradient(|v| loss(&x64, v, &b64), &w64, STEP);
    let numeric_dbias = numeric_gradient(|v| loss(&x64, &w64, v), &b64, STEP);
    let name = if relu {
        "batch_norm+relu"
    } else {
        "batch_norm"
    };
    vec![
        compare(&format!("{name} dx"), &dx, &numeric_dx, TOLERANCE),
        compare(
            &format!("{name} dweight"),
            &dweight,
            &numeric_dweight,
            TOLERANCE,
        ),
        compare(&format!("{name} dbias"), &dbias, &numeric_dbias, TOLERANCE),
    ]
}
