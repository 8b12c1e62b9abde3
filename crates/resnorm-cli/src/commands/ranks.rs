//! The processes a command runs on: one, or the ranks of `mpirun` in a build with the `mpi`
//! feature (docs/distributed.md). What a rank does with an error is decided here:
//!
//! - before training, errors and settings are agreed on collectively, so every rank stops
//!   together and only rank 0 prints the one `error:` line (exit 2 on every rank);
//! - during training, a rank that fails alone prints its error with its rank and aborts
//!   every rank (`MPI_Abort`), so that none waits in a collective forever.

use std::process::ExitCode;

use resnorm::distributed::{agree, Communicator};
use resnorm::{Error, Result};

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
/// `fingerprint`. Otherwise `Ok(None)` on every rank but 0 (exit 2 quietly) and on rank 0
/// the one error to print.
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
        Err(e) if comm.rank() == 0 => Err(e),
        Err(_) => Ok(None),
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

/// The quiet exit of a rank other than 0 after an agreed error.
pub fn quiet_failure() -> ExitCode {
    ExitCode::from(2)
}

/// The error of a setting that cannot work on `ranks` ranks.
pub fn uneven_batch(batch: usize, ranks: usize) -> Error {
    Error::Config(format!(
        "--batch {batch} does not split evenly over {ranks} ranks: use a multiple of {ranks}"
    ))
}
