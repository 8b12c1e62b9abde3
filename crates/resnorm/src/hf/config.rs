//! A Hugging Face `config.json` read into a [`GptConfig`] or a [`LlamaConfig`]: every field
//! that the architecture's `transformers` implementation uses is either honoured or refused
//! by name, and a field resnorm does not know is refused too, so that a checkpoint never
//! loads into a model that computes something else.
//!
//! Honoured as stated: the sizes, `rms_norm_eps` / `layer_norm_epsilon`, `rope_parameters`
//! (or the older `rope_theta` and `rope_scaling`) of the `default` type, `head_dim`,
//! `tie_word_embeddings`, `attention_bias`, `mlp_bias`, `hidden_act` /
//! `hidden_activation`, Gemma 2's `query_pre_attn_scalar` and `final_logit_softcapping`.
//! Sliding-window layers (`sliding_window` with Mistral, or a `sliding_attention` entry of
//! `layer_types`) are exact up to the window, so the model's context is capped there.
//! Refused unless they are off: other `rope_type`s, Gemma 2's `attn_logit_softcapping`
//! (the attention kernels have no soft-capped scores), `pretraining_tp` other than 1,
//! GPT-2's per-layer attention scaling and cross-attention, an untied GPT-2 head. Dropout
//! rates and token ids are read and ignored: resnorm trains without dropout.
//!
//! ```
//! use resnorm::hf::config::{parse, ModelConfig};
//! let json = r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 32, "hidden_size": 8,
//!   "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
//!   "max_position_embeddings": 16, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}"#;
//! let ModelConfig::Llama(config) = parse(json).unwrap() else { panic!() };
//! assert_eq!((config.kv_heads, config.head_dim), (2, 4));
//! let bad = json.replace("LlamaForCausalLM", "MambaForCausalLM");
//! assert!(parse(&bad).unwrap_err().to_string().contains("MambaForCausalLM"));
//! ```

use crate::kernels::NormKind;
use crate::models::gpt::{GptConfig, Placement};
use crate::models::llama::{Activation, LlamaConfig, LlamaPlacement, QkNorm};
use crate::{Error, Result};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// The architectures read, as `config.json`'s `architectures` names them.
pub const ARCHITECTURES: [&str; 7] = [
    "GPT2LMHeadModel",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Gemma2ForCausalLM",
    "Olmo2ForCausalLM",
];

/// Fields that describe the file or generation, or training-only dropout: read and ignored.
const IGNORED: [&str; 22] = [
    "architectures",
    "model_type",
    "_name_or_path",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "use_cache",
    "initializer_range",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "attention_dropout",
    "attn_pdrop",
    "embd_pdrop",
    "resid_pdrop",
    "summary_activation",
    "summary_first_dropout",
    "summary_proj_to_labels",
    "summary_type",
    "summary_use_proj",
    "task_specific_params",
    "max_window_layers",
];

/// The model a config describes.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    /// GPT-2: resnorm's GPT with pre-ln LayerNorm.
    Gpt(GptConfig),
    /// The Llama family.
    Llama(LlamaConfig),
}

/// Reads `config.json`'s text.
pub fn parse(json: &str) -> Result<ModelConfig> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Error::Config(format!("config.json is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::Config("config.json is not a JSON object".into()));
    };
    let mut fields = Fields {
        map,
        used: BTreeSet::new(),
    };
    let architecture = match fields.map.get("architectures") {
        Some(Value::Array(names)) if names.len() == 1 => names[0].as_str().unwrap_or_default(),
        _ => {
            return Err(Error::Config(
                "config.json needs one `architectures` entry".into(),
            ))
        }
    }
    .to_string();
    let config = match architecture.as_str() {
        "GPT2LMHeadModel" => ModelConfig::Gpt(gpt2(&mut fields)?),
        name if ARCHITECTURES.contains(&name) => ModelConfig::Llama(llama(name, &mut fields)?),
        name => {
            return Err(Error::Config(format!(
                "unsupported architecture `{name}` (supported: {})",
                ARCHITECTURES.join(", ")
            )))
        }
    };
    fields.finish(&architecture)?;
    Ok(config)
}

/// The config's fields, and which of them were read.
struct Fields {
    map: Map<String, Value>,
    used: BTreeSet<String>,
}

