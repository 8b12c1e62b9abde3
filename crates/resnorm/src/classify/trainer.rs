//! The classification training loop, with the language-model trainer's guarantees.
//!
//! One [`Trainer::step`]:
//! ```text
//! zero the trainable gradients
//! draw `batch` training sentences uniformly (data RNG) -> forward -> loss -> backward
//! stop with Error::Diverged if the loss or ‖grad‖ is NaN/inf (parameters untouched)
//! clip the global gradient norm to grad_clip (when > 0); AdamW with lr = WarmupCosine(s)
//! ```
//! A fresh run reads the table, splits it ([`stratified_split`]) and writes `split.tsv` into
//! the run directory; the body is a fresh GPT or encoder (weights from `seed`) or the GPT of
//! a `resnorm train` run (`init`), the head always fresh (from `seed ^ HEAD_SEED_MIX`). The
//! data RNG is seeded with `seed ^ DATA_SEED_MIX`, as the language model's, and also draws
//! the dropout masks (after the batch's sentences). Every kernel is
//! deterministic for a given thread count, so a run resumed from its checkpoint (weights,
//! AdamW moments, step, data RNG state; the split read back from `split.tsv`) continues
//! bit for bit.
//!
//! **Data-parallel** ([`Trainer::distributed`]): with `N` ranks `batch` is the global batch
//! `B` (a multiple of `N`). Every rank draws the same `B` sentences from the same data RNG
//! and trains on its own `B/N` of them (rank `r` takes rows `r·B/N ..`); with dropout before
//! the head it also draws every row's mask, using its own rows' only. The gradients and
//! losses of the equal shares are averaged ([`FlatAverage`]), so `N` ranks train as one
//! process, up to the order of float sums, masks included, and every rank's RNG stays where
//! one process's would be: a run resumes on any number of ranks. The encoder's own dropout
//! (`encoder_dropout`) is the exception: its masks are drawn per rank (the step's seed
//! mixed with the rank), so with it `N` ranks train as one process in distribution only.
//!
//! ```
//! use resnorm::classify::{ClassifyConfig, TableSpec, Trainer};
//! use resnorm::lm::TokenizerKind;
//! let dir = std::env::temp_dir().join(format!("resnorm-doc-classify-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let rows: String = (0..40).map(|i| format!("{}\tsaid {}\n", ["neg", "pos"][i % 2], ["no", "yes"][i % 2])).collect();
//! std::fs::write(dir.join("s.tsv"), format!("label\ttext\n{rows}")).unwrap();
//! let config = ClassifyConfig {
//!     data: dir.join("s.tsv"),
//!     table: TableSpec { label_column: Some("label".into()), ..TableSpec::new("text") },
//!     layers: 1, heads: 2, width: 8, context: 8, tokenizer: TokenizerKind::Byte,
//!     batch: 4, steps: 2, warmup: 1, valid_fraction: 0.2, test_fraction: 0.2,
//!     ..ClassifyConfig::default()
//! };
//! let mut trainer = Trainer::new(config, &dir.join("run")).unwrap();
//! let first = trainer.step().unwrap();
//! assert!(first.loss.is_finite() && first.grad_norm > 0.0);
//! trainer.step().unwrap();
//! assert!(trainer.is_done());
//! assert_eq!(trainer.evaluate(true).unwrap().rows, 8);
//! assert!(dir.join("run/split.tsv").exists());
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::path::Path;
use std::time::Instant;

use crate::data::text::Tokenizer;
use crate::distributed::{agree, Communicator, FlatAverage, SingleProcess};
use crate::kernels::dropout::hash;
use crate::lm::{TokenizerKind, DATA_SEED_MIX};
use crate::models::gpt::Gpt;
use crate::optim::{clip_grad_norm, grad_norm, AdamW, Optimizer, WarmupCosine};
use crate::rng::Rng;
use crate::{Error, Result};

use super::batch::{encode_sentence, fill_batch};
use super::checkpoint::{
    load_classifier, load_optimizer, save_classifier, RunState, SavedClassifier,
};
use super::config::{BodyKind, ClassifyConfig};
use super::data::{read_table, Table, Task};
use super::encoder::EncoderBody;
use super::evaluate::{outputs, score, EvalReport};
use super::model::{Classifier, ClassifierBody};
use super::split::{stratified_split, Split, SPLIT_FILE};

/// Mixed into the seed for the head, so that it does not replay the body's stream.
pub const HEAD_SEED_MIX: u64 = 0x4EAD_5EED_0000_0001;

