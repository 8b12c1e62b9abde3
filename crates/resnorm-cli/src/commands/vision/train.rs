//! `resnorm vision train`: one training run with a progress bar, `metrics.jsonl` and a
//! checkpoint set after every epoch (resumable with `--resume`, which keeps the saved run's
//! settings: only `--epochs` may change, upward).
//!
//! Settings: the defaults (or, resuming, the saved run's), then the flags given. SIGINT and
//! SIGTERM stop the run after the current step, save it mid-epoch and exit 130 / 143 (see
//! [`crate::signals`]); `--out` holding another run is refused unless `--overwrite`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use resnorm::memory::Workload;
use resnorm::vision::{
    load_card, load_image_splits, BatchReport, EpochReport, LrSchedule, ModelSpec, TrainConfig,
    Trainer,
};
use resnorm::Error;

use crate::commands::run_dir;
use crate::memory;
use crate::signals::Stop;

#[derive(clap::Args)]
pub struct Args {
    /// resnet18, resnet34, resnet20/32/44/56, plain20/32/44/56, or mlp (with --resume: the
    /// saved run's).
    #[arg(long, required_unless_present = "resume")]
    model: Option<String>,
    /// A folder of MNIST-style IDX files (Fashion-MNIST) or a digits CSV.
    #[arg(long)]
    data: PathBuf,
    /// Run folder: the checkpoint set `checkpoint/` and metrics.jsonl; refused when it holds
    /// another run unless --resume or --overwrite.
    #[arg(long, default_value = "runs/vision")]
    out: PathBuf,
    /// Continue the run saved in --out, with its settings (only --epochs may change, upward).
    #[arg(long)]
    resume: bool,
    /// Start a new run in --out even though it holds one (replaced at the first save).
    #[arg(long)]
    overwrite: bool,
    /// Passes over the training set [default: 3].
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step [default: 128].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate [default: 0.1].
    #[arg(long)]
    lr: Option<f32>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    momentum: Option<f32>,
    /// L2 weight decay [default: 5e-4].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Also decay BatchNorm/LayerNorm parameters and biases.
    #[arg(long)]
    decay_norms: bool,
    /// cosine or step [default: cosine].
    #[arg(long)]
    schedule: Option<String>,
    /// Step schedule: epochs between decays [default: 1].
    #[arg(long)]
    step_every: Option<usize>,
    /// Step schedule: factor per decay [default: 0.1].
    #[arg(long)]
    gamma: Option<f32>,
    /// Epochs of linear warm-up [default: 0.1].
    #[arg(long)]
    warmup_epochs: Option<f32>,
    /// Random-crop padding in pixels (0: off) [default: 0].
    #[arg(long)]
    crop_padding: Option<usize>,
    /// Random horizontal flips.
    #[arg(long)]
    flip: bool,
    /// Feed raw [0, 1] pixels instead of standardized ones.
    #[arg(long)]
    no_normalize: bool,
    /// Train on the first N training images only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Seed of the initialization, data order and augmentation [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Input channels the model expects; must match the data.
    #[arg(long)]
    in_channels: Option<usize>,
    /// torchvision nets: 3x3/1 stem without max pooling, for small images.
    #[arg(long)]
    small_stem: bool,
    /// Start every residual branch's last BatchNorm weight at 0.
    #[arg(long)]
    zero_init_residual: bool,
    /// mlp: number of blocks [default: 8].
    #[arg(long)]
    depth: Option<usize>,
    /// mlp: hidden width [default: 256].
    #[arg(long)]
    width: Option<usize>,
    /// mlp: layer, rms, batch or none [default: layer].
    #[arg(long)]
    norm: Option<String>,
    /// mlp: skip connection around each block, on or off [default: on].
    #[arg(long)]
    residual: Option<String>,
}

/// The flag that sets a setting of [`TrainConfig`] (`model.width` -> `--width`).
fn flag_of(key: &str) -> String {
    let flag = match key {
        "model.kind" | "model.arch" => "model",
        "schedule.kind" => "schedule",
        "schedule.every_epochs" => "step-every",
        "normalize" => "no-normalize",
        other => other
            .trim_start_matches("model.")
            .trim_start_matches("schedule."),
    };
    format!("--{}", flag.replace('_', "-"))
}

