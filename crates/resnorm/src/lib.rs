//! # resnorm
//!
//! Residual connections (`x + F(x)`) and normalization (LayerNorm, RMSNorm, BatchNorm): fast,
//! gradient-checked CPU kernels with explicit forward and backward passes, the layers and
//! models built on them, and the diagnostics that show why they make deep networks trainable.
//!
//! The crate is layered, each level depending only on the ones before it:
//! [`kernels`] (pure functions on slices), [`nn`] (layers owning their parameters), then
//! models, optimizers ([`optim`]) and [`data`] (text and image readers, tokenizers, the
//! built-in corpus, batches); [`checkpoint`] saves and restores them, and [`checkpoint_set`]
//! makes a trainer's checkpoint one directory that appears complete or not at all. Each
//! application is a folder with its config, trainer, checkpoint and data: [`lm`] trains GPT
//! language models;
//! [`vision`] trains image classifiers (ResNets, plain nets, deep MLPs) and runs the
//! degradation study; [`translate`] holds the parallel data, BPE vocabulary and metrics
//! (BLEU, chrF) of translation. [`threads`] holds the one thread pool every kernel runs on; [`rng`] the
//! seeded generator that makes runs reproducible.

pub mod aligned;
pub mod checkpoint;
pub mod checkpoint_set;
pub mod classify;
pub mod data;
pub mod diagnostics;
pub mod distributed;
pub mod error;
pub mod gradcheck;
pub mod hf;
pub mod kernels;
pub mod lm;
pub mod memory;
pub mod models;
pub mod nn;
pub mod optim;
pub mod rng;
pub mod study;
pub mod tensor;
pub mod threads;
pub mod translate;
pub mod vision;

pub use aligned::AlignedVec;
pub use error::{Error, Result};
pub use tensor::Tensor;
