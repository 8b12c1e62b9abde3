//! The encoder classifier, whole, against an `f64` reference by finite differences: every
//! parameter tensor's gradient, for every placement, pooled by a [CLS] token or by the mean
//! over the real tokens, on a right-padded batch (rows of 4, 2 and 1 tokens in 4
//! positions), three classes.
//!
//! ```text
//! L = mean_b CE(pool(Encoder(√C·E[[CLS] ++ tokens_b] + P; keys < len_b)) · W + b, label_b)
//! ```
//! A training forward with the encoder's dropout is checked too ([`check_training`]): its
//! masks are pure functions of the seed and the element's index, so finite differences see
//! a fixed function, and the reference applies the same masks at the same places.
//!
//! The reference reads parameters by name and shares nothing with the model's code but the
//! definitions (docs/architecture.md, `classify/encoder.rs`); its attention and its pooling,
//! head and loss are those of the seq2seq and classifier checks.
//!
//! ```
//! use resnorm::classify::Pooling;
//! use resnorm::gradcheck::encoder_classifier::check_model;
//! use resnorm::kernels::NormKind;
//! use resnorm::models::gpt::Placement;
//! let results = check_model(Placement::PostLn, NormKind::Rms, Pooling::Cls);
//! assert!(results.iter().all(|r| r.passed), "{results:?}");
//! ```

use super::classify::{reference_loss as head_loss, Case};
use super::gpt::{randomize_param, ReferenceParams};
use super::layers::{gelu_reference, linear_reference};
use super::norms::norm_reference;
use super::seq2seq::attention;
use super::{check_param_gradients, CheckResult};
use crate::classify::{Classifier, ClassifierBody, EncoderBody, EncoderConfig, Pooling, Task};
use crate::kernels::NormKind;
use crate::models::gpt::Placement;
use crate::models::seq2seq::dropout::{Site, ENCODER_STACK};
use crate::models::seq2seq::Dropout;
use crate::rng::Rng;

/// Relative error the model's `f32` gradients must stay under.
const TOLERANCE: f64 = 2e-4;
/// `no-residual` chains every norm with no skip path, and its first tensors' gradients come
/// out of cancelling sums (as in the seq2seq check).
const TOLERANCE_NO_RESIDUAL: f64 = 1e-3;
const STEP: f64 = 1e-5;
const SEQ: usize = 4;
const LENGTHS: [usize; 3] = [4, 2, 1];
const LABELS: [u32; 3] = [2, 0, 1];
/// The encoder dropout rate [`check_training`] runs with.
const TRAINING_DROPOUT: f32 = 0.3;
/// The seed of the training forward's masks.
const DROPOUT_SEED: u64 = 21;

/// A sublayer's `F` in the reference.
type Transform<'a> = dyn Fn(&[f64]) -> Vec<f64> + 'a;

fn tolerance(placement: Placement) -> f64 {
    match placement {
        Placement::NoResidual => TOLERANCE_NO_RESIDUAL,
        _ => TOLERANCE,
    }
}

/// The tiny body every check runs on.
pub fn tiny_config(placement: Placement, norm: NormKind, pooling: Pooling) -> EncoderConfig {
    EncoderConfig {
        vocab: 11,
        layers: 2,
        heads: 2,
        width: 8,
        context: SEQ,
        placement,
        norm,
        eps: 1e-5,
        cls: pooling == Pooling::Cls,
    }
}

