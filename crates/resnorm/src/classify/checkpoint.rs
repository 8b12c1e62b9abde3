//! A classification run's checkpoint: one [checkpoint set](crate::checkpoint_set) in
//! `RUN/checkpoint/`, next to `RUN/split.tsv` and `RUN/metrics.jsonl`.
//!
//! | file | contents |
//! |---|---|
//! | `model.safetensors` | the body's parameters under the GPT's names and `head.weight`, `head.bias`; metadata `step` |
//! | `optimizer.safetensors` | AdamW's moments of the trainable parameters and its step count |
//! | `config.json` | the body's [`GptConfig`], or [`EncoderConfig`] for an encoder body |
//! | `tokenizer.json` | the [`Tokenizer`] |
//! | `classify.json` | the run's [`ClassifyConfig`] (its `body` says how to read `config.json`) |
//! | `task.json` | the classes, or regression ([`Task`]) |
//! | `state.json` | [`RunState`]: step, data RNG state, elapsed time |
//!
//! Loading checks every file against the manifest and the step, compares the body's sizes
//! with the tensors before allocating it, and refuses NaN or infinite weights.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::{assign_params, TensorFile};
use crate::checkpoint_set::{save_set, CheckpointSet};
use crate::data::text::Tokenizer;
use crate::models::gpt::{Gpt, GptConfig};
use crate::optim::{AdamW, Optimizer};
use crate::rng::Rng;
use crate::{Error, Result};

use super::config::{BodyKind, ClassifyConfig};
use super::data::Task;
use super::encoder::{EncoderBody, EncoderConfig};
use super::model::{Classifier, ClassifierBody};

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const CONFIG_FILE: &str = "config.json";
const TOKENIZER_FILE: &str = "tokenizer.json";
const CLASSIFY_FILE: &str = "classify.json";
const TASK_FILE: &str = "task.json";
const STATE_FILE: &str = "state.json";

/// Where a run stands between two steps: the language-model trainer's state, whose fields
/// (step, data RNG state, elapsed time, threads, last loss) are exactly a classifier's.
pub use crate::lm::TrainState as RunState;

/// A classifier loaded from a checkpoint, with everything saved next to it.
#[derive(Clone, Debug)]
pub struct SavedClassifier {
    /// The model, parameters restored.
    pub model: Classifier,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The run's settings.
    pub config: ClassifyConfig,
    /// The classes, or regression.
    pub task: Task,
    /// Where training stood.
    pub state: RunState,
}

/// Saves the run as the live checkpoint set of `run`, replacing the previous one atomically.
pub(crate) fn save_classifier(
    run: &Path,
    model: &Classifier,
    optimizer: &AdamW,
    tokenizer: &Tokenizer,
    config: &ClassifyConfig,
    task: &Task,
    state: &RunState,
) -> Result<()> {
    let mut params = Vec::new();
    model.visit_params(&mut |p| params.push(p.clone()));
    let metadata = BTreeMap::from([("step".to_string(), state.step.to_string())]);
    let model_file = TensorFile::from_params(&params, &metadata)?;
    let optimizer_state = optimizer.state();
    let optimizer_file = optimizer_state.tensor_file()?;
    save_set(run, state.step, |set| {
        set.file(MODEL_FILE, |out| model_file.write_to(out))?;
        set.file(OPTIMIZER_FILE, |out| optimizer_file.write_to(out))?;
        match &model.body {
            ClassifierBody::Gpt(gpt) => set.json(CONFIG_FILE, gpt.config())?,
            ClassifierBody::Encoder(body) => set.json(CONFIG_FILE, body.config())?,
        }
        set.json(TOKENIZER_FILE, tokenizer)?;
        set.json(CLASSIFY_FILE, config)?;
        set.json(TASK_FILE, task)?;
        set.json(STATE_FILE, state)
    })
}

