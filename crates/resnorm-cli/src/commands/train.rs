//! `resnorm train`: trains a GPT, or fine-tunes a Hugging Face GPT-2 or Llama-family model
//! (`--init-from HFDIR`), and ends by printing a generated sample.
//!
//! Settings come from the defaults (the README's main run, or for `--init-from` those of
//! `TrainConfig::fine_tune`), then the checkpoint's own settings when resuming, then a TOML
//! `--config` file, then the flags, each overriding the one before. With `--init-from`, the
//! flags that describe a model to build (`--layers`, `--heads`, `--width`, `--placement`,
//! `--norm`, `--tokenizer`) are refused: the model and tokenizer are the directory's. A resume must keep the saved run's settings, except those in
//! [`CHANGEABLE_ON_RESUME`]; `--steps` may grow but not fall below the saved step.
//!
//! The run writes into `--out` (refused when it holds another run, unless `--overwrite`):
//! the checkpoint set `checkpoint/` (see `resnorm::lm`) every `--save-every` steps and at
//! the end, and `metrics.jsonl`, one JSON line per step.
//!
//! Progress: an indicatif bar (step, loss, validation loss, tokens/s, ETA) when stderr is a
//! terminal, and one line per evaluation in every case. Exit codes: 0 done; 1 the loss or
//! gradient became NaN/inf (the message gives the step and the last finite loss; the last
//! checkpoint on disk is left as it was); 2 bad input; 130 / 143 stopped by SIGINT (Ctrl-C) /
//! SIGTERM after saving a checkpoint (see [`crate::signals`]).
//!
//! Under `mpirun` (a build with the `mpi` feature) every rank runs this command with the same
//! flags: `--batch` is the global batch, split over the ranks; rank 0 alone prints, writes
//! the metrics and saves (see `commands::ranks` for errors, docs/distributed.md for users).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use resnorm::data::text::Corpus;
use resnorm::hf::{self, HfCheckpoint};
use resnorm::kernels::NormKind;
use resnorm::lm::{
    load_checkpoint, load_data, Evaluation, MetricsRecord, TokenizerKind, TrainConfig, Trainer,
    ZERO_DIAGNOSTICS,
};
use resnorm::memory::Workload;
use resnorm::models::gpt::{Placement, Sampling};
use resnorm::models::CausalLm;
use resnorm::rng::Rng;
use resnorm::{Error, Result};

use super::{ranks, run_dir};
use crate::memory;
use crate::signals::Stop;

/// Exit code of a run stopped by a NaN or infinite loss.
const EXIT_DIVERGED: u8 = 1;
/// The settings a resume may change (`steps` only upward).
pub const CHANGEABLE_ON_RESUME: [&str; 6] = [
    "steps",
    "save_every",
    "eval_every",
    "eval_windows",
    "diagnostics_every",
    "zero",
];
/// The prompt of the closing sample for the built-in corpus: how every story begins.
pub const CORPUS_PROMPT: &str = "Once there was a";

