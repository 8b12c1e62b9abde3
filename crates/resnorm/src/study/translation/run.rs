//! The translation study's data and runs: the corpus read and tokenized once, then each run
//! made with the translation trainer's own step ([`TranslateTrainer::step`]) and cached as
//! `<runs_dir>/<key>.json` (its settings, the data fingerprint and its result), written
//! atomically, so an interrupted study resumes where it stopped.
//!
//! Every `eval_every` steps a run records the validation loss and the gradient norm of each
//! part of the model (shared embedding, encoder, decoder). The trainer clips in place, so the
//! parts' norms are read after the step and the clipping factor is undone:
//! `‖g_part‖ = ‖g_part, clipped‖ · max(1, ‖g‖ / clip)`. A step that the trainer reports as
//! diverged (a non-finite loss or gradient norm) ends the run.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::study::{fnv1a, write_atomically};
use crate::translate::config::TranslateConfig;
use crate::translate::data::TranslationData;
use crate::translate::trainer::TranslateTrainer;
use crate::translate::ParallelCorpus;
use crate::{Error, Result};

use super::plan::TranslationPlan;

/// The corpus of a translation study, tokenized, with the validation split cut to the plan's
/// `valid_sentences`.
#[derive(Clone, Debug)]
pub struct TranslationStudyData {
    /// The data every run trains and validates on.
    pub data: TranslationData,
    /// Hash of the vocabulary size and every training and validation id.
    pub fingerprint: u64,
}

impl TranslationStudyData {
    /// Reads `plan.data` and trains the BPE; a missing folder is a one-line error.
    pub fn load(plan: &TranslationPlan) -> Result<Self> {
        if !plan.data.is_dir() {
            return Err(Error::Config(format!(
                "the translation corpus folder {} does not exist; pass --data DIR holding train.{src}, train.{tgt}, valid.{src} and valid.{tgt}",
                plan.data.display(),
                src = plan.src,
                tgt = plan.tgt
            )));
        }
        let mut data = TranslationData::load(&plan.data_config(), None)?;
        let n = plan.valid_sentences.min(data.valid.len());
        data.valid = ParallelCorpus::from_pairs(
            data.valid.source()[..n].to_vec(),
            data.valid.target()[..n].to_vec(),
        )?;
        data.valid_ids.truncate(n);
        let mut bytes = (data.bpe.vocab_size() as u64).to_le_bytes().to_vec();
        for pair in data.train.iter().chain(&data.valid_ids) {
            for side in [&pair.source, &pair.target] {
                bytes.extend_from_slice(&(side.len() as u32).to_le_bytes());
                side.iter()
                    .for_each(|id| bytes.extend_from_slice(&id.to_le_bytes()));
            }
        }
        Ok(TranslationStudyData {
            fingerprint: fnv1a(&bytes),
            data,
        })
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.data.bpe.vocab_size()
    }
}

/// Gradient norms of the model's parts at one step, before clipping.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartGradNorms {
    /// Steps taken, counting this one.
    pub step: u64,
    /// The shared source/target/output embedding.
    pub embedding: f64,
    /// Every encoder parameter.
    pub encoder: f64,
    /// Every decoder parameter.
    pub decoder: f64,
}

/// What a translation run measured. Losses are nats per target token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranslationRunResult {
    /// Training loss of every step applied.
    pub losses: Vec<f32>,
    /// Global gradient norm (before clipping) of every step applied.
    pub grad_norms: Vec<f32>,
    /// `(steps taken, validation loss)` every `eval_every` steps and at the end.
    pub valid_losses: Vec<(u64, f64)>,
    /// Per-part gradient norms at the same steps.
    pub part_grad_norms: Vec<PartGradNorms>,
    /// The step (from 0) at which the loss or gradient norm stopped being finite, or after
    /// which the validation loss did.
    pub diverged_at: Option<u64>,
    /// Mean training loss over the last tenth of the steps applied (`None`: none was).
    pub final_train_loss: Option<f64>,
    /// Validation loss after training (`None` when diverged).
    pub val_loss: Option<f64>,
    /// Greedy BLEU on the first `bleu_sentences` validation pairs (`None` when diverged).
    pub bleu: Option<f64>,
    /// chrF of the same translations.
    pub chrf: Option<f64>,
    /// Median wall-clock time of one step, in milliseconds.
    pub ms_per_step: f64,
}

