//! The training loop's state and one step of it.
//!
//! One [`Trainer::step`] at step `s` (from 0):
//! ```text
//! zero every gradient
//! repeat accum times:  draw batch windows (data RNG) -> forward -> backward (grads add up)
//! loss = mean of the micro-batch losses;  grads /= accum
//! stop with Error::Diverged if loss or ‖grad‖ is NaN/inf (parameters untouched)
//! clip the global gradient norm to grad_clip (when > 0)
//! AdamW step with lr = WarmupCosine(s)
//! ```
//! Weights come from `Gpt::new(config, seed)`, or, fine-tuning ([`Trainer::fine_tune`]),
//! from the Hugging Face checkpoint `init_from` names: a GPT-2 or a Llama-family model (a
//! [`CausalLm`]), its `tokenizer.json` tokenizing the data. Training windows come from a
//! separate [`Rng`] seeded with `seed ^ DATA_SEED_MIX`. Data parallelism and diagnostics are
//! the GPT's.
//!
//! **Data-parallel** ([`Trainer::distributed`]): with `N` ranks, `batch` is the global batch.
//! Every rank draws the same `batch` windows from the same data RNG and runs forward and
//! backward on its own `batch / N` of them (rank `r` takes windows `r·batch/N ..`), so `N`
//! ranks see exactly the windows of one process; the gradients and the loss are then
//! averaged over the ranks (see [`super::GradientAverage`]), and every rank applies the same
//! update to the same weights. Nothing saved depends on `N`: a run resumes on any number of
//! ranks. With `zero = 1` each rank receives the averaged gradients of its share of the
//! weights only (reduce-scatter), keeps only that share of AdamW's state and updates it
//! ([`super::OptimizerShard`]); the weights are then all-gathered. Every kernel is deterministic for a given
//! thread count, so the same settings and thread count give a bit-identical loss curve, and
//! a run resumed from a checkpoint (parameters, AdamW moments, step, data RNG state) continues
//! exactly as if it had never stopped.
//!
//! ```
//! use resnorm::lm::{load_data, Trainer, TrainConfig};
//! let config = TrainConfig {
//!     layers: 1, heads: 2, width: 16, context: 16, batch: 4, steps: 3, warmup: 1,
//!     corpus_chars: 5_000, ..TrainConfig::default()
//! };
//! let data = load_data(&config, None).unwrap();
//! let mut trainer = Trainer::new(config, data).unwrap();
//! let first = trainer.step().unwrap();
//! assert_eq!(first.step, 1);
//! assert!(first.loss.is_finite() && first.grad_norm > 0.0);
//! while !trainer.is_done() {
//!     trainer.step().unwrap();
//! }
//! assert!(trainer.evaluate().unwrap().loss.is_finite());
//! ```

use std::path::Path;
use std::time::Instant;

use crate::data::text::{HfTokenizer, TokenDataset, Tokenizer};
use crate::distributed::{Communicator, SingleProcess};
use crate::hf::HfCheckpoint;
use crate::models::gpt::{Gpt, GptConfig};
use crate::models::CausalLm;
use crate::optim::{AdamW, WarmupCosine};
use crate::rng::Rng;
use crate::{Error, Result};

use super::data::{check_fits_context, load_data, LoadedData};
use super::data_parallel::GradientAverage;
use super::evaluate::{evaluate, evaluate_shared, Evaluation};
use super::run_checkpoint::{
    load_checkpoint, load_optimizer, save_checkpoint, SavedModel, TrainState,
};
use super::update::{apply_gradients_plain, apply_gradients_sharded, Update};
use super::zero::OptimizerShard;
use super::TrainConfig;
use crate::diagnostics::Diagnostics;

/// Why `zero = 1` on several ranks refuses `diagnostics_every`: each rank then holds the
/// averaged gradients of its own share of the weights only.
pub const ZERO_DIAGNOSTICS: &str = "diagnostics need every averaged gradient, which zero 1 on \
several ranks does not keep (each rank receives its own share): use one or the other";

