//! A training run's checkpoint: one [checkpoint set](crate::checkpoint_set) holding
//! everything needed to sample from the model, evaluate it, or resume training bit for bit.
//! It lives in `RUN/checkpoint/` (`RUN` is the trainer's `--out`) and appears there complete
//! or not at all.
//!
//! | file | contents |
//! |---|---|
//! | `model.safetensors` | every parameter under its Hugging-Face-style name (`wte.weight`, `h.0.attn.c_attn.weight`, ...; `embed_tokens.weight`, `layers.0.self_attn.q_proj.weight`, ...), metadata `step` |
//! | `optimizer.safetensors` | AdamW's moments `m.<name>`, `v.<name>` and step count ([`OptimizerState`](crate::optim::OptimizerState)) |
//! | `config.json` | the model's [`GptConfig`], or [`LlamaConfig`] for a fine-tuned Llama-family model |
//! | `tokenizer.json` | the [`Tokenizer`] (with its character vocabulary, or the Hugging Face `tokenizer.json`) |
//! | `train.json` | the run's [`TrainConfig`] |
//! | `state.json` | [`TrainState`]: step, data RNG state, elapsed time |
//! | `set.json` | the set's manifest: the step, each file's length and checksum |
//!
//! The manifest binds every file to the step, and the model, optimizer and state files record
//! it too: loading checks them all, so a torn or damaged set is refused with the file's path
//! rather than resumed from a mixture. Loading also compares the sizes of `config.json` with
//! the tensors of `model.safetensors` before allocating the model, and refuses NaN or
//! infinite weights and moments by tensor and position, and an all-zero data RNG state.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{assign_params, TensorFile};
use crate::checkpoint_set::{save_set, CheckpointSet};
use crate::data::text::Tokenizer;
use crate::models::gpt::{Gpt, GptConfig};
use crate::models::llama::{Llama, LlamaConfig};
use crate::models::CausalLm;
use crate::optim::{AdamW, Optimizer};
use crate::rng::Rng;
use crate::tensor::Tensor;
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
/// The step and RNG state.
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
    pub model: CausalLm,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The settings it was trained with.
    pub train: TrainConfig,
    /// Where training stood.
    pub state: TrainState,
}

/// Saves a checkpoint of `model`, `optimizer`, `tokenizer`, `train` and `state` as the live
/// set of the run directory `run` (created if needed), replacing the previous one atomically.
pub fn save_checkpoint(
    run: &Path,
    model: &CausalLm,
    optimizer: &AdamW,
    tokenizer: &Tokenizer,
    train: &TrainConfig,
    state: &TrainState,
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
        match model {
            CausalLm::Gpt(gpt) => set.json(CONFIG_FILE, gpt.config())?,
            CausalLm::Llama(llama) => set.json(CONFIG_FILE, llama.config())?,
        }
        set.json(TOKENIZER_FILE, tokenizer)?;
        set.json(TRAIN_CONFIG_FILE, train)?;
        set.json(STATE_FILE, state)
    })
}