/// Trains `config` on `data`; `on_step()` is called after every step.
pub fn run_translation(
    config: &TranslateConfig,
    data: &TranslationStudyData,
    on_step: &mut dyn FnMut(),
) -> Result<TranslationRunResult> {
    let mut trainer = TranslateTrainer::new(config.clone(), data.data.clone())?;
    let every = config.eval_every.max(1);
    let mut result = TranslationRunResult {
        losses: Vec::with_capacity(config.steps as usize),
        grad_norms: Vec::with_capacity(config.steps as usize),
        valid_losses: Vec::new(),
        part_grad_norms: Vec::new(),
        diverged_at: None,
        final_train_loss: None,
        val_loss: None,
        bleu: None,
        chrf: None,
        ms_per_step: 0.0,
    };
    let mut times = Vec::with_capacity(config.steps as usize);
    while !trainer.is_done() {
        let start = Instant::now();
        let step = match trainer.step() {
            Ok(step) => step,
            Err(Error::Diverged { step, .. }) => {
                result.diverged_at = Some(step);
                on_step();
                break;
            }
            Err(e) => return Err(e),
        };
        times.push(start.elapsed().as_secs_f64() * 1e3);
        result.losses.push(step.loss);
        result.grad_norms.push(step.grad_norm);
        on_step();
        if step.step % every == 0 || trainer.is_done() {
            let unclip = match config.grad_clip > 0.0 {
                true => (step.grad_norm / config.grad_clip).max(1.0) as f64,
                false => 1.0,
            };
            result
                .part_grad_norms
                .push(part_grad_norms(&trainer, step.step, unclip));
            let loss = trainer.validation_loss()?;
            if !loss.is_finite() {
                result.diverged_at = Some(step.step - 1);
                break;
            }
            result.valid_losses.push((step.step, loss));
        }
    }
    if !times.is_empty() {
        times.sort_by(f64::total_cmp);
        result.ms_per_step = times[times.len() / 2];
        let tail = (result.losses.len() / 10).max(1);
        let last = &result.losses[result.losses.len() - tail..];
        result.final_train_loss = Some(last.iter().map(|&l| l as f64).sum::<f64>() / tail as f64);
    }
    if result.diverged_at.is_none() {
        let evaluation = trainer.evaluate()?;
        result.val_loss = Some(evaluation.loss);
        result.bleu = Some(evaluation.bleu);
        result.chrf = Some(evaluation.chrf);
    }
    Ok(result)
}

fn part_grad_norms(trainer: &TranslateTrainer, step: u64, unclip: f64) -> PartGradNorms {
    let mut squares = [0.0f64; 3];
    trainer.model().visit_params(&mut |p| {
        let part = match p.name.split('.').next() {
            Some("encoder") => 1,
            Some("decoder") => 2,
            _ => 0,
        };
        squares[part] += p.grad.iter().map(|&g| g as f64 * g as f64).sum::<f64>();
    });
    let [embedding, encoder, decoder] = squares.map(|s| s.sqrt() * unclip);
    PartGradNorms {
        step,
        embedding,
        encoder,
        decoder,
    }
}

/// One cached run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranslationRecord {
    /// Its file-name key.
    pub key: String,
    /// Its settings.
    pub config: TranslateConfig,
    /// Fingerprint of the data it ran on.
    pub data_fingerprint: u64,
    /// Its measurements.
    pub result: TranslationRunResult,
}

/// The runs of a translation study, looked up by settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TranslationResults {
    /// Every run, in the order it was made.
    pub runs: Vec<TranslationRecord>,
}

impl TranslationResults {
    /// The run of `config`, when it was made.
    pub fn get(&self, config: &TranslateConfig) -> Option<&TranslationRunResult> {
        self.runs
            .iter()
            .find(|r| &r.config == config)
            .map(|r| &r.result)
    }
}

/// What the runner reports while it works, for a progress display.
#[derive(Clone, Debug, PartialEq)]
pub enum TranslationProgress<'a> {
    /// Run `index` of `total` starts (or is read from the cache when `cached`).
    Started {
        /// Position in the study, from 0.
        index: usize,
        /// Runs in the study.
        total: usize,
        /// The run.
        config: &'a TranslateConfig,
        /// True when the result comes from the cache.
        cached: bool,
    },
    /// One step of the current run is done.
    Advanced,
}

/// A file-name-safe key: a readable prefix and a hash of every setting and of the data.
pub fn translation_key(config: &TranslateConfig, data_fingerprint: u64) -> String {
    let mut bytes = serde_json::to_vec(config).expect("configs always serialize");
    bytes.extend_from_slice(&data_fingerprint.to_le_bytes());
    format!(
        "translate-{}-L{}+{}-w{}-{:016x}",
        config.placement,
        config.encoder_layers,
        config.decoder_layers,
        config.warmup,
        fnv1a(&bytes)
    )
}

/// Makes every run of `configs` on `data` (or reads it from `runs_dir`), in order.
pub fn run_translation_study(
    configs: &[TranslateConfig],
    data: &TranslationStudyData,
    runs_dir: &Path,
    progress: &mut dyn FnMut(TranslationProgress),
) -> Result<TranslationResults> {
    std::fs::create_dir_all(runs_dir).map_err(|e| Error::io(runs_dir, e))?;
    let mut results = TranslationResults::default();
    for (index, config) in configs.iter().enumerate() {
        let key = translation_key(config, data.fingerprint);
        let path = runs_dir.join(format!("{key}.json"));
        let cached = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<TranslationRecord>(&text).ok())
            .filter(|r| &r.config == config && r.data_fingerprint == data.fingerprint);
        progress(TranslationProgress::Started {
            index,
            total: configs.len(),
            config,
            cached: cached.is_some(),
        });
        let record = match cached {
            Some(record) => record,
            None => {
                let result = run_translation(config, data, &mut || {
                    progress(TranslationProgress::Advanced)
                })?;
                let record = TranslationRecord {
                    key,
                    config: config.clone(),
                    data_fingerprint: data.fingerprint,
                    result,
                };
                let json = serde_json::to_string(&record)
                    .map_err(|e| Error::invalid("run_translation_study", e.to_string()))?;
                write_atomically(&path, &json)?;
                record
            }
        };
        results.runs.push(record);
    }
    Ok(results)
}
