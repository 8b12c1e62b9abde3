//! `resnorm classify train`: one run with a progress bar, `metrics.jsonl`, `split.tsv` and
//! checkpoint sets in `--out`; `--resume` continues it with its saved settings (only
//! `--steps` may change). SIGINT and SIGTERM stop after the current step, save, and exit
//! 130 / 143; a diverged loss exits 1 and leaves the last checkpoint as it was.
//!
//! Under `mpirun` (a build with the `mpi` feature) every rank runs this command with the same
//! flags: `--batch` is the global batch, split evenly over the ranks; rank 0 alone prints,
//! evaluates, writes `split.tsv`, the metrics and the checkpoints (see `commands::ranks` for
//! errors, docs/distributed.md for users).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use resnorm::classify::{BodyKind, ClassifyConfig, EvalReport, Pooling, Trainer};
use resnorm::kernels::NormKind;
use resnorm::lm::TokenizerKind;
use resnorm::models::gpt::Placement;
use resnorm::{Error, Result};
use serde::Serialize;

use crate::commands::{ranks, run_dir};
use crate::signals::Stop;

/// Exit code of a run whose loss diverged.
const EXIT_DIVERGED: u8 = 1;

#[derive(clap::Args)]
pub struct Args {
    /// The TSV or CSV file (header row; with --resume: the saved run's).
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// Column of the sentence [default: text].
    #[arg(long)]
    text_column: Option<String>,
    /// Column of the class label.
    #[arg(long)]
    label_column: Option<String>,
    /// The declared labels, in class order (comma-separated); others are refused.
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<String>>,
    /// Column of a real-valued score: regression, or labels with --threshold.
    #[arg(long)]
    score_column: Option<String>,
    /// Scores >= t are `pos`, <= -t `neg`, the rows between are left out.
    #[arg(long)]
    threshold: Option<f32>,
    /// Column that groups the rows (per-group accuracy in the evaluations).
    #[arg(long)]
    group_column: Option<String>,
    /// Run folder: split.tsv, metrics.jsonl, checkpoint/.
    #[arg(long, default_value = "runs/classify")]
    out: PathBuf,
    /// Continue the run saved in --out.
    #[arg(long)]
    resume: bool,
    /// Start a new run in --out even though it holds one.
    #[arg(long)]
    overwrite: bool,
    /// gpt (causal) or encoder (bidirectional, from scratch) [default: gpt].
    #[arg(long)]
    body: Option<BodyKind>,
    /// Fine-tune the GPT of this `resnorm train` run (its size and tokenizer).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Train the head only.
    #[arg(long)]
    freeze_body: bool,
    /// cls (encoder: a prepended [CLS] token), last or mean [default: mean].
    #[arg(long, visible_alias = "pool")]
    pooling: Option<Pooling>,
    /// Dropout before the head while training [default: 0].
    #[arg(long)]
    dropout: Option<f32>,
    /// The encoder body's own dropout (embedding, sublayer outputs, MLP activations,
    /// attention probabilities) while training [default: 0].
    #[arg(long)]
    encoder_dropout: Option<f32>,
    /// char, byte or gpt2 (from scratch) [default: gpt2].
    #[arg(long)]
    tokenizer: Option<TokenizerKind>,
    /// Blocks (from scratch) [default: 2].
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads (from scratch) [default: 4].
    #[arg(long)]
    heads: Option<usize>,
    /// Width (from scratch) [default: 64].
    #[arg(long)]
    width: Option<usize>,
    /// Tokens per sentence, longer ones cut (from scratch) [default: 64].
    #[arg(long)]
    context: Option<usize>,
    /// Residual/normalization wiring (from scratch) [default: pre-ln].
    #[arg(long)]
    placement: Option<Placement>,
    /// layer or rms (from scratch) [default: layer].
    #[arg(long)]
    norm: Option<NormKind>,
    /// Sentences per step [default: 32].
    #[arg(long)]
    batch: Option<usize>,
    /// Optimizer steps [default: 1000].
    #[arg(long)]
    steps: Option<u64>,
    /// Peak learning rate [default: 1e-3].
    #[arg(long)]
    lr: Option<f32>,
    /// Final learning rate [default: 1e-4].
    #[arg(long)]
    min_lr: Option<f32>,
    /// Warm-up steps [default: 50].
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW weight decay [default: 0.01].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Largest gradient norm, 0 = off [default: 1].
    #[arg(long)]
    grad_clip: Option<f32>,
    /// Seed of the weights and the sentence order [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Seed of the split [default: 0].
    #[arg(long)]
    split_seed: Option<u64>,
    /// Fraction of each class for validation [default: 0.1].
    #[arg(long)]
    valid_fraction: Option<f64>,
    /// Fraction of each class for the test [default: 0.1].
    #[arg(long)]
    test_fraction: Option<f64>,
    /// Steps between validations, 0 = at the end [default: 250].
    #[arg(long)]
    eval_every: Option<u64>,
    /// Steps between checkpoints, 0 = at the end [default: 0].
    #[arg(long)]
    save_every: Option<u64>,
}

fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
    if let Some(v) = flag {
        *field = v.clone();
    }
}

impl Args {
    /// The flags given, over `base` (the defaults, or the saved run's settings).
    fn settings(&self, base: ClassifyConfig) -> ClassifyConfig {
        let mut c = base;
        set(&mut c.data, &self.data);
        let t = &mut c.table;
        set(&mut t.text_column, &self.text_column);
        let some = |v: &Option<String>| v.clone().map(Some);
        set(&mut t.label_column, &some(&self.label_column));
        set(&mut t.score_column, &some(&self.score_column));
        set(&mut t.group_column, &some(&self.group_column));
        set(&mut t.labels, &self.labels.clone().map(Some));
        set(&mut t.threshold, &self.threshold.map(Some));
        set(&mut c.body, &self.body);
        set(&mut c.init, &self.init.clone().map(Some));
        c.freeze_body |= self.freeze_body;
        set(&mut c.pooling, &self.pooling);
        set(&mut c.dropout, &self.dropout);
        set(&mut c.encoder_dropout, &self.encoder_dropout);
        set(&mut c.tokenizer, &self.tokenizer);
        set(&mut c.layers, &self.layers);
        set(&mut c.heads, &self.heads);
        set(&mut c.width, &self.width);
        set(&mut c.context, &self.context);
        set(&mut c.placement, &self.placement);
        set(&mut c.norm, &self.norm);
        set(&mut c.batch, &self.batch);
        set(&mut c.steps, &self.steps);
        set(&mut c.lr, &self.lr);
        set(&mut c.min_lr, &self.min_lr);
        set(&mut c.warmup, &self.warmup);
        set(&mut c.weight_decay, &self.weight_decay);
        set(&mut c.grad_clip, &self.grad_clip);
        set(&mut c.seed, &self.seed);
        set(&mut c.split_seed, &self.split_seed);
        set(&mut c.valid_fraction, &self.valid_fraction);
        set(&mut c.test_fraction, &self.test_fraction);
        set(&mut c.eval_every, &self.eval_every);
        set(&mut c.save_every, &self.save_every);
        c
    }
}

/// A setting's flag (`table.label_column` -> `--label-column`).
fn flag_of(key: &str) -> String {
    format!("--{}", key.trim_start_matches("table.").replace('_', "-"))
}

/// One line of `metrics.jsonl`.
#[derive(Serialize)]
struct Record {
    step: u64,
    loss: f32,
    lr: f32,
    grad_norm: f32,
    sentences_per_s: f64,
    elapsed: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid: Option<EvalReport>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut comm = ranks::join()?;
    let out = args.out.clone();
    // Rank 0 alone claims the directory; the others read it only once that is done.
    let claimed = match comm.rank() {
        0 => run_dir::claim(&out, args.resume.then_some(out.as_path()), args.overwrite),
        _ => Ok(()),
    };
    if ranks::agreed(comm.as_mut(), claimed, |_| serde_json::Value::Null)?.is_none() {
        return Ok(ranks::quiet_failure());
    }
    let setup = start(&args, comm.rank() == 0, comm.size());
    let Some(trainer) = ranks::agreed(comm.as_mut(), setup, Trainer::fingerprint)? else {
        return Ok(ranks::quiet_failure());
    };
    let mut trainer = trainer.distributed(comm)?;
    let outcome = train(&args, &out, &mut trainer);
    ranks::or_abort(trainer.communicator(), outcome)
}

/// The trainer of a fresh run (rank 0, `lead`, writes its split) or of the saved one, its
/// batch checked to split evenly over `ranks`.
fn start(args: &Args, lead: bool, ranks: usize) -> Result<Trainer> {
    let out = &args.out;
    if args.resume {
        let saved = resnorm::classify::load_classifier(out)?;
        let asked = args.settings(saved.config.clone());
        run_dir::check_same_settings(&saved.config, &asked, |k| k == "steps", flag_of, "--steps")?;
        if !asked.batch.is_multiple_of(ranks) {
            return Err(ranks::uneven_batch(asked.batch, ranks));
        }
        if lead {
            run_dir::warn_threads(saved.state.threads);
        }
        return Trainer::resume(out, args.steps);
    }
    let config = args.settings(ClassifyConfig::default());
    if !config.batch.is_multiple_of(ranks) {
        return Err(ranks::uneven_batch(config.batch, ranks));
    }
    match lead {
        true => Trainer::new(config, out),
        false => Trainer::fresh(config),
    }
}