/// Mixed into the seed for the data sampler, so that it does not replay the weights' stream.
pub const DATA_SEED_MIX: u64 = 0xDA7A_5EED_0000_0001;

/// What one step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// Optimizer steps taken, counting this one.
    pub step: u64,
    /// Mean training loss of the step's micro-batches.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Training tokens processed (`batch · accum · context`).
    pub tokens: usize,
    /// Per-layer diagnostics, on the steps `diagnostics_every` asks for (gradients of the
    /// whole step; residual-stream measurements of its last micro-batch).
    pub diagnostics: Option<Diagnostics>,
    /// Seconds this rank waited for the gradient sums after its backward (0 on one rank).
    pub comm_wait: f64,
}

/// A model, its optimizer, data and sampler, and where the run stands.
#[derive(Debug)]
pub struct Trainer {
    config: TrainConfig,
    model: CausalLm,
    optimizer: AdamW,
    schedule: WarmupCosine,
    tokenizer: Tokenizer,
    data: TokenDataset,
    corpus_nats_per_char: Option<f64>,
    rng: Rng,
    step: u64,
    last_loss: Option<f32>,
    elapsed_before: f64,
    started: Instant,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    comm: Box<dyn Communicator>,
    /// The bucket layout, with more than one rank.
    average: Option<GradientAverage>,
    /// This rank's share of the optimizer state, with `zero = 1` on more than one rank.
    shard: Option<OptimizerShard>,
    overlap: bool,
}

impl Trainer {
    /// A fresh run of `config` on `data`.
    pub fn new(config: TrainConfig, data: LoadedData) -> Result<Self> {
        config.validate()?;
        if let Some(dir) = &config.init_from {
            return Err(Error::Config(format!(
                "the run starts from {}: build it with Trainer::fine_tune",
                dir.display()
            )));
        }
        let model = Gpt::new(config.gpt_config(data.tokenizer.vocab_size()), config.seed)?;
        let optimizer = AdamW::new(config.adamw_config())?;
        let rng = Rng::new(config.seed ^ DATA_SEED_MIX);
        Self::assemble(config, data, CausalLm::Gpt(model), optimizer, rng, None)
    }

    /// A fresh run fine-tuning `checkpoint`, read from `config.init_from` (see
    /// [`TrainConfig::fine_tune`]): the data is tokenized with its `tokenizer.json`, and
    /// `config.context` is the length of the training windows.
    pub fn fine_tune(config: TrainConfig, checkpoint: HfCheckpoint) -> Result<Self> {
        config.validate()?;
        config.check_fine_tune()?;
        let HfCheckpoint {
            architecture,
            model,
            tokenizer,
        } = checkpoint;
        let tokenizer = tokenizer.ok_or_else(|| {
            Error::Config(format!(
                "the {architecture} checkpoint has no tokenizer.json to tokenize the data with"
            ))
        })?;
        let tokenizer = Tokenizer::Hf {
            tokenizer: HfTokenizer(Box::new(tokenizer)),
        };
        if config.context > model.context() {
            return Err(Error::Config(format!(
                "--context {} is longer than the {architecture} model's {} positions",
                config.context,
                model.context()
            )));
        }
        let data = load_data(&config, Some(&tokenizer))?;
        let optimizer = AdamW::new(config.adamw_config())?;
        let rng = Rng::new(config.seed ^ DATA_SEED_MIX);
        Self::assemble(config, data, model, optimizer, rng, None)
    }

    /// Continues the run saved in `dir` with `config`, which must describe the same model;
    /// the data is read again with the checkpoint's tokenizer. Training settings may differ
    /// from the checkpoint's (e.g. more `steps`), but only equal settings continue the
    /// original run bit for bit.
    pub fn resume(dir: &Path, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let SavedModel {
            model,
            tokenizer,
            state,
            ..
        } = load_checkpoint(dir)?;
        // A fine-tuned model is the checkpoint's: only a GPT built from settings is checked.
        if let (CausalLm::Gpt(gpt), None) = (&model, &config.init_from) {
            check_same_model(
                dir,
                gpt.config(),
                &config.gpt_config(tokenizer.vocab_size()),
            )?;
        }
        let optimizer = load_optimizer(dir, &config)?;
        let data = load_data(&config, Some(&tokenizer))?;
        // load_checkpoint refused an all-zero state, naming its file.
        let rng = Rng::from_state(state.rng_state)?;
        Self::assemble(config, data, model, optimizer, rng, Some(state))
    }

