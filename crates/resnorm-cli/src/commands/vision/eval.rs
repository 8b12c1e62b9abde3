//! `resnorm vision eval`: loss and accuracy of a checkpoint on a data set's test split.

use std::path::PathBuf;
use std::process::ExitCode;

use resnorm::data::image::ImageDataset;
use resnorm::memory::Workload;
use resnorm::vision::{evaluate, load_image_splits, load_model, TrainConfig};
use resnorm::Error;

use crate::memory;

#[derive(clap::Args)]
pub struct Args {
    /// A folder written by `resnorm vision train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// A folder of MNIST-style IDX files or a digits CSV.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let (card, mut model) = load_model(&args.checkpoint)?;
    let splits = load_image_splits(&args.data)?;
    let shape = splits.test.shape;
    if [shape.channels, shape.height, shape.width] != card.image {
        return Err(Error::Config(format!(
            "the checkpoint takes {:?} images, the data hold {shape}",
            card.image
        )));
    }
    let test = ImageDataset::new(splits.test, card.normalization()?.as_ref())?;
    let batch = TrainConfig {
        batch_size: args.batch_size,
        ..card.config.clone()
    };
    memory::check_fits(
        "evaluation",
        &batch.memory_estimate(card.image, card.num_classes, Workload::Evaluate)?,
    )?;
    let result = evaluate(model.as_mut(), &test, args.batch_size)?;
    let label = card.config.model.label();
    if args.json {
        let line = serde_json::json!({
            "model": label, "images": test.len(), "loss": result.loss,
            "accuracy": result.accuracy,
        });
        println!("{line}");
    } else {
        println!(
            "{label}: {} test images, loss {:.4}, accuracy {:.4}",
            test.len(),
            result.loss,
            result.accuracy
        );
    }
    Ok(ExitCode::SUCCESS)
}