/// The settings of the run: `base` (the defaults for the model, or the saved run's), then
/// the flags given.
fn config(args: &Args, saved: Option<&TrainConfig>) -> resnorm::Result<TrainConfig> {
    let model = model_spec(args, saved.map(|c| &c.model))?;
    let mut c = match saved {
        Some(saved) => TrainConfig {
            model,
            ..saved.clone()
        },
        None => TrainConfig::new(model),
    };
    fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
        if let Some(v) = flag {
            *field = v.clone();
        }
    }
    set(&mut c.epochs, &args.epochs);
    set(&mut c.batch_size, &args.batch_size);
    set(&mut c.lr, &args.lr);
    set(&mut c.momentum, &args.momentum);
    set(&mut c.weight_decay, &args.weight_decay);
    set(&mut c.warmup_epochs, &args.warmup_epochs);
    set(&mut c.crop_padding, &args.crop_padding);
    set(&mut c.seed, &args.seed);
    c.decay_norms |= args.decay_norms;
    c.flip |= args.flip;
    c.normalize &= !args.no_normalize;
    if args.train_limit.is_some() {
        c.train_limit = args.train_limit;
    }
    if args.test_limit.is_some() {
        c.test_limit = args.test_limit;
    }
    let (every, gamma) = match c.schedule {
        LrSchedule::Step {
            every_epochs,
            gamma,
        } => (every_epochs, gamma),
        LrSchedule::Cosine => (1, 0.1),
    };
    let (every, gamma) = (
        args.step_every.unwrap_or(every),
        args.gamma.unwrap_or(gamma),
    );
    let schedule = match args.schedule.as_deref() {
        None => match c.schedule {
            LrSchedule::Cosine => "cosine",
            LrSchedule::Step { .. } => "step",
        },
        Some(name) => name,
    };
    c.schedule = match schedule {
        "cosine" => LrSchedule::Cosine,
        "step" => LrSchedule::Step {
            every_epochs: every,
            gamma,
        },
        other => {
            return Err(Error::Config(format!(
                "--schedule must be cosine or step, got `{other}`"
            )))
        }
    };
    c.validate()?;
    Ok(c)
}

/// The network the flags describe, on top of the saved run's when resuming.
fn model_spec(args: &Args, saved: Option<&ModelSpec>) -> resnorm::Result<ModelSpec> {
    let name = match (&args.model, saved) {
        (Some(name), _) => name.clone(),
        (None, Some(spec)) => match spec {
            ModelSpec::Mlp { .. } => "mlp".to_string(),
            ModelSpec::Resnet { arch, .. } => arch.clone(),
        },
        (None, None) => return Err(Error::Config("--model is required".into())),
    };
    if name == "mlp" {
        let (depth, width, norm, residual) = match saved {
            Some(ModelSpec::Mlp {
                depth,
                width,
                norm,
                residual,
            }) => (*depth, *width, norm.clone(), *residual),
            _ => (8, 256, "layer".to_string(), true),
        };
        let residual = match args.residual.as_deref() {
            None => residual,
            Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(Error::Config(format!(
                    "--residual must be on or off, got `{other}`"
                )))
            }
        };
        Ok(ModelSpec::Mlp {
            depth: args.depth.unwrap_or(depth),
            width: args.width.unwrap_or(width),
            norm: args.norm.clone().unwrap_or(norm),
            residual,
        })
    } else {
        let (small_stem, zero_init_residual) = match saved {
            Some(ModelSpec::Resnet {
                small_stem,
                zero_init_residual,
                ..
            }) => (*small_stem, *zero_init_residual),
            _ => (false, false),
        };
        Ok(ModelSpec::Resnet {
            arch: name,
            small_stem: small_stem || args.small_stem,
            zero_init_residual: zero_init_residual || args.zero_init_residual,
        })
    }
}

