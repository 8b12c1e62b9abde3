//! The translation training loop's state and one step of it.
//!
//! One [`TranslateTrainer::step`] at step `s` (from 0):
//! ```text
//! batch = batches[epoch_order(epoch)[position]];  position += 1 (next epoch at the end)
//! zero every gradient -> forward (dropout masks of step s; mean label-smoothed
//!                         cross-entropy per target token) -> backward
//! stop with Error::Diverged if loss or ‖grad‖ is NaN/inf (parameters untouched)
//! clip the global gradient norm to grad_clip (when > 0)
//! AdamW step with lr = WarmupCosine(s)
//! ```
//! Weights come from `Seq2Seq::new(config, seed)`; the batches and each epoch's order from
//! the seed, and each step's dropout masks from the seed and the step, so
//! `(step, epoch, position)` is the whole random state and a resumed run continues bit for
//! bit (same thread count).
//!
//! **Data-parallel** ([`TranslateTrainer::distributed`]): with `N` ranks every rank walks the
//! same batches in the same order, and rank `r` takes the sentences `r, r + N, r + 2N, …` of
//! each (length-sorted, so the shares are about equally long; a rank may get none). Each
//! rank's loss is a mean over its own `T_r` target tokens, so the gradients and losses are
//! averaged with weights `T_r` ([`FlatAverage`]): the result is the mean over the batch's
//! `T = Σ T_r` tokens, and `N` ranks train as one process, up to the order of float sums.
//! Dropout masks are drawn per rank (the step's seed mixed with the rank), so with dropout
//! the ranks' masks differ from one process's (same rates, other draws). Nothing saved
//! depends on `N`: a run resumes on any number of ranks.
//!
//! ```no_run
//! use resnorm::translate::config::TranslateConfig;
//! use resnorm::translate::data::TranslationData;
//! use resnorm::translate::trainer::TranslateTrainer;
//! let config = TranslateConfig { steps: 10, ..TranslateConfig::default() };
//! let data = TranslationData::load(&config, None).unwrap();
//! let mut trainer = TranslateTrainer::new(config, data).unwrap();
//! while !trainer.is_done() {
//!     let report = trainer.step().unwrap();
//!     println!("step {} loss {:.3}", report.step, report.loss);
//! }
//! trainer.save(std::path::Path::new("runs/translate")).unwrap();
//! ```

use std::path::Path;
use std::time::Instant;

use crate::distributed::{agree, Communicator, FlatAverage, SingleProcess};
use crate::models::seq2seq::{Dropout, Seq2Seq};
use crate::optim::{clip_grad_norm, grad_norm, AdamW, Optimizer, WarmupCosine};
use crate::{Error, Result};

use super::checkpoint::{
    load_translation, load_translation_optimizer, save_translation, TranslateState,
};
use super::config::TranslateConfig;
use super::data::{PaddedBatch, TranslationData};
use super::evaluate::{evaluate, validation_loss, Evaluation};

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TranslateStep {
    /// Optimizer steps taken, counting this one.
    pub step: u64,
    /// Mean cross-entropy per target token of the batch (label-smoothed, under dropout).
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Target tokens predicted (padding left out), on every rank together.
    pub tokens: usize,
}

/// A model, its optimizer and data, and where the run stands.
#[derive(Debug)]
pub struct TranslateTrainer {
    config: TranslateConfig,
    model: Seq2Seq,
    optimizer: AdamW,
    schedule: WarmupCosine,
    data: TranslationData,
    step: u64,
    epoch: u64,
    position: usize,
    order: Vec<usize>,
    last_loss: Option<f32>,
    elapsed_before: f64,
    started: Instant,
    padded: PaddedBatch,
    /// The run's dropout (`None`: off), reseeded every step.
    dropout: Option<Dropout>,
    /// This rank's sentences of the current batch.
    share: Vec<usize>,
    comm: Box<dyn Communicator>,
    /// The bucket layout, with more than one rank.
    average: Option<FlatAverage>,
}