#[derive(clap::Args)]
pub struct Args {
    /// TOML file with any of the settings below (snake_case names); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Text file, folder of text files, or token .bin file/folder (default: built-in corpus).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output directory for checkpoints and metrics.jsonl (default: the --resume directory,
    /// else runs/train).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run saved in this directory (its settings; only --steps upward,
    /// --save-every, --eval-every, --eval-windows, --diagnostics-every and --zero may change).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start a new run in --out even though it holds one (replaced at the first save).
    #[arg(long)]
    overwrite: bool,
    /// Fine-tune the Hugging Face checkpoint in this directory (config.json, safetensors,
    /// tokenizer.json): GPT-2 or a Llama-family model; the data is tokenized with its
    /// tokenizer.json.
    #[arg(long, conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// Blocks.
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads per block.
    #[arg(long)]
    heads: Option<usize>,
    /// Width of the residual stream.
    #[arg(long)]
    width: Option<usize>,
    /// Context window in tokens.
    #[arg(long)]
    context: Option<usize>,
    /// Residual/normalization wiring: pre-ln, post-ln, sandwich, deep-norm, re-zero,
    /// resi-dual, no-norm, no-residual.
    #[arg(long)]
    placement: Option<Placement>,
    /// Normalization: layer or rms.
    #[arg(long)]
    norm: Option<NormKind>,
    /// Tokenizer: char, byte or gpt2.
    #[arg(long)]
    tokenizer: Option<TokenizerKind>,
    /// Characters of the built-in corpus.
    #[arg(long)]
    corpus_chars: Option<usize>,
    /// Windows per micro-batch.
    #[arg(long)]
    batch: Option<usize>,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long)]
    accum: Option<usize>,
    /// Optimizer steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Final learning rate of the cosine decay.
    #[arg(long)]
    min_lr: Option<f32>,
    /// Linear warm-up steps.
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW weight decay (matrices only unless decay_all = true in the config file).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Global gradient-norm clipping threshold (0 = off).
    #[arg(long)]
    grad_clip: Option<f32>,
    /// Seed of the weights and of the training windows.
    #[arg(long)]
    seed: Option<u64>,
    /// Steps between validation evaluations (0 = only at the end).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Validation windows per evaluation during training (0 = all).
    #[arg(long)]
    eval_windows: Option<usize>,
    /// Steps between checkpoints (0 = only at the end).
    #[arg(long)]
    save_every: Option<u64>,
    /// Steps between per-layer diagnostics in metrics.jsonl (0 = none).
    #[arg(long)]
    diagnostics_every: Option<u64>,
    /// Tokens of the closing sample (0 = none).
    #[arg(long, default_value_t = 300)]
    sample_tokens: usize,
    /// Under mpirun, ZeRO stage: 0 every rank holds the whole optimizer state, 1 each holds
    /// its share.
    #[arg(long)]
    zero: Option<u8>,
    /// Under mpirun: sum the gradients only after the whole backward pass instead of layer
    /// by layer during it (to measure what the overlap hides).
    #[arg(long)]
    no_overlap: bool,
}

impl Args {
    /// Defaults, then the checkpoint's settings, then the TOML file, then the flags; a resume
    /// is checked against the saved run (see the module docs).
    fn settings(&self, lead: bool, init: Option<&HfCheckpoint>) -> Result<TrainConfig> {
        let Some(dir) = &self.resume else {
            let (Some(checkpoint), Some(hf_dir)) = (init, &self.init_from) else {
                return self.apply(TrainConfig::default());
            };
            self.refuse_model_flags(hf_dir)?;
            let base = TrainConfig::fine_tune(hf_dir.clone(), checkpoint.model.context());
            return self.apply(base);
        };
        let saved = load_checkpoint(dir)?;
        let asked = self.apply(saved.train.clone())?;
        run_dir::check_same_settings(
            &saved.train,
            &asked,
            |key| CHANGEABLE_ON_RESUME.contains(&key),
            flag_of,
            "--steps (upward), --save-every, --eval-every, --eval-windows, --diagnostics-every and --zero",
        )?;
        if asked.steps < saved.state.step {
            return Err(Error::Config(format!(
                "--steps {} is below the saved run's step {}: nothing would be trained",
                asked.steps, saved.state.step
            )));
        }
        if lead {
            run_dir::warn_threads(saved.state.threads);
        }
        Ok(asked)
    }

    /// With `--init-from`, the flags of a model to build are an error naming the first.
    fn refuse_model_flags(&self, hf_dir: &Path) -> Result<()> {
        let given = [
            ("--layers", self.layers.is_some()),
            ("--heads", self.heads.is_some()),
            ("--width", self.width.is_some()),
            ("--placement", self.placement.is_some()),
            ("--norm", self.norm.is_some()),
            ("--tokenizer", self.tokenizer.is_some()),
        ];
        match given.iter().find(|(_, set)| *set) {
            Some((flag, _)) => Err(Error::Config(format!(
                "{flag} cannot be used with --init-from: the model and its tokenizer come from {}",
                hf_dir.display()
            ))),
            None => Ok(()),
        }
    }