/// The hidden states `[B, prefix + SEQ, C]` of the body `config` with parameters `p`, in
/// `f64` from the definitions; with `dropout`, its masks on the embedding, every unit's
/// output, every MLP activation and every attention's probabilities.
fn reference_hidden(
    config: &EncoderConfig,
    p: &ReferenceParams,
    tokens: &[u32],
    dropout: Option<Dropout>,
) -> Vec<f64> {
    let drop = |x: &mut [f64], site: Site| {
        if let Some(d) = dropout {
            let mask = d.mask(ENCODER_STACK, site);
            x.iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v *= mask.factor(i as u64) as f64);
        }
    };
    let (c, heads, prefix) = (config.width, config.heads, config.prefix());
    let seq = SEQ + prefix;
    let batch = LENGTHS.len();
    let lengths: Vec<usize> = LENGTHS.iter().map(|n| n + prefix).collect();
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
        let (w, b) = (get(&format!("{name}.weight")), get(&format!("{name}.bias")));
        linear_reference(x, w, b, n_in, n_out)
    };
    let add = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a + b).collect::<Vec<f64>>();
    let embed = get("embed.weight");
    let mut x = Vec::with_capacity(batch * seq * c);
    for row in tokens.chunks_exact(SEQ) {
        let cls = (prefix == 1).then_some(config.vocab as u32);
        for (t, &tok) in cls.iter().chain(row).enumerate() {
            x.extend((0..c).map(|j| {
                let angle = t as f64 * (-(10000f64.ln()) * (j - j % 2) as f64 / c as f64).exp();
                let position = if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
                (c as f64).sqrt() * embed[tok as usize * c + j] + position as f64
            }));
        }
    }
    let self_attention = |h: &[f64], prefix: &str, unit: usize| {
        let qkv = linear(h, &format!("{prefix}.c_attn"), c, 3 * c);
        let part = |k: usize| -> Vec<f64> {
            qkv.chunks_exact(3 * c)
                .flat_map(|r| r[k * c..][..c].to_vec())
                .collect()
        };
        let shape = (batch, seq, seq);
        let y = attention(
            &part(0),
            (&part(1), &part(2)),
            shape,
            c,
            heads,
            false,
            Some(&lengths),
            dropout.map(|d| d.mask(ENCODER_STACK, Site::Attention(unit))),
        );
        linear(&y, &format!("{prefix}.c_proj"), c, c)
    };
    let mlp = |h: &[f64], prefix: &str, unit: usize| {
        let u = linear(h, &format!("{prefix}.c_fc"), c, 4 * c);
        let mut a: Vec<f64> = u.iter().map(|&u| gelu_reference(u)).collect();
        drop(&mut a, Site::Activation(unit));
        linear(&a, &format!("{prefix}.c_proj"), 4 * c, c)
    };
    drop(&mut x, Site::Input);
    let alpha = config.placement.residual_scale(config.layers) as f64;
    let mut dual = x.clone();
    for i in 0..config.layers {
        let l = format!("encoder.{i}");
        let attn = |h: &[f64]| self_attention(h, &format!("{l}.self_attn"), 2 * i);
        let ff = |h: &[f64]| mlp(h, &format!("{l}.mlp"), 2 * i + 1);
        let sublayers: [(&Transform, &str, &str); 2] =
            [(&attn, "ln_1", "rezero_self"), (&ff, "ln_2", "rezero_mlp")];
        for (j, (sublayer, ln, gate)) in sublayers.into_iter().enumerate() {
            // `F` ends in its output's dropout, before it joins the stream.
            let f = |h: &[f64]| {
                let mut out = sublayer(h);
                drop(&mut out, Site::Output(2 * i + j));
                out
            };
            let ln = format!("{l}.{ln}");
            x = match config.placement {
                Placement::PreLn => add(&x, &f(&norm(&x, &ln))),
                Placement::PostLn => norm(&add(&x, &f(&x)), &ln),
                Placement::Sandwich => add(&x, &norm(&f(&norm(&x, &ln)), &format!("{ln}_post"))),
                Placement::DeepNorm => {
                    let scaled: Vec<f64> = x.iter().map(|v| alpha * v).collect();
                    norm(&add(&scaled, &f(&x)), &ln)
                }
                Placement::ReZero => {
                    let a = get(&format!("{l}.{gate}"))[0];
                    add(&x, &f(&x).iter().map(|v| a * v).collect::<Vec<f64>>())
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
    match config.placement {
        Placement::ResiDual => add(&x, &norm(&dual, "encoder.ln_f")),
        p if p.has_final_norm() => norm(&x, "encoder.ln_f"),
        _ => x,
    }
}

/// Checks the gradient of every parameter tensor of a tiny encoder classifier against
/// central differences of the reference; one [`CheckResult`] per tensor, named
/// `encoder classifier <placement> <norm> <pooling> <tensor>`.
pub fn check_model(placement: Placement, norm: NormKind, pooling: Pooling) -> Vec<CheckResult> {
    check_model_with(placement, norm, pooling, 0.0)
}

/// [`check_model`] of a training forward: the encoder's dropout at rate 0.3, masks of a
/// fixed seed; tensors named `... training <tensor>`.
pub fn check_training(placement: Placement, norm: NormKind, pooling: Pooling) -> Vec<CheckResult> {
    check_model_with(placement, norm, pooling, TRAINING_DROPOUT)
}

fn check_model_with(
    placement: Placement,
    norm: NormKind,
    pooling: Pooling,
    rate: f32,
) -> Vec<CheckResult> {
    let config = tiny_config(placement, norm, pooling);
    let body = EncoderBody::new(config.clone(), 7).expect("the tiny config is valid");
    let task = Task::Classes(vec!["a".into(), "b".into(), "c".into()]);
    let mut model = Classifier::new(ClassifierBody::Encoder(body), &task, pooling, false, 9)
        .and_then(|m| m.with_body_dropout(rate))
        .expect("a valid classifier");
    let mut rng = Rng::new(13);
    model
        .params_mut()
        .into_iter()
        .for_each(|p| randomize_param(p, &mut rng));
    let tokens: Vec<u32> = (0..SEQ * LENGTHS.len())
        .map(|_| rng.below(config.vocab) as u32)
        .collect();
    let dropout = (rate > 0.0).then(|| {
        Dropout::new(rate, rate, DROPOUT_SEED)
            .and_then(|d| d.with_attention(rate))
            .expect("a rate below 1")
    });
    (model.forward_train(&tokens, &LENGTHS, DROPOUT_SEED, &mut Rng::new(0)))
        .expect("a valid batch");
    model.loss(&LABELS, &[0.0; 3]).expect("one label per row");
    model.zero_grad();
    model.backward().expect("after a loss");
    let case = Case {
        pooling,
        regression: false,
        lengths: LENGTHS.iter().map(|n| n + config.prefix()).collect(),
        seq: SEQ + config.prefix(),
        width: config.width,
        outputs: 3,
        labels: LABELS.to_vec(),
        scores: vec![0.0; 3],
    };
    let loss = |p: &ReferenceParams| {
        let h = reference_hidden(&config, p, &tokens, dropout);
        head_loss(&case, &h, &p["head.weight"], &p["head.bias"])
    };
    let mode = if dropout.is_some() { " training" } else { "" };
    check_param_gradients(
        |f| model.visit_params(f),
        loss,
        (STEP, tolerance(placement)),
        |name| format!("encoder classifier {placement} {norm} {pooling}{mode} {name}"),
    )
}

/// One summary per placement and pooling (LayerNorm and RMSNorm taking turns): the worst
/// tensor of [`check_model`]; and one per placement of [`check_training`] (the poolings
/// taking turns).
pub fn checks() -> Vec<CheckResult> {
    let mut out = Vec::new();
    for (i, placement) in Placement::ALL.into_iter().enumerate() {
        for (j, pooling) in [Pooling::Cls, Pooling::Mean].into_iter().enumerate() {
            let norm = [NormKind::Layer, NormKind::Rms][(i + j) % 2];
            let mut runs = vec![(check_model(placement, norm, pooling), "")];
            if j == i % 2 {
                runs.push((check_training(placement, norm, pooling), " training"));
            }
            for (results, mode) in runs {
                out.push(summary(placement, norm, pooling, mode, &results));
            }
        }
    }
    out
}

/// The worst tensor of one check, under the check's name.
fn summary(
    placement: Placement,
    norm: NormKind,
    pooling: Pooling,
    mode: &str,
    results: &[CheckResult],
) -> CheckResult {
    let worst = results
        .iter()
        .max_by(|a, b| a.max_rel_err.total_cmp(&b.max_rel_err))
        .expect("a model has parameters");
    CheckResult {
        name: format!(
            "encoder classifier {placement} {norm} {pooling}{mode} ({} tensors)",
            results.len()
        ),
        max_abs_err: results.iter().map(|r| r.max_abs_err).fold(0.0, f64::max),
        max_rel_err: worst.max_rel_err,
        tolerance: tolerance(placement),
        passed: results.iter().all(|r| r.passed),
    }
}
