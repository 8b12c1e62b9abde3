//! Models built from the layers in [`crate::nn`]: compositions of layers and the one place
//! where a residual/normalization placement becomes wiring.

pub mod causal_lm;
pub mod gpt;
pub mod image_classifier;
pub mod llama;
pub mod mlp;
pub mod resnet;
pub mod sampling;
pub mod seq2seq;

pub use causal_lm::CausalLm;
pub use image_classifier::ImageClassifier;
