//! Layers: parameters plus the activations their backward needs.
//!
//! Contract of every layer: `forward` computes and caches what backward needs in buffers
//! sized once; `backward` *adds* into its parameters' gradients and writes the input
//! gradient; `visit_params` / `visit_params_mut` hand every [`Param`] to optimizers,
//! checkpoints and diagnostics in a fixed order.

mod attention;
mod embedding;
mod linear;
mod param;

pub use attention::CausalSelfAttention;
pub use embedding::Embedding;
pub use linear::Linear;
pub use param::{Param, ParamKind};
