//! Training a GPT, or fine-tuning a Hugging Face GPT-2 or Llama-family model: settings,
//! data loading, the step loop, evaluation, checkpoints and the metrics log. The
//! `resnorm train`, `eval` and `sample` commands are thin wrappers around this module.
//!
//! ```text
//! TrainConfig (defaults <- TOML <- flags)
//!   --load_data--> LoadedData { tokenizer, dataset (last 10 % validation) }
//!   --Trainer::new / Trainer::resume(dir)--> Trainer
//! TrainConfig::fine_tune(hf_dir) + hf::load(hf_dir) --Trainer::fine_tune--> Trainer
//!   loop { Trainer::step -> StepReport -> MetricsLog;  every eval_every: Trainer::evaluate;
//!          every save_every: Trainer::save(dir) }
//! load_checkpoint(dir) -> SavedModel { model, tokenizer, train, state }  (eval, sample)
//! ```
//! Under MPI, `Trainer::distributed(comm)` splits each global batch over the ranks and
//! averages the gradients with [`GradientAverage`] (docs/distributed.md).

mod config;
mod data;
mod data_parallel;
mod evaluate;
mod metrics;
mod run_checkpoint;
mod trainer;
mod update;
mod zero;

pub use config::{TokenizerKind, TrainConfig, FINE_TUNE_CONTEXT};
pub use data::{check_fits_context, load_data, LoadedData, CORPUS_SEED};
pub use data_parallel::GradientAverage;
pub use evaluate::{evaluate, evaluate_shared, Evaluation};
pub use metrics::{MetricsLog, MetricsRecord};
pub use run_checkpoint::{
    load_checkpoint, load_optimizer, save_checkpoint, SavedModel, TrainState, CONFIG_FILE,
    MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, TOKENIZER_FILE, TRAIN_CONFIG_FILE,
};
pub use trainer::{StepReport, Trainer, DATA_SEED_MIX, ZERO_DIAGNOSTICS};
pub use update::{apply_gradients, apply_gradients_plain, apply_gradients_sharded, Update};
pub use zero::OptimizerShard;
