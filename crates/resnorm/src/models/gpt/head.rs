//! The output of a GPT: the final norm as the placement has it, then the head tied to the
//! token embedding, forward and backward side by side. Training ([`Gpt::forward`]) runs it
//! on every row, decoding ([`Decoder`](super::Decoder)) on one, so both compute the same
//! logits the same way.
//!
//! ```text
//! z = ln_f(x)          pre-ln, sandwich, no-residual    dx = ln_f'ᵀ dz
//! z = x + ln_f(d)      resi-dual (d: the dual stream)    dx = dz;  dd = ln_f'ᵀ dz
//! z = x                no final norm                     dx = dz
//! logits = z · wteᵀ                                      dz = dlogits · wte;  dwte += dlogitsᵀ · z
//! ```
//! The final norm alone (`final_norm_forward` / `final_norm_backward`) ends the body that a
//! classifier pools. `x` is the last residual stream `[rows, C]`; the dual stream exactly when
//! [`Placement::has_dual_stream`](super::Placement::has_dual_stream).

use super::{Gpt, GptConfig};
use crate::kernels::residual::residual_add;
use crate::kernels::{matmul, MatDims, Trans};
use crate::nn::norm::NormSaved;
use crate::AlignedVec;
use crate::Result;

/// What the head keeps of its forward pass for `rows` rows.
#[derive(Clone, Debug)]
pub(crate) struct HeadActs {
    /// `z`, when it differs from the last stream (there is a final norm).
    z: AlignedVec,
    /// resi-dual's `ln_f(d)` (empty otherwise).
    normed_dual: AlignedVec,
    ln_f_saved: NormSaved,
}

impl HeadActs {
    /// Buffers for `rows` rows of a model built from `config`.
    pub(crate) fn new(config: &GptConfig, rows: usize) -> Self {
        let n = rows * config.width;
        let placement = config.placement;
        HeadActs {
            z: AlignedVec::zeros(if placement.has_final_norm() { n } else { 0 }),
            normed_dual: AlignedVec::zeros(if placement.has_dual_stream() { n } else { 0 }),
            ln_f_saved: NormSaved::new(config.norm, rows),
        }
    }

    /// The head's input `z`: the final norm's output, or the last stream `x` itself.
    pub(crate) fn z<'a>(&'a self, x: &'a [f32]) -> &'a [f32] {
        if self.z.is_empty() {
            x
        } else {
            &self.z
        }
    }
}

impl Gpt {
    /// `logits [rows, V]` from the last stream `x` (and resi-dual's dual stream `dual`).
    pub(crate) fn head_forward(
        &self,
        x: &[f32],
        dual: Option<&[f32]>,
        acts: &mut HeadActs,
        logits: &mut [f32],
    ) -> Result<()> {
        self.final_norm_forward(x, dual, acts)?;
        let (width, vocab) = (self.config.width, self.config.vocab);
        let dims = MatDims {
            m: x.len() / width,
            k: width,
            n: vocab,
        };
        let trans = Trans { a: false, b: true };
        matmul(
            logits,
            acts.z(x),
            &self.embedding.wte.value,
            dims,
            trans,
            false,
        )
    }

    /// The final norm as the placement has it: `z` (read with [`HeadActs::z`]) from the
    /// last stream `x` and resi-dual's `dual`. A classifier's body ends here.
    pub(crate) fn final_norm_forward(
        &self,
        x: &[f32],
        dual: Option<&[f32]>,
        acts: &mut HeadActs,
    ) -> Result<()> {
        let HeadActs {
            z,
            normed_dual,
            ln_f_saved,
        } = acts;
        match (&self.ln_f, dual) {
            (Some(ln_f), Some(dual)) => {
                ln_f.forward(dual, normed_dual, ln_f_saved)?;
                residual_add(x, normed_dual, z)
            }
            (Some(ln_f), None) => ln_f.forward(x, z, ln_f_saved),
            (None, _) => Ok(()),
        }
    }

    /// Backward of [`Gpt::head_forward`] from `dlogits`: writes `dx`, and resi-dual's `d_dual`,
    /// and adds into the gradients of `wte` and `ln_f`. `dz` is scratch `[rows, C]`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn head_backward(
        &mut self,
        dlogits: &[f32],
        x: &[f32],
        dual: Option<&[f32]>,
        acts: &HeadActs,
        dz: &mut [f32],
        dx: &mut [f32],
        d_dual: &mut [f32],
    ) -> Result<()> {
        let (width, vocab) = (self.config.width, self.config.vocab);
        let rows = x.len() / width;
        let wte = &mut self.embedding.wte;
        let dims = MatDims {
            m: rows,
            k: vocab,
            n: width,
        };
        matmul(dz, dlogits, &wte.value, dims, Trans::NONE, false)?;
        let dims = MatDims {
            m: vocab,
            k: rows,
            n: width,
        };
        let trans = Trans { a: true, b: false };
        matmul(&mut wte.grad, dlogits, acts.z(x), dims, trans, true)?;
        self.final_norm_backward(dz, x, dual, acts, dx, d_dual)
    }

    /// Backward of [`Gpt::final_norm_forward`] from `dz`: writes `dx`, and resi-dual's
    /// `d_dual`, and adds into the gradients of `ln_f`.
    pub(crate) fn final_norm_backward(
        &mut self,
        dz: &[f32],
        x: &[f32],
        dual: Option<&[f32]>,
        acts: &HeadActs,
        dx: &mut [f32],
        d_dual: &mut [f32],
    ) -> Result<()> {
        match (&mut self.ln_f, dual) {
            (Some(ln_f), Some(dual)) => {
                dx.copy_from_slice(dz);
                ln_f.backward(dz, dual, &acts.ln_f_saved, d_dual)
            }
            (Some(ln_f), None) => ln_f.backward(dz, x, &acts.ln_f_saved, dx),
            (None, _) => {
                dx.copy_from_slice(dz);
                Ok(())
            }
        }
    }
}
