//! A naive `f64` reference of the whole encoder-decoder for every placement, and the
//! finite-difference check of the model's backward pass with respect to every parameter
//! tensor.
//!
//! The reference reads parameters by their checkpoint names and shares nothing with the
//! model's code but the definitions (`models/gpt/unit.rs`, `models/seq2seq/`, and the
//! PyTorch twin `tools/fixtures/seq2seq.py`). Its batch is padded on both sides, so the
//! check also covers the key lengths and the ignored target positions. A training step's
//! dropout and label smoothing are checked too ([`check_training`]): the masks are pure
//! functions of the seed, so the reference draws the same ones (through
//! [`crate::kernels::dropout`]'s hash only) and finite differences see a fixed function.
//!
//! ```
//! use resnorm::gradcheck::seq2seq::check_model;
//! use resnorm::kernels::NormKind;
//! use resnorm::models::gpt::Placement;
//! let results = check_model(Placement::ResiDual, NormKind::Layer);
//! assert!(results.iter().all(|r| r.passed), "{results:?}");
//! ```

use super::gpt::{randomize_param, ReferenceParams};
use super::layers::{cross_entropy_reference, gelu_reference, linear_reference};
use super::norms::norm_reference;
use super::{check_param_gradients, CheckResult};
use crate::kernels::dropout::DropoutMask;
use crate::kernels::NormKind;
use crate::models::gpt::Placement;
use crate::models::seq2seq::dropout::{Site, DECODER_STACK, ENCODER_STACK};
use crate::models::seq2seq::{Batch, Dropout, Seq2Seq, Seq2SeqConfig};
use crate::rng::Rng;

/// Relative error the model's `f32` gradients must stay under.
const TOLERANCE: f64 = 2e-4;
/// The same for `no-residual`: there the decoder's stream reaches the output only through
/// cross-attention's queries, between norms, and the gradients of the tensors before the
/// cross-attention (`ln_2` above all) come out of several norms' cancelling sums; their f32
/// error measured 2.0-3.2e-4 and moved with the SIMD level (the summation order), which a
/// wrong formula would not do.
const TOLERANCE_NO_RESIDUAL: f64 = 1e-3;

fn tolerance(placement: Placement) -> f64 {
    match placement {
        Placement::NoResidual => TOLERANCE_NO_RESIDUAL,
        _ => TOLERANCE,
    }
}
const STEP: f64 = 1e-5;

/// The tiny configuration every check runs on: one encoder and one decoder layer (DeepNorm's
/// constants still differ between the stacks). With deeper stacks, `no-residual`'s
/// gradients before the decoder's cross-attention fall near 1e-8, below what f32 resolves
/// next to the rest.
pub fn tiny_config(placement: Placement, norm: NormKind) -> Seq2SeqConfig {
    Seq2SeqConfig {
        vocab: 11,
        width: 8,
        heads: 2,
        encoder_layers: 1,
        decoder_layers: 1,
        max_len: 6,
        placement,
        norm,
        eps: 1e-5,
    }
}

/// An owned padded batch: sources of `S` positions, targets of `T`.
#[derive(Clone, Debug)]
pub struct OwnedBatch {
    /// Sentences.
    pub batch: usize,
    /// `[B, S]`.
    pub src: Vec<u32>,
    /// Valid source positions.
    pub src_lengths: Vec<usize>,
    /// `[B, T]` decoder inputs.
    pub tgt: Vec<u32>,
    /// Valid target positions.
    pub tgt_lengths: Vec<usize>,
    /// `[B, T]` targets.
    pub targets: Vec<u32>,
}

impl OwnedBatch {
    /// Random tokens below `vocab`, `lengths` per side.
    pub fn random(
        rng: &mut Rng,
        vocab: usize,
        src: (usize, &[usize]),
        tgt: (usize, &[usize]),
    ) -> Self {
        let batch = src.1.len();
        let mut draw = |n: usize| {
            (0..n)
                .map(|_| rng.below(vocab) as u32)
                .collect::<Vec<u32>>()
        };
        OwnedBatch {
            batch,
            src: draw(batch * src.0),
            src_lengths: src.1.to_vec(),
            tgt: draw(batch * tgt.0),
            tgt_lengths: tgt.1.to_vec(),
            targets: draw(batch * tgt.0),
        }
    }

    /// The batch as the model takes it.
    pub fn view(&self) -> Batch<'_> {
        Batch {
            batch: self.batch,
            src: &self.src,
            src_lengths: &self.src_lengths,
            tgt: &self.tgt,
            tgt_lengths: &self.tgt_lengths,
            targets: Some(&self.targets),
        }
    }
}

