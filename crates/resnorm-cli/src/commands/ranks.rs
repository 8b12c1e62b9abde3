//! The processes a command runs on: one, or the ranks of `mpirun` in a build with the `mpi`
//! feature (docs/distributed.md). What a rank does with an error is decided here:
//!
//! - before training, errors and settings are agreed on collectively, so every rank stops
//!   together, after rank 0 has printed the one `error:` line (exit 2 on every rank);
//! - during training, a rank that fails alone prints its error with its rank and aborts
//!   every rank (`MPI_Abort`), so that none waits in a collective forever.

use std::path::Path;
use std::process::ExitCode;

use resnorm::distributed::{agree, Communicator};
use resnorm::lm::MetricsLog;
use resnorm::{Error, Result};

use crate::signals::Stop;

/// Joins the ranks this process was started with (one without the `mpi` feature, or when
/// not started by `mpirun`).
#[cfg(feature = "mpi")]
pub fn join() -> Result<Box<dyn Communicator>> {
    Ok(Box::new(resnorm::distributed::Mpi::init()?))
}

/// Joins the ranks this process was started with: without the `mpi` feature, one.
#[cfg(not(feature = "mpi"))]
pub fn join() -> Result<Box<dyn Communicator>> {
    Ok(Box::new(resnorm::distributed::SingleProcess::default()))
}

/// Every rank's `local` setup, once every rank has one without error and with the same
/// `fingerprint`. Otherwise, on several ranks, rank 0 prints the one error line and every
/// rank gets `Ok(None)` (exit 2 quietly) only after that: a rank that exited first would
/// have `mpirun` kill rank 0 before its line is out. On one rank the error is returned.
pub fn agreed<T>(
    comm: &mut dyn Communicator,
    local: Result<T>,
    fingerprint: impl FnOnce(&T) -> serde_json::Value,
) -> Result<Option<T>> {
    if comm.size() == 1 {
        return local.map(Some);
    }
    let checked = agree::all_ok(comm, local).and_then(|setup| {
        agree::agree_on(comm, &fingerprint(&setup))?;
        Ok(setup)
    });
    match checked {
        Ok(setup) => Ok(Some(setup)),
        Err(e) => {
            if comm.rank() == 0 {
                crate::print_error(&e);
            }
            // Every rank waits here until rank 0 has printed.
            comm.sum_f64(&mut [0.0])?;
            Ok(None)
        }
    }
}

/// `outcome` of a phase that only this rank may have failed: on one rank, as it is; on
/// several, an error is printed with the rank and every rank is aborted with exit 2.
pub fn or_abort<T>(comm: &dyn Communicator, outcome: Result<T>) -> Result<T> {
    match outcome {
        Err(e) if comm.size() > 1 => {
            crate::print_error(&format_args!("rank {}: {e}", comm.rank()));
            comm.abort(2)
        }
        outcome => outcome,
    }
}

/// The quiet exit of every rank after an agreed error (rank 0 has printed it).
pub fn quiet_failure() -> ExitCode {
    ExitCode::from(2)
}

/// The error of a setting that cannot work on `ranks` ranks.
pub fn uneven_batch(batch: usize, ranks: usize) -> Error {
    Error::Config(format!(
        "--batch {batch} does not split evenly over {ranks} ranks: use a multiple of {ranks}"
    ))
}

/// Whether a signal asked to stop, on any rank: `mpirun` passes signals on to every rank,
/// but not at the same instant, and the ranks must stop after the same step.
pub fn stop_agreed(comm: &mut dyn Communicator, stop: &Stop) -> Result<bool> {
    if comm.size() == 1 {
        return Ok(stop.requested());
    }
    let mut requested = [if stop.requested() { 1.0 } else { 0.0 }];
    comm.sum_f64(&mut requested)?;
    Ok(requested[0] > 0.0)
}

/// The run's `metrics.jsonl` in `out` (made if missing), continued after `steps_taken`
/// steps, on rank 0; `None` on the other ranks, which write nothing.
pub fn lead_metrics(lead: bool, out: &Path, steps_taken: u64) -> Result<Option<MetricsLog>> {
    if !lead {
        return Ok(None);
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    MetricsLog::open(&out.join("metrics.jsonl"), steps_taken).map(Some)
}
