//! `resnorm`: the command-line tool. Each subcommand lives in its own file under `commands/`;
//! this file only parses arguments and turns errors into one line and exit code 2.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "resnorm",
    version,
    about = "Residual connections and normalization: kernels, models, diagnostics"
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
    /// Image classifiers: train, evaluate, and the degradation study.
    #[command(subcommand)]
    Vision(Box<commands::vision::VisionCommand>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        if let Err(e) = resnorm::threads::set_threads(threads) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let outcome = match cli.command {
        Command::Gradcheck(args) => commands::gradcheck::run(args),
        Command::Vision(command) => commands::vision::run(*command),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
