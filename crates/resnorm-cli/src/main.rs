//! `resnorm`: the command-line tool. Each subcommand lives in its own file under `commands/`;
//! this file only parses arguments and turns errors into one line and exit code 2.
//!
//! Exit codes: 0 success; 1 a check failed (`gradcheck`) or training diverged (`train`: the
//! loss became NaN/inf); 2 bad input (arguments, data, configuration, checkpoints), always
//! as one `error: ...` line on stderr; 130 / 143 a trainer stopped by SIGINT (Ctrl-C) /
//! SIGTERM after saving its checkpoint.

mod commands;
mod memory;
mod report;
mod signals;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "resnorm",
    version,
    about = "Residual connections and normalization: kernels, models, diagnostics",
    args_override_self = true
)]
struct Cli {
    /// Threads for every kernel (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every backward pass against finite differences and print a table.
    Gradcheck(commands::gradcheck::Args),
    /// Benchmarks: medians, bandwidth, and this machine's copy bandwidth for comparison.
    #[command(subcommand)]
    Bench(commands::bench::Bench),
    /// Run the residual/normalization experiments and write an HTML report of the findings.
    Study(commands::study::Args),
    /// Train a GPT (default: the built-in corpus, about a minute on two cores) and print a sample.
    Train(Box<commands::train::Args>),
    /// Generate text from a checkpoint.
    Sample(commands::sample::Args),
    /// Validation loss and perplexity of a checkpoint.
    Eval(commands::eval::Args),
    /// Write a checkpoint as a Hugging Face directory (GPT-2 layout).
    Export(commands::export::Args),
    /// Image classifiers: train, evaluate, and the degradation study.
    #[command(subcommand)]
    Vision(Box<commands::vision::VisionCommand>),
    /// Sentence classifiers (and regression on a score): train, evaluate, predict.
    #[command(subcommand)]
    Classify(Box<commands::classify::ClassifyCommand>),
    /// Translate lines with a checkpoint, or train (`train`) and score (`eval`) translation models.
    Translate(Box<commands::translate::Args>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let message = e.to_string();
            eprintln!(
                "{}",
                message.lines().next().unwrap_or("error: bad arguments")
            );
            return ExitCode::from(2);
        }
        Err(e) => e.exit(), // --help and --version print to stdout and exit 0
    };
    if let Some(threads) = cli.threads {
        if let Err(e) = resnorm::threads::set_threads(threads) {
            print_error(&e);
            return ExitCode::from(2);
        }
    }
    let outcome = match cli.command {
        Command::Gradcheck(args) => commands::gradcheck::run(args),
        Command::Bench(bench) => commands::bench::run(bench),
        Command::Study(args) => commands::study::run(args),
        Command::Train(args) => commands::train::run(*args),
        Command::Sample(args) => commands::sample::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Vision(command) => commands::vision::run(*command),
        Command::Classify(command) => commands::classify::run(*command),
        Command::Translate(args) => commands::translate::run(*args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            print_error(&e);
            ExitCode::from(2)
        }
    }
}

/// Prints `error: {message}` to stderr in one write, so that a launcher relaying several
/// processes' output (`mpirun`) cannot splice its own notices into the middle of the line.
pub(crate) fn print_error(message: &dyn std::fmt::Display) {
    use std::io::Write;
    let line = format!("error: {message}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
