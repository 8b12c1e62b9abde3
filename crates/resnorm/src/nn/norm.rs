//! A normalization layer (LayerNorm or RMSNorm) owning its gain and shift, on top of the
//! kernels in `kernels/layer_norm.rs`, `kernels/rms_norm.rs` and `kernels/add_norm.rs`.
//!
//! ```text
//! LayerNorm: y = (x - mean(x)) / sqrt(var(x) + eps) ⊙ weight + bias
//! RMSNorm:   y = x / sqrt(mean(x²) + eps) ⊙ weight
//! fused:     sum = x + residual;  y = Norm(sum)
//! ```
//!
//! The per-row statistics that backward needs live in a [`NormSaved`] the caller allocates
//! once for its number of rows.
//!
//! ```
//! use resnorm::kernels::norm::NormKind;
//! use resnorm::nn::norm::{Norm, NormSaved};
//! let mut ln = Norm::new("ln_f", NormKind::Layer, 4, 1e-5);
//! let x = [1.0, 2.0, 3.0, 4.0];
//! let mut y = [0.0; 4];
//! let mut saved = NormSaved::new(NormKind::Layer, 1);
//! ln.forward(&x, &mut y, &mut saved).unwrap();
//! assert!((y.iter().sum::<f32>()).abs() < 1e-5); // zero mean
//! let mut dx = [0.0; 4];
//! ln.backward(&[1.0, 0.0, 0.0, 0.0], &x, &saved, &mut dx).unwrap();
//! assert!(ln.weight.grad[0] < 0.0 && ln.bias.as_ref().unwrap().grad[0] == 1.0);
//! ```

use super::{Param, ParamKind};
use crate::kernels::add_norm::{add_norm_backward, add_norm_forward, UpstreamGrads};
use crate::kernels::layer_norm::{layer_norm_backward, layer_norm_forward};
use crate::kernels::norm::{NormGrads, NormKind, NormStats, NormStatsMut, NormWeights};
use crate::kernels::rms_norm::{rms_norm_backward, rms_norm_forward};
use crate::Result;

/// Per-row statistics saved by a forward pass for its backward.
#[derive(Clone, Debug, PartialEq)]
pub struct NormSaved {
    /// Row means (empty for RMSNorm).
    pub mean: Vec<f32>,
    /// Row reciprocal standard deviations (or reciprocal RMS).
    pub rstd: Vec<f32>,
}

impl NormSaved {
    /// Buffers for `rows` rows of a `kind` normalization.
    pub fn new(kind: NormKind, rows: usize) -> Self {
        let mean_rows = if kind == NormKind::Layer { rows } else { 0 };
        NormSaved {
            mean: vec![0.0; mean_rows],
            rstd: vec![0.0; rows],
        }
    }
}

/// LayerNorm (gain and shift) or RMSNorm (gain only) over rows of `weight.len()` columns.
#[derive(Clone, Debug)]
pub struct Norm {
    /// LayerNorm or RMSNorm.
    pub kind: NormKind,
    /// Gain, `{name}.weight`, initialized to 1.
    pub weight: Param,
    /// Shift, `{name}.bias`, initialized to 0; LayerNorm only.
    pub bias: Option<Param>,
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl Norm {
    /// A norm named `name` over `cols` columns, at its identity initialization.
    pub fn new(name: &str, kind: NormKind, cols: usize, eps: f32) -> Self {
        let weight = Param::filled(format!("{name}.weight"), vec![cols], ParamKind::Norm, 1.0);
        let bias = (kind == NormKind::Layer)
            .then(|| Param::zeros(format!("{name}.bias"), vec![cols], ParamKind::Norm));
        Norm {
            kind,
            weight,
            bias,
            eps,
        }
    }

    fn weights(&self) -> NormWeights<'_> {
        NormWeights {
            weight: &self.weight.value,
            bias: self.bias.as_ref().map(|b| &b.value[..]),
            eps: self.eps,
        }
    }

    /// The values to read and the gradients to add into, borrowed together.
    fn weights_and_grads(&mut self) -> (NormWeights<'_>, NormGrads<'_>) {
        let (bias, dbias) = match &mut self.bias {
            Some(b) => (Some(&b.value[..]), Some(&mut b.grad[..])),
            None => (None, None),
        };
        let weights = NormWeights {
            weight: &self.weight.value,
            bias,
            eps: self.eps,
        };
        (
            weights,
            NormGrads {
                dweight: &mut self.weight.grad,
                dbias,
            },
        )
    }

    /// `out = Norm(x)`, saving the row statistics.
    pub fn forward(&self, x: &[f32], out: &mut [f32], saved: &mut NormSaved) -> Result<()> {
        match self.kind {
            NormKind::Layer => {
                layer_norm_forward(x, &self.weights(), out, &mut saved.mean, &mut saved.rstd)
            }
            NormKind::Rms => rms_norm_forward(x, &self.weights(), out, &mut saved.rstd),
        }
    }

    /// `dx = Norm'(x)ᵀ dy` (overwritten); adds into the gain and shift gradients.
    pub fn backward(
        &mut self,
        dy: &[f32],
        x: &[f32],
        saved: &NormSaved,
        dx: &mut [f32],
    ) -> Result<()> {
        let kind = self.kind;
        let (weights, grads) = self.weights_and_grads();
        match kind {
            NormKind::Layer => {
                layer_norm_backward(dy, x, &weights, &saved.mean, &saved.rstd, dx, grads)
            }
            NormKind::Rms => rms_norm_backward(dy, x, &weights, &saved.rstd, dx, grads),
        }
    }

    /// Fused `sum = x + residual; out = Norm(sum)` in one pass over memory.
    pub fn add_forward(
        &self,
        x: &[f32],
        residual: &[f32],
        sum: &mut [f32],
        out: &mut [f32],
        saved: &mut NormSaved,
    ) -> Result<()> {
        let stats = NormStatsMut {
            mean: &mut saved.mean,
            rstd: &mut saved.rstd,
        };
        add_norm_forward(self.kind, x, residual, &self.weights(), sum, out, stats)
    }

    /// Backward of [`Norm::add_forward`]: `dx = dsum + Norm'(sum)ᵀ dout`, the gradient of
    /// both `x` and `residual` (overwritten); adds into the gain and shift gradients.
    pub fn add_backward(
        &mut self,
        upstream: UpstreamGrads<'_>,
        sum: &[f32],
        saved: &NormSaved,
        dx: &mut [f32],
    ) -> Result<()> {
        let kind = self.kind;
        let (weights, grads) = self.weights_and_grads();
        let stats = NormStats {
            mean: &saved.mean,
            rstd: &saved.rstd,
        };
        add_norm_backward(kind, upstream, sum, &weights, stats, dx, grads)
    }

    /// Hands the gain, then the shift, to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.weight);
        if let Some(bias) = &self.bias {
            f(bias);
        }
    }

    /// Hands the gain, then the shift, to `f` for updating.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        if let Some(bias) = &mut self.bias {
            f(bias);
        }
    }
}
