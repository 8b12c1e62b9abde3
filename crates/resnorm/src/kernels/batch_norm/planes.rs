//! The per-plane loops of the BatchNorm kernels: each channel's statistics, the sums its
//! backward pass needs, and the affine output pass with its activation, over the contiguous
//! `H·W` planes of an NCHW buffer.
//!
//! Every loop is written in [`Lanes`] (AVX when the CPU has it): LLVM's auto-vectorizer
//! leaves loops with several accumulators, or with a ReLU's select, scalar. Each reduction
//! keeps sixteen independent partial sums and folds them in a fixed order, so results depend
//! only on the data, not on the thread or the instruction set that ran them.

use super::{Activation, BatchNormShape};
use crate::kernels::lanes::{simd_dispatch, Lanes, LANES};
use crate::kernels::relu::{relu, relu_gate};
use crate::kernels::rows;
use rayon::prelude::*;
use std::ops::Range;

/// Elements below which an element-wise task is not split further between threads.
const MIN_TASK_ELEMENTS: usize = 4096;

/// Statistics of one channel: `mean` is the `f32` mean, `mean + mean_residual` the exact
/// one to about `f32` precision relative to the spread, `var` the biased variance.
pub(super) struct ChannelStats {
    pub(super) mean: f32,
    pub(super) mean_residual: f32,
    pub(super) var: f32,
}

simd_dispatch! {
    /// Channel `c`'s statistics by the corrected two-pass algorithm: a provisional mean
    /// `m₀`, then `Σ (x - m₀)` and `Σ (x - m₀)²` over its planes.
    pub(super) fn channel_stats(x: &[f32], shape: BatchNormShape, c: usize) -> ChannelStats
        => channel_stats_with
}

#[inline(always)]
fn channel_stats_with<L: Lanes>(x: &[f32], shape: BatchNormShape, c: usize) -> ChannelStats {
    // Plain loops: a closure handed to an iterator adapter is compiled without the
    // caller's AVX, and the lanes' intrinsics inside it would become calls.
    let count = shape.per_channel() as f32;
    let mut total = 0.0f32;
    for plane in shape.planes(x, c) {
        total += sum::<L>(plane);
    }
    let provisional = total / count;
    let (mut deviation, mut squares) = (0.0f32, 0.0f32);
    for plane in shape.planes(x, c) {
        let (d, s) = rows::centered_sums::<L>(plane, provisional);
        deviation += d;
        squares += s;
    }
    let shift = deviation / count;
    let mean = provisional + shift;
    ChannelStats {
        mean,
        mean_residual: shift - (mean - provisional),
        var: (squares / count - shift * shift).max(0.0),
    }
}

/// `Σ v`.
#[inline(always)]
fn sum<L: Lanes>(values: &[f32]) -> f32 {
    let body = values.len() - values.len() % LANES;
    let mut acc = L::zero();
    for chunk in values[..body].chunks_exact(LANES) {
        acc += L::load(chunk);
    }
    values[body..].iter().fold(acc.sum(), |t, &v| t + v)
}

/// Calls `write(c, n, plane)` with the output plane of channel `c` of sample `n`, for every
/// sample and every channel in `channels`, in parallel over planes.
pub(super) fn for_each_plane(
    shape: BatchNormShape,
    channels: Range<usize>,
    out: &mut [f32],
    write: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    let spatial = shape.spatial;
    let span = channels.start * spatial..channels.end * spatial;
    let min_planes = (MIN_TASK_ELEMENTS / spatial).max(1);
    out.par_chunks_mut(shape.channels * spatial)
        .enumerate()
        .for_each(|(n, row)| {
            row[span.clone()]
                .par_chunks_mut(spatial)
                .enumerate()
                .with_min_len(min_planes)
                .for_each(|(j, plane)| write(channels.start + j, n, plane));
        });
}

/// A channel's affine map `v = (x - center)·scale + shift`, the normalized value: computed
/// the same way (no fused multiply-add) in lanes and one by one, so both give the same bits,
/// in the forward pass and when the backward pass recomputes a ReLU's mask.
#[derive(Clone, Copy, Debug)]
pub(super) struct Affine {
    pub(super) center: f32,
    pub(super) scale: f32,
    pub(super) shift: f32,
}

impl Affine {
    #[inline(always)]
    fn at(self, x: f32) -> f32 {
        (x - self.center) * self.scale + self.shift
    }

    #[inline(always)]
    fn lanes<L: Lanes>(self, x: L) -> L {
        (x - L::splat(self.center)) * L::splat(self.scale) + L::splat(self.shift)
    }
}

simd_dispatch! {
    /// `out = act(v)` with `v = affine(x)` over one plane; an [`Activation::AddRelu`]
    /// holds that plane of the skip input.
    pub(super) fn affine_plane(
        out: &mut [f32],
        x: &[f32],
        affine: Affine,
        activation: Activation<'_>,
    ) => affine_plane_with
}

