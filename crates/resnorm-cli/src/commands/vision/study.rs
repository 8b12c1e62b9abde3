//! `resnorm vision study`: trains the residual and feed-forward panels of the degradation
//! study and writes `results.json` and `report.html` (inline SVG) into `--out`.

use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::ProgressBar;
use resnorm::checkpoint::{write_atomic, write_json_atomic};
use resnorm::vision::{load_image_splits, run_study, StudyConfig, StudyEvent};

use super::train::{epoch_bar, show_batch};
use crate::report::vision;

#[derive(clap::Args)]
pub struct Args {
    /// A folder of MNIST-style IDX files or a digits CSV.
    #[arg(long)]
    data: PathBuf,
    /// Folder for results.json and report.html.
    #[arg(long, default_value = "runs/study")]
    out: PathBuf,
    /// Residual-panel models, comma-separated.
    #[arg(
        long,
        default_value = "plain20,plain56,resnet20,resnet56",
        value_delimiter = ','
    )]
    models: Vec<String>,
    /// Epochs of every residual-panel run.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Training images of every residual-panel run (default: all).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Residual panel: random crops, the images padded by this many pixels (0: none).
    #[arg(long, default_value_t = 0)]
    crop_padding: usize,
    /// Residual panel: random horizontal flips.
    #[arg(long)]
    flip: bool,
    /// Test images every run is evaluated on (default: all).
    #[arg(long)]
    test_limit: Option<usize>,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate of the residual panel.
    #[arg(long, default_value_t = 0.1)]
    lr: f32,
    /// Feed-forward depths, comma-separated.
    #[arg(long, default_value = "8,32,64", value_delimiter = ',')]
    mlp_depths: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    mlp_width: usize,
    #[arg(long, default_value_t = 1)]
    mlp_epochs: usize,
    /// Training images of every feed-forward run (default: all).
    #[arg(long)]
    mlp_train_limit: Option<usize>,
    #[arg(long, default_value_t = 0.02)]
    mlp_lr: f32,
    /// Steps per point of the curves.
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let study = StudyConfig {
        resnet_models: args.models,
        resnet_epochs: args.epochs,
        resnet_train_limit: args.train_limit,
        resnet_crop_padding: args.crop_padding,
        resnet_flip: args.flip,
        test_limit: args.test_limit,
        mlp_depths: args.mlp_depths,
        mlp_width: args.mlp_width,
        mlp_epochs: args.mlp_epochs,
        mlp_train_limit: args.mlp_train_limit,
        mlp_lr: args.mlp_lr,
        batch_size: args.batch_size,
        lr: args.lr,
        log_every: args.log_every,
        response_images: 500,
        seed: args.seed,
    };
    study.validate()?; // a bad model name fails now, not after training the ones before it
    let splits = load_image_splits(&args.data)?;
    let mut bar: Option<ProgressBar> = None;
    let results = run_study(&splits, &study, &mut |event| match event {
        StudyEvent::Start(label, steps) => {
            if let Some(done) = bar.take() {
                done.finish();
            }
            let next = epoch_bar(steps);
            next.set_prefix(label.to_string());
            bar = Some(next);
        }
        StudyEvent::Batch(report) => {
            if let Some(bar) = &bar {
                show_batch(bar, report, study.batch_size, report.step);
            }
        }
    })?;
    if let Some(done) = bar.take() {
        done.finish();
    }
    std::fs::create_dir_all(&args.out).map_err(|e| resnorm::Error::io(&args.out, e))?;
    write_json_atomic(args.out.join("results.json"), &results)?;
    write_atomic(
        args.out.join("report.html"),
        vision::render(&results, &command).as_bytes(),
    )?;
    for r in &results.resnets {
        println!(
            "{}: final training error {:.4}, test error {:.4}",
            r.model, r.final_train_error, r.test_error
        );
    }
    for m in &results.mlps {
        println!(
            "{}: test error {}, {}",
            m.model,
            m.test_error.map_or("-".to_string(), |e| format!("{e:.4}")),
            m.failure.as_deref().unwrap_or("ok")
        );
    }
    println!("wrote {}", args.out.join("report.html").display());
    Ok(ExitCode::SUCCESS)
}
