//! Batch normalization over `(N, C, H, W)` and `(N, C)` inputs, PyTorch semantics, forward
//! (training and evaluation) and backward side by side.
//!
//! The input is `N` samples of `C` channels of `S = H·W` values each, stored NCHW: channel
//! `c` of sample `n` is the contiguous plane `x[(n·C + c)·S ..][..S]`; a 2-D `(N, C)` input
//! is the case `S = 1`. Every statistic is per channel, over its `m = N·S` values.
//!
//! **Training.** With the batch mean `μ_c`, the *biased* variance `σ²_c` and
//! `rstd_c = 1/√(σ²_c + ε)`,
//!
//! ```text
//! x̂ = (x - μ_c)·rstd_c        y = w_c·x̂ + b_c
//! running_mean_c ← (1 - momentum)·running_mean_c + momentum·μ_c
//! running_var_c  ← (1 - momentum)·running_var_c  + momentum·σ²_c·m/(m - 1)
//! ```
//!
//! (the running variance takes the *unbiased* estimate, so `m = 1` is refused as PyTorch
//! does). `μ_c`, `rstd_c` and the output's per-channel shift (below) are saved for the
//! backward pass.
//!
//! **Evaluation.** `y = w_c·(x - running_mean_c)/√(running_var_c + ε) + b_c`.
//!
//! **Backward (training).** With `ȳ` the upstream gradient and means over the channel's
//! `m` values,
//!
//! ```text
//! dx  = w_c·rstd_c·(ȳ - mean(ȳ) - x̂·mean(ȳ·x̂))      (overwritten)
//! dw_c += Σ ȳ·x̂        db_c += Σ ȳ                       (accumulated)
//! ```
//!
//! **Numerics.** Statistics use the corrected two-pass algorithm in `f32`: a first pass
//! gives a provisional mean `m₀`, a second accumulates `Σ(x - m₀)` and `Σ(x - m₀)²`, so the
//! exact mean is `m₀ + δ` with `δ = Σ(x - m₀)/m` and `σ² = Σ(x - m₀)²/m - δ²` (never
//! `E[x²] - E[x]²`). The output is computed as `(x - μ)·scale + shift`, where `μ` is the
//! saved (rounded) mean and `shift` carries the part of the exact mean that rounding `μ` to
//! `f32` lost; the backward pass recomputes that part the same way. `x - μ` is exact when
//! `x` is near `μ`, so inputs with a large offset (mean 1e4, spread 1e-2) are normalized
//! to about `f32` precision.
//!
//! **Activations.** A ResNet follows almost every BatchNorm with a ReLU, or with the add of
//! a shortcut and a ReLU. The forward passes apply that [`Activation`] as they write `y`,
//! and [`batch_norm_relu_backward`] gates `ȳ` by the ReLU's mask `[v > 0]`, recomputing the
//! normalized `v` from `x` and the saved statistics instead of reading a saved output: the
//! activation costs no pass over memory in either direction.
//!
//! **Threads.** Each channel's statistics are reduced by one thread in a fixed order (so
//! results do not depend on the thread count), channels in parallel; the element-wise
//! pass runs in parallel over planes.
//!
//! ```
//! use resnorm::kernels::batch_norm::{
//!     batch_norm_backward, batch_norm_forward_eval, batch_norm_forward_train, Activation,
//!     BatchNormGrads, BatchNormParams, BatchNormShape, RunningStats, SavedStats, SavedStatsMut,
//! };
//! // Two samples, one channel, two values each: the channel holds 1, 3, 5, 7.
//! let shape = BatchNormShape { batch: 2, channels: 1, spatial: 2 };
//! let x = [1.0, 3.0, 5.0, 7.0];
//! let params = BatchNormParams { weight: &[2.0], bias: &[1.0], eps: 1e-5 };
//! let (mut running_mean, mut running_var) = ([0.0], [1.0]);
//! let running = RunningStats { mean: &mut running_mean, var: &mut running_var, momentum: 0.5 };
//! let (mut y, mut mean, mut rstd, mut shift) = ([0.0; 4], [0.0], [0.0], [0.0]);
//! let saved = SavedStatsMut { mean: &mut mean, rstd: &mut rstd, shift: &mut shift };
//! batch_norm_forward_train(&x, shape, params, running, Activation::Identity, &mut y, saved)?;
//! // mean 4, biased variance 5, unbiased 20/3.
//! assert_eq!(mean[0], 4.0);
//! let expected_rstd = 1.0 / (5.0f32 + 1e-5).sqrt();
//! assert!((rstd[0] - expected_rstd).abs() < 1e-7);
//! assert!((y[0] - (1.0 - 2.0 * 3.0 * expected_rstd)).abs() < 1e-6);
//! assert_eq!(running_mean[0], 2.0);
//! assert!((running_var[0] - (0.5 + 0.5 * 20.0 / 3.0)).abs() < 1e-6);
//!
//! // The output's gradient with respect to the bias is 1 per element.
//! let dy = [1.0; 4];
//! let (mut dx, mut dweight, mut dbias) = ([9.0; 4], [0.0], [0.0]);
//! let saved = SavedStats { mean: &mean, rstd: &rstd, shift: &shift };
//! let grads = BatchNormGrads { dweight: &mut dweight, dbias: &mut dbias };
//! batch_norm_backward(&dy, &x, shape, params.weight, saved, &mut dx, grads)?;
//! assert_eq!(dbias[0], 4.0);
//! assert!(dweight[0].abs() < 1e-6 && dx.iter().all(|v| v.abs() < 1e-6));
//!
//! // Evaluation uses the running statistics; here with a ReLU in the same pass.
//! let (mean, var) = (&running_mean, &running_var);
//! batch_norm_forward_eval(&x, shape, params, mean, var, Activation::Relu, &mut y)?;
//! let expected = 1.0 + 2.0 * (7.0 - 2.0) / (running_var[0] + 1e-5).sqrt();
//! assert!((y[3] - expected).abs() < 1e-5);
//! assert_eq!(y[0], 0.0); // 1 + 2·(1 - 2)/√4.33 < 0
//! # Ok::<(), resnorm::Error>(())
//! ```

