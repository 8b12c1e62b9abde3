//! Layers: each owns its parameters; the activations its backward needs are buffers the
//! caller (a model) allocates once per `(batch, context)` and passes in, as in llm.c.
//!
//! Contract of every layer: `forward` writes its output into a caller's buffer; `backward`
//! *adds* into its parameters' gradients and overwrites the input gradient;
//! `visit_params` / `visit_params_mut` hand every [`Param`] to optimizers, checkpoints and
//! diagnostics in a fixed order.

pub mod attention;
pub mod embedding;
pub mod linear;
pub mod norm;
mod param;

pub use attention::CausalSelfAttention;
pub use embedding::Embedding;
pub use linear::Linear;
pub use param::{Param, ParamKind};
