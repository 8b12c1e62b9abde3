//! Fully connected layer, stored as Hugging Face GPT-2's `Conv1D`: weight `[in, out]`.
//!
//! Over `rows` input rows `x [rows, in]`:
//!
//! ```text
//! forward   y  = x W + b                   [rows, out]
//! backward  dx = dy Wᵀ                     (overwritten)
//!           dW += xᵀ dy                    [in, out]
//!           db += Σ_rows dy                [out]
//! ```
//!
//! The layer owns `weight` and `bias`; the caller owns the activations. Backward needs the
//! forward's input `x` and the output gradient `dy`. The products run on
//! [`crate::kernels::matmul()`] (transposes by strides, no copies); the forward's bias is added
//! by [`crate::kernels::matmul_plus_row`], each thread adding it to the rows it just computed.
//! The bias gradient is [`crate::kernels::column_sums::add_column_sums`], bit-for-bit the same
//! for any thread count.
//!
//! ```
//! use resnorm::nn::Linear;
//! let mut fc = Linear::new("h.0.mlp.c_fc", 2, 3, true).unwrap();
//! fc.weight.value.copy_from_slice(&[1.0, 0.0, 2.0, 0.0, 1.0, 3.0]); // [in=2, out=3]
//! fc.bias.as_mut().unwrap().value.copy_from_slice(&[0.5, 0.5, 0.5]);
//! let x = [1.0, 2.0];
//! let mut y = [0.0; 3];
//! fc.forward(&mut y, &x).unwrap();
//! assert_eq!(y, [1.5, 2.5, 8.5]);
//! let mut dx = [0.0; 2];
//! fc.backward(&mut dx, &x, &[1.0, 1.0, 1.0]).unwrap();
//! assert_eq!(dx, [3.0, 4.0]);
//! assert_eq!(fc.weight.grad[..], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
//! assert!(fc.forward(&mut y, &[1.0, 2.0, 3.0]).is_err());
//! ```

use crate::kernels::column_sums::add_column_sums;
use crate::kernels::{matmul, matmul_plus_row, MatDims, Trans};
use crate::nn::{Param, ParamKind};
use crate::rng::Rng;
use crate::{Error, Result};

/// `y = x W + b` with `W` stored `[in, out]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// `{name}.weight`, `[in, out]`.
    pub weight: Param,
    /// `{name}.bias`, `[out]`, when the layer has one.
    pub bias: Option<Param>,
}

impl Linear {
    /// A zero-initialized layer whose parameters are called `{name}.weight` and `{name}.bias`.
    pub fn new(name: &str, in_features: usize, out_features: usize, bias: bool) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::invalid(
                "Linear::new",
                format!("{name}: sizes must be positive, got {in_features} -> {out_features}"),
            ));
        }
        let weight = Param::zeros(
            format!("{name}.weight"),
            vec![in_features, out_features],
            ParamKind::Weight,
        );
        let bias =
            bias.then(|| Param::zeros(format!("{name}.bias"), vec![out_features], ParamKind::Bias));
        Ok(Linear { weight, bias })
    }

    /// Draws the weight from `N(0, std²)` and zeroes the bias (GPT-2 uses `std = 0.02`).
    pub fn init(&mut self, rng: &mut Rng, std: f32) {
        rng.fill_normal(&mut self.weight.value, 0.0, std);
        if let Some(bias) = &mut self.bias {
            bias.value.fill(0.0);
        }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.shape[0]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.shape[1]
    }

    /// Hands `weight`, then `bias`, to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.weight);
        if let Some(bias) = &self.bias {
            f(bias);
        }
    }

    /// Hands `weight`, then `bias`, to `f` for writing.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        if let Some(bias) = &mut self.bias {
            f(bias);
        }
    }

    /// `out [rows, out] = x [rows, in] · W + b`, `rows = x.len() / in`.
    pub fn forward(&self, out: &mut [f32], x: &[f32]) -> Result<()> {
        let dims = self.dims("Linear::forward", x, out)?;
        match &self.bias {
            Some(bias) => {
                matmul_plus_row(out, x, &self.weight.value, &bias.value, dims, Trans::NONE)
            }
            None => matmul(out, x, &self.weight.value, dims, Trans::NONE, false),
        }
    }

    /// `out = x · W`, leaving out the bias: for a caller that adds it itself, fused into the
    /// kernel that reads `out` next (the GELU after an MLP's first layer, the attention heads
    /// after `c_attn`).
    pub fn forward_without_bias(&self, out: &mut [f32], x: &[f32]) -> Result<()> {
        let dims = self.dims("Linear::forward_without_bias", x, out)?;
        matmul(out, x, &self.weight.value, dims, Trans::NONE, false)
    }

    /// Writes `dx = dy Wᵀ`; adds `xᵀ dy` into the weight gradient and `Σ_rows dy` into the
    /// bias gradient. `x` is the forward's input.
    pub fn backward(&mut self, dx: &mut [f32], x: &[f32], dy: &[f32]) -> Result<()> {
        self.backward_without_bias(dx, x, dy)?;
        match &mut self.bias {
            Some(bias) => add_column_sums(&mut bias.grad, dy),
            None => Ok(()),
        }
    }

    /// [`Linear::backward`] leaving out the bias gradient: for a caller that sums it itself,
    /// as its kernel writes `dy` (the pair of [`Linear::forward_without_bias`]).
    pub fn backward_without_bias(&mut self, dx: &mut [f32], x: &[f32], dy: &[f32]) -> Result<()> {
        const OP: &str = "Linear::backward";
        let dims = self.dims(OP, x, dy)?;
        if dx.len() != x.len() {
            return Err(Error::shape(
                OP,
                format!("dx has {} elements, x has {}", dx.len(), x.len()),
            ));
        }
        let MatDims {
            m: rows,
            k: n_in,
            n: n_out,
        } = dims;
        let dx_dims = MatDims {
            m: rows,
            k: n_out,
            n: n_in,
        };
        matmul(
            dx,
            dy,
            &self.weight.value,
            dx_dims,
            Trans { a: false, b: true },
            false,
        )?;
        let dw_dims = MatDims {
            m: n_in,
            k: rows,
            n: n_out,
        };
        matmul(
            &mut self.weight.grad,
            x,
            dy,
            dw_dims,
            Trans { a: true, b: false },
            true,
        )
    }

    /// Checks `x [rows, in]` against `y [rows, out]` and returns the product's sizes.
    fn dims(&self, op: &'static str, x: &[f32], y: &[f32]) -> Result<MatDims> {
        let (n_in, n_out) = (self.in_features(), self.out_features());
        let rows = x.len() / n_in;
        if !x.len().is_multiple_of(n_in) || y.len() != rows * n_out {
            return Err(Error::shape(
                op,
                format!(
                    "{}: input has {} elements and output {}, expected [rows, {n_in}] and \
                     [rows, {n_out}]",
                    self.weight.name,
                    x.len(),
                    y.len()
                ),
            ));
        }
        Ok(MatDims {
            m: rows,
            k: n_in,
            n: n_out,
        })
    }
}
