//! `resnorm translate train`: trains an encoder-decoder on a parallel corpus and ends by
//! printing the validation loss, BLEU and chrF of greedy translations.
//!
//! Settings come from the defaults (`resnorm::translate::config`), then the checkpoint's
//! own when resuming, then the flags. A resume must keep the saved run's settings, except
//! those in [`CHANGEABLE_ON_RESUME`]; `--steps` may grow but not fall below the saved step.
//! `--out` is refused when it holds another run unless `--overwrite`; the run writes the
//! checkpoint set `checkpoint/` every `--save-every` steps and at the end, and
//! `metrics.jsonl`, one JSON line per step (tokens_per_s counts target tokens). Exit codes
//! as `resnorm train`: 1 diverged, 2 bad input, 130 / 143 stopped by a signal after saving.
//!
//! Under `mpirun` (a build with the `mpi` feature) every rank runs this command with the same
//! flags: each takes its share of every batch's sentences (`--max-tokens` stays the global
//! batch); rank 0 alone prints, validates, writes the metrics and saves (see
//! `commands::ranks` for errors, docs/distributed.md for users).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use resnorm::kernels::NormKind;
use resnorm::lm::MetricsRecord;
use resnorm::models::gpt::Placement;
use resnorm::translate::checkpoint::load_translation;
use resnorm::translate::config::TranslateConfig;
use resnorm::translate::data::TranslationData;
use resnorm::translate::trainer::TranslateTrainer;
use resnorm::{Error, Result};

use crate::commands::{ranks, run_dir};
use crate::signals::Stop;

/// Exit code of a run stopped by a NaN or infinite loss.
const EXIT_DIVERGED: u8 = 1;
/// The settings a resume may change (`steps` only upward).
pub const CHANGEABLE_ON_RESUME: [&str; 4] = ["steps", "save_every", "eval_every", "bleu_sentences"];

#[derive(clap::Args)]
pub struct Args {
    /// Folder with train.SRC, train.TGT, valid.SRC, valid.TGT (default: ../shared/data/translation).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Source language suffix.
    #[arg(long)]
    src: Option<String>,
    /// Target language suffix.
    #[arg(long)]
    tgt: Option<String>,
    /// Output directory (default: the --resume directory, else runs/translate).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run saved in this directory (only --steps upward, --save-every,
    /// --eval-every and --bleu-sentences may change).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start a new run in --out even though it holds one (replaced at the first save).
    #[arg(long)]
    overwrite: bool,
    /// Joint BPE vocabulary size.
    #[arg(long)]
    vocab: Option<usize>,
    /// Width of the residual streams.
    #[arg(long)]
    width: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    heads: Option<usize>,
    /// Encoder layers.
    #[arg(long)]
    encoder_layers: Option<usize>,
    /// Decoder layers.
    #[arg(long)]
    decoder_layers: Option<usize>,
    /// Longest sentence in ids; longer training pairs are skipped.
    #[arg(long)]
    max_len: Option<usize>,
    /// Residual/normalization wiring: pre-ln, post-ln, sandwich, deep-norm, re-zero,
    /// resi-dual, no-norm, no-residual.
    #[arg(long)]
    placement: Option<Placement>,
    /// Normalization: layer or rms.
    #[arg(long)]
    norm: Option<NormKind>,
    /// Padded tokens per batch.
    #[arg(long)]
    max_tokens: Option<usize>,
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
    /// AdamW weight decay (matrices only).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Global gradient-norm clipping threshold (0 = off).
    #[arg(long)]
    grad_clip: Option<f32>,
    /// Seed of the weights and of the batches.
    #[arg(long)]
    seed: Option<u64>,
    /// Steps between validation losses (0 = only at the end).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Steps between checkpoints (0 = only at the end).
    #[arg(long)]
    save_every: Option<u64>,
    /// Validation sentences translated for the closing BLEU (0 = all).
    #[arg(long)]
    bleu_sentences: Option<usize>,
    /// Residual dropout on the embeddings and every sublayer's output (default 0.3).
    #[arg(long)]
    dropout: Option<f32>,
    /// Dropout after the MLPs' GELU (default 0).
    #[arg(long)]
    activation_dropout: Option<f32>,
    /// Dropout on every attention's probabilities, self and cross (default 0, as fairseq's
    /// transformer_iwslt_de_en recipe: its residual dropout 0.3 already regularizes).
    #[arg(long)]
    attention_dropout: Option<f32>,
    /// Label smoothing of the training loss (default 0.1).
    #[arg(long)]
    label_smoothing: Option<f32>,
}