impl TranslateTrainer {
    /// A fresh run of `config` on `data`.
    pub fn new(config: TranslateConfig, data: TranslationData) -> Result<Self> {
        config.validate()?;
        let model = Seq2Seq::new(config.seq2seq_config(data.bpe.vocab_size()), config.seed)?;
        let optimizer = AdamW::new(config.adamw_config())?;
        let state = TranslateState {
            step: 0,
            epoch: 0,
            position: 0,
            elapsed: 0.0,
            threads: crate::threads::num_threads(),
            last_loss: None,
        };
        Self::assemble(config, data, model, optimizer, state)
    }

    /// Continues the run saved in `dir` with `config` (the saved settings, perhaps with more
    /// steps); the data is read again and encoded with the checkpoint's vocabulary.
    pub fn resume(dir: &Path, config: TranslateConfig) -> Result<Self> {
        config.validate()?;
        let saved = load_translation(dir)?;
        if saved.model.config() != &config.seq2seq_config(saved.bpe.vocab_size()) {
            return Err(Error::Config(format!(
                "the checkpoint in {} is of another model than the settings ask for",
                dir.display()
            )));
        }
        let optimizer = load_translation_optimizer(dir, &config)?;
        let data = TranslationData::load(&config, Some(saved.bpe))?;
        Self::assemble(config, data, saved.model, optimizer, saved.state)
    }

    fn assemble(
        config: TranslateConfig,
        data: TranslationData,
        mut model: Seq2Seq,
        optimizer: AdamW,
        state: TranslateState,
    ) -> Result<Self> {
        model.reserve_for_tokens(config.max_tokens);
        let order = data.batches.epoch_order(state.epoch);
        if state.position > order.len() {
            return Err(Error::Config(format!(
                "the checkpoint stands at batch {} of an epoch of {} batches: other data?",
                state.position,
                order.len()
            )));
        }
        Ok(TranslateTrainer {
            schedule: config.schedule()?,
            dropout: config.dropout()?,
            config,
            model,
            optimizer,
            data,
            step: state.step,
            epoch: state.epoch,
            position: state.position,
            order,
            last_loss: state.last_loss,
            elapsed_before: state.elapsed,
            started: Instant::now(),
            padded: PaddedBatch::default(),
            share: Vec::new(),
            comm: Box::new(SingleProcess::default()),
            average: None,
        })
    }

    /// Trains on the ranks of `comm` from here on, each taking its share of every batch (see
    /// the module documentation). Collective: every rank calls it.
    pub fn distributed(mut self, mut comm: Box<dyn Communicator>) -> Result<Self> {
        self.average = match comm.size() {
            1 => None,
            _ => Some(FlatAverage::new(&self.model.params_mut(), comm.as_mut())?),
        };
        self.comm = comm;
        Ok(self)
    }

    /// The communicator the run trains on.
    pub fn communicator(&mut self) -> &mut dyn Communicator {
        self.comm.as_mut()
    }

    /// What every rank must agree on before training: the settings, the data's and model's
    /// sizes, where the run stands and a checksum of the weights (see [`agree::fingerprint`]).
    pub fn fingerprint(&self) -> serde_json::Value {
        let mut params = 0;
        self.model.visit_params(&mut |p| params += p.len());
        let extra = vec![
            ("training_pairs", self.data.train.len().into()),
            ("batches", self.data.batches.len().into()),
            ("validation_pairs", self.data.valid_ids.len().into()),
            ("vocab", self.data.bpe.vocab_size().into()),
            ("parameters", params.into()),
            ("step", self.step.into()),
            ("epoch", self.epoch.into()),
            ("position", self.position.into()),
        ];
        agree::fingerprint(&self.config, extra, |f| self.model.visit_params(f))
    }

    /// One optimizer step (see the module documentation).
    pub fn step(&mut self) -> Result<TranslateStep> {
        crate::threads::busy(|| self.step_held())
    }

