//! Data-parallel training across processes: the [`Communicator`] a trainer talks to, with
//! one implementation per transport.
//!
//! With `N` ranks each holding a copy of the model and `1/N` of the global batch, one step
//! computes on rank `r` the gradient `g_r` of its own mean loss, then every rank takes the
//! average `g = (1/N) Σ_r g_r` (an all-reduce sum, then a scale) and applies the same
//! optimizer step to the same weights, so the copies never drift apart. The average of the
//! per-rank means of equal-sized shards is the mean over the whole batch: `N` ranks with
//! batch `B/N` train as one process with batch `B`, up to the order of floating-point sums.
//!
//! Gradients travel in *buckets*: flat `f32` buffers that the trainer fills as parts of
//! the backward pass finish and whose sums start at once, without waiting
//! ([`Communicator::start_bucket_sum`]), so the transfer of late layers' gradients overlaps
//! the backward of earlier ones; [`Communicator::finish_bucket_sums`] waits for them all.
//!
//! - [`SingleProcess`]: one rank; every sum is the identity. The default build and the tests
//!   use it.
//! - `Mpi` (feature `mpi`): the ranks of `MPI_COMM_WORLD`, under `mpirun` or `srun`.
//!
//! [`agree`] holds the collective checks run before training: that every rank started
//! without error, and that every rank has the same settings.
//!
//! ```
//! use resnorm::distributed::{Communicator, SingleProcess};
//! let mut comm = SingleProcess::default();
//! comm.set_buckets(&[3, 2]).unwrap();
//! comm.bucket_mut(1).unwrap().copy_from_slice(&[1.0, 2.0]);
//! comm.start_bucket_sum(1).unwrap();
//! comm.finish_bucket_sums().unwrap();
//! assert_eq!(comm.bucket_sum(1).unwrap(), &[1.0, 2.0]); // one rank: the sum is its own
//! let mut losses = [2.5f64];
//! comm.sum_f64(&mut losses).unwrap();
//! assert_eq!((comm.rank(), comm.size(), losses[0]), (0, 1, 2.5));
//! ```

pub mod agree;
#[cfg(feature = "mpi")]
mod mpi;
mod single;

#[cfg(feature = "mpi")]
pub use self::mpi::Mpi;
pub use single::SingleProcess;

use crate::Result;

/// What a data-parallel trainer needs of the processes it runs in. Every method except
/// [`Communicator::rank`], [`Communicator::size`] and the bucket accessors is collective:
/// every rank calls it, in the same order.
pub trait Communicator: std::fmt::Debug + Send {
    /// This process's rank, `0 .. size`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn size(&self) -> usize;

    /// Replaces `values` by their sums over every rank (blocking; for losses and counts).
    fn sum_f64(&mut self, values: &mut [f64]) -> Result<()>;

    /// Rank `root`'s `bytes`, on every rank (their lengths may differ before the call).
    fn broadcast_bytes(&mut self, root: usize, bytes: &mut Vec<u8>) -> Result<()>;

    /// Rank `root`'s `values`, on every rank (equal lengths on every rank).
    fn broadcast_f32(&mut self, root: usize, values: &mut [f32]) -> Result<()>;

    /// Allocates gradient buckets of `lens` elements each, replacing the earlier ones; done
    /// once per run, as no sum may be in flight.
    fn set_buckets(&mut self, lens: &[usize]) -> Result<()>;

    /// Bucket `id`'s send buffer, to fill before [`Communicator::start_bucket_sum`]; an error
    /// while its sum is in flight.
    fn bucket_mut(&mut self, id: usize) -> Result<&mut [f32]>;

    /// Starts summing bucket `id` over every rank and returns at once.
    fn start_bucket_sum(&mut self, id: usize) -> Result<()>;

    /// Lets the sums in flight advance (MPI libraries often move data only inside a call).
    fn progress(&mut self) -> Result<()>;

    /// Waits until every started sum is complete.
    fn finish_bucket_sums(&mut self) -> Result<()>;

    /// Bucket `id`'s sum over every rank, after [`Communicator::finish_bucket_sums`].
    fn bucket_sum(&self, id: usize) -> Result<&[f32]>;

    /// Ends every rank's process with exit status `code`: what a rank that fails alone
    /// does, so that the others do not wait for it forever.
    fn abort(&self, code: i32) -> !;
}
