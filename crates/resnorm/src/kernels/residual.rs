//! Residual connections `y = x + F(x)`: the add itself and its variants, forward and
//! backward side by side.
//!
//! | kernel | forward | backward |
//! |---|---|---|
//! | [`residual_add`] | `y = x + f` | `dx = ȳ`, `df = ȳ` |
//! | [`scaled_residual_add`] (DeepNorm, fixed `α`) | `y = α·x + f` | `dx = α·ȳ`, `df = ȳ` |
//! | [`gated_residual_add`] (ReZero, learned `α`) | `y = x + α·f` | `dx = ȳ`, `df = α·ȳ`, `dα += Σ ȳ·f` |
//!
//! Here `f = F(x)` is the branch's output. The backward of the plain add is the identity on
//! both inputs: the gradient reaches `x` unchanged through the skip path, whatever the
//! branch does, which is why deep residual networks train. A model composes it as
//!
//! ```text
//! dx_total = dx + F_backward(df)      e.g. dx_total = ȳ + F_backward(ȳ) for y = x + F(x)
//! ```
//!
//! Each backward *overwrites* `dx` and `df` (both are inputs of the add) and *adds* into
//! `dα` (a parameter). [`residual_add_assign`] then adds the branch's input gradient into
//! `dx` in place; it also serves as an in-place forward `x += f` on a residual stream.
//!
//! Element-wise work runs in parallel over blocks for large inputs. The `dα` reduction sums
//! fixed blocks (of a length set by the input length only) and adds the partial sums in
//! block order, so its result does not depend on the thread count or scheduling.
//!
//! ```
//! use resnorm::kernels::residual::{
//!     gated_residual_add, gated_residual_add_backward, residual_add, residual_add_assign,
//! };
//! let (x, f) = ([1.0, 2.0], [10.0, 20.0]);
//! let mut y = [0.0; 2];
//! residual_add(&x, &f, &mut y)?;
//! assert_eq!(y, [11.0, 22.0]);
//!
//! gated_residual_add(&x, 0.5, &f, &mut y)?;
//! assert_eq!(y, [6.0, 12.0]);
//! let dy = [1.0, -1.0];
//! let (mut dx, mut df, mut dalpha) = ([0.0; 2], [0.0; 2], 0.0);
//! gated_residual_add_backward(&dy, &f, 0.5, &mut dx, &mut df, &mut dalpha)?;
//! assert_eq!((dx, df, dalpha), ([1.0, -1.0], [0.5, -0.5], -10.0));
//!
//! // The branch's input gradient is added into dx afterwards.
//! residual_add_assign(&mut dx, &[0.25, 0.25])?;
//! assert_eq!(dx, [1.25, -0.75]);
//! # Ok::<(), resnorm::Error>(())
//! ```

use crate::threads::pool;
use crate::{Error, Result};
use rayon::prelude::*;

/// Inputs shorter than this run on the calling thread.
const PARALLEL_MIN_LEN: usize = 1 << 16;

/// Elements per parallel task.
const BLOCK_LEN: usize = 1 << 14;

/// The `dα` reduction uses at most this many blocks, each at least [`SUM_MIN_BLOCK_LEN`] long.
const SUM_MAX_BLOCKS: usize = 64;
const SUM_MIN_BLOCK_LEN: usize = 4096;

fn check_same_len(op: &'static str, names: [&str; 2], lens: [usize; 2]) -> Result<()> {
    if lens[0] == lens[1] {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!(
                "{} has {} elements but {} has {}",
                names[0], lens[0], names[1], lens[1]
            ),
        ))
    }
}

fn check_finite(op: &'static str, alpha: f32) -> Result<()> {
    if alpha.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("alpha must be finite, got {alpha}"),
        ))
    }
}

/// `out[i] = op(a[i], b[i])`, in parallel over blocks for long inputs.
fn map_pairs(a: &[f32], b: &[f32], out: &mut [f32], op: impl Fn(f32, f32) -> f32 + Sync) {
    let serial = |a: &[f32], b: &[f32], out: &mut [f32]| {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = op(a, b);
        }
    };
    if out.len() < PARALLEL_MIN_LEN {
        serial(a, b, out);
    } else {
        pool().install(|| {
            out.par_chunks_mut(BLOCK_LEN)
                .zip(a.par_chunks(BLOCK_LEN).zip(b.par_chunks(BLOCK_LEN)))
                .for_each(|(out, (a, b))| serial(a, b, out));
        });
    }
}

/// `acc[i] = op(acc[i], b[i])`, in parallel over blocks for long inputs.
fn update_pairs(acc: &mut [f32], b: &[f32], op: impl Fn(f32, f32) -> f32 + Sync) {
    let serial = |acc: &mut [f32], b: &[f32]| {
        for (a, &b) in acc.iter_mut().zip(b) {
            *a = op(*a, b);
        }
    };
    if acc.len() < PARALLEL_MIN_LEN {
        serial(acc, b);
    } else {
        pool().install(|| {
            acc.par_chunks_mut(BLOCK_LEN)
                .zip(b.par_chunks(BLOCK_LEN))
                .for_each(|(acc, b)| serial(acc, b));
        });
    }
}