/// Multi-head attention in f64: queries `[B·Tq, C]`, keys and values `[B·Tk, C]`, `len_b`
/// valid keys, causal (`Tq = Tk`) or not, the probabilities dropped out by `dropout` if
/// given (probability `(b, h, i, j)` at the mask's index `((b·H + h)·Tq + i)·Tk + j`); a
/// query that sees no key gives zeros.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    q: &[f64],
    kv: (&[f64], &[f64]),
    (batch, tq, tk): (usize, usize, usize),
    c: usize,
    heads: usize,
    causal: bool,
    lengths: Option<&[usize]>,
    dropout: Option<DropoutMask>,
) -> Vec<f64> {
    let (k, v) = kv;
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; batch * tq * c];
    for b in 0..batch {
        let len = lengths.map_or(tk, |l| l[b]);
        for h in 0..heads {
            for i in 0..tq {
                let seen = if causal { len.min(i + 1) } else { len };
                if seen == 0 {
                    continue;
                }
                let qi = &q[(b * tq + i) * c + h * d..][..d];
                let scores: Vec<f64> = (0..seen)
                    .map(|j| {
                        let kj = &k[(b * tk + j) * c + h * d..][..d];
                        scale * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for (j, e) in e.iter().enumerate() {
                    let index = ((b * heads + h) * tq + i) * tk + j;
                    let kept = dropout.map_or(1.0, |m| m.factor(index as u64) as f64);
                    for x in 0..d {
                        out[(b * tq + i) * c + h * d + x] +=
                            kept * e / total * v[(b * tk + j) * c + h * d + x];
                    }
                }
            }
        }
    }
    out
}

/// Mean cross-entropy over the valid target positions of the model `config` with
/// parameters `p` on `batch`, computed in `f64` straight from the definitions.
pub fn reference_loss(config: &Seq2SeqConfig, p: &ReferenceParams, batch: &OwnedBatch) -> f64 {
    reference_training_loss(config, p, batch, (None, 0.0))
}

/// [`reference_loss`] of a training step: `dropout`'s masks on the embeddings, every unit's
/// output, the MLPs' activations and the attentions' probabilities, and the labels smoothed
/// by `smoothing`.
pub fn reference_training_loss(
    config: &Seq2SeqConfig,
    p: &ReferenceParams,
    batch: &OwnedBatch,
    (dropout, smoothing): (Option<Dropout>, f64),
) -> f64 {
    let drop = |x: &mut [f64], stack: u64, site: Site| {
        if let Some(d) = dropout {
            let mask = d.mask(stack, site);
            x.iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v *= mask.factor(i as u64) as f64);
        }
    };
    let (c, v, heads) = (config.width, config.vocab, config.heads);
    let b = batch.batch;
    let (s_len, t_len) = (batch.src.len() / b, batch.tgt.len() / b);
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
    let embed = get("embed.weight");
    let embed_tokens = |tokens: &[u32], seq: usize| -> Vec<f64> {
        let scale = (c as f64).sqrt();
        let mut x = Vec::with_capacity(tokens.len() * c);
        for (i, &tok) in tokens.iter().enumerate() {
            let t = (i % seq) as f64;
            x.extend((0..c).map(|j| {
                let angle = t * (-(10000f64.ln()) * (j - j % 2) as f64 / c as f64).exp();
                let position = if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
                scale * embed[tok as usize * c + j] + position as f64
            }));
        }
        x
    };
    let attention_mask = |stack: u64, k: usize| dropout.map(|d| d.mask(stack, Site::Attention(k)));
    let mlp = |h: &[f64], prefix: &str, (stack, k): (u64, usize)| {
        let u = linear(h, &format!("{prefix}.c_fc"), c, 4 * c);
        let mut a: Vec<f64> = u.iter().map(|&u| gelu_reference(u)).collect();
        drop(&mut a, stack, Site::Activation(k));
        linear(&a, &format!("{prefix}.c_proj"), 4 * c, c)
    };
    let self_attention =
        |h: &[f64], prefix: &str, (seq, causal): (usize, bool), lengths: Option<&[usize]>, site| {
            let qkv = linear(h, &format!("{prefix}.c_attn"), c, 3 * c);
            let part = |k: usize| -> Vec<f64> {
                qkv.chunks_exact(3 * c)
                    .flat_map(|r| r[k * c..][..c].to_vec())
                    .collect()
            };
            let y = attention(
                &part(0),
                (&part(1), &part(2)),
                (b, seq, seq),
                c,
                heads,
                causal,
                lengths,
                site,
            );
            linear(&y, &format!("{prefix}.c_proj"), c, c)
        };
    // One residual unit as unit.rs defines it; `F` ends in its output's dropout.
    let unit = |x: &[f64],
                dual: &mut Vec<f64>,
                f: &dyn Fn(&[f64]) -> Vec<f64>,
                (ln, gate): (&str, &str),
                (alpha, stack, k): (f64, u64, usize)|
     -> Vec<f64> {
        let f = |h: &[f64]| {
            let mut out = f(h);
            drop(&mut out, stack, Site::Output(k));
            out
        };
        match config.placement {
            Placement::PreLn => add(x, &f(&norm(x, ln))),
            Placement::PostLn => norm(&add(x, &f(x)), ln),
            Placement::Sandwich => add(x, &norm(&f(&norm(x, ln)), &format!("{ln}_post"))),
            Placement::DeepNorm => {
                let fx = f(x);
                norm(
                    &x.iter()
                        .zip(&fx)
                        .map(|(x, f)| alpha * x + f)
                        .collect::<Vec<f64>>(),
                    ln,
                )
            }
            Placement::ReZero => {
                let a = get(gate)[0];
                let fx = f(x);
                x.iter().zip(&fx).map(|(x, f)| x + a * f).collect()
            }
            Placement::ResiDual => {
                let fx = f(x);
                *dual = add(dual, &fx);
                norm(&add(x, &fx), ln)
            }
            Placement::NoNorm => add(x, &f(x)),
            Placement::NoResidual => f(&norm(x, ln)),
        }
    };
    let final_norm = |x: Vec<f64>, dual: &[f64], name: &str| match config.placement {
        Placement::ResiDual => add(&x, &norm(dual, name)),
        p if p.has_final_norm() => norm(&x, name),
        _ => x,
    };
    // The encoder.
    let alpha = config.encoder_alpha() as f64;
    let mut x = embed_tokens(&batch.src, s_len);
    drop(&mut x, ENCODER_STACK, Site::Input);
    let mut dual = x.clone();
    let src_lengths = Some(&batch.src_lengths[..]);
    for i in 0..config.encoder_layers {
        let p = format!("encoder.{i}");
        let stack = ENCODER_STACK;
        let mask = attention_mask(stack, 2 * i);
        let attn = |h: &[f64]| {
            self_attention(
                h,
                &format!("{p}.self_attn"),
                (s_len, false),
                src_lengths,
                mask,
            )
        };
        let names = (format!("{p}.ln_1"), format!("{p}.rezero_self"));
        x = unit(
            &x,
            &mut dual,
            &attn,
            (&names.0, &names.1),
            (alpha, stack, 2 * i),
        );
        let ff = |h: &[f64]| mlp(h, &format!("{p}.mlp"), (stack, 2 * i + 1));
        let names = (format!("{p}.ln_2"), format!("{p}.rezero_mlp"));
        x = unit(
            &x,
            &mut dual,
            &ff,
            (&names.0, &names.1),
            (alpha, stack, 2 * i + 1),
        );
    }
    let memory = final_norm(x, &dual, "encoder.ln_f");
    // The decoder.
    let alpha = config.decoder_alpha() as f64;
    let mut y = embed_tokens(&batch.tgt, t_len);
    drop(&mut y, DECODER_STACK, Site::Input);
    let mut dual = y.clone();
    for i in 0..config.decoder_layers {
        let p = format!("decoder.{i}");
        let stack = DECODER_STACK;
        let mask = attention_mask(stack, 3 * i);
        let attn =
            |h: &[f64]| self_attention(h, &format!("{p}.self_attn"), (t_len, true), None, mask);
        let names = (format!("{p}.ln_1"), format!("{p}.rezero_self"));
        y = unit(
            &y,
            &mut dual,
            &attn,
            (&names.0, &names.1),
            (alpha, stack, 3 * i),
        );
        let cross = |h: &[f64]| {
            let q = linear(h, &format!("{p}.cross_attn.c_q"), c, c);
            let kv = linear(&memory, &format!("{p}.cross_attn.c_kv"), c, 2 * c);
            let part = |k: usize| -> Vec<f64> {
                kv.chunks_exact(2 * c)
                    .flat_map(|r| r[k * c..][..c].to_vec())
                    .collect()
            };
            let o = attention(
                &q,
                (&part(0), &part(1)),
                (b, t_len, s_len),
                c,
                heads,
                false,
                src_lengths,
                attention_mask(stack, 3 * i + 1),
            );
            linear(&o, &format!("{p}.cross_attn.c_proj"), c, c)
        };
        let names = (format!("{p}.ln_2"), format!("{p}.rezero_cross"));
        y = unit(
            &y,
            &mut dual,
            &cross,
            (&names.0, &names.1),
            (alpha, stack, 3 * i + 1),
        );
        let ff = |h: &[f64]| mlp(h, &format!("{p}.mlp"), (stack, 3 * i + 2));
        let names = (format!("{p}.ln_3"), format!("{p}.rezero_mlp"));
        y = unit(
            &y,
            &mut dual,
            &ff,
            (&names.0, &names.1),
            (alpha, stack, 3 * i + 2),
        );
    }
    let z = final_norm(y, &dual, "decoder.ln_f");
    // The tied output projection on the valid positions.
    let mut logits = Vec::new();
    let mut targets = Vec::new();
    for (s, &len) in batch.tgt_lengths.iter().enumerate() {
        for t in 0..len {
            let row = &z[(s * t_len + t) * c..][..c];
            logits.extend((0..v).map(|w| (0..c).map(|j| row[j] * embed[w * c + j]).sum::<f64>()));
            targets.push(batch.targets[s * t_len + t]);
        }
    }
    let nll = cross_entropy_reference(&logits, &targets, v);
    // ε·mean over the rows of (lse - mean_j z_j), the smoothing term.
    let uniform: f64 = logits
        .chunks_exact(v)
        .map(|z| {
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            lse - z.iter().sum::<f64>() / v as f64
        })
        .sum::<f64>()
        / targets.len() as f64;
    (1.0 - smoothing) * nll + smoothing * uniform
}

