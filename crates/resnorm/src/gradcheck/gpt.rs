//! A naive `f64` reference of the whole GPT for every placement, and the finite-difference
//! check of the model's backward pass with respect to every parameter tensor.
//!
//! The reference reads parameters by their checkpoint names, so it shares nothing with the
//! model's code but the definitions written in `models/gpt/unit.rs` (and in
//! `tools/fixtures/gpt.py`, the PyTorch twin).
//!
//! ```
//! use resnorm::gradcheck::gpt::check_model;
//! use resnorm::kernels::NormKind;
//! use resnorm::models::gpt::Placement;
//! let results = check_model(Placement::PreLn, NormKind::Rms);
//! assert!(results.iter().all(|r| r.passed), "{results:?}");
//! ```

use super::layers::{
    attention_reference, cross_entropy_reference, gelu_reference, linear_reference,
};
use super::norms::norm_reference;
use super::{check_param_gradients, CheckResult};
use crate::kernels::NormKind;
use crate::models::gpt::{Gpt, GptConfig, Placement};
use crate::nn::{Param, ParamKind};
use crate::rng::Rng;

/// Relative error the model's `f32` gradients must stay under.
const TOLERANCE: f64 = 2e-4;
const STEP: f64 = 1e-5;

pub use super::ReferenceParams;

/// The tiny configuration every model check runs on.
pub fn tiny_config(placement: Placement, norm: NormKind) -> GptConfig {
    GptConfig {
        layers: 2,
        heads: 2,
        width: 8,
        context: 5,
        vocab: 11,
        placement,
        norm,
        eps: 1e-5,
        residual_scaling: true,
    }
}

/// Mean cross-entropy of the model `config` with parameters `p` on `tokens` / `targets`
/// (`batch` rows), computed in `f64` straight from the definitions.
pub fn reference_loss(
    config: &GptConfig,
    p: &ReferenceParams,
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
) -> f64 {
    let (c, v) = (config.width, config.vocab);
    let seq = tokens.len() / batch;
    let get = |name: &str| {
        p.get(name)
            .unwrap_or_else(|| panic!("reference needs {name}"))
            .as_slice()
    };
    let eps = config.eps as f64;
    let norm = |x: &[f64], name: &str| {
        let bias = (config.norm == NormKind::Layer).then(|| get(&format!("{name}.bias")));
        norm_reference(config.norm, x, get(&format!("{name}.weight")), bias, eps)
    };
    let linear = |x: &[f64], name: &str, n_in: usize, n_out: usize| {
        linear_reference(
            x,
            get(&format!("{name}.weight")),
            get(&format!("{name}.bias")),
            n_in,
            n_out,
        )
    };
    let add = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a + b).collect::<Vec<f64>>();
    let (wte, wpe) = (get("wte.weight"), get("wpe.weight"));
    let mut x: Vec<f64> = Vec::with_capacity(tokens.len() * c);
    for (i, &tok) in tokens.iter().enumerate() {
        let t = i % seq;
        x.extend((0..c).map(|j| wte[tok as usize * c + j] + wpe[t * c + j]));
    }
    let mut dual = x.clone();
    let alpha = config.placement.residual_scale(config.layers) as f64;
    for i in 0..config.layers {
        for (sub, ln) in [("attn", "ln_1"), ("mlp", "ln_2")] {
            let f = |h: &[f64]| -> Vec<f64> {
                if sub == "attn" {
                    let qkv = linear(h, &format!("h.{i}.attn.c_attn"), c, 3 * c);
                    let y = attention_reference(&qkv, batch, seq, c, config.heads);
                    linear(&y, &format!("h.{i}.attn.c_proj"), c, c)
                } else {
                    let u = linear(h, &format!("h.{i}.mlp.c_fc"), c, 4 * c);
                    let a: Vec<f64> = u.iter().map(|&u| gelu_reference(u)).collect();
                    linear(&a, &format!("h.{i}.mlp.c_proj"), 4 * c, c)
                }
            };
            let ln = format!("h.{i}.{ln}");
            x = match config.placement {
                Placement::PreLn => add(&x, &f(&norm(&x, &ln))),
                Placement::PostLn => norm(&add(&x, &f(&x)), &ln),
                Placement::Sandwich => add(&x, &norm(&f(&norm(&x, &ln)), &format!("{ln}_post"))),
                Placement::DeepNorm => {
                    let fx = f(&x);
                    norm(
                        &x.iter()
                            .zip(&fx)
                            .map(|(x, f)| alpha * x + f)
                            .collect::<Vec<f64>>(),
                        &ln,
                    )
                }
                Placement::ReZero => {
                    let a = get(&format!("h.{i}.rezero_{sub}"))[0];
                    let fx = f(&x);
                    x.iter().zip(&fx).map(|(x, f)| x + a * f).collect()
                }
                Placement::ResiDual => {
                    let fx = f(&x);
                    dual = add(&dual, &fx);
                    norm(&add(&x, &fx), &ln)
                }
                Placement::NoNorm => add(&x, &f(&x)),
                Placement::NoResidual => f(&norm(&x, &ln)),
            };
        }
    }
    let z = match config.placement {
        Placement::ResiDual => add(&x, &norm(&dual, "ln_f")),
        p if p.has_final_norm() => norm(&x, "ln_f"),
        _ => x,
    };
    let logits = linear_reference(&z, &transpose(wte, v, c), &vec![0.0; v], c, v);
    cross_entropy_reference(&logits, targets, v)
}