/// Loads the classifier saved in `dir` (a run directory or its `checkpoint/` set).
pub fn load_classifier(dir: &Path) -> Result<SavedClassifier> {
    let set = CheckpointSet::open(dir)?;
    let format = |name: &str, detail: String| Error::Format {
        path: set.dir().join(name),
        detail,
    };
    let state: RunState = set.read_json(STATE_FILE)?;
    set.check_step(STATE_FILE, Some(state.step))?;
    Rng::from_state(state.rng_state)
        .map_err(|e| format(STATE_FILE, format!("`rng_state`: {e}")))?;
    let config: ClassifyConfig = set.read_json(CLASSIFY_FILE)?;
    config
        .validate()
        .map_err(|e| format(CLASSIFY_FILE, e.to_string()))?;
    let body_config = match config.body {
        BodyKind::Gpt => BodyConfig::Gpt(set.read_json(CONFIG_FILE)?),
        BodyKind::Encoder => BodyConfig::Encoder(set.read_json(CONFIG_FILE)?),
    };
    let (vocab, width, body_params) = match &body_config {
        BodyConfig::Gpt(c) => c
            .validate()
            .and(c.num_params())
            .map(|n| (c.vocab, c.width, n)),
        BodyConfig::Encoder(c) => c
            .validate()
            .and(c.num_params())
            .map(|n| (c.vocab, c.width, n)),
    }
    .map_err(|e| format(CONFIG_FILE, e.to_string()))?;
    let tokenizer: Tokenizer = set.read_json(TOKENIZER_FILE)?;
    if tokenizer.vocab_size() != vocab {
        return Err(format(
            TOKENIZER_FILE,
            format!(
                "the tokenizer has {} ids, the model's vocabulary {vocab}",
                tokenizer.vocab_size(),
            ),
        ));
    }
    let task: Task = set.read_json(TASK_FILE)?;
    if task.outputs() == 0 || matches!(&task, Task::Classes(c) if c.len() < 2) {
        return Err(format(
            TASK_FILE,
            "a classifier needs two classes or regression".into(),
        ));
    }
    let checkpoint = set.read_tensors(MODEL_FILE)?;
    let step = checkpoint.metadata.get("step").and_then(|s| s.parse().ok());
    set.check_step(MODEL_FILE, step)?;
    let model_path = set.dir().join(MODEL_FILE);
    // The sizes come from config.json and task.json: compare them with what the file holds
    // before allocating a model of that size.
    let stored: u64 = checkpoint.tensors.values().map(|t| t.len() as u64).sum();
    let needed = body_params + ((width + 1) * task.outputs()) as u64;
    if needed != stored {
        return Err(Error::Format {
            path: model_path,
            detail: format!("holds {stored} values, but the classifier of {CONFIG_FILE} and {TASK_FILE} has {needed} parameters"),
        });
    }
    let body = match body_config {
        BodyConfig::Gpt(c) => ClassifierBody::Gpt(Gpt::new(c, 0)?),
        BodyConfig::Encoder(c) => ClassifierBody::Encoder(EncoderBody::new(c, 0)?),
    };
    let mut model = Classifier::new(body, &task, config.pooling, config.freeze_body, 0)
        .and_then(|m| m.with_dropout(config.dropout))
        .and_then(|m| m.with_body_dropout(config.encoder_dropout))
        .map_err(|e| format(CLASSIFY_FILE, e.to_string()))?;
    assign_params(&model_path, &checkpoint.tensors, &mut model.params_mut())?;
    Ok(SavedClassifier {
        model,
        tokenizer,
        config,
        task,
        state,
    })
}

/// What `config.json` holds, by the body `classify.json` names.
enum BodyConfig {
    Gpt(GptConfig),
    Encoder(EncoderConfig),
}

/// The optimizer saved in `dir`, rebuilt with `config`'s hyperparameters.
pub(crate) fn load_optimizer(dir: &Path, config: &ClassifyConfig) -> Result<AdamW> {
    CheckpointSet::open(dir)?.read_adamw(OPTIMIZER_FILE, || AdamW::new(config.adamw_config()))
}