impl Args {
    /// Defaults or the checkpoint's settings, then the flags; a resume is checked against
    /// the saved run.
    fn settings(&self, lead: bool) -> Result<TranslateConfig> {
        let Some(dir) = &self.resume else {
            return self.apply(TranslateConfig::default());
        };
        let saved = load_translation(dir)?;
        let asked = self.apply(saved.config.clone())?;
        run_dir::check_same_settings(
            &saved.config,
            &asked,
            |key| CHANGEABLE_ON_RESUME.contains(&key),
            |key| format!("--{}", key.replace('_', "-")),
            "--steps (upward), --save-every, --eval-every and --bleu-sentences",
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

    fn apply(&self, mut c: TranslateConfig) -> Result<TranslateConfig> {
        fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
            if let Some(v) = flag {
                *field = v.clone();
            }
        }
        set(&mut c.data, &self.data);
        set(&mut c.src, &self.src);
        set(&mut c.tgt, &self.tgt);
        set(&mut c.vocab, &self.vocab);
        set(&mut c.width, &self.width);
        set(&mut c.heads, &self.heads);
        set(&mut c.encoder_layers, &self.encoder_layers);
        set(&mut c.decoder_layers, &self.decoder_layers);
        set(&mut c.max_len, &self.max_len);
        set(&mut c.placement, &self.placement);
        set(&mut c.norm, &self.norm);
        set(&mut c.max_tokens, &self.max_tokens);
        set(&mut c.steps, &self.steps);
        set(&mut c.lr, &self.lr);
        set(&mut c.min_lr, &self.min_lr);
        set(&mut c.warmup, &self.warmup);
        set(&mut c.weight_decay, &self.weight_decay);
        set(&mut c.grad_clip, &self.grad_clip);
        set(&mut c.seed, &self.seed);
        set(&mut c.eval_every, &self.eval_every);
        set(&mut c.save_every, &self.save_every);
        set(&mut c.bleu_sentences, &self.bleu_sentences);
        set(&mut c.dropout, &self.dropout);
        set(&mut c.activation_dropout, &self.activation_dropout);
        set(&mut c.attention_dropout, &self.attention_dropout);
        set(&mut c.label_smoothing, &self.label_smoothing);
        c.validate()?;
        Ok(c)
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut comm = ranks::join()?;
    let out = args
        .out
        .clone()
        .or_else(|| args.resume.clone())
        .unwrap_or_else(|| PathBuf::from("runs/translate"));
    // Rank 0 alone claims the directory; the others read it only once that is done.
    let claimed = match comm.rank() {
        0 => run_dir::claim(&out, args.resume.as_deref(), args.overwrite),
        _ => Ok(()),
    };
    if ranks::agreed(comm.as_mut(), claimed, |_| serde_json::Value::Null)?.is_none() {
        return Ok(ranks::quiet_failure());
    }
    let setup = start(&args, comm.rank() == 0);
    let Some(trainer) = ranks::agreed(comm.as_mut(), setup, TranslateTrainer::fingerprint)? else {
        return Ok(ranks::quiet_failure());
    };
    let mut trainer = trainer.distributed(comm)?;
    let outcome = train(&args, &out, &mut trainer);
    ranks::or_abort(trainer.communicator(), outcome)
}

/// The trainer of a fresh or resumed run.
fn start(args: &Args, lead: bool) -> Result<TranslateTrainer> {
    let config = args.settings(lead)?;
    match &args.resume {
        Some(dir) => TranslateTrainer::resume(dir, config),
        None => {
            let data = TranslationData::load(&config, None)?;
            TranslateTrainer::new(config, data)
        }
    }
}

/// The step loop, validations, metrics, checkpoints and the closing lines. Every rank runs
/// it; rank 0 alone prints, validates, writes `metrics.jsonl` and saves.
fn train(args: &Args, out: &Path, trainer: &mut TranslateTrainer) -> Result<ExitCode> {
    let ranks = trainer.communicator().size();
    let lead = trainer.communicator().rank() == 0;
    let mut log = ranks::lead_metrics(lead, out, trainer.steps_taken())?;
    let stop = Stop::install()?;
    let bar = progress_bar(trainer, lead);
    let line = |text: &str| match &bar {
        Some(bar) => bar.println(text),
        None if lead => eprintln!("{text}"),
        None => {}
    };
    let data = trainer.data();
    line(&format!(
        "training a {}-parameter {} encoder-decoder for {} steps on {} pairs ({} batches, {} \
         skipped as longer than {} ids) into {}{}",
        trainer.model().num_params(),
        trainer.config().placement,
        trainer.config().steps,
        data.train.len(),
        data.batches.len(),
        data.batches.skipped(),
        trainer.config().max_len,
        out.display(),
        match ranks {
            1 => String::new(),
            n => format!(" on {n} ranks"),
        }
    ));
    let mut last_saved = args.resume.is_some().then_some(trainer.steps_taken());
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
        let step_seconds = started.elapsed().as_secs_f64();
        let every = trainer.config().eval_every;
        let val_loss = match lead && (trainer.is_done() || (every > 0 && report.step % every == 0))
        {
            true => Some(trainer.validation_loss()?),
            false => None,
        };
        let record = MetricsRecord {
            step: report.step,
            loss: report.loss,
            val_loss,
            lr: report.lr,
            grad_norm: report.grad_norm,
            tokens_per_s: report.tokens as f64 / step_seconds,
            elapsed: trainer.elapsed(),
            diagnostics: None,
        };
        if let Some(log) = &mut log {
            log.append(&record)?;
        }
        if let Some(val) = val_loss {
            line(&format!(
                "step {:>6}/{}  loss {:.4}  val_loss {val:.4}  lr {:.2e}  grad_norm {:.3}  {:.0} tok/s  {:.1}s",
                record.step,
                trainer.config().steps,
                record.loss,
                record.lr,
                record.grad_norm,
                record.tokens_per_s,
                record.elapsed
            ));
        }
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "loss {:.4} {:.0} tok/s",
                record.loss, record.tokens_per_s
            ));
            bar.set_position(record.step);
        }
        let save_every = trainer.config().save_every;
        if trainer.is_done() || (save_every > 0 && report.step % save_every == 0) {
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
                eprintln!("{}", stop.saved_line(report.step, out));
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
    let eval = trainer.evaluate()?;
    println!(
        "step {}: validation loss {:.4} nats/token, BLEU {:.2}, chrF {:.2} (greedy, {} \
         sentences)\ncheckpoint: {}",
        trainer.steps_taken(),
        eval.loss,
        eval.bleu,
        eval.chrf,
        eval.sentences,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// An indicatif bar when stderr is a terminal, on rank 0 (`lead`).
fn progress_bar(trainer: &TranslateTrainer, lead: bool) -> Option<ProgressBar> {
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