#[inline(always)]
fn affine_plane_with<L: Lanes>(out: &mut [f32], x: &[f32], affine: Affine, act: Activation) {
    match act {
        Activation::Identity => {
            map_plane::<L>(out, x, x, |v, _| affine.lanes(v), |v, _| affine.at(v));
        }
        Activation::Relu => map_plane::<L>(
            out,
            x,
            x,
            |v, _| {
                let v = affine.lanes(v);
                v.relu_gate(v)
            },
            |v, _| relu(affine.at(v)),
        ),
        Activation::AddRelu(skip) => map_plane::<L>(
            out,
            x,
            skip,
            |v, s| {
                let v = affine.lanes(v) + s;
                v.relu_gate(v)
            },
            |v, s| relu(affine.at(v) + s),
        ),
    }
}

/// `out[i] = f(a[i], b[i])`: by lanes over whole chunks, then one by one.
#[inline(always)]
fn map_plane<L: Lanes>(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    f: impl Fn(L, L) -> L,
    f_one: impl Fn(f32, f32) -> f32,
) {
    let body = out.len() - out.len() % LANES;
    let (out_body, out_tail) = out.split_at_mut(body);
    let chunks = out_body.chunks_exact_mut(LANES);
    for ((o, a), b) in chunks.zip(a.chunks_exact(LANES)).zip(b.chunks_exact(LANES)) {
        f(L::load(a), L::load(b)).store(o);
    }
    for ((o, &a), &b) in out_tail.iter_mut().zip(&a[body..]).zip(&b[body..]) {
        *o = f_one(a, b);
    }
}

simd_dispatch! {
    /// `[Σ ȳ, Σ ȳ·(x - center), Σ (x - center)]` over one plane, where `ȳ = dy`, or, given
    /// the map `v = relu(x)` to the values the forward's ReLU saw, `dy` where `v > 0`.
    pub(super) fn backward_sums(
        dy: &[f32],
        x: &[f32],
        center: f32,
        relu: Option<Affine>,
    ) -> [f32; 3] => backward_sums_with
}

#[inline(always)]
fn backward_sums_with<L: Lanes>(
    dy: &[f32],
    x: &[f32],
    center: f32,
    relu: Option<Affine>,
) -> [f32; 3] {
    match relu {
        None => gated_sums::<L>(dy, x, center, |_, g| g, |_, g| g),
        Some(v) => gated_sums::<L>(
            dy,
            x,
            center,
            |x, g| v.lanes(x).relu_gate(g),
            |x, g| relu_gate(v.at(x), g),
        ),
    }
}

#[inline(always)]
fn gated_sums<L: Lanes>(
    dy: &[f32],
    x: &[f32],
    center: f32,
    gate: impl Fn(L, L) -> L,
    gate_one: impl Fn(f32, f32) -> f32,
) -> [f32; 3] {
    let (mut g, mut gd, mut d) = (L::zero(), L::zero(), L::zero());
    let center_lanes = L::splat(center);
    let body = dy.len() - dy.len() % LANES;
    for (dy, x) in dy[..body].chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
        let x = L::load(x);
        let (dev, gy) = (x - center_lanes, gate(x, L::load(dy)));
        g += gy;
        gd += gy * dev;
        d += dev;
    }
    let mut sums = [g.sum(), gd.sum(), d.sum()];
    for (&dy, &x) in dy[body..].iter().zip(&x[body..]) {
        let (dev, gy) = (x - center, gate_one(x, dy));
        sums = [sums[0] + gy, sums[1] + gy * dev, sums[2] + dev];
    }
    sums
}

simd_dispatch! {
    /// `dx = k·ȳ + q·(x - center) + r` over one plane, `ȳ` as in [`backward_sums`];
    /// `coefficients` is `[center, k, q, r]`.
    pub(super) fn backward_plane(
        dx: &mut [f32],
        dy: &[f32],
        x: &[f32],
        coefficients: [f32; 4],
        relu: Option<Affine>,
    ) => backward_plane_with
}

#[inline(always)]
fn backward_plane_with<L: Lanes>(
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    [center, k, q, r]: [f32; 4],
    relu: Option<Affine>,
) {
    let [center_l, k_l, q_l, r_l] = [center, k, q, r].map(L::splat);
    let lanes = |x: L, g: L| k_l * g + q_l * (x - center_l) + r_l;
    let one = |x: f32, g: f32| k * g + q * (x - center) + r;
    match relu {
        None => map_plane::<L>(dx, x, dy, lanes, one),
        Some(v) => map_plane::<L>(
            dx,
            x,
            dy,
            |x, g| lanes(x, v.lanes(x).relu_gate(g)),
            |x, g| one(x, relu_gate(v.at(x), g)),
        ),
    }
}
