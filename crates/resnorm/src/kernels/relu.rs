//! ReLU, `y = max(x, 0)`, and its backward `dx = dy · [y > 0]`.
//!
//! The backward pass reads the *output* `y` rather than the input: `y > 0` exactly when
//! `x > 0`, so a caller may run the forward pass in place ([`relu_forward_in_place`]) and
//! keep only `y`. As in PyTorch (`threshold_backward`), the gradient at `x = 0` is 0, and a
//! NaN input gives a NaN output and lets its gradient through. Large buffers are split into
//! one block per thread of [`crate::threads::pool`]; elementwise work is deterministic.
//!
//! ```
//! use resnorm::kernels::{relu_backward, relu_forward};
//! let x = [-1.0, 0.0, 2.0];
//! let mut y = [0.0; 3];
//! relu_forward(&x, &mut y).unwrap();
//! assert_eq!(y, [0.0, 0.0, 2.0]);
//! let mut dx = [9.0; 3];
//! relu_backward(&y, &[1.0, 1.0, 1.0], &mut dx).unwrap();
//! assert_eq!(dx, [0.0, 0.0, 1.0]);
//! ```

use rayon::prelude::*;

use crate::kernels::simd::{rows_per_block, ONE_BLOCK_PER_THREAD};
use crate::threads;
use crate::{Error, Result};

/// Below this many elements the kernels run on the calling thread.
const PARALLEL_MIN_LEN: usize = 1 << 16;

fn check_lens(op: &'static str, lens: &[(&str, usize)]) -> Result<()> {
    let (first, expected) = lens[0];
    match lens.iter().find(|(_, len)| *len != expected) {
        Some((name, len)) => Err(Error::shape(
            op,
            format!("{name} has {len} elements, {first} has {expected}"),
        )),
        None => Ok(()),
    }
}

/// Runs `body(start, block)` on consecutive blocks of `values`, in parallel when large;
/// `start` is the block's offset in `values`.
fn blockwise(values: &mut [f32], body: impl Fn(usize, &mut [f32]) + Sync) {
    if values.len() < PARALLEL_MIN_LEN {
        body(0, values);
        return;
    }
    let block = rows_per_block(values.len(), ONE_BLOCK_PER_THREAD);
    threads::pool().install(|| {
        values
            .par_chunks_mut(block)
            .enumerate()
            .for_each(|(b, chunk)| body(b * block, chunk));
    });
}

/// `max(x, 0)`, with NaN passed through (a select, not a conditional store: it vectorizes
/// without masked stores).
#[inline(always)]
pub(crate) fn relu(x: f32) -> f32 {
    if x <= 0.0 {
        0.0
    } else {
        x
    }
}

/// The gradient `g` where the ReLU's output `y` is positive (or NaN), else 0.
#[inline(always)]
pub(crate) fn relu_gate(y: f32, g: f32) -> f32 {
    if y <= 0.0 {
        0.0
    } else {
        g
    }
}

/// `output = max(input, 0)` elementwise.
pub fn relu_forward(input: &[f32], output: &mut [f32]) -> Result<()> {
    check_lens(
        "relu_forward",
        &[("input", input.len()), ("output", output.len())],
    )?;
    blockwise(output, |start, y| {
        for (y, &x) in y.iter_mut().zip(&input[start..]) {
            *y = relu(x);
        }
    });
    Ok(())
}

/// `values = max(values, 0)` elementwise, in place.
pub fn relu_forward_in_place(values: &mut [f32]) {
    blockwise(values, |_, y| {
        for y in y.iter_mut() {
            *y = relu(*y);
        }
    });
}

/// `output = max(a + b, 0)` elementwise, in one pass: the end of a ResNet block, its
/// branch plus its shortcut, then ReLU (the same floats as an add followed by
/// [`relu_forward_in_place`]). Its backward is [`relu_backward`] followed by the add's
/// (the gradient reaches `a` and `b` unchanged).
pub fn add_relu_forward(a: &[f32], b: &[f32], output: &mut [f32]) -> Result<()> {
    check_lens(
        "add_relu_forward",
        &[("a", a.len()), ("b", b.len()), ("output", output.len())],
    )?;
    blockwise(output, |start, y| {
        for (y, (&a, &b)) in y.iter_mut().zip(a[start..].iter().zip(&b[start..])) {
            *y = relu(a + b);
        }
    });
    Ok(())
}

/// `dinput = doutput · [output > 0]` (overwrites `dinput`).
pub fn relu_backward(output: &[f32], doutput: &[f32], dinput: &mut [f32]) -> Result<()> {
    check_lens(
        "relu_backward",
        &[
            ("output", output.len()),
            ("doutput", doutput.len()),
            ("dinput", dinput.len()),
        ],
    )?;
    blockwise(dinput, |start, d| {
        let pairs = output[start..].iter().zip(&doutput[start..]);
        for (d, (&y, &g)) in d.iter_mut().zip(pairs) {
            *d = relu_gate(y, g);
        }
    });
    Ok(())
}

/// `grad = grad · [output > 0]`, in place: turns the output gradient into the input gradient.
pub fn relu_backward_in_place(output: &[f32], grad: &mut [f32]) -> Result<()> {
    check_lens(
        "relu_backward_in_place",
        &[("output", output.len()), ("grad", grad.len())],
    )?;
    blockwise(grad, |start, g| {
        for (g, &y) in g.iter_mut().zip(&output[start..]) {
            *g = relu_gate(y, *g);
        }
    });
    Ok(())
}