/// The step loop, evaluations, metrics, checkpoints and the closing line. Every rank runs
/// it; rank 0 alone prints, evaluates, writes `metrics.jsonl` and saves.
fn train(args: &Args, out: &Path, trainer: &mut Trainer) -> Result<ExitCode> {
    let ranks = trainer.communicator().size();
    let lead = trainer.communicator().rank() == 0;
    let mut log = ranks::lead_metrics(lead, out, trainer.steps_taken())?;
    let stop = Stop::install()?;
    let bar = progress_bar(trainer, lead);
    let say = |text: &str| match &bar {
        Some(bar) => bar.println(text),
        None if lead => eprintln!("{text}"),
        None => {}
    };
    let config = trainer.config().clone();
    let mut params = 0;
    trainer.model().visit_params(&mut |p| params += p.len());
    say(&format!(
        "{} a {params}-parameter {} {} classifier ({} pooling{}) for {} steps: {} training / {} validation / {} test sentences, into {}{}",
        if config.init.is_some() { "fine-tuning" } else { "training" },
        config.placement,
        match config.body {
            BodyKind::Gpt => "GPT",
            BodyKind::Encoder => "encoder",
        },
        config.pooling,
        if config.freeze_body { ", body frozen" } else { "" },
        config.steps,
        trainer.split().train.len(),
        trainer.split().valid.len(),
        trainer.split().test.len(),
        out.display(),
        match ranks {
            1 => String::new(),
            n => format!(" on {n} ranks"),
        }
    ));
    let mut last_saved = args.resume.then_some(trainer.steps_taken());
    while !trainer.is_done() {
        let started = Instant::now();
        let report = match trainer.step() {
            Ok(report) => report,
            Err(diverged @ Error::Diverged { .. }) => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
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
        let seconds = started.elapsed().as_secs_f64();
        let evaluate = lead
            && (trainer.is_done()
                || (config.eval_every > 0 && report.step % config.eval_every == 0));
        let valid = evaluate.then(|| trainer.evaluate(false)).transpose()?;
        if let Some(v) = &valid {
            say(&format!(
                "step {:>6}/{}  loss {:.4}  validation {}",
                report.step,
                config.steps,
                report.loss,
                summary(v)
            ));
        }
        if let Some(log) = &mut log {
            log.append(&Record {
                step: report.step,
                loss: report.loss,
                lr: report.lr,
                grad_norm: report.grad_norm,
                sentences_per_s: report.sentences as f64 / seconds,
                elapsed: trainer.elapsed(),
                valid,
            })?;
        }
        if let Some(bar) = &bar {
            bar.set_position(report.step);
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.0} sentences/s",
                report.loss,
                report.lr,
                report.sentences as f64 / seconds
            ));
        }
        if trainer.is_done() || (config.save_every > 0 && report.step % config.save_every == 0) {
            if lead {
                trainer.save(out)?;
            }
            last_saved = Some(report.step);
        }
        if ranks::stop_agreed(trainer.communicator(), &stop)? {
            if lead && last_saved != Some(report.step) {
                trainer.save(out)?;
            }
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            if lead {
                eprintln!(
                    "{}: checkpoint of step {} saved in {}; continue with --resume",
                    stop.name(),
                    report.step,
                    out.display()
                );
            }
            return Ok(ExitCode::from(stop.exit_code()));
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if !lead {
        return Ok(ExitCode::SUCCESS);
    }
    let test = trainer.evaluate(true)?;
    println!(
        "test: {} ({:.0}s of training)",
        summary(&test),
        trainer.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on rank 0's (`lead`) terminal; `None` elsewhere (logs get the evaluation
/// lines only).
fn progress_bar(trainer: &Trainer, lead: bool) -> Option<ProgressBar> {
    (lead && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(trainer.config().steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} step {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]",
            )
            .expect("the template is valid"),
        );
        bar.set_position(trainer.steps_taken());
        bar
    })
}

/// An evaluation in a few words.
pub fn summary(report: &EvalReport) -> String {
    match (&report.classes, report.pearson) {
        (Some(c), _) => format!(
            "loss {:.4} accuracy {:.4} macro-F1 {:.4} ({} sentences)",
            report.loss, c.accuracy, c.macro_f1, report.rows
        ),
        (None, r) => format!(
            "mse {:.4} pearson {:.4} ({} sentences)",
            report.loss,
            r.unwrap_or(f64::NAN),
            report.rows
        ),
    }
}