    fn assemble(
        config: TrainConfig,
        data: LoadedData,
        model: CausalLm,
        optimizer: AdamW,
        rng: Rng,
        state: Option<TrainState>,
    ) -> Result<Self> {
        check_fits_context(&data.dataset, config.context)?;
        if matches!(model, CausalLm::Llama(_)) && config.diagnostics_every > 0 {
            return Err(Error::Config(
                "diagnostics_every: per-layer diagnostics are measured on a GPT only".into(),
            ));
        }
        let schedule = config.schedule()?;
        let rows = config.batch * config.context;
        Ok(Trainer {
            schedule,
            model,
            optimizer,
            tokenizer: data.tokenizer,
            data: data.dataset,
            corpus_nats_per_char: data.corpus_nats_per_char,
            rng,
            step: state.as_ref().map_or(0, |s| s.step),
            last_loss: state.as_ref().and_then(|s| s.last_loss),
            elapsed_before: state.as_ref().map_or(0.0, |s| s.elapsed),
            started: Instant::now(),
            inputs: vec![0; rows],
            targets: vec![0; rows],
            comm: Box::new(SingleProcess::default()),
            average: None,
            shard: None,
            overlap: true,
            config,
        })
    }

    /// Trains on the ranks of `comm` from here on: `batch` becomes the global batch, split
    /// evenly over the ranks (see the module documentation). Collective: every rank calls it.
    pub fn distributed(mut self, mut comm: Box<dyn Communicator>) -> Result<Self> {
        let ranks = comm.size();
        if !self.config.batch.is_multiple_of(ranks) {
            return Err(Error::Config(format!(
                "batch {} does not split evenly over {ranks} ranks",
                self.config.batch
            )));
        }
        let gpt = match &self.model {
            CausalLm::Gpt(gpt) => gpt,
            CausalLm::Llama(_) if ranks == 1 => return Ok(self),
            CausalLm::Llama(_) => {
                return Err(Error::Config(
                    "a Llama-family model trains in one process only".into(),
                ))
            }
        };
        if ranks > 1 && self.config.zero == 1 {
            if self.config.diagnostics_every > 0 {
                return Err(Error::Config(ZERO_DIAGNOSTICS.to_string()));
            }
            let shard = OptimizerShard::new(gpt, comm.rank(), ranks);
            self.optimizer = shard.keep_own(&self.optimizer)?;
            self.shard = Some(shard);
        }
        self.average = if ranks > 1 {
            Some(GradientAverage::new(
                gpt,
                comm.as_mut(),
                self.shard.as_ref(),
            )?)
        } else {
            None
        };
        self.comm = comm;
        Ok(self)
    }

    /// Whether gradient sums start during the backward pass (the default) or only after it:
    /// off, the wait in [`StepReport::comm_wait`] is the whole exchange, which is how the
    /// benchmark measures what the overlap hides.
    pub fn set_overlap(&mut self, on: bool) {
        self.overlap = on;
    }

    /// The communicator the run trains on.
    pub fn communicator(&mut self) -> &mut dyn Communicator {
        self.comm.as_mut()
    }

    /// Gradient elements each rank sends per step (0 on one rank).
    pub fn exchanged_elements(&self) -> usize {
        self.average.as_ref().map_or(0, GradientAverage::elements)
    }

