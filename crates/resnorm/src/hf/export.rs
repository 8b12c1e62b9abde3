//! Writing Hugging Face checkpoints: `config.json` and `model.safetensors` (float32) that
//! `AutoModelForCausalLM.from_pretrained` reads, for the models whose wiring a `transformers`
//! architecture expresses: the GPT with pre-ln LayerNorm (`GPT2LMHeadModel`) and the
//! Llama-family decoder (`LlamaForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM`,
//! `Gemma2ForCausalLM`, `Olmo2ForCausalLM`, chosen by placement and options). Any other
//! model is refused with the reason. Names get the `transformer.` / `model.` prefix and
//! linear weights are transposed back to `torch.nn.Linear`'s `[out, in]`, so that
//! [`super::load`] reads the directory back exactly.
//!
//! ```
//! use resnorm::hf::{self, export};
//! use resnorm::models::llama::{Llama, LlamaConfig, LlamaPlacement};
//! let mut model = Llama::new(LlamaConfig::tiny(LlamaPlacement::Reordered), 1).unwrap();
//! let dir = std::env::temp_dir().join(format!("resnorm-export-doc-{}", std::process::id()));
//! assert_eq!(export::write_llama(&model, &dir).unwrap(), "Olmo2ForCausalLM");
//! let mut back = hf::load(&dir).unwrap();
//! model.forward(&[1, 2, 3], 1, None).unwrap();
//! assert_eq!(back.model.logits(&[1, 2, 3], 1).unwrap(), model.logits());
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use crate::checkpoint::{write_json_atomic, write_tensors, TensorRef};
use crate::data::text::HfTokenizer;
use crate::kernels::NormKind;
use crate::models::gpt::{Gpt, Placement};
use crate::models::llama::{Activation, Llama, LlamaConfig, LlamaPlacement, QkNorm};
use crate::nn::{Param, ParamKind};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes `model` as a `GPT2LMHeadModel` into `dir` (created if needed).
pub fn write_gpt(model: &Gpt, dir: &Path) -> Result<()> {
    let c = model.config();
    if c.placement != Placement::PreLn || c.norm != NormKind::Layer {
        return Err(Error::Config(format!(
            "a {} {} GPT has no Hugging Face architecture: GPT-2 is pre-ln with LayerNorm",
            c.placement, c.norm
        )));
    }
    let config = json!({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c.vocab, "n_embd": c.width, "n_layer": c.layers, "n_head": c.heads,
        "n_positions": c.context, "n_inner": null, "activation_function": "gelu_new",
        "layer_norm_epsilon": c.eps, "tie_word_embeddings": true,
        "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
    });
    let mut tensors = Vec::new();
    model.visit_params(&mut |p| tensors.push((format!("transformer.{}", p.name), owned(p, false))));
    write(dir, &config, &tensors)
}

/// Writes `model` into `dir` as the architecture its options describe, and returns that
/// architecture's name.
pub fn write_llama(model: &Llama, dir: &Path) -> Result<&'static str> {
    let c = model.config();
    let architecture = architecture(c)?;
    let mut config = json!({
        "architectures": [architecture],
        "model_type": architecture.trim_end_matches("ForCausalLM").to_lowercase(),
        "vocab_size": c.vocab, "hidden_size": c.width, "intermediate_size": c.mlp_width,
        "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads, "head_dim": c.head_dim,
        "max_position_embeddings": c.context, "rms_norm_eps": c.eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "tie_word_embeddings": c.tied, "attention_dropout": 0.0,
    });
    let fields = &mut config;
    match architecture {
        "Gemma2ForCausalLM" => {
            // Gemma 2's config holds the scale as a whole number `s`: scale = s^-1/2.
            let scalar = (c.attn_scale as f64).powi(-2);
            if (scalar - scalar.round()).abs() > 1e-3 * scalar {
                return Err(Error::Config(format!(
                    "no Hugging Face architecture: Gemma 2's attention scale is s^-1/2 for a \
                     whole s, not {}",
                    c.attn_scale
                )));
            }
            fields["hidden_activation"] = "gelu_pytorch_tanh".into();
            fields["query_pre_attn_scalar"] = json!(scalar.round() as u64);
            fields["attn_logit_softcapping"] = Value::Null;
            fields["final_logit_softcapping"] = json!(c.final_softcap);
            fields["sliding_window"] = json!(c.context);
            fields["attention_bias"] = json!(c.qkv_bias);
        }
        "Qwen2ForCausalLM" => fields["hidden_act"] = "silu".into(),
        "LlamaForCausalLM" => {
            fields["hidden_act"] = "silu".into();
            fields["attention_bias"] = json!(c.qkv_bias);
            fields["mlp_bias"] = json!(c.mlp_bias);
        }
        _ => {
            fields["hidden_act"] = "silu".into();
            fields["attention_bias"] = json!(c.qkv_bias);
        }
    }
    let mut tensors = Vec::new();
    model.visit_params(&mut |p| {
        let name = match p.name.as_str() {
            "lm_head.weight" => p.name.clone(),
            other => format!("model.{other}"),
        };
        let linear =
            p.kind == ParamKind::Weight && p.shape.len() == 2 && p.name != "lm_head.weight";
        tensors.push((name, owned(p, linear)));
    });
    write(dir, &config, &tensors)?;
    Ok(architecture)
}

