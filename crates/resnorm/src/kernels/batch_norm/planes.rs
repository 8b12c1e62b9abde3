//! The per-plane loops of the BatchNorm kernels: each channel's statistics, the sums its
//! backward pass needs, and the affine output pass with its activation, over the contiguous
//! `H·W` planes of an NCHW buffer.
//!
//! Every loop is written in [`Vector`] at the level of `simd::level`: LLVM's auto-vectorizer
//! leaves loops with several accumulators, or with a ReLU's select, scalar. Each reduction
//! keeps sixteen independent partial sums and folds them in a fixed order, so results depend
//! only on the data, not on the thread or the instruction set that ran them.

use super::{Activation, BatchNormShape};
use crate::kernels::relu::{relu, relu_gate};
use crate::kernels::rows;
use crate::kernels::simd::{dispatch, Vector, LANES};
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

dispatch! {
    /// Channel `c`'s statistics by the corrected two-pass algorithm: a provisional mean
    /// `m₀`, then `Σ (x - m₀)` and `Σ (x - m₀)²` over its planes.
    pub(super) fn channel_stats(x: &[f32], shape: BatchNormShape, c: usize) -> ChannelStats
        => channel_stats_with
}

#[inline(always)]
fn channel_stats_with<V: Vector>(x: &[f32], shape: BatchNormShape, c: usize) -> ChannelStats {
    // Plain loops: a closure handed to an iterator adapter is compiled without the
    // caller's instruction set, and the vector's intrinsics inside it would become calls.
    let count = shape.per_channel() as f32;
    let mut total = 0.0f32;
    for plane in shape.planes(x, c) {
        total += sum::<V>(plane);
    }
    let provisional = total / count;
    let (mut deviation, mut squares) = (0.0f32, 0.0f32);
    for plane in shape.planes(x, c) {
        let (d, s) = rows::centered_sums::<V>(plane, provisional);
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
fn sum<V: Vector>(values: &[f32]) -> f32 {
    let body = values.len() - values.len() % LANES;
    let mut acc = V::zero();
    for chunk in values[..body].chunks_exact(LANES) {
        acc += V::read(chunk);
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
    fn lanes<V: Vector>(self, x: V) -> V {
        (x - V::splat(self.center)) * V::splat(self.scale) + V::splat(self.shift)
    }
}

dispatch! {
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
fn affine_plane_with<V: Vector>(out: &mut [f32], x: &[f32], affine: Affine, act: Activation) {
    match act {
        Activation::Identity => {
            map_plane::<V>(out, x, x, |v, _| affine.lanes(v), |v, _| affine.at(v));
        }
        Activation::Relu => map_plane::<V>(
            out,
            x,
            x,
            |v, _| {
                let v = affine.lanes(v);
                v.relu_gate(v)
            },
            |v, _| relu(affine.at(v)),
        ),
        Activation::AddRelu(skip) => map_plane::<V>(
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
fn map_plane<V: Vector>(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    f: impl Fn(V, V) -> V,
    f_one: impl Fn(f32, f32) -> f32,
) {
    let body = out.len() - out.len() % LANES;
    let (out_body, out_tail) = out.split_at_mut(body);
    let chunks = out_body.chunks_exact_mut(LANES);
    for ((o, a), b) in chunks.zip(a.chunks_exact(LANES)).zip(b.chunks_exact(LANES)) {
        f(V::read(a), V::read(b)).write(o);
    }
    for ((o, &a), &b) in out_tail.iter_mut().zip(&a[body..]).zip(&b[body..]) {
        *o = f_one(a, b);
    }
}

dispatch! {
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
fn backward_sums_with<V: Vector>(
    dy: &[f32],
    x: &[f32],
    center: f32,
    relu: Option<Affine>,
) -> [f32; 3] {
    match relu {
        None => gated_sums::<V>(dy, x, center, |_, g| g, |_, g| g),
        Some(v) => gated_sums::<V>(
            dy,
            x,
            center,
            |x, g| v.lanes(x).relu_gate(g),
            |x, g| relu_gate(v.at(x), g),
        ),
    }
}

#[inline(always)]
fn gated_sums<V: Vector>(
    dy: &[f32],
    x: &[f32],
    center: f32,
    gate: impl Fn(V, V) -> V,
    gate_one: impl Fn(f32, f32) -> f32,
) -> [f32; 3] {
    let (mut g, mut gd, mut d) = (V::zero(), V::zero(), V::zero());
    let center_lanes = V::splat(center);
    let body = dy.len() - dy.len() % LANES;
    for (dy, x) in dy[..body].chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
        let x = V::read(x);
        let (dev, gy) = (x - center_lanes, gate(x, V::read(dy)));
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

dispatch! {
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
fn backward_plane_with<V: Vector>(
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    [center, k, q, r]: [f32; 4],
    relu: Option<Affine>,
) {
    let [center_l, k_l, q_l, r_l] = [center, k, q, r].map(V::splat);
    let lanes = |x: V, g: V| k_l * g + q_l * (x - center_l) + r_l;
    let one = |x: f32, g: f32| k * g + q * (x - center) + r;
    match relu {
        None => map_plane::<V>(dx, x, dy, lanes, one),
        Some(v) => map_plane::<V>(
            dx,
            x,
            dy,
            |x, g| lanes(x, v.lanes(x).relu_gate(g)),
            |x, g| one(x, relu_gate(v.at(x), g)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::each_level;

    fn values(len: usize, k: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 + k) * 0.731).sin() * 3.0 + 0.5)
            .collect()
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// Every plane loop at every level gives the dispatched loop's bits (which the kernel
    /// tests compare with references): the vector's non-fused operations are exact.
    #[test]
    fn plane_loops_give_the_same_bits_on_every_level() {
        let shape = BatchNormShape {
            batch: 2,
            channels: 3,
            spatial: 37,
        };
        let len = shape.batch * shape.channels * shape.spatial;
        let (x, dy, skip) = (values(len, 0.0), values(len, 1.0), values(len, 2.0));
        let plane = shape.spatial;
        let affine = Affine {
            center: 0.4,
            scale: 1.3,
            shift: -0.2,
        };
        let stats = |s: ChannelStats| bits(&[s.mean, s.mean_residual, s.var]);
        let activations = [
            Activation::Identity,
            Activation::Relu,
            Activation::AddRelu(&skip[..plane]),
        ];
        let run_all = |stats_of: &dyn Fn(usize) -> Vec<u32>,
                       affine_of: &dyn Fn(&mut [f32], Activation<'_>),
                       sums_of: &dyn Fn(Option<Affine>) -> [f32; 3],
                       backward_of: &dyn Fn(&mut [f32], Option<Affine>)| {
            let mut all: Vec<u32> = (0..shape.channels).flat_map(stats_of).collect();
            for act in activations {
                let mut out = vec![0.0; plane];
                affine_of(&mut out, act);
                all.extend(bits(&out));
            }
            for relu in [None, Some(affine)] {
                all.extend(bits(&sums_of(relu)));
                let mut dx = vec![0.0; plane];
                backward_of(&mut dx, relu);
                all.extend(bits(&dx));
            }
            all
        };
        let (x_plane, dy_plane) = (&x[..plane], &dy[..plane]);
        let coefficients = [0.3, 0.7, -0.4, 0.05];
        let dispatched = run_all(
            &|c| stats(channel_stats(&x, shape, c)),
            &|out, act| affine_plane(out, x_plane, affine, act),
            &|relu| backward_sums(dy_plane, x_plane, 0.3, relu),
            &|dx, relu| backward_plane(dx, dy_plane, x_plane, coefficients, relu),
        );
        each_level!(|V, level| {
            let at_level = run_all(
                &|c| stats(channel_stats_with::<V>(&x, shape, c)),
                &|out, act| affine_plane_with::<V>(out, x_plane, affine, act),
                &|relu| backward_sums_with::<V>(dy_plane, x_plane, 0.3, relu),
                &|dx, relu| backward_plane_with::<V>(dx, dy_plane, x_plane, coefficients, relu),
            );
            assert_eq!(at_level, dispatched, "{level}");
        });
    }
}
