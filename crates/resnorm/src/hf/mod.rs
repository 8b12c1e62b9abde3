//! Hugging Face checkpoints: a directory with `config.json`, `model.safetensors` (or shards
//! and `model.safetensors.index.json`) and optionally `tokenizer.json`, read into resnorm's
//! GPT (`GPT2LMHeadModel`, pre-ln LayerNorm, whose parameter names and `Conv1D` layout are
//! GPT-2's) or its Llama-family decoder (`LlamaForCausalLM`, `MistralForCausalLM`,
//! `Qwen2ForCausalLM`, `Qwen3ForCausalLM`, `Gemma2ForCausalLM`, `Olmo2ForCausalLM`).
//!
//! Tensor names are matched with or without the `transformer.` / `model.` prefix;
//! `torch.nn.Linear` weights (`[out, in]`) are transposed into resnorm's `[in, out]`; a tied
//! `lm_head.weight` and the buffers old checkpoints carry (`attn.bias`, `attn.masked_bias`,
//! `rotary_emb.inv_freq`) are skipped. A missing tensor, a tensor of the wrong shape, one
//! that no parameter uses, or an unsupported architecture or config field is an error that
//! names it ([`config`]).
//!
//! ```no_run
//! use resnorm::hf;
//! let mut checkpoint = hf::load("path/to/hf-model".as_ref()).unwrap();
//! let tokens = checkpoint.tokenizer.as_ref().unwrap().encode("Hello", false).unwrap();
//! let prompt: Vec<u32> = tokens.get_ids().to_vec();
//! let continuation = checkpoint.model.greedy(&prompt, 20).unwrap();
//! ```

pub mod config;
pub mod export;
pub mod tensors;

use crate::checkpoint::check_finite;
use crate::models::gpt::Gpt;
use crate::models::llama::Llama;
use crate::models::CausalLm;
use crate::nn::{Param, ParamKind};
use crate::{Error, Result};
use config::ModelConfig;
use std::collections::BTreeMap;
use std::path::Path;
use tensors::Loaded;

/// A model read from a Hugging Face checkpoint: `GPT2LMHeadModel` as a GPT, the others as
/// the Llama-family decoder.
pub type HfModel = CausalLm;

/// What a checkpoint directory holds.
#[derive(Debug)]
pub struct HfCheckpoint {
    /// `config.json`'s architecture, e.g. `LlamaForCausalLM`.
    pub architecture: String,
    /// The model with the checkpoint's weights.
    pub model: HfModel,
    /// `tokenizer.json`, when the directory has one.
    pub tokenizer: Option<tokenizers::Tokenizer>,
}

/// Reads the checkpoint in `dir`.
pub fn load(dir: &Path) -> Result<HfCheckpoint> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let architecture = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["architectures"][0].as_str().map(str::to_string))
        .unwrap_or_default();
    let mut model = match config::parse(&text)? {
        ModelConfig::Gpt(config) => HfModel::Gpt(Gpt::new(config, 0)?),
        ModelConfig::Llama(config) => HfModel::Llama(Llama::new(config, 0)?),
    };
    let mut tensors = tensors::read_dir(dir)?;
    let tied = match &mut model {
        HfModel::Gpt(gpt) => {
            assign(gpt.params_mut(), &mut tensors, false, dir)?;
            true
        }
        HfModel::Llama(llama) => {
            let tied = llama.config().tied;
            assign(llama.params_mut(), &mut tensors, true, dir)?;
            llama.sync();
            tied
        }
    };
    let skipped = |name: &str| {
        (tied && name == "lm_head.weight")
            || name.ends_with(".attn.bias")
            || name.ends_with(".attn.masked_bias")
            || name.ends_with("rotary_emb.inv_freq")
    };
    if let Some(name) = tensors.keys().find(|n| !skipped(n)) {
        return Err(Error::Format {
            path: tensors[name].file.clone(),
            detail: format!("tensor `{name}` is not a parameter of {architecture}"),
        });
    }
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = match tokenizer_path.exists() {
        true => Some(
            tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| Error::Format {
                path: tokenizer_path.clone(),
                detail: format!("not a tokenizer: {e}"),
            })?,
        ),
        false => None,
    };
    Ok(HfCheckpoint {
        architecture,
        model,
        tokenizer,
    })
}

impl HfCheckpoint {
    /// `text`'s token ids (no special tokens added), with the directory's tokenizer.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer()?
            .encode(text, false)
            .map_err(|e| Error::Config(format!("the tokenizer cannot encode the text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer()?
            .decode(ids, true)
            .map_err(|e| Error::Config(format!("the tokenizer cannot decode the tokens: {e}")))
    }

    fn tokenizer(&self) -> Result<&tokenizers::Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "the {} checkpoint has no tokenizer.json",
                self.architecture
            ))
        })
    }
}

/// Copies each parameter's tensor out of `tensors` (found with or without a prefix),
/// transposing `torch.nn.Linear` weights when `linear_transposed`.
fn assign(
    params: Vec<&mut Param>,
    tensors: &mut BTreeMap<String, Loaded>,
    linear_transposed: bool,
    dir: &Path,
) -> Result<()> {
    for p in params {
        let names = [
            p.name.clone(),
            format!("model.{}", p.name),
            format!("transformer.{}", p.name),
        ];
        let Some(loaded) = names.iter().find_map(|n| tensors.remove(n)) else {
            return Err(Error::Format {
                path: dir.to_path_buf(),
                detail: format!(
                    "missing tensor `{}` (or `model.`/`transformer.` + it)",
                    p.name
                ),
            });
        };
        let transpose = linear_transposed
            && p.kind == ParamKind::Weight
            && p.shape.len() == 2
            && p.name != "lm_head.weight";
        let want: Vec<usize> = match transpose {
            true => vec![p.shape[1], p.shape[0]],
            false => p.shape.clone(),
        };
        if loaded.shape != want {
            return Err(Error::Format {
                path: loaded.file,
                detail: format!(
                    "tensor `{}` has shape {:?}, the model needs {want:?}",
                    p.name, loaded.shape
                ),
            });
        }
        check_finite(&loaded.file, &p.name, &loaded.values)?;
        if transpose {
            let (rows, cols) = (want[0], want[1]);
            for (i, row) in loaded.values.chunks_exact(cols).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    p.value[j * rows + i] = v;
                }
            }
        } else {
            p.value.copy_from_slice(&loaded.values);
        }
    }
    Ok(())
}
