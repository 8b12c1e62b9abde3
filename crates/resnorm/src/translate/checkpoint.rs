//! A translation run's checkpoint: one [checkpoint set](crate::checkpoint_set) in
//! `RUN/checkpoint/` that serves decoding, evaluation and a bit-exact resume.
//!
//! | file | contents |
//! |---|---|
//! | `model.safetensors` | every parameter by name, metadata `step` and `kind = translation` |
//! | `optimizer.safetensors` | AdamW's moments and step count |
//! | `config.json` | the model's [`Seq2SeqConfig`] |
//! | `tokenizer.json` | the joint BPE, as Hugging Face `tokenizers` saves it |
//! | `translate.json` | the run's [`TranslateConfig`]; its presence marks the kind |
//! | `state.json` | [`TranslateState`]: step, epoch and position in the batch order |
//! | `set.json` | the manifest (step, each file's length and checksum) |
//!
//! The batches and their per-epoch order follow from the seed, so the epoch and position
//! are the whole data-order state. A checkpoint of another kind (a GPT's, a vision model's)
//! is refused by [`load_translation`] in one line before anything is read from it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{assign_params, TensorFile};
use crate::checkpoint_set::{save_set, CheckpointSet};
use crate::models::seq2seq::{Seq2Seq, Seq2SeqConfig};
use crate::nn::Param;
use crate::optim::{AdamW, Optimizer};
use crate::{Error, Result};

use super::config::TranslateConfig;
use super::Bpe;

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const CONFIG_FILE: &str = "config.json";
const TOKENIZER_FILE: &str = "tokenizer.json";
/// The run's settings; only translation checkpoints have it.
pub const TRANSLATE_FILE: &str = "translate.json";
const STATE_FILE: &str = "state.json";
/// The `kind` metadata of `model.safetensors`.
const KIND: &str = "translation";

/// Where a run stands between two steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateState {
    /// Optimizer steps taken.
    pub step: u64,
    /// The epoch being walked.
    pub epoch: u64,
    /// Batches of that epoch's order already trained on.
    pub position: usize,
    /// Seconds of training so far.
    pub elapsed: f64,
    /// Kernel threads of the run (results are bit-identical only with the same count).
    pub threads: usize,
    /// Training loss of the last step, if one was taken.
    pub last_loss: Option<f32>,
}

/// A translation model loaded from a checkpoint, with what was saved next to it.
#[derive(Clone, Debug)]
pub struct SavedTranslation {
    /// The model, parameters restored.
    pub model: Seq2Seq,
    /// Its vocabulary.
    pub bpe: Bpe,
    /// The settings it was trained with.
    pub config: TranslateConfig,
    /// Where training stood.
    pub state: TranslateState,
}

/// Saves the live set of the run directory `run` (created if needed), atomically.
pub fn save_translation(
    run: &Path,
    model: &Seq2Seq,
    optimizer: &AdamW,
    bpe: &Bpe,
    config: &TranslateConfig,
    state: &TranslateState,
) -> Result<()> {
    let mut params: Vec<Param> = Vec::new();
    model.visit_params(&mut |p| params.push(p.clone()));
    let metadata = BTreeMap::from([
        ("step".to_string(), state.step.to_string()),
        ("kind".to_string(), KIND.to_string()),
    ]);
    let model_file = TensorFile::from_params(&params, &metadata)?;
    let optimizer_state = optimizer.state();
    let optimizer_file = optimizer_state.tensor_file()?;
    let tokenizer = bpe.to_json()?;
    save_set(run, state.step, |set| {
        set.file(MODEL_FILE, |out| model_file.write_to(out))?;
        set.file(OPTIMIZER_FILE, |out| optimizer_file.write_to(out))?;
        set.json(CONFIG_FILE, model.config())?;
        set.file(TOKENIZER_FILE, |out| out.write_all(tokenizer.as_bytes()))?;
        set.json(TRANSLATE_FILE, config)?;
        set.json(STATE_FILE, state)
    })
}

/// Opens the checkpoint `dir` names (a run directory or its set), refusing one of another kind.
fn open_translation(dir: &Path) -> Result<CheckpointSet> {
    let set = CheckpointSet::open(dir)?;
    if !set.contains(TRANSLATE_FILE) {
        return Err(Error::Format {
            path: dir.to_path_buf(),
            detail: "a checkpoint of another kind (no translate.json: a GPT or vision run?), \
                     not a translation model"
                .into(),
        });
    }
    Ok(set)
}

/// Loads the model, vocabulary, settings and state of a translation checkpoint.
pub fn load_translation(dir: &Path) -> Result<SavedTranslation> {
    let set = open_translation(dir)?;
    let state: TranslateState = set.read_json(STATE_FILE)?;
    set.check_step(STATE_FILE, Some(state.step))?;
    let format = |name: &str, detail: String| Error::Format {
        path: set.dir().join(name),
        detail,
    };
    let model_config: Seq2SeqConfig = set.read_json(CONFIG_FILE)?;
    model_config
        .validate()
        .map_err(|e| format(CONFIG_FILE, e.to_string()))?;
    let config: TranslateConfig = set.read_json(TRANSLATE_FILE)?;
    let tokenizer = set.read(TOKENIZER_FILE)?;
    let tokenizer =
        std::str::from_utf8(&tokenizer).map_err(|e| format(TOKENIZER_FILE, e.to_string()))?;
    let bpe = Bpe::from_json(tokenizer).map_err(|e| format(TOKENIZER_FILE, e.to_string()))?;
    if bpe.vocab_size() != model_config.vocab {
        return Err(format(
            TOKENIZER_FILE,
            format!(
                "{} ids, but the model's vocabulary has {}",
                bpe.vocab_size(),
                model_config.vocab
            ),
        ));
    }
    let checkpoint = set.read_tensors(MODEL_FILE)?;
    let step = checkpoint.metadata.get("step").and_then(|s| s.parse().ok());
    set.check_step(MODEL_FILE, step)?;
    let model_path = set.dir().join(MODEL_FILE);
    let stored: usize = checkpoint.tensors.values().map(|t| t.len()).sum();
    let mut model = Seq2Seq::new(model_config, 0)?;
    if stored != model.num_params() {
        return Err(format(
            MODEL_FILE,
            format!(
                "holds {stored} values, but the model of {CONFIG_FILE} has {}",
                model.num_params()
            ),
        ));
    }
    assign_params(&model_path, &checkpoint.tensors, &mut model.params_mut())?;
    Ok(SavedTranslation {
        model,
        bpe,
        config,
        state,
    })
}

/// The optimizer of a translation checkpoint, rebuilt with `config`'s hyperparameters.
pub fn load_translation_optimizer(dir: &Path, config: &TranslateConfig) -> Result<AdamW> {
    open_translation(dir)?.read_adamw(OPTIMIZER_FILE, || AdamW::new(config.adamw_config()))
}

/// True when `dir` names a translation checkpoint (so other commands can refuse it clearly).
pub fn is_translation_checkpoint(dir: &Path) -> bool {
    CheckpointSet::open(dir).is_ok_and(|set| set.contains(TRANSLATE_FILE))
}