mod planes;

use crate::threads::pool;
use crate::{Error, Result};
use planes::{affine_plane, backward_plane, backward_sums, channel_stats, for_each_plane, Affine};
use rayon::prelude::*;

/// Channels whose per-channel coefficients are held on the stack at once; wider inputs are
/// processed in groups of this many channels.
const CHANNEL_GROUP: usize = 1024;

/// Sizes of an NCHW input: `batch` samples of `channels` channels of `spatial` (= H·W)
/// values; `spatial = 1` for a 2-D `(N, C)` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchNormShape {
    /// N, the number of samples.
    pub batch: usize,
    /// C, the number of channels (and of weights, biases and statistics).
    pub channels: usize,
    /// H·W, the values per channel per sample.
    pub spatial: usize,
}

impl BatchNormShape {
    /// `N·C·S`, the number of elements of the input, or an error when a size is zero or
    /// the product overflows.
    pub fn len(&self, op: &'static str) -> Result<usize> {
        if self.batch == 0 || self.channels == 0 || self.spatial == 0 {
            return Err(Error::invalid(
                op,
                format!("every size must be at least 1, got {self:?}"),
            ));
        }
        self.batch
            .checked_mul(self.channels)
            .and_then(|v| v.checked_mul(self.spatial))
            .ok_or_else(|| Error::invalid(op, format!("{self:?} overflows usize")))
    }

    /// `N·S`, the number of values each channel's statistics are taken over.
    pub fn per_channel(&self) -> usize {
        self.batch * self.spatial
    }

    /// The plane of channel `c` of sample `n`.
    fn plane<'a>(&self, data: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        &data[(n * self.channels + c) * self.spatial..][..self.spatial]
    }

    /// Channel `c`'s plane of every sample, in sample order.
    fn planes<'a>(&self, data: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> {
        let shape = *self;
        (0..self.batch).map(move |n| shape.plane(data, n, c))
    }
}

