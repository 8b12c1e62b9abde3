//! `resnorm bench ...`: benchmarks that print medians, bandwidth and the machine's own copy
//! bandwidth for comparison (not timed tests: nothing here asserts a speed).

mod norms;
mod preset;
mod sample;
mod timing;
mod train;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// LayerNorm, RMSNorm and add+LayerNorm forward and forward+backward.
    Norms(norms::Args),
    /// The full training step (forward, backward, clipping, AdamW) of a GPT or, with
    /// `--preset llama-135m`, a Llama, on random tokens.
    Train(train::Args),
    /// Incremental decoding (key/value cache) of one sequence.
    Sample(sample::Args),
}

pub fn run(bench: Bench) -> resnorm::Result<std::process::ExitCode> {
    match bench {
        Bench::Norms(args) => norms::run(args),
        Bench::Train(args) => train::run(args),
        Bench::Sample(args) => sample::run(args),
    }
}