    /// `c`, then the TOML file, then the flags.
    fn apply(&self, mut c: TrainConfig) -> Result<TrainConfig> {
        if let Some(path) = &self.config {
            c = c.with_toml_file(path)?;
        }
        fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
            if let Some(v) = flag {
                *field = v.clone();
            }
        }
        if self.data.is_some() {
            c.data = self.data.clone();
        }
        set(&mut c.layers, &self.layers);
        set(&mut c.heads, &self.heads);
        set(&mut c.width, &self.width);
        set(&mut c.context, &self.context);
        set(&mut c.placement, &self.placement);
        set(&mut c.norm, &self.norm);
        set(&mut c.tokenizer, &self.tokenizer);
        set(&mut c.corpus_chars, &self.corpus_chars);
        set(&mut c.batch, &self.batch);
        set(&mut c.accum, &self.accum);
        set(&mut c.steps, &self.steps);
        set(&mut c.lr, &self.lr);
        set(&mut c.min_lr, &self.min_lr);
        set(&mut c.warmup, &self.warmup);
        set(&mut c.weight_decay, &self.weight_decay);
        set(&mut c.grad_clip, &self.grad_clip);
        set(&mut c.seed, &self.seed);
        set(&mut c.eval_every, &self.eval_every);
        set(&mut c.eval_windows, &self.eval_windows);
        set(&mut c.save_every, &self.save_every);
        set(&mut c.diagnostics_every, &self.diagnostics_every);
        set(&mut c.zero, &self.zero);
        c.validate()?;
        Ok(c)
    }
}