/// Loads the model, tokenizer, settings and state of the checkpoint that `dir` names: a run
/// directory or its `checkpoint/` set (see [`CheckpointSet::open`]).
pub fn load_checkpoint(dir: &Path) -> Result<SavedModel> {
    let set = CheckpointSet::open(dir)?;
    let state: TrainState = set.read_json(STATE_FILE)?;
    set.check_step(STATE_FILE, Some(state.step))?;
    Rng::from_state(state.rng_state).map_err(|e| Error::Format {
        path: set.dir().join(STATE_FILE),
        detail: format!("`rng_state`: {e}"),
    })?;
    let tokenizer: Tokenizer = set.read_json(TOKENIZER_FILE)?;
    let train: TrainConfig = set.read_json(TRAIN_CONFIG_FILE)?;
    let checkpoint = set.read_tensors(MODEL_FILE)?;
    let step = checkpoint.metadata.get("step").and_then(|s| s.parse().ok());
    set.check_step(MODEL_FILE, step)?;
    // A Llama-family config is told apart by its key/value heads, which a GPT has not.
    let config: serde_json::Value = set.read_json(CONFIG_FILE)?;
    let model = match config.get("kv_heads") {
        Some(_) => load_llama(&set, &checkpoint.tensors)?,
        None => CausalLm::Gpt(load_gpt(&set, &checkpoint.tensors)?),
    };
    // A Hugging Face vocabulary may be padded past the tokenizer's ids; the others match.
    let fits = match tokenizer {
        Tokenizer::Hf { .. } => tokenizer.vocab_size() <= model.vocab(),
        _ => tokenizer.vocab_size() == model.vocab(),
    };
    if !fits {
        return Err(Error::Format {
            path: set.dir().join(TOKENIZER_FILE),
            detail: format!(
                "the tokenizer has {} ids, the model's vocabulary {}",
                tokenizer.vocab_size(),
                model.vocab()
            ),
        });
    }
    Ok(SavedModel {
        model,
        tokenizer,
        train,
        state,
    })
}

/// The GPT of `config.json`, with its sizes checked against `tensors` before allocating it.
fn load_gpt(set: &CheckpointSet, tensors: &BTreeMap<String, Tensor>) -> Result<Gpt> {
    let config: GptConfig = set.read_json(CONFIG_FILE)?;
    config.validate().map_err(|e| Error::Format {
        path: set.dir().join(CONFIG_FILE),
        detail: e.to_string(),
    })?;
    let model_path = set.dir().join(MODEL_FILE);
    // Sizes come from config.json: compare them with the tensors the file really holds
    // before allocating a model of that size (the embeddings first, which name the sizes).
    let embeddings = [
        ("wte.weight", [config.vocab, config.width]),
        ("wpe.weight", [config.context, config.width]),
    ];
    for (name, shape) in embeddings {
        match tensors.get(name) {
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
    let stored: u64 = tensors.values().map(|t| t.len() as u64).sum();
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
    assign_params(&model_path, tensors, &mut model.params_mut())?;
    Ok(model)
}

/// The Llama-family model of `config.json`, its embedding's shape checked against
/// `tensors` before allocating it.
fn load_llama(set: &CheckpointSet, tensors: &BTreeMap<String, Tensor>) -> Result<CausalLm> {
    let config: LlamaConfig = set.read_json(CONFIG_FILE)?;
    let bad_config = |detail: String| Error::Format {
        path: set.dir().join(CONFIG_FILE),
        detail,
    };
    config.validate().map_err(|e| bad_config(e.to_string()))?;
    let model_path = set.dir().join(MODEL_FILE);
    let shape = [config.vocab, config.width];
    let embedding = tensors.get("embed_tokens.weight").map(Tensor::shape);
    if embedding.is_some_and(|s| s != shape) {
        return Err(Error::Format {
            path: model_path,
            detail: format!(
                "tensor `embed_tokens.weight` has shape {:?}, the model of {CONFIG_FILE} {shape:?}",
                embedding.unwrap_or_default()
            ),
        });
    }
    let mut model = Llama::new(config, 0)?;
    let stored: usize = tensors.values().map(Tensor::len).sum();
    if stored != model.num_params() {
        return Err(Error::Format {
            path: model_path,
            detail: format!(
                "holds {stored} values, but the model of {CONFIG_FILE} has {} parameters",
                model.num_params()
            ),
        });
    }
    assign_params(&model_path, tensors, &mut model.params_mut())?;
    model.sync();
    Ok(CausalLm::Llama(model))
}

/// The optimizer saved in the checkpoint that `dir` names, rebuilt with `train`'s
/// hyperparameters; its step count must be the set's.
pub fn load_optimizer(dir: &Path, train: &TrainConfig) -> Result<AdamW> {
    CheckpointSet::open(dir)?.read_adamw(OPTIMIZER_FILE, || {
        AdamW::new(train.adamw_config()).map_err(|e| Error::Config(e.to_string()))
    })
}
