//! Layers: each owns its parameters; the activations its backward needs are buffers the
//! caller (a model) allocates once per `(batch, context)` and passes in, as in llm.c.
//!
//! Contract of every layer: `forward` writes its output into a caller's buffer; `backward`
//! *adds* into its parameters' gradients and overwrites the input gradient;
//! `visit_params` / `visit_params_mut` hand every [`Param`] to optimizers, checkpoints and
//! diagnostics in a fixed order.

pub mod attention;
pub mod batch_norm2d;
pub mod conv2d;
pub mod embedding;
pub mod global_avg_pool;
pub mod image_shape;
pub mod linear;
pub mod max_pool2d;
pub mod norm;
mod param;

pub use attention::CausalSelfAttention;
pub use batch_norm2d::BatchNorm2d;
pub use conv2d::{Conv2d, Conv2dConfig};
pub use embedding::Embedding;
pub use global_avg_pool::GlobalAvgPool;
pub use image_shape::ImageShape;
pub use linear::Linear;
pub use max_pool2d::MaxPool2d;
pub use param::{Param, ParamKind};