    fn step_held(&mut self) -> Result<TranslateStep> {
        if self.position == self.order.len() {
            self.epoch += 1;
            self.position = 0;
            self.order = self.data.batches.epoch_order(self.epoch);
        }
        let lr = self.schedule.lr_at(self.step);
        let (rank, ranks) = (self.comm.rank(), self.comm.size());
        let batch = self.data.batches.batch(self.order[self.position]);
        self.share.clear();
        self.share.extend(batch.iter().skip(rank).step_by(ranks));
        self.model.zero_grad();
        let (mut loss, mut tokens) = (0.0, 0);
        if !self.share.is_empty() {
            self.padded.fill(&self.data.train, &self.share);
            let dropout = self.dropout.map(|d| match ranks {
                1 => d.for_step(self.step),
                _ => d.for_step(self.step).for_step(rank as u64),
            });
            let smoothing = self.config.label_smoothing;
            loss = self
                .model
                .forward_training(&self.padded.as_batch(), dropout, smoothing)?
                .ok_or_else(|| Error::invalid("TranslateTrainer::step", "no loss"))?;
            self.model.backward()?;
            tokens = self.padded.target_tokens();
        }
        let mut params = self.model.params_mut();
        if let Some(average) = &self.average {
            // Weighted by target tokens: the mean over the whole batch's tokens.
            let mean = average.average(&mut params, self.comm.as_mut(), tokens as f32, loss)?;
            (loss, tokens) = (mean.loss, mean.weight as usize);
        }
        let diverged = |loss: f32| Error::Diverged {
            step: self.step,
            loss,
            last_finite_loss: self.last_loss,
        };
        if !loss.is_finite() {
            return Err(diverged(loss));
        }
        let norm = match self.config.grad_clip > 0.0 {
            true => clip_grad_norm(&mut params, self.config.grad_clip)?,
            false => grad_norm(&params),
        };
        if !norm.is_finite() {
            return Err(diverged(loss));
        }
        self.optimizer.step(&mut params, lr)?;
        self.position += 1;
        self.step += 1;
        self.last_loss = Some(loss);
        Ok(TranslateStep {
            step: self.step,
            loss,
            lr,
            grad_norm: norm,
            tokens,
        })
    }

    /// Mean cross-entropy per target token on the validation pairs (on this rank alone:
    /// data-parallel, rank 0 evaluates for all, as every rank holds the same weights).
    pub fn validation_loss(&mut self) -> Result<f64> {
        let max_tokens = self.config.max_tokens;
        crate::threads::busy(|| validation_loss(&mut self.model, &self.data.valid_ids, max_tokens))
    }

    /// Loss, BLEU and chrF on the validation split (BLEU and chrF on its first
    /// `bleu_sentences` sentences).
    pub fn evaluate(&mut self) -> Result<Evaluation> {
        let n = (self.config.bleu_sentences > 0).then_some(self.config.bleu_sentences);
        let max_tokens = self.config.max_tokens;
        let (model, data) = (&mut self.model, &self.data);
        crate::threads::busy(|| evaluate(model, &data.bpe, &data.valid, n, max_tokens))
    }

    /// Saves the run as the live checkpoint set of the run directory `dir`. Data-parallel,
    /// rank 0 alone calls it: every rank holds the same weights, moments and position.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let state = TranslateState {
            step: self.step,
            epoch: self.epoch,
            position: self.position,
            elapsed: self.elapsed(),
            threads: crate::threads::num_threads(),
            last_loss: self.last_loss,
        };
        save_translation(
            dir,
            &self.model,
            &self.optimizer,
            &self.data.bpe,
            &self.config,
            &state,
        )
    }

    /// Optimizer steps taken so far (including those before a resume).
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// True once `steps` steps have been taken.
    pub fn is_done(&self) -> bool {
        self.step >= self.config.steps
    }

    /// Seconds of training, including those before a resume.
    pub fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// The settings of the run.
    pub fn config(&self) -> &TranslateConfig {
        &self.config
    }

    /// The model.
    pub fn model(&self) -> &Seq2Seq {
        &self.model
    }

    /// The data, vocabulary and batches.
    pub fn data(&self) -> &TranslationData {
        &self.data
    }
}
