//! `resnorm classify`: train, evaluate and apply sentence classifiers.

mod eval;
mod predict;
mod train;

use clap::Subcommand;
use std::process::ExitCode;

/// The `classify` subcommands.
#[derive(Subcommand)]
pub enum ClassifyCommand {
    /// Train a classifier (or a regression on a score) on a TSV/CSV file, with checkpoints.
    Train(Box<train::Args>),
    /// Scores of a run on its test split (or on another file): accuracy, macro-F1, ...
    Eval(eval::Args),
    /// Label (and probability) of each line of stdin or --input.
    Predict(predict::Args),
}

/// Runs one `classify` subcommand.
pub fn run(command: ClassifyCommand) -> resnorm::Result<ExitCode> {
    match command {
        ClassifyCommand::Train(args) => train::run(*args),
        ClassifyCommand::Eval(args) => eval::run(args),
        ClassifyCommand::Predict(args) => predict::run(args),
    }
}