/// The affine parameters and `eps` of a BatchNorm layer (one weight and bias per channel).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormParams<'a> {
    /// Per-channel gain `w`.
    pub weight: &'a [f32],
    /// Per-channel shift `b`.
    pub bias: &'a [f32],
    /// Added to the variance before the square root; finite and `> 0` (PyTorch: 1e-5).
    pub eps: f32,
}

/// Running statistics, updated in place by a training forward pass.
#[derive(Debug)]
pub struct RunningStats<'a> {
    /// Per-channel running mean.
    pub mean: &'a mut [f32],
    /// Per-channel running (unbiased) variance.
    pub var: &'a mut [f32],
    /// Weight of the new batch statistic, in `[0, 1]` (PyTorch: 0.1).
    pub momentum: f32,
}

/// The batch statistics a training forward pass saved for its backward pass.
#[derive(Clone, Copy, Debug)]
pub struct SavedStats<'a> {
    /// Per-channel batch mean (rounded to `f32`).
    pub mean: &'a [f32],
    /// Per-channel `1/√(σ² + ε)` of the biased batch variance.
    pub rstd: &'a [f32],
    /// Per-channel shift of the normalized output, `y = (x - mean)·w·rstd + shift`: the bias
    /// less the part of the exact mean that rounding `mean` lost.
    pub shift: &'a [f32],
}

/// Where a training forward pass writes the [`SavedStats`], one value per channel each.
#[derive(Debug)]
pub struct SavedStatsMut<'a> {
    /// Batch mean.
    pub mean: &'a mut [f32],
    /// `1/√(σ² + ε)`.
    pub rstd: &'a mut [f32],
    /// Shift of the normalized output.
    pub shift: &'a mut [f32],
}

/// What a forward pass applies to the normalized values `v` before writing them.
#[derive(Clone, Copy, Debug)]
pub enum Activation<'a> {
    /// `y = v`.
    Identity,
    /// `y = relu(v)`; [`batch_norm_relu_backward`] goes back through both.
    Relu,
    /// `y = relu(v + skip)`, `skip` shaped like the input: a residual block's add and
    /// ReLU. Its backward is the caller's (the gradient at the sum, `dy·[y > 0]`, reaches
    /// the skip and, through [`batch_norm_backward`], the input).
    AddRelu(&'a [f32]),
}

impl<'a> Activation<'a> {
    /// The activation of plane `(n, c)`: its skip input cut to that plane.
    fn plane(self, shape: BatchNormShape, n: usize, c: usize) -> Activation<'a> {
        match self {
            Activation::AddRelu(skip) => Activation::AddRelu(shape.plane(skip, n, c)),
            other => other,
        }
    }
}

/// Channel `c`'s normalized value as the training forward pass computed it,
/// `v = (x - mean)·w·rstd + shift`, from what it saved.
fn saved_affine(weight: &[f32], saved: SavedStats, c: usize) -> Affine {
    Affine {
        center: saved.mean[c],
        scale: weight[c] * saved.rstd[c],
        shift: saved.shift[c],
    }
}

/// Parameter gradients, added into by the backward pass.
#[derive(Debug)]
pub struct BatchNormGrads<'a> {
    /// Gradient of the weight, `+= Σ ȳ·x̂` per channel.
    pub dweight: &'a mut [f32],
    /// Gradient of the bias, `+= Σ ȳ` per channel.
    pub dbias: &'a mut [f32],
}

fn check_len(op: &'static str, what: &str, len: usize, expected: usize) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!("{what} has {len} elements, expected {expected}"),
        ))
    }
}

/// Checks a skip input's length against the input's, `len`.
fn check_activation(op: &'static str, activation: Activation, len: usize) -> Result<()> {
    match activation {
        Activation::AddRelu(skip) => check_len(op, "skip", skip.len(), len),
        Activation::Identity | Activation::Relu => Ok(()),
    }
}

