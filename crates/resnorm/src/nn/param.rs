//! Trainable parameters: a value, its gradient and a stable name.
//!
//! Optimizers, checkpoints and diagnostics see a model only through [`Param`]s, handed out
//! by a layer's `visit_params`. The [`ParamKind`] tells an optimizer what a tensor is (AdamW
//! decays only [`ParamKind::Weight`] by default).
//!
//! ```
//! use resnorm::nn::{Param, ParamKind};
//! let mut p = Param::zeros("h.0.ln_1.weight", vec![4], ParamKind::Norm);
//! p.grad[0] += 1.0;
//! p.zero_grad();
//! assert_eq!(p.grad[..], [0.0; 4]);
//! ```

use crate::AlignedVec;

/// What a parameter is, for optimizer rules such as weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A matrix or convolution kernel.
    Weight,
    /// An additive bias.
    Bias,
    /// A normalization gain or shift.
    Norm,
    /// An embedding table.
    Embedding,
    /// A learned scalar gate (ReZero's alpha).
    Scalar,
}

/// One trainable tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Stable name, e.g. `h.0.attn.c_attn.weight` (Hugging Face GPT-2 layout).
    pub name: String,
    /// Dimensions as stored in checkpoints.
    pub shape: Vec<usize>,
    /// Current value, row-major, on cache lines.
    pub value: AlignedVec,
    /// Accumulated gradient of the loss, same layout as `value`.
    pub grad: AlignedVec,
    /// What the tensor is.
    pub kind: ParamKind,
}

impl Param {
    /// A zero-valued parameter with a zero gradient.
    pub fn zeros(name: impl Into<String>, shape: Vec<usize>, kind: ParamKind) -> Self {
        let len = shape.iter().product();
        Param {
            name: name.into(),
            shape,
            value: AlignedVec::zeros(len),
            grad: AlignedVec::zeros(len),
            kind,
        }
    }

    /// A parameter with every element equal to `value`.
    pub fn filled(name: impl Into<String>, shape: Vec<usize>, kind: ParamKind, value: f32) -> Self {
        let mut p = Param::zeros(name, shape, kind);
        p.value.fill(value);
        p
    }

    /// Clears the gradient.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True for a parameter with no elements.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}