    /// What every rank must agree on before training: the settings, the data's size and the
    /// model (its step and a checksum of its weights), as one flat JSON object.
    pub fn fingerprint(&self) -> serde_json::Value {
        let extra = vec![
            ("training_tokens", self.data.train().len().into()),
            ("validation_tokens", self.data.validation().len().into()),
            ("vocab", self.model.vocab().into()),
            ("parameters", self.model.num_params().into()),
            ("step", self.step.into()),
        ];
        crate::distributed::agree::fingerprint(&self.config, extra, |f| self.model.visit_params(f))
    }

    /// One optimizer step (see the module documentation).
    ///
    /// A loss or gradient norm that is not finite is [`Error::Diverged`]; the parameters and
    /// optimizer are then as before the step.
    pub fn step(&mut self) -> Result<StepReport> {
        crate::threads::busy(|| self.step_held())
    }

    /// [`Trainer::step`], run inside [`crate::threads::busy`].
    fn step_held(&mut self) -> Result<StepReport> {
        const OP: &str = "Trainer::step";
        let TrainConfig {
            batch,
            accum,
            context,
            grad_clip,
            ..
        } = self.config;
        let lr = self.schedule.lr_at(self.step);
        let every = self.config.diagnostics_every;
        let diagnose = every > 0 && (self.step + 1).is_multiple_of(every);
        if let CausalLm::Gpt(gpt) = &mut self.model {
            gpt.record_stream_stats(diagnose);
        }
        self.model.zero_grad();
        let (rank, ranks) = (self.comm.rank(), self.comm.size());
        let local = batch / ranks;
        let shard = rank * local * context..(rank + 1) * local * context;
        let mut loss_sum = 0.0f32;
        for micro in 0..accum {
            self.data.sample_batch_into(
                &mut self.rng,
                context,
                &mut self.inputs,
                &mut self.targets,
            )?;
            let loss = self
                .model
                .forward(
                    &self.inputs[shard.clone()],
                    local,
                    Some(&self.targets[shard.clone()]),
                )?
                .ok_or_else(|| Error::invalid(OP, "the model returned no loss"))?;
            match (&self.average, &mut self.model) {
                (Some(average), CausalLm::Gpt(gpt)) if self.overlap && micro + 1 == accum => {
                    let comm = self.comm.as_mut();
                    gpt.backward_each(&mut |k, unit| average.start_unit(comm, k, unit))?
                }
                (_, model) => model.backward()?,
            }
            loss_sum += loss;
        }
        let mut comm_wait = 0.0;
        if let (Some(average), CausalLm::Gpt(gpt)) = (&self.average, &mut self.model) {
            let overlapped = self.overlap;
            (loss_sum, comm_wait) =
                average.sum_and_average(gpt, self.comm.as_mut(), loss_sum, |model, comm| {
                    if overlapped {
                        return Ok(());
                    }
                    for (k, unit) in model.units.iter().enumerate() {
                        average.start_unit(comm, k, unit)?;
                    }
                    Ok(())
                })?;
        }
        let loss = loss_sum / accum as f32;
        let diverged = |loss: f32| Error::Diverged {
            step: self.step,
            loss,
            last_finite_loss: self.last_loss,
        };
        if !loss.is_finite() {
            return Err(diverged(loss));
        }
        let update = Update {
            lr,
            grad_clip,
            accum,
        };
        let diagnose = diagnose.then_some((self.step + 1, loss));
        let shard = (self.shard.as_mut()).map(|s| (s, self.comm.as_mut() as &mut dyn Communicator));
        let (norm, diagnostics) = match &mut self.model {
            CausalLm::Gpt(gpt) => {
                apply_gradients_sharded(gpt, &mut self.optimizer, update, diagnose, shard)?
            }
            model => (
                apply_gradients_plain(model, &mut self.optimizer, update)?,
                None,
            ),
        };
        if !norm.is_finite() {
            return Err(diverged(loss));
        }
        self.step += 1;
        self.last_loss = Some(loss);
        Ok(StepReport {
            step: self.step,
            loss,
            lr,
            grad_norm: norm,
            tokens: batch * accum * context,
            diagnostics,
            comm_wait,
        })
    }