/// A setting's flag (`--eval-every`), or its config-file key for those without one.
fn flag_of(key: &str) -> String {
    let command = <Args as clap::Args>::augment_args(clap::Command::new("train"));
    if command.get_arguments().any(|a| a.get_id() == key) {
        format!("--{}", key.replace('_', "-"))
    } else {
        format!("`{key}` (config file)")
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut comm = ranks::join()?;
    let out = args
        .out
        .clone()
        .or_else(|| args.resume.clone())
        .unwrap_or_else(|| PathBuf::from("runs/train"));
    // Rank 0 alone claims the directory; the others read it only once that is done.
    let claimed = match comm.rank() {
        0 => run_dir::claim(&out, args.resume.as_deref(), args.overwrite),
        _ => Ok(()),
    };
    if ranks::agreed(comm.as_mut(), claimed, |_| serde_json::Value::Null)?.is_none() {
        return Ok(ranks::quiet_failure());
    }
    let setup = start(&args, comm.rank(), comm.size());
    let Some(trainer) = ranks::agreed(comm.as_mut(), setup, Trainer::fingerprint)? else {
        return Ok(ranks::quiet_failure());
    };
    let mut trainer = trainer.distributed(comm)?;
    trainer.set_overlap(!args.no_overlap);
    let outcome = train(&args, &out, &mut trainer);
    ranks::or_abort(trainer.communicator(), outcome)
}

/// The trainer of a fresh or resumed run, checked to fit in memory with this rank's share
/// of the batch.
fn start(args: &Args, rank: usize, ranks: usize) -> Result<Trainer> {
    let init = args.init_from.as_deref().map(hf::load).transpose()?;
    let config = args.settings(rank == 0, init.as_ref())?;
    if !config.batch.is_multiple_of(ranks) {
        return Err(ranks::uneven_batch(config.batch, ranks));
    }
    if ranks > 1 && config.zero == 1 && config.diagnostics_every > 0 {
        return Err(Error::Config(format!(
            "--diagnostics-every with --zero 1 on {ranks} ranks: {ZERO_DIAGNOSTICS}"
        )));
    }
    let local = config.batch / ranks;
    match (&args.resume, init) {
        (Some(dir), _) => {
            let trainer = Trainer::resume(dir, config)?;
            // The model came from its file; its batch's activations are allocated at the
            // first step, after this check (the GPT's estimate; a Llama has none yet).
            if let CausalLm::Gpt(gpt) = trainer.model() {
                let estimate = gpt.config().memory_estimate(local, Workload::Train)?;
                memory::check_fits("training", &estimate)?;
            }
            Ok(trainer)
        }
        (None, Some(checkpoint)) => {
            if let CausalLm::Gpt(gpt) = &checkpoint.model {
                let estimate = gpt.config().memory_estimate(local, Workload::Train)?;
                memory::check_fits("training", &estimate)?;
            }
            Trainer::fine_tune(config, checkpoint)
        }
        (None, None) => {
            if config.data.is_none() {
                let corpus = Corpus::memory_estimate(config.corpus_chars)?;
                memory::check_fits("the built-in corpus", &corpus)?;
            }
            let data = load_data(&config, None)?;
            let model = config.gpt_config(data.tokenizer.vocab_size());
            memory::check_fits("training", &model.memory_estimate(local, Workload::Train)?)?;
            Trainer::new(config, data)
        }
    }
}

/// The step loop, evaluations, metrics, checkpoints and the closing lines. Every rank runs
/// it; rank 0 alone prints, writes `metrics.jsonl` and saves.
fn train(args: &Args, out: &Path, trainer: &mut Trainer) -> Result<ExitCode> {
    let ranks = trainer.communicator().size();
    let lead = trainer.communicator().rank() == 0;
    let mut log = ranks::lead_metrics(lead, out, trainer.steps_taken())?;
    let stop = Stop::install()?;

    let progress = Progress::new(trainer, lead);
    progress.line(&format!(
        "training a {}-parameter {} for {} steps into {}{}",
        trainer.model().num_params(),
        trainer.model().describe(),
        trainer.config().steps,
        out.display(),
        match ranks {
            1 => String::new(),
            n => format!(" on {n} ranks"),
        }
    ));
    let mut last_saved = args.resume.is_some().then_some(trainer.steps_taken());
    // Per step: seconds waited for the gradient sums after the backward, and the whole step.
    let mut exchange = Vec::new();
    while !trainer.is_done() {
        let started = Instant::now();
        let report = match trainer.step() {
            Ok(report) => report,
            Err(diverged @ Error::Diverged { .. }) => {
                progress.finish();
                let kept = match last_saved {
                    Some(step) => format!(
                        "the checkpoint in {} (step {step}) is left as it was",
                        out.display()
                    ),
                    None => "no checkpoint was saved".to_string(),
                };
                // The loss and gradients are averaged over the ranks: all diverge together.
                if lead {
                    eprintln!("error: {diverged}; stopped, {kept}");
                }
                return Ok(ExitCode::from(EXIT_DIVERGED));
            }
            Err(other) => return Err(other),
        };
        let step_seconds = started.elapsed().as_secs_f64();
        exchange.push((report.comm_wait, step_seconds));
        let config = trainer.config();
        let evaluate_now =
            trainer.is_done() || (config.eval_every > 0 && report.step % config.eval_every == 0);
        let val = if evaluate_now {
            Some(trainer.evaluate()?)
        } else {
            None
        };
        let record = MetricsRecord {
            step: report.step,
            loss: report.loss,
            val_loss: val.map(|v| v.loss),
            lr: report.lr,
            grad_norm: report.grad_norm,
            tokens_per_s: report.tokens as f64 / step_seconds,
            elapsed: trainer.elapsed(),
            diagnostics: report.diagnostics,
        };
        if let Some(log) = &mut log {
            log.append(&record)?;
        }
        progress.update(trainer, &record, val.is_some());
        let save_every = trainer.config().save_every;
        if trainer.is_done() || (save_every > 0 && report.step % save_every == 0) {
            trainer.save_all_ranks(out)?;
            last_saved = Some(report.step);
        }
        if ranks::stop_agreed(trainer.communicator(), &stop)? {
            if last_saved != Some(report.step) {
                trainer.save_all_ranks(out)?;
            }
            progress.finish();
            if lead {
                eprintln!("{}", stop.saved_line(report.step, out));
            }
            return Ok(ExitCode::from(stop.exit_code()));
        }
    }
    progress.finish();
    if ranks > 1 && lead {
        let megabytes = (trainer.exchanged_elements() * 4) as f64 / 1e6;
        let median = |pick: fn(&(f64, f64)) -> f64| {
            let mut values: Vec<f64> = exchange.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(0.0) * 1e3
        };
        eprintln!(
            "gradient exchange: {megabytes:.2} MB per rank per step; median step {:.1} ms, of which rank 0 waited {:.1} ms for the sums after its backward (overlap {})",
            median(|e| e.1),
            median(|e| e.0),
            if args.no_overlap { "off" } else { "on" }
        );
    }
    if ranks::stop_agreed(trainer.communicator(), &stop)? {
        if lead {
            eprintln!("{}: the run is complete and saved", stop.name());
        }
        return Ok(ExitCode::from(stop.exit_code()));
    }
    let final_eval = trainer.evaluate_all()?;
    if lead {
        println!("{}", summary(trainer, &final_eval, out));
        if args.sample_tokens > 0 {
            println!("sample:\n{}", closing_sample(trainer, args.sample_tokens)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The last lines of a run: losses against what the data allows.
fn summary(trainer: &Trainer, eval: &Evaluation, out: &Path) -> String {
    let mut text = format!(
        "step {}: validation loss {:.4} nats/token, perplexity {:.3}",
        trainer.steps_taken(),
        eval.loss,
        eval.perplexity()
    );
    if let Some(entropy) = trainer.corpus_nats_per_char() {
        text.push_str(&format!(" (the corpus's entropy: {entropy:.4} nats/char)"));
    }
    text.push_str(&format!("\ncheckpoint: {}", out.display()));
    text
}

/// A sample after the corpus's opening words, or after the first tokens of the validation
/// split for other data; temperature 0.8, seeded by the run's seed. A Llama-family model
/// does not slide its window: its sample stops at its context.
fn closing_sample(trainer: &mut Trainer, tokens: usize) -> Result<String> {
    let tokenizer = trainer.tokenizer().clone();
    let prompt = match trainer.config().data {
        None => tokenizer.encode(CORPUS_PROMPT)?,
        Some(_) => trainer.data().validation()[..8.min(trainer.data().validation().len())].to_vec(),
    };
    let sampling = Sampling {
        temperature: 0.8,
        top_k: 0,
    };
    let mut rng = Rng::new(trainer.config().seed);
    let model = trainer.model_mut();
    let tokens = match model {
        CausalLm::Gpt(_) => tokens,
        CausalLm::Llama(_) => tokens.min(model.context().saturating_sub(prompt.len())),
    };
    let sampled = model.generate(&prompt, tokens, sampling, &mut rng)?;
    Ok(tokenizer.decode(&prompt)? + &tokenizer.decode(&sampled)?)
}

/// The progress bar (terminal only) and the evaluation lines (always).
struct Progress {
    bar: Option<ProgressBar>,
    val_loss: std::cell::Cell<Option<f64>>,
    /// Rank 0, the one that prints.
    lead: bool,
}

impl Progress {
    /// The progress of rank 0 (`lead`); the other ranks' is silent.
    fn new(trainer: &Trainer, lead: bool) -> Self {
        let bar = (lead && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(trainer.config().steps);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} step {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]",
                )
                .expect("the template is valid"),
            );
            bar.set_position(trainer.steps_taken());
            bar
        });
        Progress {
            bar,
            val_loss: std::cell::Cell::new(None),
            lead,
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None if self.lead => eprintln!("{text}"),
            None => {}
        }
    }

    fn update(&self, trainer: &Trainer, record: &MetricsRecord, evaluated: bool) {
        if evaluated {
            self.val_loss.set(record.val_loss);
            self.line(&format!(
                "step {:>6}/{}  loss {:.4}  val_loss {:.4}  lr {:.2e}  grad_norm {:.3}  {:.0} tok/s  {:.1}s",
                record.step,
                trainer.config().steps,
                record.loss,
                record.val_loss.unwrap_or(f64::NAN),
                record.lr,
                record.grad_norm,
                record.tokens_per_s,
                record.elapsed
            ));
        }
        if let Some(bar) = &self.bar {
            let val = self
                .val_loss
                .get()
                .map_or(String::new(), |v| format!(" val {v:.4}"));
            bar.set_message(format!(
                "loss {:.4}{val} {:.0} tok/s",
                record.loss, record.tokens_per_s
            ));
            bar.set_position(record.step);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