/// Checks the weight and the saved statistics against `channels`.
fn check_saved(op: &'static str, weight: &[f32], saved: SavedStats, channels: usize) -> Result<()> {
    check_len(op, "weight", weight.len(), channels)?;
    check_len(op, "saved mean", saved.mean.len(), channels)?;
    check_len(op, "saved rstd", saved.rstd.len(), channels)?;
    check_len(op, "saved shift", saved.shift.len(), channels)
}

fn check_params(op: &'static str, params: &BatchNormParams, channels: usize) -> Result<()> {
    check_len(op, "weight", params.weight.len(), channels)?;
    check_len(op, "bias", params.bias.len(), channels)?;
    if !(params.eps.is_finite() && params.eps > 0.0) {
        return Err(Error::invalid(
            op,
            format!("eps must be finite and > 0, got {}", params.eps),
        ));
    }
    Ok(())
}

/// Training-mode forward: normalizes with the batch statistics, writes
/// `activation(normalized)` to `out`, saves the statistics into `saved`, and updates the
/// running statistics in place.
///
/// Errors: any length that does not fit `shape` (`x`, `out` and a skip input: `N·C·S`;
/// everything else: `C`), a zero size, `eps` not finite and `> 0`, `momentum` outside
/// `[0, 1]`, or a single value per channel (`N·S = 1`, whose unbiased variance is undefined).
pub fn batch_norm_forward_train(
    x: &[f32],
    shape: BatchNormShape,
    params: BatchNormParams,
    running: RunningStats,
    activation: Activation,
    out: &mut [f32],
    saved: SavedStatsMut,
) -> Result<()> {
    const OP: &str = "batch_norm_forward_train";
    let len = shape.len(OP)?;
    let channels = shape.channels;
    check_len(OP, "x", x.len(), len)?;
    check_len(OP, "out", out.len(), len)?;
    check_activation(OP, activation, len)?;
    check_params(OP, &params, channels)?;
    check_len(OP, "running mean", running.mean.len(), channels)?;
    check_len(OP, "running var", running.var.len(), channels)?;
    check_len(OP, "saved mean", saved.mean.len(), channels)?;
    check_len(OP, "saved rstd", saved.rstd.len(), channels)?;
    check_len(OP, "saved shift", saved.shift.len(), channels)?;
    let momentum = running.momentum;
    if !(0.0..=1.0).contains(&momentum) {
        return Err(Error::invalid(
            OP,
            format!("momentum must be in [0, 1], got {momentum}"),
        ));
    }
    let count = shape.per_channel();
    if count < 2 {
        return Err(Error::invalid(
            OP,
            format!("expected more than 1 value per channel when training, got {shape:?}"),
        ));
    }
    let unbiased = count as f32 / (count - 1) as f32;
    let mut scale = [0.0f32; CHANNEL_GROUP];
    pool().install(|| {
        for first in (0..channels).step_by(CHANNEL_GROUP) {
            let group = first..(first + CHANNEL_GROUP).min(channels);
            let width = group.len();
            (
                saved.mean[group.clone()].par_iter_mut(),
                saved.rstd[group.clone()].par_iter_mut(),
                saved.shift[group.clone()].par_iter_mut(),
                running.mean[group.clone()].par_iter_mut(),
                running.var[group.clone()].par_iter_mut(),
                scale[..width].par_iter_mut(),
            )
                .into_par_iter()
                .enumerate()
                .for_each(|(j, (mean, rstd, shift, run_mean, run_var, scale))| {
                    let c = first + j;
                    let stats = channel_stats(x, shape, c);
                    *mean = stats.mean;
                    *rstd = 1.0 / (stats.var + params.eps).sqrt();
                    *scale = params.weight[c] * *rstd;
                    *shift = params.bias[c] - stats.mean_residual * *scale;
                    *run_mean = momentum * stats.mean + (1.0 - momentum) * *run_mean;
                    *run_var = momentum * (stats.var * unbiased) + (1.0 - momentum) * *run_var;
                });
            let (mean, shift) = (&saved.mean[group.clone()], &saved.shift[group.clone()]);
            for_each_plane(shape, group, out, |c, n, out| {
                let j = c - first;
                let affine = Affine {
                    center: mean[j],
                    scale: scale[j],
                    shift: shift[j],
                };
                let x = shape.plane(x, n, c);
                affine_plane(out, x, affine, activation.plane(shape, n, c));
            });
        }
    });
    Ok(())
}

