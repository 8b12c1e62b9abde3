//! `resnorm vision train`: one training run with a progress bar, `metrics.jsonl` and a
//! checkpoint folder after every epoch (resumable with `--resume`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use resnorm::memory::Workload;
use resnorm::vision::{
    load_image_splits, BatchReport, EpochReport, LrSchedule, ModelSpec, TrainConfig, Trainer,
};
use resnorm::Error;

use crate::memory;

#[derive(clap::Args)]
pub struct Args {
    /// resnet18, resnet34, resnet20/32/44/56, plain20/32/44/56, or mlp.
    #[arg(long)]
    model: String,
    /// A folder of MNIST-style IDX files (Fashion-MNIST) or a digits CSV.
    #[arg(long)]
    data: PathBuf,
    /// Checkpoint folder (model, optimizer, trainer state, metrics.jsonl).
    #[arg(long, default_value = "runs/vision")]
    out: PathBuf,
    /// Continue the run saved in --out (its settings win; --epochs may extend it).
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f32,
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f32,
    /// Also decay BatchNorm/LayerNorm parameters and biases.
    #[arg(long)]
    decay_norms: bool,
    /// cosine or step.
    #[arg(long, default_value = "cosine")]
    schedule: String,
    /// Step schedule: epochs between decays.
    #[arg(long, default_value_t = 1)]
    step_every: usize,
    /// Step schedule: factor per decay.
    #[arg(long, default_value_t = 0.1)]
    gamma: f32,
    /// Epochs of linear warm-up.
    #[arg(long, default_value_t = 0.1)]
    warmup_epochs: f32,
    /// Random-crop padding in pixels (0: off).
    #[arg(long, default_value_t = 0)]
    crop_padding: usize,
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
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Input channels the model expects; must match the data.
    #[arg(long)]
    in_channels: Option<usize>,
    /// torchvision nets: 3x3/1 stem without max pooling, for small images.
    #[arg(long)]
    small_stem: bool,
    /// Start every residual branch's last BatchNorm weight at 0.
    #[arg(long)]
    zero_init_residual: bool,
    /// mlp: number of blocks.
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// mlp: hidden width.
    #[arg(long, default_value_t = 256)]
    width: usize,
    /// mlp: layer, rms, batch or none.
    #[arg(long, default_value = "layer")]
    norm: String,
    /// mlp: skip connection around each block, on or off.
    #[arg(long, default_value = "on")]
    residual: String,
}

fn config(args: &Args) -> resnorm::Result<TrainConfig> {
    let model = if args.model == "mlp" {
        let residual = match args.residual.as_str() {
            "on" => true,
            "off" => false,
            other => {
                return Err(Error::Config(format!(
                    "--residual must be on or off, got `{other}`"
                )))
            }
        };
        ModelSpec::Mlp {
            depth: args.depth,
            width: args.width,
            norm: args.norm.clone(),
            residual,
        }
    } else {
        ModelSpec::Resnet {
            arch: args.model.clone(),
            small_stem: args.small_stem,
            zero_init_residual: args.zero_init_residual,
        }
    };
    let schedule = match args.schedule.as_str() {
        "cosine" => LrSchedule::Cosine,
        "step" => LrSchedule::Step {
            every_epochs: args.step_every,
            gamma: args.gamma,
        },
        other => {
            return Err(Error::Config(format!(
                "--schedule must be cosine or step, got `{other}`"
            )))
        }
    };
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        decay_norms: args.decay_norms,
        schedule,
        warmup_epochs: args.warmup_epochs,
        crop_padding: args.crop_padding,
        flip: args.flip,
        normalize: !args.no_normalize,
        train_limit: args.train_limit,
        test_limit: args.test_limit,
        seed: args.seed,
        ..TrainConfig::new(model)
    };
    config.validate()?;
    Ok(config)
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

/// Appends one epoch's report to `metrics.jsonl` in `dir`.
pub fn append_metrics(dir: &Path, model: &str, report: &EpochReport) -> resnorm::Result<()> {
    let path = dir.join("metrics.jsonl");
    let mut line = serde_json::to_value(report).expect("reports serialize");
    line["model"] = serde_json::Value::String(model.to_string());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    writeln!(file, "{line}").map_err(|e| Error::io(&path, e))
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let config = config(&args)?;
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
        let trainer = Trainer::resume(&args.out, splits, Some(args.epochs))?;
        // The model came from its file; the batch's activations are allocated later.
        memory::check_fits("training", &estimate(trainer.config())?)?;
        trainer
    } else {
        memory::check_fits("training", &estimate(&config)?)?;
        Trainer::new(config, splits)?
    };
    let label = trainer.config().model.label();
    let batch_size = trainer.config().batch_size;
    eprintln!(
        "{label}: {} training / {} test images, {} batches of {batch_size} per epoch",
        trainer.train_set().len(),
        trainer.test_set().len(),
        trainer.batches_per_epoch()
    );
    while trainer.epoch() < trainer.config().epochs {
        let bar = epoch_bar(trainer.batches_per_epoch());
        bar.set_prefix(format!("epoch {}", trainer.epoch() + 1));
        let report =
            trainer.train_epoch(&mut |b| show_batch(&bar, b, batch_size, b.batch as u64))?;
        bar.finish_and_clear();
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
    Ok(ExitCode::SUCCESS)
}