/// The `transformers` architecture computing what `c` computes, or why there is none.
fn architecture(c: &LlamaConfig) -> Result<&'static str> {
    let refuse = |why: &str| {
        Err(Error::Config(format!(
            "no Hugging Face architecture: {why}"
        )))
    };
    let default_scale = (c.attn_scale - (c.head_dim as f32).powf(-0.5)).abs() < 1e-7;
    let gemma_like = (
        c.norm_offset == 1.0,
        c.embed_scale,
        c.activation == Activation::GeluTanh,
    );
    let (architecture, gemma) = match (c.placement, c.qk_norm) {
        (LlamaPlacement::PeriLn, QkNorm::Off) => ("Gemma2ForCausalLM", true),
        (LlamaPlacement::Reordered, QkNorm::Whole) => ("Olmo2ForCausalLM", false),
        (LlamaPlacement::PreLn, QkNorm::PerHead) => ("Qwen3ForCausalLM", false),
        (LlamaPlacement::PreLn, QkNorm::Off) if c.qkv_bias && !c.o_bias => {
            ("Qwen2ForCausalLM", false)
        }
        (LlamaPlacement::PreLn, QkNorm::Off) => ("LlamaForCausalLM", false),
        (placement, qk) => return refuse(&format!("{placement} with QK-norm {qk:?}")),
    };
    if gemma && gemma_like != (true, true, true) {
        return refuse("peri-ln is Gemma 2's, with gain 1 + w, embeddings x sqrt(C) and GeGLU");
    }
    if !gemma && (gemma_like != (false, false, false) || !default_scale) {
        return refuse("only Gemma 2 has gain 1 + w, scaled embeddings, GeGLU or another scale");
    }
    if !gemma && c.final_softcap.is_some() {
        return refuse("only Gemma 2 soft-caps its logits");
    }
    if c.mlp_bias && architecture != "LlamaForCausalLM" {
        return refuse("only Llama has MLP biases");
    }
    if architecture != "Qwen2ForCausalLM" && c.qkv_bias != c.o_bias {
        return refuse("q/k/v biases without an output bias are Qwen2's, whose norms are pre-ln");
    }
    Ok(architecture)
}

/// Writes `tokenizer` into `dir` as `tokenizer.json`, next to a model written by
/// [`write_gpt`] or [`write_llama`], so that a fine-tuned model's directory is complete.
pub fn write_tokenizer(tokenizer: &HfTokenizer, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_json_atomic(dir.join("tokenizer.json"), tokenizer)
}

/// A tensor to write: its name in the file, its shape and values.
type Named = (String, (Vec<usize>, Vec<f32>));

/// A parameter's values as stored by `transformers`: transposed for a linear weight.
fn owned(p: &Param, linear: bool) -> (Vec<usize>, Vec<f32>) {
    if !linear {
        return (p.shape.clone(), p.value.to_vec());
    }
    let (rows, cols) = (p.shape[0], p.shape[1]);
    let mut out = vec![0.0; rows * cols];
    for (i, row) in p.value.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            out[j * rows + i] = v;
        }
    }
    (vec![cols, rows], out)
}

fn write(dir: &Path, config: &Value, tensors: &[Named]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let refs: Vec<TensorRef<'_>> = tensors
        .iter()
        .map(|(name, (shape, data))| TensorRef { name, shape, data })
        .collect();
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_tensors(dir.join("model.safetensors"), &refs, &metadata)?;
    write_json_atomic(dir.join("config.json"), config)
}