/// The normalized values of the last training forward pass, before its activation:
/// `out = (x - mean)·w·rstd + shift` from the statistics it `saved` (for diagnostics that
/// look at a layer's response after the fused pass has gone on to its activation).
///
/// Errors: lengths that do not fit `shape`, or a zero size.
pub fn batch_norm_normalized(
    x: &[f32],
    shape: BatchNormShape,
    weight: &[f32],
    saved: SavedStats,
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "batch_norm_normalized";
    let len = shape.len(OP)?;
    check_len(OP, "x", x.len(), len)?;
    check_len(OP, "out", out.len(), len)?;
    check_saved(OP, weight, saved, shape.channels)?;
    pool().install(|| {
        for_each_plane(shape, 0..shape.channels, out, |c, n, out| {
            let x = shape.plane(x, n, c);
            affine_plane(out, x, saved_affine(weight, saved, c), Activation::Identity);
        });
    });
    Ok(())
}

/// Evaluation-mode forward: normalizes with the running statistics, writes
/// `activation(normalized)` to `out`.
///
/// Errors: lengths that do not fit `shape`, a zero size, `eps` not finite and `> 0`, or a
/// running variance that is negative or not finite.
pub fn batch_norm_forward_eval(
    x: &[f32],
    shape: BatchNormShape,
    params: BatchNormParams,
    running_mean: &[f32],
    running_var: &[f32],
    activation: Activation,
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "batch_norm_forward_eval";
    let len = shape.len(OP)?;
    let channels = shape.channels;
    check_len(OP, "x", x.len(), len)?;
    check_len(OP, "out", out.len(), len)?;
    check_activation(OP, activation, len)?;
    check_params(OP, &params, channels)?;
    check_len(OP, "running mean", running_mean.len(), channels)?;
    check_len(OP, "running var", running_var.len(), channels)?;
    if let Some((c, v)) = running_var
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
    {
        return Err(Error::invalid(
            OP,
            format!("running variance of channel {c} must be finite and >= 0, got {v}"),
        ));
    }
    let mut scale = [0.0f32; CHANNEL_GROUP];
    pool().install(|| {
        for first in (0..channels).step_by(CHANNEL_GROUP) {
            let group = first..(first + CHANNEL_GROUP).min(channels);
            for ((scale, &w), &var) in scale
                .iter_mut()
                .zip(&params.weight[group.clone()])
                .zip(&running_var[group.clone()])
            {
                *scale = w / (var + params.eps).sqrt();
            }
            let scale = &scale[..group.len()];
            for_each_plane(shape, group, out, |c, n, out| {
                let affine = Affine {
                    center: running_mean[c],
                    scale: scale[c - first],
                    shift: params.bias[c],
                };
                let x = shape.plane(x, n, c);
                affine_plane(out, x, affine, activation.plane(shape, n, c));
            });
        }
    });
    Ok(())
}

/// Training-mode backward: overwrites `dx` with the input gradient and adds the weight and
/// bias gradients into `grads`. `dy` is the gradient at the normalized values (for an
/// [`Activation::AddRelu`] forward, the gradient at the sum), `x` the forward input,
/// `saved` what the forward saved.
///
/// Errors: lengths that do not fit `shape`, a zero size, or a single value per channel.
pub fn batch_norm_backward(
    dy: &[f32],
    x: &[f32],
    shape: BatchNormShape,
    weight: &[f32],
    saved: SavedStats,
    dx: &mut [f32],
    grads: BatchNormGrads,
) -> Result<()> {
    backward::<false>(dy, x, shape, weight, saved, dx, grads)
}

