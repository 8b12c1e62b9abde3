//! Training image classifiers (ResNets, plain nets, deep MLPs) on MNIST-style data: the run
//! settings ([`config`]), the data splits ([`data`]), the training loop ([`trainer`]), its
//! checkpoints ([`checkpoint`]) and the degradation study ([`study`]).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod study;
pub mod trainer;

pub use checkpoint::{load_card, load_model, ModelCard};
pub use config::{LrSchedule, ModelSpec, TrainConfig};
pub use data::{load_image_splits, ImageSplits};
pub use study::{run_study, StudyConfig, StudyEvent, StudyResults};
pub use trainer::{evaluate, BatchReport, EpochReport, Evaluation, Trainer};