/// What one step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// Optimizer steps taken, counting this one.
    pub step: u64,
    /// The batch's mean loss.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Sentences trained on.
    pub sentences: usize,
}

/// A classifier, its optimizer, the split table and where the run stands.
#[derive(Debug)]
pub struct Trainer {
    config: ClassifyConfig,
    model: Classifier,
    optimizer: AdamW,
    schedule: WarmupCosine,
    tokenizer: Tokenizer,
    task: Task,
    table: Table,
    split: Split,
    encoded: Vec<Vec<u32>>,
    rng: Rng,
    step: u64,
    last_loss: Option<f32>,
    elapsed_before: f64,
    started: Instant,
    rows: Vec<usize>,
    tokens: Vec<u32>,
    lengths: Vec<usize>,
    labels: Vec<u32>,
    scores: Vec<f32>,
    comm: Box<dyn Communicator>,
    /// The bucket layout, with more than one rank.
    average: Option<FlatAverage>,
}

/// The column that names a row's class, for error messages.
fn class_column(config: &ClassifyConfig) -> &str {
    let t = &config.table;
    t.label_column
        .as_deref()
        .or(t.score_column.as_deref())
        .unwrap_or(&t.text_column)
}

/// Every sentence of `table` encoded for a body of `context` tokens; one left with no token
/// is refused by line and column.
pub fn encode_table(
    table: &Table,
    tokenizer: &Tokenizer,
    context: usize,
    text_column: &str,
) -> Result<Vec<Vec<u32>>> {
    table
        .examples
        .iter()
        .map(|e| {
            let ids = encode_sentence(tokenizer, &e.text, context)?;
            if ids.is_empty() {
                return Err(Error::Format {
                    path: table.path.clone(),
                    detail: format!(
                        "line {}, column `{text_column}`: no character of the text is in the tokenizer's vocabulary",
                        e.line
                    ),
                });
            }
            Ok(ids)
        })
        .collect()
}

impl Trainer {
    /// A fresh run of `config` in the run directory `run` (created; `split.tsv` written).
    pub fn new(config: ClassifyConfig, run: &Path) -> Result<Self> {
        let trainer = Self::fresh(config)?;
        trainer.write_split(run)?;
        Ok(trainer)
    }

    /// Writes the run's `split.tsv` into the run directory `run` (created).
    pub fn write_split(&self, run: &Path) -> Result<()> {
        std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
        self.split
            .write(&run.join(SPLIT_FILE), &self.table.examples)
    }

    /// A fresh run of `config` that writes nothing: what the ranks other than 0 of a
    /// data-parallel run start, rank 0 writing the split ([`Trainer::new`]).
    pub fn fresh(mut config: ClassifyConfig) -> Result<Self> {
        config.validate()?;
        let table = read_table(&config.data, &config.table)?;
        if let Task::Classes(names) = &table.task {
            if names.len() < 2 {
                return Err(Error::Format {
                    path: table.path,
                    detail: format!(
                        "column `{}`: one class only ({}); a classifier needs two",
                        class_column(&config),
                        names.join(", ")
                    ),
                });
            }
        }
        let data = config.data.display().to_string();
        let split = stratified_split(
            &table.examples,
            &table.task,
            config.valid_fraction,
            config.test_fraction,
            config.split_seed,
            &data,
            class_column(&config),
        )?;
        let (body, tokenizer) = match &config.init {
            Some(dir) => {
                let saved = crate::lm::load_checkpoint(dir)?;
                let model = saved.model.into_gpt("a classifier's --init")?;
                let c = model.config();
                (config.layers, config.heads, config.width, config.context) =
                    (c.layers, c.heads, c.width, c.context);
                (config.placement, config.norm) = (c.placement, c.norm);
                config.tokenizer = TokenizerKind::of(&saved.tokenizer);
                (ClassifierBody::Gpt(model), saved.tokenizer)
            }
            None => {
                let tokenizer = match config.tokenizer {
                    TokenizerKind::Char => {
                        let text: String = split
                            .train
                            .iter()
                            .map(|&i| table.examples[i].text.as_str())
                            .collect();
                        Tokenizer::char_level(&text)?
                    }
                    TokenizerKind::Byte => Tokenizer::Byte,
                    TokenizerKind::Gpt2 => Tokenizer::Gpt2,
                    TokenizerKind::Hf => {
                        return Err(Error::Config(
                            "a classifier has no Hugging Face tokenizer to start from".into(),
                        ))
                    }
                };
                let vocab = tokenizer.vocab_size();
                let body = match config.body {
                    BodyKind::Gpt => {
                        ClassifierBody::Gpt(Gpt::new(config.gpt_config(vocab), config.seed)?)
                    }
                    BodyKind::Encoder => ClassifierBody::Encoder(EncoderBody::new(
                        config.encoder_config(vocab),
                        config.seed,
                    )?),
                };
                (body, tokenizer)
            }
        };
        let model = Classifier::new(
            body,
            &table.task,
            config.pooling,
            config.freeze_body,
            config.seed ^ HEAD_SEED_MIX,
        )?
        .with_dropout(config.dropout)?
        .with_body_dropout(config.encoder_dropout)?;
        let optimizer = AdamW::new(config.adamw_config())?;
        let rng = Rng::new(config.seed ^ DATA_SEED_MIX);
        Self::assemble(config, model, optimizer, tokenizer, table, split, rng, None)
    }