/// Checks the gradient of the loss with respect to every parameter tensor of a tiny
/// `placement` / `norm` model against central differences of [`reference_loss`], on a
/// batch padded on both sides; one [`CheckResult`] per tensor, named
/// `seq2seq <placement> <norm> <tensor>`.
pub fn check_model(placement: Placement, norm: NormKind) -> Vec<CheckResult> {
    check_model_with(placement, norm, (None, 0.0))
}

/// The residual, activation and attention dropout rates and the label smoothing
/// [`check_training`] runs with.
pub const TRAINING: (f32, f32, f32, f32) = (0.3, 0.2, 0.25, 0.1);

/// [`check_model`] of a training step: residual dropout 0.3, activation dropout 0.2,
/// attention dropout 0.25 and label smoothing 0.1 ([`TRAINING`]), with masks of a fixed
/// seed.
pub fn check_training(placement: Placement, norm: NormKind) -> Vec<CheckResult> {
    let (residual, activation, attention, smoothing) = TRAINING;
    let dropout = Dropout::new(residual, activation, 5)
        .and_then(|d| d.with_attention(attention))
        .expect("rates below 1");
    check_model_with(placement, norm, (Some(dropout), smoothing))
}

fn check_model_with(
    placement: Placement,
    norm: NormKind,
    (dropout, smoothing): (Option<Dropout>, f32),
) -> Vec<CheckResult> {
    let config = tiny_config(placement, norm);
    let mut model = Seq2Seq::new(config.clone(), 7).expect("the tiny config is valid");
    let mut rng = Rng::new(11);
    model.visit_params_mut(&mut |p| randomize_param(p, &mut rng));
    let batch = OwnedBatch::random(&mut rng, config.vocab, (5, &[5, 3]), (4, &[4, 2]));
    (model.forward_training(&batch.view(), dropout, smoothing)).expect("valid batch");
    model.backward().expect("forward had targets");
    let mode = if dropout.is_some() { " training" } else { "" };
    check_param_gradients(
        |f| model.visit_params(f),
        |p| reference_training_loss(&config, p, &batch, (dropout, smoothing as f64)),
        (STEP, tolerance(placement)),
        |name| format!("seq2seq{mode} {placement} {norm} {name}"),
    )
}

