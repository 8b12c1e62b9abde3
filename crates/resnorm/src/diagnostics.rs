//! Per-layer training diagnostics: the numbers that show why residual connections and
//! normalization make deep Transformers trainable, cheap enough to collect every few steps.
//!
//! For a model with residual streams `x_0 .. x_2L` (before each residual unit, and after
//! the last; unit `2i` is block `i`'s attention, `2i + 1` its MLP) one [`Diagnostics`] holds:
//!
//! | field | definition |
//! |---|---|
//! | `loss`, `lr` | the step's training loss and learning rate |
//! | `grad_norm` | `‖g‖₂` over every parameter, before clipping |
//! | `stream_rms[k]` | `√(mean(x_k²))` |
//! | `stream_grad_norm[k]` | `‖∂L/∂x_k‖₂` over the batch |
//! | `stream_cosine[k]` | mean over tokens of `cos(x_k, x_{k+1})`: consecutive units' outputs |
//! | `units[k].params[j].grad_norm` | `‖∂L/∂w‖₂` of each parameter of unit `k` |
//! | `units[k].params[j].update_ratio` | `‖w_after − w_before‖₂ / ‖w_before‖₂`, i.e. `‖lr·update‖ / ‖w‖` |
//! | `units[k].grad_norm`, `update_ratio` | the same over all of unit `k`'s parameters together |
//!
//! Collecting takes two calls around the optimizer step, because the update is only known
//! after it and the gradient before clipping only before it:
//! ```text
//! model.record_stream_stats(true); forward; backward
//! pending = PendingDiagnostics::after_backward(&model, step, loss, lr)   // copies the weights
//! clip; optimizer.step
//! diagnostics = pending.finish(&model)                                  // update ratios
//! ```
//! The cost is one copy of the weights and one pass over weights and gradients. Any
//! [`DiagnosedModel`] can be measured: the [`Gpt`] and the Llama-family decoder [`Llama`].
//!
//! ```
//! use resnorm::diagnostics::PendingDiagnostics;
//! use resnorm::models::gpt::{Gpt, GptConfig};
//! let config = GptConfig { layers: 2, heads: 2, width: 8, context: 4, vocab: 7, ..GptConfig::default() };
//! let mut model = Gpt::new(config, 0).unwrap();
//! model.record_stream_stats(true);
//! let loss = model.forward(&[1, 2, 3, 4], 1, Some(&[2, 3, 4, 5])).unwrap().unwrap();
//! model.backward().unwrap();
//! let pending = PendingDiagnostics::after_backward(&model, 0, loss, 0.1).unwrap();
//! model.visit_params_mut(&mut |p| p.value.iter_mut().for_each(|v| *v *= 1.5));
//! let d = pending.finish(&model).unwrap();
//! assert_eq!((d.units.len(), d.stream_rms.len(), d.stream_cosine.len()), (4, 5, 4));
//! assert!((d.units[1].update_ratio.unwrap() - 0.5).abs() < 1e-5);
//! assert!(d.grad_norm > 0.0);
//! ```

use crate::models::gpt::stream_stats::StreamStats;
use crate::models::gpt::Gpt;
use crate::models::llama::Llama;
use crate::nn::Param;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Everything measured at one step; one line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Optimizer step (from 0) the measurements belong to.
    pub step: u64,
    /// Training loss of the step's batch.
    pub loss: f32,
    /// Global gradient norm, before clipping.
    pub grad_norm: f32,
    /// Learning rate of the step.
    pub lr: f32,
    /// RMS of the residual stream `x_0 .. x_2L`.
    pub stream_rms: Vec<f32>,
    /// `‖∂L/∂x_k‖₂` for `k = 0 .. 2L`.
    pub stream_grad_norm: Vec<f32>,
    /// Mean per-token cosine of `x_k` and `x_{k+1}`, `k = 0 .. 2L-1`.
    pub stream_cosine: Vec<f32>,
    /// One entry per residual unit, in order.
    pub units: Vec<UnitDiagnostics>,
    /// Parameters outside the units: embeddings and the final norm.
    pub other: Vec<ParamDiagnostics>,
}

/// Measurements of one residual unit (an attention or MLP sublayer with its norms).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitDiagnostics {
    /// Block index `i` (unit `2i` or `2i + 1`).
    pub block: usize,
    /// `"attn"` or `"mlp"`.
    pub sublayer: String,
    /// Gradient norm of all the unit's parameters together.
    pub grad_norm: f32,
    /// Update/weight ratio of all the unit's parameters together (`None` when they are all 0).
    pub update_ratio: Option<f32>,
    /// Each parameter of the unit.
    pub params: Vec<ParamDiagnostics>,
}