    /// Continues the run saved in `run` with its settings; `steps`, when given, replaces the
    /// planned number of steps. The table is read again and the split read from `split.tsv`.
    pub fn resume(run: &Path, steps: Option<u64>) -> Result<Self> {
        let SavedClassifier {
            model,
            tokenizer,
            mut config,
            task,
            state,
        } = load_classifier(run)?;
        if let Some(steps) = steps {
            config.steps = steps;
        }
        config.validate()?;
        let optimizer = load_optimizer(run, &config)?;
        let table = read_table(&config.data, &config.table)?;
        if table.task != task {
            return Err(Error::Format {
                path: table.path,
                detail: format!(
                    "the data now describe {:?}, the checkpoint {task:?}",
                    table.task
                ),
            });
        }
        let split = Split::read(&run.join(SPLIT_FILE), &table.examples)?;
        let data = config.data.display().to_string();
        split.check_classes(&table.examples, &task, &data, class_column(&config))?;
        let rng = Rng::from_state(state.rng_state)?;
        Self::assemble(
            config,
            model,
            optimizer,
            tokenizer,
            table,
            split,
            rng,
            Some(state),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: ClassifyConfig,
        model: Classifier,
        optimizer: AdamW,
        tokenizer: Tokenizer,
        table: Table,
        split: Split,
        rng: Rng,
        state: Option<RunState>,
    ) -> Result<Self> {
        let encoded = encode_table(
            &table,
            &tokenizer,
            model.body.context(),
            &config.table.text_column,
        )?;
        let schedule = config.schedule()?;
        Ok(Trainer {
            schedule,
            model,
            optimizer,
            tokenizer,
            task: table.task.clone(),
            table,
            split,
            encoded,
            rng,
            step: state.as_ref().map_or(0, |s| s.step),
            last_loss: state.as_ref().and_then(|s| s.last_loss),
            elapsed_before: state.as_ref().map_or(0.0, |s| s.elapsed),
            started: Instant::now(),
            rows: Vec::with_capacity(config.batch),
            tokens: Vec::new(),
            lengths: Vec::new(),
            labels: Vec::with_capacity(config.batch),
            scores: Vec::with_capacity(config.batch),
            comm: Box::new(SingleProcess::default()),
            average: None,
            config,
        })
    }

    /// Trains on the ranks of `comm` from here on, `batch` split evenly over them (see the
    /// module documentation). Collective: every rank calls it.
    pub fn distributed(mut self, mut comm: Box<dyn Communicator>) -> Result<Self> {
        let ranks = comm.size();
        if !self.config.batch.is_multiple_of(ranks) {
            return Err(Error::Config(format!(
                "batch {} does not split evenly over {ranks} ranks",
                self.config.batch
            )));
        }
        self.average = match ranks {
            1 => None,
            _ => Some(FlatAverage::new(
                &self.model.trainable_mut(),
                comm.as_mut(),
            )?),
        };
        self.comm = comm;
        Ok(self)
    }

    /// The communicator the run trains on.
    pub fn communicator(&mut self) -> &mut dyn Communicator {
        self.comm.as_mut()
    }

    /// What every rank must agree on before training: the settings, the split's and model's
    /// sizes, the step and a checksum of the weights (see [`agree::fingerprint`]).
    pub fn fingerprint(&self) -> serde_json::Value {
        let mut params = 0;
        self.model.visit_params(&mut |p| params += p.len());
        let extra = vec![
            ("rows", self.table.examples.len().into()),
            ("training_rows", self.split.train.len().into()),
            ("validation_rows", self.split.valid.len().into()),
            ("test_rows", self.split.test.len().into()),
            ("vocab", self.tokenizer.vocab_size().into()),
            ("parameters", params.into()),
            ("step", self.step.into()),
        ];
        agree::fingerprint(&self.config, extra, |f| self.model.visit_params(f))
    }

    /// One optimizer step (see the module documentation).
    pub fn step(&mut self) -> Result<StepReport> {
        crate::threads::busy(|| self.step_held())
    }

    fn step_held(&mut self) -> Result<StepReport> {
        let batch = self.config.batch;
        let lr = self.schedule.lr_at(self.step);
        let train = &self.split.train;
        self.rows.clear();
        self.labels.clear();
        self.scores.clear();
        for _ in 0..batch {
            let i = train[self.rng.below(train.len())];
            self.rows.push(i);
            self.labels.push(self.table.examples[i].label);
            self.scores.push(self.table.examples[i].score);
        }
        let (rank, ranks) = (self.comm.rank(), self.comm.size());
        let local = batch / ranks;
        let mine = rank * local..(rank + 1) * local;
        let seq = self.model.body.context();
        fill_batch(
            &self.encoded,
            &self.rows[mine.clone()],
            seq,
            &mut self.tokens,
            &mut self.lengths,
        );
        self.model.zero_grad();
        // The dropout masks of the rows before and after this rank's, drawn and dropped.
        let width = self.model.body.width();
        let skip = |rng: &mut Rng, rows: usize| {
            for _ in 0..rows * width {
                rng.next_u64();
            }
        };
        // The encoder's masks: one seed per step, mixed with the rank on the others (their
        // rows are other rows of the same batch); nothing drawn when the rate is 0.
        let body_seed = match (self.model.body_dropout() > 0.0, rank) {
            (false, _) => 0,
            (true, 0) => self.rng.next_u64(),
            (true, _) => hash(self.rng.next_u64(), rank as u64),
        };
        let dropout = self.config.dropout > 0.0;
        if dropout {
            skip(&mut self.rng, mine.start);
        }
        self.model
            .forward_train(&self.tokens, &self.lengths, body_seed, &mut self.rng)?;
        if dropout {
            skip(&mut self.rng, batch - mine.end);
        }
        let mut loss = self
            .model
            .loss(&self.labels[mine.clone()], &self.scores[mine])?;
        self.model.backward()?;
        let mut params = self.model.trainable_mut();
        if let Some(average) = &self.average {
            loss = average
                .average(&mut params, self.comm.as_mut(), 1.0, loss)?
                .loss;
        }
        let diverged = |loss: f32| Error::Diverged {
            step: self.step,
            loss,
            last_finite_loss: self.last_loss,
        };
        if !loss.is_finite() {
            return Err(diverged(loss));
        }
        let norm = if self.config.grad_clip > 0.0 {
            clip_grad_norm(&mut params, self.config.grad_clip)?
        } else {
            grad_norm(&params)
        };
        if !norm.is_finite() {
            return Err(diverged(loss));
        }
        self.optimizer.step(&mut params, lr)?;
        self.step += 1;
        self.last_loss = Some(loss);
        Ok(StepReport {
            step: self.step,
            loss,
            lr,
            grad_norm: norm,
            sentences: batch,
        })
    }

    /// Loss and scores on the validation split (`test`: on the test split), per group when
    /// the table has groups. On this rank alone: data-parallel, rank 0 evaluates for all.
    pub fn evaluate(&mut self, test: bool) -> Result<EvalReport> {
        let rows = if test {
            &self.split.test
        } else {
            &self.split.valid
        };
        let logits = outputs(&mut self.model, &self.encoded, rows, self.config.batch)?;
        let groups = self.config.table.group_column.is_some();
        score(&logits, &self.table.examples, rows, &self.task, groups)
    }

    /// Saves a checkpoint of the run as the live set of the run directory `run`.
    /// Data-parallel, rank 0 alone calls it: every rank holds the same state.
    pub fn save(&self, run: &Path) -> Result<()> {
        let state = RunState {
            step: self.step,
            rng_state: self.rng.state(),
            elapsed: self.elapsed(),
            threads: crate::threads::num_threads(),
            last_loss: self.last_loss,
        };
        save_classifier(
            run,
            &self.model,
            &self.optimizer,
            &self.tokenizer,
            &self.config,
            &self.task,
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

    /// The settings of the run (with `init`, the body's sizes are the checkpoint's).
    pub fn config(&self) -> &ClassifyConfig {
        &self.config
    }

    /// The model.
    pub fn model(&self) -> &Classifier {
        &self.model
    }

    /// The classes, or regression.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The split of the table's rows.
    pub fn split(&self) -> &Split {
        &self.split
    }
}
