//! The backward of a [`Linear`] layer whose input gradient is added into, not overwritten:
//! the query, key and value projections (and the MLP's gate and up projections) read the
//! same input, so its gradient is the sum of theirs.
//!
//! ```text
//! dx (+)= dy Wᵀ        dW += xᵀ dy        db += Σ_rows dy
//! ```
//!
//! ```
//! use resnorm::models::llama::linear_backward;
//! use resnorm::nn::Linear;
//! let mut fc = Linear::new("fc", 2, 1, false).unwrap();
//! fc.weight.value.copy_from_slice(&[1.0, 2.0]);
//! let mut dx = [1.0, 1.0];
//! linear_backward(&mut fc, &mut dx, &[3.0, 4.0], &[1.0], true).unwrap();
//! assert_eq!(dx, [2.0, 3.0]);
//! assert_eq!(fc.weight.grad[..], [3.0, 4.0]);
//! ```

use crate::kernels::column_sums::add_column_sums;
use crate::kernels::{matmul, MatDims, Trans};
use crate::nn::Linear;
use crate::{Error, Result};

/// Writes (or with `accumulate` adds into) `dx = dy Wᵀ`; adds into the weight's and bias's
/// gradients. `x` is the forward's input `[rows, in]`, `dy` `[rows, out]`.
pub fn linear_backward(
    layer: &mut Linear,
    dx: &mut [f32],
    x: &[f32],
    dy: &[f32],
    accumulate: bool,
) -> Result<()> {
    let (n_in, n_out) = (layer.in_features(), layer.out_features());
    let rows = x.len() / n_in;
    if x.len() != rows * n_in || dx.len() != x.len() || dy.len() != rows * n_out {
        return Err(Error::shape(
            "linear_backward",
            format!(
                "{}: x {}, dx {}, dy {} elements for [rows, {n_in}] -> [rows, {n_out}]",
                layer.weight.name,
                x.len(),
                dx.len(),
                dy.len()
            ),
        ));
    }
    let dx_dims = MatDims {
        m: rows,
        k: n_out,
        n: n_in,
    };
    let trans = Trans { a: false, b: true };
    matmul(dx, dy, &layer.weight.value, dx_dims, trans, accumulate)?;
    let dw_dims = MatDims {
        m: n_in,
        k: rows,
        n: n_out,
    };
    let trans = Trans { a: true, b: false };
    matmul(&mut layer.weight.grad, x, dy, dw_dims, trans, true)?;
    match &mut layer.bias {
        Some(bias) => add_column_sums(&mut bias.grad, dy),
        None => Ok(()),
    }
}