fn transpose(m: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols)
        .flat_map(|j| (0..rows).map(move |i| m[i * cols + j]))
        .collect()
}

/// Gives every parameter a random value large enough that every path carries signal (gains
/// near 1, ReZero gates near 0.5, weights ~ 1/√fan_in): a check of the math, not a training
/// initialization.
pub fn randomize(model: &mut Gpt, rng: &mut Rng) {
    model.visit_params_mut(&mut |p: &mut Param| randomize_param(p, rng));
}

/// [`randomize`]'s rule for one parameter, by its kind.
pub fn randomize_param(p: &mut Param, rng: &mut Rng) {
    let fan_in = p.shape[0] as f32;
    for v in &mut p.value {
        let n = rng.normal();
        *v = match p.kind {
            ParamKind::Norm if p.name.ends_with(".weight") => 1.0 + 0.2 * n,
            ParamKind::Norm | ParamKind::Bias => 0.1 * n,
            ParamKind::Scalar => 0.5 + 0.1 * n,
            ParamKind::Embedding => 0.5 * n,
            ParamKind::Weight => n / fan_in.sqrt(),
        };
    }
}

/// Checks the gradient of the loss with respect to every parameter tensor of a tiny
/// `placement` / `norm` model against central differences of [`reference_loss`]; one
/// [`CheckResult`] per tensor, named `gpt <placement> <norm> <tensor>`.
pub fn check_model(placement: Placement, norm: NormKind) -> Vec<CheckResult> {
    let config = tiny_config(placement, norm);
    let mut model = Gpt::new(config.clone(), 7).expect("the tiny config is valid");
    let mut rng = Rng::new(11);
    randomize(&mut model, &mut rng);
    let (batch, seq) = (2, 4);
    let tokens: Vec<u32> = (0..batch * seq)
        .map(|_| rng.below(config.vocab) as u32)
        .collect();
    let targets: Vec<u32> = (0..batch * seq)
        .map(|_| rng.below(config.vocab) as u32)
        .collect();
    model
        .forward(&tokens, batch, Some(&targets))
        .expect("valid batch");
    model.backward().expect("forward had targets");
    check_param_gradients(
        |f| model.visit_params(f),
        |p| reference_loss(&config, p, &tokens, &targets, batch),
        (STEP, TOLERANCE),
        |name| format!("gpt {placement} {norm} {name}"),
    )
}

/// One summary per placement and norm kind: the worst tensor of [`check_model`].
pub fn checks() -> Vec<CheckResult> {
    let mut out = Vec::new();
    for placement in Placement::ALL {
        let kinds: &[NormKind] = if placement.normalizes() {
            &[NormKind::Layer, NormKind::Rms]
        } else {
            &[NormKind::Layer]
        };
        for &norm in kinds {
            let results = check_model(placement, norm);
            let worst = results
                .iter()
                .max_by(|a, b| a.max_rel_err.total_cmp(&b.max_rel_err))
                .expect("a model has parameters");
            out.push(CheckResult {
                name: format!("gpt {placement} {norm} ({} tensors)", results.len()),
                max_abs_err: results.iter().map(|r| r.max_abs_err).fold(0.0, f64::max),
                max_rel_err: worst.max_rel_err,
                tolerance: TOLERANCE,
                passed: results.iter().all(|r| r.passed),
            });
        }
    }
    out
}
