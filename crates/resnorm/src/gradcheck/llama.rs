//! A naive `f64` reference of the Llama-family decoder for every placement and option, and
//! the finite-difference check of the model's backward pass with respect to every parameter
//! tensor.
//!
//! The reference reads parameters by their names and computes from the definitions in
//! `models/llama/` (and Hugging Face's `modeling_llama.py`, `modeling_gemma2.py`,
//! `modeling_olmo2.py`, `modeling_qwen3.py`), sharing no code with the model.
//!
//! ```
//! use resnorm::gradcheck::llama::{check_model, variants};
//! let (name, config) = &variants()[0];
//! let results = check_model(config);
//! assert!(results.iter().all(|r| r.passed), "{name}: {results:?}");
//! ```

use super::layers::{cross_entropy_reference, gelu_reference, linear_reference};
use super::norms::norm_reference;
use super::{check_param_gradients, CheckResult};
use crate::kernels::NormKind;
use crate::models::llama::{Activation, Llama, LlamaConfig, LlamaPlacement, QkNorm};
use crate::nn::{Param, ParamKind};
use crate::rng::Rng;

/// Relative error the model's `f32` gradients must stay under.
const TOLERANCE: f64 = 2e-4;
const STEP: f64 = 1e-5;

pub use super::ReferenceParams;

/// The configurations checked: each placement with its family's options, and Qwen2's
/// biases with Qwen3's per-head QK-norm and an untied head.
pub fn variants() -> Vec<(&'static str, LlamaConfig)> {
    let qwen = LlamaConfig {
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        qk_norm: QkNorm::PerHead,
        ..LlamaConfig::tiny(LlamaPlacement::PreLn)
    };
    vec![
        ("pre-ln (Llama)", LlamaConfig::tiny(LlamaPlacement::PreLn)),
        (
            "peri-ln (Gemma 2)",
            LlamaConfig::tiny(LlamaPlacement::PeriLn),
        ),
        (
            "reordered (OLMo 2)",
            LlamaConfig::tiny(LlamaPlacement::Reordered),
        ),
        ("pre-ln, biases, per-head QK-norm (Qwen)", qwen),
    ]
}

/// Mean cross-entropy of the model `config` with parameters `p` on `tokens` / `targets`
/// (`batch` rows), computed in `f64` from the definitions.
pub fn reference_loss(
    config: &LlamaConfig,
    p: &ReferenceParams,
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
) -> f64 {
    let logits = reference_logits(config, p, tokens, batch);
    cross_entropy_reference(&logits, targets, config.vocab)
}