/// Measurements of one parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamDiagnostics {
    /// Its stable name, e.g. `h.3.mlp.c_fc.weight`.
    pub name: String,
    /// `‖∂L/∂w‖₂`.
    pub grad_norm: f32,
    /// `‖w‖₂` before the optimizer step.
    pub weight_norm: f32,
    /// `‖Δw‖₂ / ‖w‖₂` over the step (`None` when `w` was 0, e.g. a ReZero gate at start).
    pub update_ratio: Option<f32>,
}

/// Where a parameter sits, for [`DiagnosedModel::visit_grouped_params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamGroup {
    /// Before the first unit: the embeddings.
    Embedding,
    /// In residual unit `k` (block `k / 2`; even: attention, odd: MLP).
    Unit(usize),
    /// After the last unit: the final norm (and an untied head).
    Final,
}

/// A model whose residual streams and parameters the diagnostics read and whose parameters
/// a training step updates ([`crate::lm::apply_gradients`]), whatever its architecture.
pub trait DiagnosedModel {
    /// Residual units (`2L`: attention and MLP per block).
    fn unit_count(&self) -> usize;
    /// The stream measurements of the last forward and backward, when recording is on.
    fn stream_stats(&self) -> Option<&StreamStats>;
    /// Hands every parameter to `f` with its group: embeddings, then unit by unit, then the
    /// final ones; the same parameters, in the same order, every call.
    fn visit_grouped_params(&self, f: &mut dyn FnMut(ParamGroup, &Param));
    /// Every parameter, for the optimizer.
    fn params_mut(&mut self) -> Vec<&mut Param>;
}

impl DiagnosedModel for Gpt {
    fn unit_count(&self) -> usize {
        self.units.len()
    }

    fn stream_stats(&self) -> Option<&StreamStats> {
        Gpt::stream_stats(self)
    }

    fn visit_grouped_params(&self, f: &mut dyn FnMut(ParamGroup, &Param)) {
        self.embedding
            .visit_params(&mut |p| f(ParamGroup::Embedding, p));
        for (k, unit) in self.units.iter().enumerate() {
            unit.visit_params(&mut |p| f(ParamGroup::Unit(k), p));
        }
        if let Some(ln_f) = &self.ln_f {
            ln_f.visit_params(&mut |p| f(ParamGroup::Final, p));
        }
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        Gpt::params_mut(self)
    }
}

impl DiagnosedModel for Llama {
    fn unit_count(&self) -> usize {
        self.units.len()
    }

    fn stream_stats(&self) -> Option<&StreamStats> {
        Llama::stream_stats(self)
    }

    fn visit_grouped_params(&self, f: &mut dyn FnMut(ParamGroup, &Param)) {
        f(ParamGroup::Embedding, &self.embed);
        for (k, unit) in self.units.iter().enumerate() {
            unit.visit_params(&mut |p| f(ParamGroup::Unit(k), p));
        }
        f(ParamGroup::Final, &self.norm.weight);
        if let Some(head) = &self.lm_head {
            f(ParamGroup::Final, head);
        }
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        Llama::params_mut(self)
    }
}

/// The half of a [`Diagnostics`] known after backward; [`PendingDiagnostics::finish`]
/// completes it after the optimizer step.
#[derive(Clone, Debug)]
pub struct PendingDiagnostics {
    diagnostics: Diagnostics,
    /// Each parameter's values before the step, in
    /// [`DiagnosedModel::visit_grouped_params`] order.
    before: Vec<Vec<f32>>,
    /// How many of `diagnostics.other` (the first ones) are embeddings; the rest are final.
    embedding_params: usize,
}

const OP: &str = "diagnostics";