/// One summary per placement and norm kind (the worst tensor of [`check_model`]), then one
/// per placement of [`check_training`].
pub fn checks() -> Vec<CheckResult> {
    let mut out = Vec::new();
    for placement in Placement::ALL {
        let kinds: &[NormKind] = if placement.normalizes() {
            &[NormKind::Layer, NormKind::Rms]
        } else {
            &[NormKind::Layer]
        };
        for &norm in kinds {
            let name = format!("seq2seq {placement} {norm}");
            out.push(summary(name, check_model(placement, norm), placement));
        }
    }
    for placement in Placement::ALL {
        let name = format!("seq2seq training {placement} layer");
        out.push(summary(
            name,
            check_training(placement, NormKind::Layer),
            placement,
        ));
    }
    out
}

/// The worst tensor of one model's checks.
fn summary(name: String, results: Vec<CheckResult>, placement: Placement) -> CheckResult {
    let worst = results
        .iter()
        .max_by(|a, b| a.max_rel_err.total_cmp(&b.max_rel_err))
        .expect("a model has parameters");
    CheckResult {
        name: format!("{name} ({} tensors)", results.len()),
        max_abs_err: results.iter().map(|r| r.max_abs_err).fold(0.0, f64::max),
        max_rel_err: worst.max_rel_err,
        tolerance: tolerance(placement),
        passed: results.iter().all(|r| r.passed),
    }
}
