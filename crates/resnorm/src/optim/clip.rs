//! Gradient clipping by global L2 norm, as `torch.nn.utils.clip_grad_norm_`.
//!
//! ```text
//! ‖g‖   = √(Σ_params Σ_i g_i²)            (accumulated in f64, parameters in order)
//! scale = max_norm / (‖g‖ + 1e-6)
//! g     ← g · scale                       only when scale < 1
//! ```
//! The sum is taken over chunks of 64 Ki elements of each parameter, in parallel on
//! [`crate::threads::pool`], each chunk in eight interleaved `f64` partial sums (so it
//! vectorizes); the chunk sums are then added in order. The result depends only on the
//! parameters, never on threads.
//!
//! A non-finite norm (a gradient holding inf or NaN) is returned with the gradients left
//! untouched, so that the caller can skip the step or stop; PyTorch would instead scale every
//! gradient by `0` or `NaN`.
//!
//! ```
//! use resnorm::nn::{Param, ParamKind};
//! use resnorm::optim::clip_grad_norm;
//!
//! let mut a = Param::zeros("a", vec![1], ParamKind::Weight);
//! let mut b = Param::zeros("b", vec![1], ParamKind::Bias);
//! a.grad.copy_from_slice(&[3.0]);
//! b.grad.copy_from_slice(&[4.0]);
//! let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0).unwrap();
//! assert_eq!(norm, 5.0);
//! assert!((a.grad[0] - 0.6).abs() < 1e-6 && (b.grad[0] - 0.8).abs() < 1e-6);
//!
//! let before = a.grad[0];
//! b.grad[0] = f32::NAN;
//! assert!(clip_grad_norm(&mut [&mut a, &mut b], 1.0).unwrap().is_nan());
//! assert_eq!(a.grad[0], before); // untouched
//! ```

use std::borrow::{Borrow, BorrowMut};

use rayon::prelude::*;

use crate::nn::Param;
use crate::{Error, Result};

/// Added to the norm before dividing, as PyTorch does.
const NORM_EPS: f64 = 1e-6;

/// Gradients are summed and scaled in chunks of this many elements, so that one large
/// parameter (a 50257-token embedding) is shared between threads too.
const CHUNK: usize = 1 << 16;

/// The L2 norm of all gradients together, accumulated in `f64` in parameter order.
pub fn grad_norm<P: Borrow<Param> + Sync>(params: &[P]) -> f32 {
    grad_sum_of_squares(params).sqrt() as f32
}

/// `Σ g²` over the gradients of `params`, in `f64` and in the order [`grad_norm`] adds
/// them: one process's part of a global norm whose gradients are spread over several.
pub fn grad_sum_of_squares<P: Borrow<Param> + Sync>(params: &[P]) -> f64 {
    let partials: Vec<f64> = crate::threads::pool().install(|| {
        params
            .par_iter()
            .flat_map(|p| p.borrow().grad.par_chunks(CHUNK).map(slice_sum_of_squares))
            .collect()
    });
    partials.iter().sum()
}

/// `Σ g²` in `f64`, element `i` going to partial sum `i mod 8`, partials added in order.
fn slice_sum_of_squares(values: &[f32]) -> f64 {
    let mut partial = [0.0f64; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (p, &g) in partial.iter_mut().zip(chunk) {
            *p += g as f64 * g as f64;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&g| g as f64 * g as f64)
        .sum();
    partial.iter().sum::<f64>() + tail
}

/// Scales all gradients so that their global L2 norm is at most `max_norm` (positive,
/// finite) and returns the norm from before clipping (see the [module docs](self)).
pub fn clip_grad_norm<P: BorrowMut<Param> + Send + Sync>(
    params: &mut [P],
    max_norm: f32,
) -> Result<f32> {
    let norm = grad_sum_of_squares(params).sqrt();
    clip_to_norm(params, norm, max_norm)?;
    Ok(norm as f32)
}

/// Scales the gradients of `params` as [`clip_grad_norm`] does, for a global `norm`
/// computed elsewhere (the root of the sum of every process's [`grad_sum_of_squares`]).
pub fn clip_to_norm<P: BorrowMut<Param> + Send + Sync>(
    params: &mut [P],
    norm: f64,
    max_norm: f32,
) -> Result<()> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::invalid(
            "clip_grad_norm",
            format!("max_norm = {max_norm}, must be finite and positive"),
        ));
    }
    let scale = max_norm as f64 / (norm + NORM_EPS);
    if (norm as f32).is_finite() && scale < 1.0 {
        let scale = scale as f32;
        crate::threads::pool().install(|| {
            params
                .par_iter_mut()
                .flat_map(|p| p.borrow_mut().grad.par_chunks_mut(CHUNK))
                .for_each(|chunk| chunk.iter_mut().for_each(|g| *g *= scale));
        });
    }
    Ok(())
}