impl PendingDiagnostics {
    /// Reads gradients, weights and the residual-stream measurements of the last forward
    /// and backward. Fails unless the model recorded stream statistics
    /// ([`Gpt::record_stream_stats`], [`Llama::record_stream_stats`]) through a complete
    /// backward.
    pub fn after_backward<M: DiagnosedModel + ?Sized>(
        model: &M,
        step: u64,
        loss: f32,
        lr: f32,
    ) -> Result<Self> {
        let stats = model.stream_stats().ok_or_else(|| {
            Error::invalid(OP, "the model does not record stream statistics; call record_stream_stats(true) before forward")
        })?;
        let streams = model.unit_count() + 1;
        if stats.rms.len() != streams || stats.grad_norm.len() != streams {
            return Err(Error::invalid(
                OP,
                format!(
                    "stream statistics cover {} forward and {} backward streams, expected {streams} each: run forward and backward first",
                    stats.rms.len(),
                    stats.grad_norm.len()
                ),
            ));
        }
        let mut before = Vec::new();
        let mut describe = |p: &Param| {
            before.push(p.value.to_vec());
            ParamDiagnostics {
                name: p.name.clone(),
                grad_norm: l2(&p.grad) as f32,
                weight_norm: l2(&p.value) as f32,
                update_ratio: None,
            }
        };
        let (mut other, mut finals) = (Vec::new(), Vec::new());
        let mut units: Vec<UnitDiagnostics> = (0..model.unit_count())
            .map(|k| UnitDiagnostics {
                block: k / 2,
                sublayer: if k % 2 == 0 { "attn" } else { "mlp" }.to_string(),
                grad_norm: 0.0,
                update_ratio: None,
                params: Vec::new(),
            })
            .collect();
        let mut misplaced = false;
        model.visit_grouped_params(&mut |group, p| match group {
            ParamGroup::Embedding if units.iter().all(|u| u.params.is_empty()) => {
                other.push(describe(p))
            }
            ParamGroup::Unit(k) if k < units.len() && finals.is_empty() => {
                units[k].params.push(describe(p))
            }
            ParamGroup::Final => finals.push(describe(p)),
            _ => misplaced = true,
        });
        if misplaced {
            return Err(Error::invalid(
                OP,
                "the model visits its parameters out of order (embeddings, units, final)",
            ));
        }
        for unit in &mut units {
            unit.grad_norm = root_sum_squares(unit.params.iter().map(|p| p.grad_norm));
        }
        let embedding_params = other.len();
        other.extend(finals);
        let all = units.iter().flat_map(|u| &u.params).chain(&other);
        let grad_norm = root_sum_squares(all.map(|p| p.grad_norm));
        Ok(PendingDiagnostics {
            diagnostics: Diagnostics {
                step,
                loss,
                grad_norm,
                lr,
                stream_rms: stats.rms.clone(),
                stream_grad_norm: stats.grad_norm.clone(),
                stream_cosine: stats.cosine.clone(),
                units,
                other,
            },
            before,
            embedding_params,
        })
    }

    /// The measurements so far: everything but the update ratios, which are still `None`.
    pub fn measured(&self) -> &Diagnostics {
        &self.diagnostics
    }

    /// Completes the measurements with the update/weight ratios of the step just taken;
    /// `model` must be the model given to [`PendingDiagnostics::after_backward`].
    pub fn finish<M: DiagnosedModel + ?Sized>(self, model: &M) -> Result<Diagnostics> {
        let PendingDiagnostics {
            mut diagnostics,
            before,
            embedding_params,
        } = self;
        // (‖Δw‖², ‖w_before‖²) per parameter, or the name of the first one that does not fit.
        let mut changes = Vec::with_capacity(before.len());
        let mut mismatch: Option<String> = None;
        model.visit_grouped_params(&mut |_, p| match before.get(changes.len()) {
            Some(old) if old.len() == p.value.len() => {
                let delta: f64 = old
                    .iter()
                    .zip(&p.value)
                    .map(|(&a, &b)| (b as f64 - a as f64).powi(2))
                    .sum();
                changes.push((delta, l2(old).powi(2)));
            }
            _ => {
                mismatch.get_or_insert_with(|| p.name.clone());
                changes.push((0.0, 0.0));
            }
        });
        if mismatch.is_some() || changes.len() != before.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "the model's {} parameters are not the {} measured after backward (first difference: {})",
                    changes.len(),
                    before.len(),
                    mismatch.unwrap_or_else(|| "count".to_string())
                ),
            ));
        }
        let mut changes = changes.into_iter();
        let mut finish = |params: &mut [ParamDiagnostics]| {
            let (mut delta_sq, mut weight_sq) = (0.0, 0.0);
            for p in params {
                let (delta, weight) = changes.next().expect("one change per parameter");
                p.update_ratio = ratio(delta, weight);
                delta_sq += delta;
                weight_sq += weight;
            }
            ratio(delta_sq, weight_sq)
        };
        let (embedding, ln_f) = diagnostics.other.split_at_mut(embedding_params);
        finish(embedding);
        for unit in &mut diagnostics.units {
            unit.update_ratio = finish(&mut unit.params);
        }
        finish(ln_f);
        Ok(diagnostics)
    }
}

/// `√(delta / weight)` from squared norms; `None` when the weight is 0.
fn ratio(delta_sq: f64, weight_sq: f64) -> Option<f32> {
    (weight_sq > 0.0).then(|| (delta_sq / weight_sq).sqrt() as f32)
}

fn l2(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt()
}

fn root_sum_squares(norms: impl Iterator<Item = f32>) -> f32 {
    norms.map(|n| n as f64 * n as f64).sum::<f64>().sqrt() as f32
}
