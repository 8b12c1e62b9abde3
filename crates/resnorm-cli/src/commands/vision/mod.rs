//! `resnorm vision`: train, evaluate and study image classifiers.

mod eval;
mod study;
mod train;

use clap::Subcommand;
use std::process::ExitCode;

/// The `vision` subcommands.
#[derive(Subcommand)]
pub enum VisionCommand {
    /// Train a ResNet, plain net or MLP on MNIST-style images, with checkpoints.
    Train(train::Args),
    /// Evaluate a checkpoint on a data set's test split.
    Eval(eval::Args),
    /// The degradation study: plain vs residual nets and deep MLPs, with an HTML report.
    Study(study::Args),
}

/// Runs one `vision` subcommand.
pub fn run(command: VisionCommand) -> resnorm::Result<ExitCode> {
    match command {
        VisionCommand::Train(args) => train::run(args),
        VisionCommand::Eval(args) => eval::run(args),
        VisionCommand::Study(args) => study::run(args),
    }
}
