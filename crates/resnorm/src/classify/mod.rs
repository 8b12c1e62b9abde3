//! Sentence classification (and regression on a score) with a Transformer body: data from
//! TSV/CSV, a stratified split kept in the run directory, a pooled linear head on a GPT
//! trained from scratch or fine-tuned from a `resnorm train` run or on a Transformer encoder
//! trained from scratch, the training loop,
//! checkpoints and the scores. `resnorm classify train|eval|predict` wrap this module.
//!
//! ```text
//! ClassifyConfig --read_table--> Table { examples, task } --stratified_split--> Split (RUN/split.tsv)
//!   --Trainer::new(config, RUN) / Trainer::resume(RUN)--> Trainer
//!   loop { Trainer::step -> StepReport -> metrics.jsonl;  every eval_every: Trainer::evaluate;
//!          every save_every: Trainer::save(RUN) }
//! load_classifier(RUN) -> SavedClassifier { model, tokenizer, config, task }  (eval, predict)
//! ```

mod batch;
mod checkpoint;
mod config;
mod data;
mod encoder;
mod evaluate;
mod metrics;
mod model;
mod pooling;
mod split;
mod trainer;

pub use batch::{encode_sentence, fill_batch};
pub use checkpoint::{load_classifier, RunState, SavedClassifier};
pub use config::{BodyKind, ClassifyConfig};
pub use data::{read_table, Example, Table, TableSpec, Task};
pub use encoder::{EncoderBody, EncoderConfig};
pub use evaluate::{outputs, predicted_classes, score, EvalReport};
pub use metrics::{pearson, ClassMetrics, GroupAccuracy};
pub use model::{Classifier, ClassifierBody};
pub use pooling::Pooling;
pub use split::{stratified_split, Split, SPLIT_FILE};
pub use trainer::{encode_table, StepReport, Trainer, HEAD_SEED_MIX};
