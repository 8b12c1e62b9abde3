//! How much of the gradient all-reduce the overlap hides: run under `mpirun -np N`, each
//! rank one thread. Every round runs one training step's forward and backward of a GPT (the
//! 6-layer shape by default) and then one of, in turn:
//!
//! ```text
//! blocking   backward; barrier; start every bucket's sum and wait   -> the all-reduce's time
//! overlap    each unit's sum starts when its backward ends (MPI_Testall after each start);
//!            the wait after the backward is what the overlap left exposed
//! overlap+P  the same with P more MPI_Testall calls at each unit's end, to drive progress
//! ```
//! The time a rank blocks after its backward also holds the other ranks' lateness; the
//! rank that finishes its backward last waits only for what remains of the exchange, so each
//! round counts the smallest wait over the ranks. Rank 0 prints every round and then the
//! medians: hidden = 1 - overlap / blocking, and the backward's mean over the ranks (the
//! progress calls inside it are not free).
//!
//! ```sh
//! cargo run --release -p resnorm --features mpi --example mpi_overlap   # builds it
//! mpirun -np 2 target/release/examples/mpi_overlap [context] [batch] [rounds] [P]
//! ```

use resnorm::distributed::{Communicator, Mpi};
use resnorm::lm::GradientAverage;
use resnorm::models::gpt::{Gpt, GptConfig};
use resnorm::Result;
use std::time::Instant;

/// The three ways a round exchanges the gradients.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Blocking,
    Overlap,
    /// With this many more `MPI_Testall` calls at each unit's end.
    Driven(usize),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (context, batch, rounds, extra) = (arg(1, 64), arg(2, 4), arg(3, 8), arg(4, 32));
    resnorm::threads::set_threads(1)?;
    let mut comm = Mpi::init()?;
    let (rank, ranks) = (comm.rank(), comm.size());
    let config = GptConfig {
        layers: 6,
        heads: 6,
        width: 384,
        context,
        vocab: 65,
        ..GptConfig::default()
    };
    let mut model = Gpt::new(config, 1)?;
    let average = GradientAverage::new(&model, &mut comm, None)?;
    let local = batch / ranks;
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ rank as u64;
    let mut token = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 65) as u32
    };
    let inputs: Vec<u32> = (0..local * context).map(|_| token()).collect();
    let targets: Vec<u32> = (0..local * context).map(|_| token()).collect();
    if rank == 0 {
        println!(
            "{ranks} ranks x 1 thread, 6 layers, width 384, context {context}, batch {local} per rank; \
             {:.1} MB of gradients in {} buckets",
            (average.elements() * 4) as f64 / 1e6,
            average.buckets()
        );
        println!("round mode        backward_ms  wait_ms_per_rank  min_wait_ms");
    }
    let modes = [Mode::Blocking, Mode::Overlap, Mode::Driven(extra)];
    let mut waits: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut backwards: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds * modes.len() {
        let which = round % modes.len();
        let mode = modes[which];
        let (backward, wait) = resnorm::threads::busy(|| {
            step(&mut model, &mut comm, &average, mode, &inputs, &targets)
        })?;
        // Every rank's wait and backward time, on every rank.
        let mut times = vec![0.0; 2 * ranks];
        (times[rank], times[ranks + rank]) = (wait, backward);
        comm.sum_f64(&mut times)?;
        let min_wait = times[..ranks].iter().copied().fold(f64::INFINITY, f64::min);
        if round >= modes.len() {
            // The first round of each mode warms up.
            waits[which].push(min_wait);
            backwards[which].push(times[ranks..].iter().sum::<f64>() / ranks as f64);
        }
        if rank == 0 {
            let ms = |t: &[f64]| {
                t.iter()
                    .map(|x| format!("{:.1}", x * 1e3))
                    .collect::<Vec<_>>()
                    .join("/")
            };
            println!(
                "{round:5} {:11} {:>11} {:>17} {:>12.1}",
                format!("{mode:?}"),
                ms(&times[ranks..]),
                ms(&times[..ranks]),
                min_wait * 1e3
            );
        }
    }
    if rank == 0 {
        let medians: Vec<f64> = waits.iter_mut().map(|w| median(w)).collect();
        for ((mode, m), b) in modes.iter().zip(&medians).zip(&mut backwards) {
            println!(
                "median min wait {:11} {:7.1} ms  hidden {:5.1} %  (backward {:7.1} ms)",
                format!("{mode:?}"),
                m * 1e3,
                100.0 * (1.0 - m / medians[0]),
                median(b) * 1e3
            );
        }
    }
    Ok(())
}

/// One forward and backward and the exchange of `mode`: the backward's seconds and the
/// seconds this rank blocked for the sums after it.
fn step(
    model: &mut Gpt,
    comm: &mut Mpi,
    average: &GradientAverage,
    mode: Mode,
    inputs: &[u32],
    targets: &[u32],
) -> Result<(f64, f64)> {
    model.zero_grad();
    let batch = inputs.len() / model.config().context;
    let loss = model.forward(inputs, batch, Some(targets))?.unwrap_or(0.0);
    let started = Instant::now();
    match mode {
        Mode::Blocking => model.backward()?,
        Mode::Overlap | Mode::Driven(_) => {
            let extra = if let Mode::Driven(n) = mode { n } else { 0 };
            model.backward_each(&mut |k, unit| {
                average.start_unit(comm, k, unit)?;
                (0..extra).try_for_each(|_| comm.progress())
            })?
        }
    }
    let backward = started.elapsed().as_secs_f64();
    if mode == Mode::Blocking {
        comm.sum_f64(&mut [0.0])?; // a barrier: no rank's lateness in what follows
    }
    let (_, waited) = average.sum_and_average(model, comm, loss, |model, comm| {
        if mode != Mode::Blocking {
            return Ok(());
        }
        for (k, unit) in model.units.iter().enumerate() {
            average.start_unit(comm, k, unit)?;
        }
        Ok(())
    })?;
    Ok((backward, waited))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
