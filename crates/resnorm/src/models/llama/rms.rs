//! RMSNorm whose gain is its stored weight plus a constant: `w` (Llama) or Gemma's `1 + w`,
//! so that a checkpoint's weights load as they are stored.
//!
//! ```text
//! y = x / √(mean(x²) + eps) ⊙ (offset + w)       dw += Σ_rows dy ⊙ x̂   (the gain's gradient)
//! ```
//!
//! The gain `offset + w` is kept beside the weight and refreshed by [`RmsNorm::sync`] (the
//! model calls it before every forward), so the kernels of `kernels/rms_norm.rs` run as
//! they are.
//!
//! ```
//! use resnorm::models::llama::RmsNorm;
//! let mut norm = RmsNorm::new("norm", 2, 1e-6, 1.0); // Gemma: the gain is 1 + w, w = 0
//! norm.sync();
//! let (mut y, mut rstd) = ([0.0; 2], [0.0; 1]);
//! norm.forward(&[3.0, -4.0], &mut y, &mut rstd).unwrap();
//! assert!((y[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-5);
//! ```

use crate::kernels::norm::{NormGrads, NormWeights};
use crate::kernels::rms_norm::{rms_norm_backward, rms_norm_forward};
use crate::nn::{Param, ParamKind};
use crate::AlignedVec;
use crate::Result;

/// An RMSNorm over `weight.len()` columns with gain `offset + weight`.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    /// `{name}.weight`, as the checkpoint stores it.
    pub weight: Param,
    /// `offset + weight`, refreshed by [`RmsNorm::sync`].
    gain: AlignedVec,
    offset: f32,
    eps: f32,
}

impl RmsNorm {
    /// A norm named `name` over `cols` columns whose gain starts at 1.
    pub fn new(name: &str, cols: usize, eps: f32, offset: f32) -> Self {
        let weight = Param::filled(
            format!("{name}.weight"),
            vec![cols],
            ParamKind::Norm,
            1.0 - offset,
        );
        RmsNorm {
            weight,
            gain: AlignedVec::zeros(cols),
            offset,
            eps,
        }
    }

    /// Recomputes the gain from the weight (after an update or a load).
    pub fn sync(&mut self) {
        for (g, w) in self.gain.iter_mut().zip(self.weight.value.iter()) {
            *g = self.offset + w;
        }
    }

    fn weights(&self) -> NormWeights<'_> {
        NormWeights {
            weight: &self.gain,
            bias: None,
            eps: self.eps,
        }
    }

    /// `out = Norm(x)` over rows of `weight.len()` columns, saving each row's `rstd`.
    pub fn forward(&self, x: &[f32], out: &mut [f32], rstd: &mut [f32]) -> Result<()> {
        rms_norm_forward(x, &self.weights(), out, rstd)
    }

    /// `dx = Norm'(x)ᵀ dy` (overwritten); adds into the weight's gradient.
    pub fn backward(&mut self, dy: &[f32], x: &[f32], rstd: &[f32], dx: &mut [f32]) -> Result<()> {
        let weights = NormWeights {
            weight: &self.gain,
            bias: None,
            eps: self.eps,
        };
        let grads = NormGrads {
            dweight: &mut self.weight.grad,
            dbias: None,
        };
        rms_norm_backward(dy, x, &weights, rstd, dx, grads)
    }
}