impl Fields {
    fn get(&mut self, name: &str) -> Option<&Value> {
        self.used.insert(name.to_string());
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn usize(&mut self, name: &str) -> Result<Option<usize>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| Error::Config(format!("`{name}` must be a whole number, got {v}"))),
        }
    }

    fn need(&mut self, name: &str) -> Result<usize> {
        self.usize(name)?
            .ok_or_else(|| Error::Config(format!("config.json lacks `{name}`")))
    }

    fn float(&mut self, name: &str) -> Result<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error::Config(format!("`{name}` must be a number, got {v}"))),
        }
    }

    fn bool(&mut self, name: &str, default: bool) -> Result<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| Error::Config(format!("`{name}` must be true or false, got {v}"))),
        }
    }

    fn string(&mut self, name: &str) -> Option<String> {
        self.get(name).and_then(|v| v.as_str()).map(str::to_string)
    }

    /// Refuses `name` unless it is absent, null or `off`.
    fn refuse_unless(&mut self, name: &str, off: &Value, why: &str) -> Result<()> {
        match self.get(name) {
            Some(v) if v != off => Err(Error::Config(format!(
                "`{name}` = {v} is not supported: {why}"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses every field neither read nor ignorable.
    fn finish(self, architecture: &str) -> Result<()> {
        let unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.used.contains(*k) && !IGNORED.contains(&k.as_str()))
            .collect();
        match unknown.first() {
            Some(name) => Err(Error::Config(format!(
                "config field `{name}` of {architecture} is not supported"
            ))),
            None => Ok(()),
        }
    }
}

fn gpt2(f: &mut Fields) -> Result<GptConfig> {
    let width = f.need("n_embd")?;
    let context = f.need("n_positions")?;
    if let Some(n_ctx) = f.usize("n_ctx")? {
        if n_ctx != context {
            return Err(Error::Config(format!(
                "`n_ctx` {n_ctx} differs from `n_positions` {context}"
            )));
        }
    }
    if let Some(inner) = f.usize("n_inner")? {
        if inner != 4 * width {
            return Err(Error::Config(format!(
                "`n_inner` = {inner} is not supported: resnorm's GPT has an MLP of 4 x n_embd"
            )));
        }
    }
    match f.string("activation_function").as_deref() {
        None | Some("gelu_new" | "gelu_pytorch_tanh") => {}
        Some(other) => {
            return Err(Error::Config(format!(
                "`activation_function` = {other} is not supported: GPT-2's is gelu_new"
            )))
        }
    }
    let (t, fa) = (Value::Bool(true), Value::Bool(false));
    f.refuse_unless(
        "scale_attn_weights",
        &t,
        "attention scores are always scaled",
    )?;
    let why = "attention is not scaled by layer";
    f.refuse_unless("scale_attn_by_inverse_layer_idx", &fa, why)?;
    f.refuse_unless("add_cross_attention", &fa, "a decoder-only model")?;
    f.refuse_unless("tie_word_embeddings", &t, "resnorm's GPT ties its head")?;
    // Upcasting the scores to f32 changes nothing for a model that computes in f32.
    f.get("reorder_and_upcast_attn");
    Ok(GptConfig {
        layers: f.need("n_layer")?,
        heads: f.need("n_head")?,
        width,
        context,
        vocab: f.need("vocab_size")?,
        placement: Placement::PreLn,
        norm: NormKind::Layer,
        eps: f.float("layer_norm_epsilon")?.unwrap_or(1e-5) as f32,
        residual_scaling: true,
    })
}

fn llama(architecture: &str, f: &mut Fields) -> Result<LlamaConfig> {
    let gemma = architecture == "Gemma2ForCausalLM";
    let width = f.need("hidden_size")?;
    let heads = f.need("num_attention_heads")?;
    let kv_heads = f.usize("num_key_value_heads")?.unwrap_or(heads);
    let head_dim = match f.usize("head_dim")? {
        Some(d) => d,
        None if heads > 0 => width / heads,
        None => 0,
    };
    let rope_theta = rope(f)?;
    let act_name = if gemma {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    let activation = match f.string(act_name).as_deref() {
        None if gemma => Activation::GeluTanh,
        None | Some("silu") => Activation::Silu,
        Some("gelu_pytorch_tanh") => Activation::GeluTanh,
        Some(other) => {
            return Err(Error::Config(format!(
                "`{act_name}` = {other} is not supported (silu or gelu_pytorch_tanh)"
            )))
        }
    };
    let bias = f.bool("attention_bias", false)?;
    let (qkv_bias, o_bias) = match architecture {
        "Qwen2ForCausalLM" => (true, false),
        "MistralForCausalLM" => (false, false),
        _ => (bias, bias),
    };
    let mlp_bias = architecture == "LlamaForCausalLM" && f.bool("mlp_bias", false)?;
    let one = Value::from(1);
    f.refuse_unless("pretraining_tp", &one, "the projections are not split")?;
    let mut context = f.need("max_position_embeddings")?;
    if let Some(window) = sliding_window(architecture, f)? {
        context = context.min(window);
    }
    let (attn_scale, final_softcap) = if gemma {
        let why = "the attention kernels do not soft-cap scores";
        f.refuse_unless("attn_logit_softcapping", &Value::Null, why)?;
        let f_or = Value::Bool(false);
        f.refuse_unless("use_bidirectional_attention", &f_or, "a causal model")?;
        let scalar = f.float("query_pre_attn_scalar")?.unwrap_or(head_dim as f64);
        let cap = f.float("final_logit_softcapping")?.map(|c| c as f32);
        (scalar.powf(-0.5) as f32, cap)
    } else {
        ((head_dim as f64).powf(-0.5) as f32, None)
    };
    let tied_default = gemma;
    let (placement, qk_norm) = match architecture {
        "Gemma2ForCausalLM" => (LlamaPlacement::PeriLn, QkNorm::Off),
        "Olmo2ForCausalLM" => (LlamaPlacement::Reordered, QkNorm::Whole),
        "Qwen3ForCausalLM" => (LlamaPlacement::PreLn, QkNorm::PerHead),
        _ => (LlamaPlacement::PreLn, QkNorm::Off),
    };
    let config = LlamaConfig {
        layers: f.need("num_hidden_layers")?,
        width,
        heads,
        kv_heads,
        head_dim,
        mlp_width: f.need("intermediate_size")?,
        vocab: f.need("vocab_size")?,
        context,
        eps: f.float("rms_norm_eps")?.unwrap_or(1e-6) as f32,
        rope_theta,
        placement,
        qk_norm,
        norm_offset: if gemma { 1.0 } else { 0.0 },
        activation,
        qkv_bias,
        o_bias,
        mlp_bias,
        tied: f.bool("tie_word_embeddings", tied_default)?,
        embed_scale: gemma,
        attn_scale,
        final_softcap,
    };
    config.validate()?;
    Ok(config)
}

/// `rope_theta` from `rope_parameters` (transformers 5) or `rope_theta` / `rope_scaling`.
fn rope(f: &mut Fields) -> Result<f64> {
    let theta = f.float("rope_theta")?;
    let params = f.get("rope_parameters").cloned();
    let scaling = f.get("rope_scaling").cloned();
    let mut theta = theta.unwrap_or(10_000.0);
    for spec in [params, scaling].into_iter().flatten() {
        let kind = spec
            .get("rope_type")
            .or_else(|| spec.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            return Err(Error::Config(format!(
                "`rope_type` = {kind} is not supported: only the default rotary embedding"
            )));
        }
        if let Some(t) = spec.get("rope_theta").and_then(Value::as_f64) {
            theta = t;
        }
        if let Some(key) = spec.as_object().and_then(|m| {
            m.keys()
                .find(|k| !["rope_type", "type", "rope_theta"].contains(&k.as_str()))
        }) {
            return Err(Error::Config(format!(
                "rope parameter `{key}` is not supported"
            )));
        }
    }
    Ok(theta)
}

/// The window of the sliding-window layers, if any layer has one.
fn sliding_window(architecture: &str, f: &mut Fields) -> Result<Option<usize>> {
    let window = f.usize("sliding_window")?;
    let uses = f.bool("use_sliding_window", architecture == "MistralForCausalLM")?;
    let types = f.get("layer_types").cloned();
    let sliding = match types {
        Some(Value::Array(types)) => types.iter().any(|t| t == "sliding_attention"),
        Some(other) => {
            return Err(Error::Config(format!(
                "`layer_types` must be a list, got {other}"
            )))
        }
        None => uses || architecture == "Gemma2ForCausalLM",
    };
    Ok(window.filter(|_| sliding))
}
