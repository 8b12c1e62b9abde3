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
//! A [`Bucket`] is summed whole on every rank (all-reduce), or scattered: cut into one
//! piece per rank, each rank receiving the sum of its own piece only (reduce-scatter, for
//! ZeRO, where a rank needs only the gradients of the weights it updates).
//!
//! - [`SingleProcess`]: one rank; every sum is the identity. The default build and the tests
//!   use it.
//! - `Mpi` (feature `mpi`): the ranks of `MPI_COMM_WORLD`, under `mpirun` or `srun`.
//!
//! [`agree`] holds the collective checks run before training: that every rank started
//! without error, and that every rank has the same settings.
//!
//! The GPT language model's trainer overlaps its sums with the backward pass
//! ([`crate::lm::GradientAverage`]); any other model averages its flat list of trainable
//! parameters after the backward ([`FlatAverage`]), weighting each rank by what its loss is
//! a mean over (the translation and classification trainers).
//!
//! ```
//! use resnorm::distributed::{Bucket, Communicator, SingleProcess};
//! let mut comm = SingleProcess::default();
//! comm.set_buckets(&[Bucket::Whole(3), Bucket::Whole(2)]).unwrap();
//! comm.bucket_mut(1).unwrap().copy_from_slice(&[1.0, 2.0]);
//! comm.start_bucket_sum(1).unwrap();
//! comm.finish_bucket_sums().unwrap();
//! assert_eq!(comm.bucket_sum(1).unwrap(), &[1.0, 2.0]); // one rank: the sum is its own
//! let mut losses = [2.5f64];
//! comm.sum_f64(&mut losses).unwrap();
//! assert_eq!((comm.rank(), comm.size(), losses[0]), (0, 1, 2.5));
//! ```

pub mod agree;
mod average;
#[cfg(feature = "mpi")]
mod mpi;
mod single;

#[cfg(feature = "mpi")]
pub use self::mpi::Mpi;
pub use average::{Averaged, FlatAverage, BUCKET_ELEMENTS};
pub use single::SingleProcess;

use crate::{Error, Result};

/// A gradient bucket's elements, and which of their sums each rank receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// This many elements, whose whole sum every rank receives (all-reduce).
    Whole(usize),
    /// Consecutive pieces of these lengths, one per rank in rank order: rank `r` receives
    /// the sum of piece `r` only (reduce-scatter).
    Scattered(Vec<usize>),
}

impl Bucket {
    /// Elements each rank sends.
    pub fn len(&self) -> usize {
        match self {
            Bucket::Whole(n) => *n,
            Bucket::Scattered(pieces) => pieces.iter().sum(),
        }
    }

    /// Whether the bucket has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of the sum that `rank` of `ranks` receives; an error for a scattered bucket
    /// without one piece per rank.
    pub fn received(&self, rank: usize, ranks: usize) -> Result<usize> {
        match self {
            Bucket::Whole(n) => Ok(*n),
            Bucket::Scattered(pieces) if pieces.len() == ranks => Ok(pieces[rank]),
            Bucket::Scattered(pieces) => Err(Error::invalid(
                "Bucket::received",
                format!("{} pieces for {ranks} ranks", pieces.len()),
            )),
        }
    }
}

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

    /// Rank `r`'s part of `values`, `counts[r]` elements after the parts of ranks `0 .. r`,
    /// on every rank (all-gather; `counts` and the length of `values` equal on every rank).
    fn all_gather_f32(&mut self, values: &mut [f32], counts: &[usize]) -> Result<()>;

    /// Allocates `buckets`, replacing the earlier ones; done once per run, as no sum may be
    /// in flight.
    fn set_buckets(&mut self, buckets: &[Bucket]) -> Result<()>;

    /// Bucket `id`'s send buffer, to fill before [`Communicator::start_bucket_sum`]; an error
    /// while its sum is in flight.
    fn bucket_mut(&mut self, id: usize) -> Result<&mut [f32]>;

    /// Starts summing bucket `id` over every rank and returns at once.
    fn start_bucket_sum(&mut self, id: usize) -> Result<()>;

    /// Lets the sums in flight advance (MPI libraries often move data only inside a call).
    fn progress(&mut self) -> Result<()>;

    /// Waits until every started sum is complete.
    fn finish_bucket_sums(&mut self) -> Result<()>;

    /// Bucket `id`'s sum over every rank, after [`Communicator::finish_bucket_sums`]: the
    /// whole sum, or of a [`Bucket::Scattered`] bucket this rank's piece.
    fn bucket_sum(&self, id: usize) -> Result<&[f32]>;

    /// Ends every rank's process with exit status `code`: what a rank that fails alone
    /// does, so that the others do not wait for it forever.
    fn abort(&self, code: i32) -> !;
}

/// Refuses all-gather `counts` that are not one per rank adding up to `len`.
fn check_parts(op: &'static str, len: usize, counts: &[usize], ranks: usize) -> Result<()> {
    let total: usize = counts.iter().sum();
    if counts.len() != ranks || total != len {
        return Err(Error::invalid(
            op,
            format!(
                "{} parts of {total} elements in all, for {ranks} ranks and {len} elements",
                counts.len()
            ),
        ));
    }
    Ok(())
}