    /// The validation loss on `eval_windows` windows spread over the split (all when 0),
    /// `batch` at a time: the quick estimate taken every `eval_every` steps.
    /// With several ranks, each scores its share of the windows and the sums are averaged.
    pub fn evaluate(&mut self) -> Result<Evaluation> {
        let windows = (self.config.eval_windows > 0).then_some(self.config.eval_windows);
        self.evaluate_windows(windows)
    }

    /// The validation loss on every window of the split: the number `resnorm eval` reports.
    pub fn evaluate_all(&mut self) -> Result<Evaluation> {
        self.evaluate_windows(None)
    }

    fn evaluate_windows(&mut self, windows: Option<usize>) -> Result<Evaluation> {
        let context = self.config.context;
        if self.comm.size() == 1 {
            return evaluate(
                &mut self.model,
                &self.data,
                context,
                self.config.batch,
                windows,
            );
        }
        let batch = self.config.batch / self.comm.size();
        evaluate_shared(
            &mut self.model,
            &self.data,
            context,
            batch,
            windows,
            self.comm.as_mut(),
        )
    }

    /// Saves a checkpoint of the run as the live set of the run directory `dir` (see
    /// [`crate::checkpoint_set`]).
    ///
    /// One process only: with a sharded optimizer this is [`Error::InvalidArgument`], as
    /// its state is spread over the ranks (see [`Trainer::save_all_ranks`]).
    pub fn save(&self, dir: &Path) -> Result<()> {
        if self.shard.is_some() {
            return Err(Error::invalid(
                "Trainer::save",
                "the optimizer state is sharded over the ranks: save with save_all_ranks",
            ));
        }
        self.write(dir, &self.optimizer)
    }

    /// [`Trainer::save`] on every rank (collective): the optimizer state is gathered first
    /// when it is sharded, and rank 0 alone writes.
    pub fn save_all_ranks(&mut self, dir: &Path) -> Result<()> {
        let whole = match &self.shard {
            Some(shard) => Some(shard.gather_state(
                &self.optimizer,
                self.config.adamw_config(),
                self.comm.as_mut(),
            )?),
            None => None,
        };
        if self.comm.rank() != 0 {
            return Ok(());
        }
        self.write(dir, whole.as_ref().unwrap_or(&self.optimizer))
    }

    fn write(&self, dir: &Path, optimizer: &AdamW) -> Result<()> {
        let state = TrainState {
            step: self.step,
            rng_state: self.rng.state(),
            elapsed: self.elapsed(),
            threads: crate::threads::num_threads(),
            last_loss: self.last_loss,
        };
        save_checkpoint(
            dir,
            &self.model,
            optimizer,
            &self.tokenizer,
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
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The model.
    pub fn model(&self) -> &CausalLm {
        &self.model
    }

    /// The model, for changes between steps.
    pub fn model_mut(&mut self) -> &mut CausalLm {
        &mut self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// For the built-in corpus, its exact entropy in nats per character.
    pub fn corpus_nats_per_char(&self) -> Option<f64> {
        self.corpus_nats_per_char
    }

    /// The token stream and its split.
    pub fn data(&self) -> &TokenDataset {
        &self.data
    }
}

/// Refuses to resume a checkpoint of one model with the settings of another, naming every
/// field that differs.
fn check_same_model(dir: &Path, saved: &GptConfig, asked: &GptConfig) -> Result<()> {
    let saved_json = serde_json::to_value(saved).unwrap_or_default();
    let asked_json = serde_json::to_value(asked).unwrap_or_default();
    let (Some(saved_fields), Some(asked_fields)) = (saved_json.as_object(), asked_json.as_object())
    else {
        return Ok(());
    };
    let differences: Vec<String> = saved_fields
        .iter()
        .filter(|(key, value)| asked_fields.get(*key) != Some(value))
        .map(|(key, value)| {
            let asked = asked_fields.get(key).cloned().unwrap_or_default();
            format!("{key} {value} (run asks for {asked})")
        })
        .collect();
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "the checkpoint in {} is of another model: {}",
        dir.display(),
        differences.join(", ")
    )))
}
