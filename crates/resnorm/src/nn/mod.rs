//! Layers: parameters plus the activations their backward needs.
//!
//! Contract of every layer: `forward` computes and caches what backward needs in buffers
//! sized once; `backward` *adds* into its parameters' gradients and writes the input
//! gradient; `visit_params` / `visit_params_mut` hand every [`Param`] to optimizers,
//! checkpoints and diagnostics in a fixed order.

mod conv2d;
mod global_avg_pool;
mod image_shape;
mod max_pool2d;
mod param;

pub use conv2d::{Conv2d, Conv2dConfig};
pub use global_avg_pool::GlobalAvgPool;
pub use image_shape::ImageShape;
pub use max_pool2d::MaxPool2d;
pub use param::{Param, ParamKind};