/// `Σ a[i]·b[i]` over fixed blocks (eight accumulators each), partials added in order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let block = a
        .len()
        .div_ceil(SUM_MAX_BLOCKS)
        .max(SUM_MIN_BLOCK_LEN)
        .next_multiple_of(8);
    let mut partials = [0.0f32; SUM_MAX_BLOCKS];
    if a.len() < PARALLEL_MIN_LEN {
        for ((p, a), b) in partials
            .iter_mut()
            .zip(a.chunks(block))
            .zip(b.chunks(block))
        {
            *p = block_dot(a, b);
        }
    } else {
        pool().install(|| {
            partials
                .par_iter_mut()
                .zip(a.par_chunks(block).zip(b.par_chunks(block)))
                .for_each(|(p, (a, b))| *p = block_dot(a, b));
        });
    }
    partials.iter().sum()
}

fn block_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ac, bc) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            acc[i] += ac[i] * bc[i];
        }
    }
    let head = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    head + tail
}

/// Forward of the plain residual connection: `out = x + f`.
///
/// Errors: `x`, `f` and `out` of different lengths.
pub fn residual_add(x: &[f32], f: &[f32], out: &mut [f32]) -> Result<()> {
    const OP: &str = "residual_add";
    check_same_len(OP, ["x", "f"], [x.len(), f.len()])?;
    check_same_len(OP, ["x", "out"], [x.len(), out.len()])?;
    map_pairs(x, f, out, |x, f| x + f);
    Ok(())
}

/// Backward of [`residual_add`]: overwrites `dx = dy` and `df = dy`.
///
/// Errors: `dy`, `dx` and `df` of different lengths.
pub fn residual_add_backward(dy: &[f32], dx: &mut [f32], df: &mut [f32]) -> Result<()> {
    const OP: &str = "residual_add_backward";
    check_same_len(OP, ["dy", "dx"], [dy.len(), dx.len()])?;
    check_same_len(OP, ["dy", "df"], [dy.len(), df.len()])?;
    dx.copy_from_slice(dy);
    df.copy_from_slice(dy);
    Ok(())
}

/// In-place add `acc += f`: a residual stream updated in place, or a branch's input
/// gradient added into the skip path's `dx`.
///
/// Errors: `acc` and `f` of different lengths.
pub fn residual_add_assign(acc: &mut [f32], f: &[f32]) -> Result<()> {
    check_same_len("residual_add_assign", ["acc", "f"], [acc.len(), f.len()])?;
    update_pairs(acc, f, |a, f| a + f);
    Ok(())
}

/// Forward of the scaled residual connection (DeepNorm): `out = alpha·x + f`, `alpha` a
/// fixed constant.
///
/// Errors: lengths that differ, or `alpha` not finite.
pub fn scaled_residual_add(alpha: f32, x: &[f32], f: &[f32], out: &mut [f32]) -> Result<()> {
    const OP: &str = "scaled_residual_add";
    check_finite(OP, alpha)?;
    check_same_len(OP, ["x", "f"], [x.len(), f.len()])?;
    check_same_len(OP, ["x", "out"], [x.len(), out.len()])?;
    map_pairs(x, f, out, |x, f| alpha * x + f);
    Ok(())
}

/// Backward of [`scaled_residual_add`]: overwrites `dx = alpha·dy` and `df = dy`.
///
/// Errors: lengths that differ, or `alpha` not finite.
pub fn scaled_residual_add_backward(
    alpha: f32,
    dy: &[f32],
    dx: &mut [f32],
    df: &mut [f32],
) -> Result<()> {
    const OP: &str = "scaled_residual_add_backward";
    check_finite(OP, alpha)?;
    check_same_len(OP, ["dy", "dx"], [dy.len(), dx.len()])?;
    check_same_len(OP, ["dy", "df"], [dy.len(), df.len()])?;
    update_pairs(dx, dy, |_, dy| alpha * dy);
    df.copy_from_slice(dy);
    Ok(())
}

/// Forward of the gated residual connection (ReZero): `out = x + alpha·f`, `alpha` a
/// learned scalar.
///
/// Errors: lengths that differ, or `alpha` not finite.
pub fn gated_residual_add(x: &[f32], alpha: f32, f: &[f32], out: &mut [f32]) -> Result<()> {
    const OP: &str = "gated_residual_add";
    check_finite(OP, alpha)?;
    check_same_len(OP, ["x", "f"], [x.len(), f.len()])?;
    check_same_len(OP, ["x", "out"], [x.len(), out.len()])?;
    map_pairs(x, f, out, |x, f| x + alpha * f);
    Ok(())
}

/// Backward of [`gated_residual_add`]: overwrites `dx = dy` and `df = alpha·dy`, and adds
/// `Σ dy·f` into `dalpha`. `f` is the branch output the forward pass used.
///
/// Errors: lengths that differ, or `alpha` not finite.
pub fn gated_residual_add_backward(
    dy: &[f32],
    f: &[f32],
    alpha: f32,
    dx: &mut [f32],
    df: &mut [f32],
    dalpha: &mut f32,
) -> Result<()> {
    const OP: &str = "gated_residual_add_backward";
    check_finite(OP, alpha)?;
    check_same_len(OP, ["dy", "f"], [dy.len(), f.len()])?;
    check_same_len(OP, ["dy", "dx"], [dy.len(), dx.len()])?;
    check_same_len(OP, ["dy", "df"], [dy.len(), df.len()])?;
    dx.copy_from_slice(dy);
    update_pairs(df, dy, |_, dy| alpha * dy);
    *dalpha += dot(dy, f);
    Ok(())
}