/// The logits `[rows, V]` of the reference model.
pub fn reference_logits(
    config: &LlamaConfig,
    p: &ReferenceParams,
    tokens: &[u32],
    batch: usize,
) -> Vec<f64> {
    let (c, v) = (config.width, config.vocab);
    let seq = tokens.len() / batch;
    let get = |name: &str| {
        p.get(name)
            .unwrap_or_else(|| panic!("reference needs {name}"))
            .as_slice()
    };
    let eps = config.eps as f64;
    let rms = |x: &[f64], name: &str, offset: f64| {
        let gain: Vec<f64> = get(&format!("{name}.weight"))
            .iter()
            .map(|w| offset + w)
            .collect();
        norm_reference(NormKind::Rms, x, &gain, None, eps)
    };
    let norm = |x: &[f64], name: &str| rms(x, name, config.norm_offset as f64);
    let linear = |x: &[f64], name: &str, n_in: usize, n_out: usize| {
        let zeros = vec![0.0; n_out];
        let bias = p.get(&format!("{name}.bias")).map_or(&zeros[..], |b| b);
        linear_reference(x, get(&format!("{name}.weight")), bias, n_in, n_out)
    };
    let add = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a + b).collect::<Vec<f64>>();
    let scale = if config.embed_scale {
        (c as f64).sqrt()
    } else {
        1.0
    };
    let embed = get("embed_tokens.weight");
    let mut x: Vec<f64> = tokens
        .iter()
        .flat_map(|&t| (0..c).map(move |j| embed[t as usize * c + j] * scale))
        .collect();
    let (pre, post) = config.placement.norms();
    for i in 0..config.layers {
        let mlp_pre = match config.placement {
            LlamaPlacement::PreLn => "post_attention_layernorm",
            _ => "pre_feedforward_layernorm",
        };
        let units = [
            ("attn", "input_layernorm", "post_attention_layernorm"),
            ("mlp", mlp_pre, "post_feedforward_layernorm"),
        ];
        for (sub, pre_name, post_name) in units {
            let h = match pre {
                true => norm(&x, &format!("layers.{i}.{pre_name}")),
                false => x.clone(),
            };
            let f = match sub {
                "attn" => attention(config, &h, i, batch, seq, &linear, &rms),
                _ => {
                    let name = |s: &str| format!("layers.{i}.mlp.{s}_proj");
                    let m = config.mlp_width;
                    let g = linear(&h, &name("gate"), c, m);
                    let u = linear(&h, &name("up"), c, m);
                    let a: Vec<f64> = g
                        .iter()
                        .zip(&u)
                        .map(|(&g, &u)| u * activation(config.activation, g))
                        .collect();
                    linear(&a, &name("down"), m, c)
                }
            };
            let f = match post {
                true => norm(&f, &format!("layers.{i}.{post_name}")),
                false => f,
            };
            x = add(&x, &f);
        }
    }
    let z = norm(&x, "norm");
    let head = p.get("lm_head.weight").map_or(embed, |w| w);
    let mut logits = vec![0.0; z.len() / c * v];
    for (row, out) in z.chunks_exact(c).zip(logits.chunks_exact_mut(v)) {
        for (j, o) in out.iter_mut().enumerate() {
            let l: f64 = (0..c).map(|k| row[k] * head[j * c + k]).sum();
            *o = match config.final_softcap {
                Some(cap) => cap as f64 * (l / cap as f64).tanh(),
                None => l,
            };
        }
    }
    logits
}

fn activation(kind: Activation, g: f64) -> f64 {
    match kind {
        Activation::Silu => g / (1.0 + (-g).exp()),
        Activation::GeluTanh => gelu_reference(g),
    }
}

/// `linear(x, name, in, out)`: the named layer of the reference parameters.
type LinearFn<'a> = &'a dyn Fn(&[f64], &str, usize, usize) -> Vec<f64>;
/// `rms(x, name, offset)`: the named RMSNorm with gain `offset + weight`.
type RmsFn<'a> = &'a dyn Fn(&[f64], &str, f64) -> Vec<f64>;

