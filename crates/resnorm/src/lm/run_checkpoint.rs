//! A training run's checkpoint: one directory holding everything needed to sample from the
//! model, evaluate it, or resume training bit for bit.
//!
//! | file | contents |
//! |---|---|
//! | `model.safetensors` | every parameter under its Hugging-Face-style name (`wte.weight`, `h.0.attn.c_attn.weight`, ...), metadata `step` |
//! | `optimizer.safetensors` | AdamW's moments `m.<name>`, `v.<name>` and step count ([`OptimizerState`]) |
//! | `config.json` | the model's [`GptConfig`] |
//! | `tokenizer.json` | the [`Tokenizer`] (with its character vocabulary) |
//! | `train.json` | the run's [`TrainConfig`] |
//! | `state.json` | [`TrainState`]: step, data RNG state, elapsed time — written last |
//!
//! Every file is written atomically (temporary file, `fsync`, rename). `state.json` comes
//! last and the step is recorded in the model and optimizer files too, so a save that was
//! interrupted half-way is detected when loading (the steps disagree) rather than resumed
//! from a mixture. Loading reports a missing, truncated, corrupt or mismatched file by path;
//! it compares the sizes of `config.json` with the tensors of `model.safetensors` before
//! allocating the model, and refuses NaN or infinite weights and moments by tensor and
//! position, and an all-zero data RNG state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{assign_params, read_tensors, save_params, write_json_atomic};
use crate::data::text::Tokenizer;
use crate::models::gpt::{Gpt, GptConfig};
use crate::optim::{AdamW, Optimizer, OptimizerState};
use crate::{Error, Result};

use super::TrainConfig;

/// Parameters, in `model.safetensors`.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimizer state, in `optimizer.safetensors`.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The model's configuration.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The training settings.
pub const TRAIN_CONFIG_FILE: &str = "train.json";
/// The step and RNG state, written last.
pub const STATE_FILE: &str = "state.json";

/// Where a run stands between two steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    /// The data sampler's [`crate::rng::Rng`] state.
    pub rng_state: [u64; 4],
    /// Seconds of training so far.
    pub elapsed: f64,
    /// Kernel threads of the run (results are bit-identical only with the same count).
    pub threads: usize,
    /// Training loss of the last step, if one was taken.
    pub last_loss: Option<f32>,
}

/// A model loaded from a checkpoint, with everything saved next to it.
#[derive(Clone, Debug)]
pub struct SavedModel {
    /// The model, parameters restored.
    pub model: Gpt,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The settings it was trained with.
    pub train: TrainConfig,
    /// Where training stood.
    pub state: TrainState,
}

/// Writes a checkpoint of `model`, `optimizer`, `tokenizer`, `train` and `state` into `dir`
/// (created if needed), `state.json` last.
pub fn save_checkpoint(
    dir: &Path,
    model: &Gpt,
    optimizer: &AdamW,
    tokenizer: &Tokenizer,
    train: &TrainConfig,
    state: &TrainState,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut params = Vec::new();
    model.visit_params(&mut |p| params.push(p.clone()));
    let metadata = BTreeMap::from([("step".to_string(), state.step.to_string())]);
    save_params(dir.join(MODEL_FILE), &params, &metadata)?;
    optimizer.state().save(dir.join(OPTIMIZER_FILE))?;
    write_json_atomic(dir.join(CONFIG_FILE), model.config())?;
    write_json_atomic(dir.join(TOKENIZER_FILE), tokenizer)?;
    write_json_atomic(dir.join(TRAIN_CONFIG_FILE), train)?;
    write_json_atomic(dir.join(STATE_FILE), state)
}

/// Loads the model, tokenizer, settings and state of the checkpoint in `dir`.
pub fn load_checkpoint(dir: &Path) -> Result<SavedModel> {
    if !dir.is_dir() {
        return Err(Error::Format {
            path: dir.to_path_buf(),
            detail: "not a checkpoint directory (it does not exist or is a file)".into(),
        });
    }
    let state: TrainState = read_json(&dir.join(STATE_FILE))?;
    let config: GptConfig = read_json(&dir.join(CONFIG_FILE))?;
    config.validate().map_err(|e| Error::Format {
        path: dir.join(CONFIG_FILE),
        detail: e.to_string(),
    })?;
    let tokenizer: Tokenizer = read_json(&dir.join(TOKENIZER_FILE))?;
    let train: TrainConfig = read_json(&dir.join(TRAIN_CONFIG_FILE))?;
    if tokenizer.vocab_size() != config.vocab {
        return Err(Error::Format {
            path: dir.join(TOKENIZER_FILE),
            detail: format!(
                "the tokenizer has {} ids, the model's vocabulary {}",
                tokenizer.vocab_size(),
                config.vocab
            ),
        });
    }
    let model_path = dir.join(MODEL_FILE);
    let checkpoint = read_tensors(&model_path)?;
    check_step(&model_path, checkpoint.metadata.get("step"), state.step)?;
    // Sizes come from config.json: compare them with the tensors the file really holds
    // before allocating a model of that size (the embeddings first, which name the sizes).
    let embeddings = [
        ("wte.weight", [config.vocab, config.width]),
        ("wpe.weight", [config.context, config.width]),
    ];
    for (name, shape) in embeddings {
        match checkpoint.tensors.get(name) {
            Some(tensor) if tensor.shape() != shape => {
                return Err(Error::Format {
                    path: model_path,
                    detail: format!(
                        "tensor `{name}` has shape {:?}, the model of {CONFIG_FILE} {shape:?}",
                        tensor.shape()
                    ),
                })
            }
            _ => {}
        }
    }
    let stored: u64 = checkpoint.tensors.values().map(|t| t.len() as u64).sum();
    let needed = config.num_params()?;
    if needed != stored {
        return Err(Error::Format {
            path: model_path,
            detail: format!(
                "holds {stored} values, but the model of {CONFIG_FILE} has {needed} parameters"
            ),
        });
    }
    let mut model = Gpt::new(config, 0)?;
    assign_params(&model_path, &checkpoint.tensors, &mut model.params_mut())?;
    Ok(SavedModel {
        model,
        tokenizer,
        train,
        state,
    })
}

/// The optimizer saved in `dir`, rebuilt with `train`'s hyperparameters; its step count
/// must be `step`.
pub fn load_optimizer(dir: &Path, train: &TrainConfig, step: u64) -> Result<AdamW> {
    let path = dir.join(OPTIMIZER_FILE);
    let state = OptimizerState::load(&path)?;
    check_step(&path, Some(&state.step.to_string()), step)?;
    let mut optimizer =
        AdamW::new(train.adamw_config()).map_err(|e| Error::Config(e.to_string()))?;
    optimizer.load_state(state).map_err(|e| Error::Format {
        path,
        detail: e.to_string(),
    })?;
    Ok(optimizer)
}

fn check_step(path: &Path, found: Option<&String>, step: u64) -> Result<()> {
    if found.map(String::as_str) == Some(step.to_string().as_str()) {
        return Ok(());
    }
    Err(Error::Format {
        path: path.to_path_buf(),
        detail: format!(
            "holds step {}, but {STATE_FILE} says {step} (an interrupted save?)",
            found.map_or("(none)", String::as_str)
        ),
    })
}

fn read_json<T: DeserializeOwned>(path: &PathBuf) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.clone(),
        detail: format!("not a valid checkpoint file: {e}"),
    })
}