/// The backward pass of `relu(batch_norm(x))` (an [`Activation::Relu`] forward): `dy` is the
/// gradient at the ReLU's output. The ReLU's mask `[v > 0]` is recomputed from `x` and the
/// saved statistics (the same floats as the forward's `v`), so the gradient is gated on the
/// fly instead of in a separate pass over a saved output. Otherwise as
/// [`batch_norm_backward`].
pub fn batch_norm_relu_backward(
    dy: &[f32],
    x: &[f32],
    shape: BatchNormShape,
    weight: &[f32],
    saved: SavedStats,
    dx: &mut [f32],
    grads: BatchNormGrads,
) -> Result<()> {
    backward::<true>(dy, x, shape, weight, saved, dx, grads)
}

/// [`batch_norm_backward`], with `dy` first gated by the forward's ReLU when `RELU`.
fn backward<const RELU: bool>(
    dy: &[f32],
    x: &[f32],
    shape: BatchNormShape,
    weight: &[f32],
    saved: SavedStats,
    dx: &mut [f32],
    grads: BatchNormGrads,
) -> Result<()> {
    let op = if RELU {
        "batch_norm_relu_backward"
    } else {
        "batch_norm_backward"
    };
    let len = shape.len(op)?;
    let channels = shape.channels;
    check_len(op, "dy", dy.len(), len)?;
    check_len(op, "x", x.len(), len)?;
    check_len(op, "dx", dx.len(), len)?;
    check_saved(op, weight, saved, channels)?;
    check_len(op, "dweight", grads.dweight.len(), channels)?;
    check_len(op, "dbias", grads.dbias.len(), channels)?;
    let count = shape.per_channel();
    if count < 2 {
        return Err(Error::invalid(
            op,
            format!("expected more than 1 value per channel when training, got {shape:?}"),
        ));
    }
    let inv_count = 1.0 / count as f32;
    // dx = k·(ȳ - mean ȳ - x̂·mean(ȳ x̂)) is computed as k·ȳ + q·(x - center) + r per channel.
    let (mut k, mut q, mut r) = (
        [0.0f32; CHANNEL_GROUP],
        [0.0f32; CHANNEL_GROUP],
        [0.0f32; CHANNEL_GROUP],
    );
    pool().install(|| {
        for first in (0..channels).step_by(CHANNEL_GROUP) {
            let group = first..(first + CHANNEL_GROUP).min(channels);
            let width = group.len();
            (
                grads.dweight[group.clone()].par_iter_mut(),
                grads.dbias[group.clone()].par_iter_mut(),
                k[..width].par_iter_mut(),
                q[..width].par_iter_mut(),
                r[..width].par_iter_mut(),
            )
                .into_par_iter()
                .enumerate()
                .for_each(|(j, (dweight, dbias, k, q, r))| {
                    let c = first + j;
                    let (center, rstd) = (saved.mean[c], saved.rstd[c]);
                    let relu = RELU.then(|| saved_affine(weight, saved, c));
                    let [sum_dy, sum_dy_dev, sum_dev] = shape
                        .planes(dy, c)
                        .zip(shape.planes(x, c))
                        .map(|(dy, x)| backward_sums(dy, x, center, relu))
                        .fold([0.0f32; 3], |[a, b, d], [pa, pb, pd]| {
                            [a + pa, b + pb, d + pd]
                        });
                    // x̂ = ((x - center) - residual)·rstd, with the exact mean center + residual.
                    let residual = sum_dev * inv_count;
                    let sum_dy_xhat = rstd * (sum_dy_dev - residual * sum_dy);
                    *dbias += sum_dy;
                    *dweight += sum_dy_xhat;
                    *k = weight[c] * rstd;
                    *q = -*k * rstd * sum_dy_xhat * inv_count;
                    *r = -*k * sum_dy * inv_count - *q * residual;
                });
            for_each_plane(shape, group, dx, |c, n, dx| {
                let j = c - first;
                let relu = RELU.then(|| saved_affine(weight, saved, c));
                let (x, dy) = (shape.plane(x, n, c), shape.plane(dy, n, c));
                backward_plane(dx, dy, x, [saved.mean[c], k[j], q[j], r[j]], relu);
            });
        }
    });
    Ok(())
}