/// A progress bar over one epoch's batches, showing loss, accuracy and images/s.
pub fn epoch_bar(batches: usize) -> ProgressBar {
    let bar = ProgressBar::new(batches as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Moves `bar` to `position` (batches since the bar started) after a batch and shows the
/// batch's loss, accuracy, learning rate and the images per second since the bar started.
pub fn show_batch(bar: &ProgressBar, report: &BatchReport, batch_size: usize, position: u64) {
    let per_second = position as f64 * batch_size as f64 / bar.elapsed().as_secs_f64();
    bar.set_position(position);
    bar.set_message(format!(
        "loss {:.4} acc {:.3} lr {:.4} {per_second:.0} img/s",
        report.loss, report.accuracy, report.lr
    ));
}

/// One line of `metrics.jsonl`: the report and the model's name.
fn metrics_line(model: &str, report: &EpochReport) -> serde_json::Value {
    let mut line = serde_json::to_value(report).expect("reports serialize");
    line["model"] = serde_json::Value::String(model.to_string());
    line
}

/// Appends one epoch's report to `metrics.jsonl` in `dir`.
pub fn append_metrics(dir: &Path, model: &str, report: &EpochReport) -> resnorm::Result<()> {
    let path = dir.join("metrics.jsonl");
    let line = metrics_line(model, report);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    writeln!(file, "{line}").map_err(|e| Error::io(&path, e))
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let resumed = args.resume.then_some(args.out.as_path());
    run_dir::claim(&args.out, resumed, args.overwrite)?;
    let splits = load_image_splits(&args.data)?;
    if let Some(channels) = args.in_channels {
        if channels != splits.train.shape.channels {
            return Err(Error::Config(format!(
                "--in-channels {channels}, but the images have {} channels",
                splits.train.shape.channels
            )));
        }
    }
    let shape = splits.train.shape;
    let image = [shape.channels, shape.height, shape.width];
    let classes = [&splits.train.labels, &splits.test.labels]
        .iter()
        .flat_map(|l| l.iter())
        .max()
        .map_or(0, |&m| m as usize + 1);
    let estimate = |c: &TrainConfig| c.memory_estimate(image, classes, Workload::Train);
    let mut trainer = if args.resume {
        let saved = load_card(&args.out)?;
        let asked = config(&args, Some(&saved.config))?;
        run_dir::check_same_settings(
            &saved.config,
            &asked,
            |key| key == "epochs",
            flag_of,
            "--epochs (upward)",
        )?;
        let trainer = Trainer::resume(&args.out, splits, Some(asked.epochs))?;
        if asked.epochs < trainer.epoch() {
            return Err(Error::Config(format!(
                "--epochs {} is below the {} epochs the saved run has trained",
                asked.epochs,
                trainer.epoch()
            )));
        }
        run_dir::warn_threads(trainer.threads_saved());
        // The model came from its file; the batch's activations are allocated later.
        memory::check_fits("training", &estimate(trainer.config())?)?;
        trainer
    } else {
        let config = config(&args, None)?;
        memory::check_fits("training", &estimate(&config)?)?;
        Trainer::new(config, splits)?
    };
    let label = trainer.config().model.label();
    if args.resume {
        rewrite_metrics(&args.out, &label, trainer.history())?;
    } else if args.out.join("metrics.jsonl").exists() {
        rewrite_metrics(&args.out, &label, &[])?;
    }
    let batch_size = trainer.config().batch_size;
    eprintln!(
        "{label}: {} training / {} test images, {} batches of {batch_size} per epoch",
        trainer.train_set().len(),
        trainer.test_set().len(),
        trainer.batches_per_epoch()
    );
    let stop = Stop::install()?;
    while trainer.epoch() < trainer.config().epochs {
        let bar = epoch_bar(trainer.batches_per_epoch());
        bar.set_prefix(format!("epoch {}", trainer.epoch() + 1));
        let outcome = trainer.train_epoch_until(
            &mut |b| show_batch(&bar, b, batch_size, b.batch as u64),
            &|| stop.requested(),
        )?;
        bar.finish_and_clear();
        let Some(report) = outcome else {
            trainer.save(&args.out)?;
            eprintln!(
                "{}: checkpoint of epoch {} saved in {} mid-epoch; continue with --resume",
                stop.name(),
                trainer.epoch() + 1,
                args.out.display()
            );
            return Ok(ExitCode::from(stop.exit_code()));
        };
        println!(
            "epoch {} step {}: train loss {:.4} error {:.4} | test loss {:.4} error {:.4} \
             accuracy {:.4} | {:.0} img/s",
            report.epoch,
            report.step,
            report.train_loss,
            report.train_error,
            report.test_loss,
            report.test_error,
            1.0 - report.test_error,
            report.images_per_second
        );
        trainer.save(&args.out)?;
        append_metrics(&args.out, &label, &report)?;
    }
    if stop.requested() {
        eprintln!("{}: the run is complete and saved", stop.name());
        return Ok(ExitCode::from(stop.exit_code()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Replaces `metrics.jsonl` in `dir` with one line per epoch of `history` (a resumed run's
/// log then matches its checkpoint, whatever a kill left in it).
fn rewrite_metrics(dir: &Path, model: &str, history: &[EpochReport]) -> resnorm::Result<()> {
    let mut text = String::new();
    for report in history {
        text.push_str(&metrics_line(model, report).to_string());
        text.push('\n');
    }
    resnorm::checkpoint::write_atomic(dir.join("metrics.jsonl"), text.as_bytes())
}