/// Grouped-query causal attention with QK-norm and rotary positions, in `f64`.
#[allow(clippy::too_many_arguments)]
fn attention(
    config: &LlamaConfig,
    h: &[f64],
    layer: usize,
    batch: usize,
    seq: usize,
    linear: LinearFn<'_>,
    rms: RmsFn<'_>,
) -> Vec<f64> {
    let (c, d) = (config.width, config.head_dim);
    let (qw, kw) = (config.q_width(), config.kv_width());
    let name = |s: &str| format!("layers.{layer}.self_attn.{s}");
    let mut q = linear(h, &name("q_proj"), c, qw);
    let mut k = linear(h, &name("k_proj"), c, kw);
    let v = linear(h, &name("v_proj"), c, kw);
    if config.qk_norm != QkNorm::Off {
        q = rms(&q, &name("q_norm"), 0.0);
        k = rms(&k, &name("k_norm"), 0.0);
    }
    let rotate = |x: &mut [f64], heads: usize| {
        for (r, row) in x.chunks_exact_mut(heads * d).enumerate() {
            let pos = (r % seq) as f64;
            for head in row.chunks_exact_mut(d) {
                for i in 0..d / 2 {
                    let angle = pos * config.rope_theta.powf(-((2 * i) as f64) / d as f64);
                    let (cos, sin) = (angle.cos(), angle.sin());
                    let (a, b) = (head[i], head[i + d / 2]);
                    head[i] = a * cos - b * sin;
                    head[i + d / 2] = b * cos + a * sin;
                }
            }
        }
    };
    rotate(&mut q, config.heads);
    rotate(&mut k, config.kv_heads);
    let group = config.heads / config.kv_heads;
    let mut y = vec![0.0; batch * seq * qw];
    for b in 0..batch {
        for hd in 0..config.heads {
            let g = hd / group;
            for t in 0..seq {
                let qrow = &q[(b * seq + t) * qw + hd * d..][..d];
                let scores: Vec<f64> = (0..=t)
                    .map(|s| {
                        let krow = &k[(b * seq + s) * kw + g * d..][..d];
                        config.attn_scale as f64
                            * qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = w.iter().sum();
                for i in 0..d {
                    y[(b * seq + t) * qw + hd * d + i] = (0..=t)
                        .map(|s| w[s] / total * v[(b * seq + s) * kw + g * d + i])
                        .sum();
                }
            }
        }
    }
    linear(&y, &name("o_proj"), qw, c)
}

/// Gives every parameter a random value large enough that every path carries signal.
pub fn randomize(model: &mut Llama, rng: &mut Rng) {
    let offset = model.config().norm_offset;
    model.visit_params_mut(&mut |p: &mut Param| {
        let fan_in = p.shape[p.shape.len() - 1].min(p.shape[0]) as f32;
        for v in &mut p.value {
            let n = rng.normal();
            *v = match p.kind {
                ParamKind::Norm if p.name.contains("_norm") => 1.0 + 0.2 * n,
                ParamKind::Norm => 1.0 - offset + 0.2 * n,
                ParamKind::Bias => 0.1 * n,
                ParamKind::Embedding => 0.5 * n,
                _ => n / fan_in.sqrt(),
            };
        }
    });
}

/// Checks the gradient of the loss with respect to every parameter tensor of a `config`
/// model against central differences of [`reference_loss`]; one [`CheckResult`] per tensor.
pub fn check_model(config: &LlamaConfig) -> Vec<CheckResult> {
    let mut model = Llama::new(config.clone(), 7).expect("the tiny config is valid");
    let mut rng = Rng::new(11);
    randomize(&mut model, &mut rng);
    let (batch, seq) = (2, 4);
    let mut draw = || -> Vec<u32> {
        (0..batch * seq)
            .map(|_| rng.below(config.vocab) as u32)
            .collect()
    };
    let (tokens, targets) = (draw(), draw());
    model
        .forward(&tokens, batch, Some(&targets))
        .expect("valid batch");
    model.backward().expect("forward had targets");
    let label = config.placement;
    check_param_gradients(
        |f| model.visit_params(f),
        |p| reference_loss(config, p, &tokens, &targets, batch),
        (STEP, TOLERANCE),
        |name| format!("llama {label} {name}"),
    )
}

/// One summary per variant: the worst tensor of [`check_model`].
pub fn checks() -> Vec<CheckResult> {
    variants()
        .into_iter()
        .map(|(label, config)| {
            let results = check_model(&config);
            let worst = results.iter().map(|r| r.max_rel_err).fold(0.0, f64::max);
            CheckResult {
                name: format!("llama {label} ({} tensors)", results.len()),
                max_abs_err: results.iter().map(|r| r.max_abs_err).fold(0.0, f64::max),
                max_rel_err: worst,
                tolerance: TOLERANCE,
                passed: results.iter().all(|r| r.passed),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_passes() {
        for (label, config) in variants() {
            let failed: Vec<_> = check_model(&config)
                .into_iter()
                .filter(|r| !r.passed)
                .collect();
            assert!(failed.is_empty(), "{label}: {failed:#?}");
        }
    }
}
