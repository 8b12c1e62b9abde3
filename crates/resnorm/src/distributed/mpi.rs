//! The [`Communicator`] over MPI: the ranks of `MPI_COMM_WORLD`, as `mpirun` or Slurm's
//! `srun` start them.
//!
//! Gradient buckets are summed with `MPI_Iallreduce` (or `MPI_Ireduce_scatter` for a
//! scattered bucket) on buffers this struct owns: a send buffer the trainer fills and a
//! receive buffer for the sum (rsmpi's bindings have no `MPI_IN_PLACE`). Open MPI moves the data of a non-blocking collective only inside MPI
//! calls, so the trainer calls [`Communicator::progress`] (`MPI_Testall`) between the
//! layers of the backward pass. MPI is initialized with `MPI_THREAD_SERIALIZED`: the
//! training step runs on a worker of the thread pool, never two MPI calls at once.
//!
//! ```no_run
//! use resnorm::distributed::{Communicator, Mpi};
//! let mut comm = Mpi::init().unwrap();
//! let mut ranks = [comm.rank() as f64];
//! comm.sum_f64(&mut ranks).unwrap(); // 0 + 1 + ... + (size - 1) on every rank
//! ```

use std::os::raw::{c_int, c_void};

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives as _, Root as _};
use mpi::Threading;

use super::{check_parts, Bucket, Communicator};
use crate::{Error, Result};

/// The ranks of `MPI_COMM_WORLD`. Dropping it waits for any sum in flight, then finalizes MPI.
pub struct Mpi {
    world: SimpleCommunicator,
    send: Vec<Vec<f32>>,
    /// At least one element each, so that MPI never sees an empty `Vec`'s dangling pointer.
    recv: Vec<Vec<f32>>,
    /// Elements of each bucket's sum this rank receives.
    received: Vec<usize>,
    /// Each scattered bucket's piece lengths (`MPI_Ireduce_scatter`'s `recvcounts`, which
    /// must live until the request completes); `None` for a whole bucket.
    pieces: Vec<Option<Vec<c_int>>>,
    /// All-gather scratch: this rank's part, then every part's count and displacement.
    gather_send: Vec<f32>,
    gather_counts: Vec<c_int>,
    gather_displs: Vec<c_int>,
    /// One request per bucket; `MPI_REQUEST_NULL` when none is in flight.
    requests: Vec<ffi::MPI_Request>,
    in_flight: Vec<bool>,
    /// Last, so that MPI is finalized after everything above is released.
    _universe: Universe,
}

// SAFETY: MPI runs at MPI_THREAD_SERIALIZED, which allows calls from any thread as long as
// no two are concurrent; every call goes through `&mut self` or `&self` of this one value,
// which Rust's borrows confine to one thread at a time (it is `Send`, not `Sync`).
unsafe impl Send for Mpi {}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .field("buckets", &self.send.len())
            .finish()
    }
}

impl Mpi {
    /// Initializes MPI (once per process) and joins `MPI_COMM_WORLD`.
    pub fn init() -> Result<Self> {
        const OP: &str = "MPI_Init_thread";
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::invalid(OP, "MPI was already initialized in this process"))?;
        if threading < Threading::Serialized {
            return Err(Error::invalid(
                OP,
                format!(
                    "the MPI library offers only {threading:?} threading, Serialized is needed"
                ),
            ));
        }
        Ok(Mpi {
            world: universe.world(),
            send: Vec::new(),
            recv: Vec::new(),
            received: Vec::new(),
            pieces: Vec::new(),
            gather_send: Vec::new(),
            gather_counts: Vec::new(),
            gather_displs: Vec::new(),
            requests: Vec::new(),
            in_flight: Vec::new(),
            _universe: universe,
        })
    }

    fn check_bucket(&self, op: &'static str, id: usize) -> Result<()> {
        if id >= self.send.len() {
            return Err(Error::invalid(
                op,
                format!("bucket {id} of {}", self.send.len()),
            ));
        }
        if self.in_flight[id] {
            return Err(Error::invalid(
                op,
                format!("bucket {id}'s sum is in flight"),
            ));
        }
        Ok(())
    }

    fn check(op: &'static str, code: c_int) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(Error::invalid(op, format!("MPI error code {code}")))
        }
    }
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn sum_f64(&mut self, values: &mut [f64]) -> Result<()> {
        let local = values.to_vec();
        self.world
            .all_reduce_into(&local[..], values, SystemOperation::sum());
        Ok(())
    }

    fn broadcast_bytes(&mut self, root: usize, bytes: &mut Vec<u8>) -> Result<()> {
        if root >= self.size() {
            return Err(Error::invalid(
                "Mpi::broadcast_bytes",
                format!("root {root} of {} ranks", self.size()),
            ));
        }
        let root = self.world.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        if len > 0 {
            // Open MPI refuses an empty Vec's dangling pointer even with a count of 0.
            root.broadcast_into(&mut bytes[..]);
        }
        Ok(())
    }

    fn all_gather_f32(&mut self, values: &mut [f32], counts: &[usize]) -> Result<()> {
        const OP: &str = "MPI_Allgatherv";
        check_parts(OP, values.len(), counts, self.size())?;
        if values.len() > c_int::MAX as usize {
            return Err(Error::invalid(
                OP,
                format!("{} elements are over MPI's count limit", values.len()),
            ));
        }
        if values.is_empty() {
            return Ok(());
        }
        let rank = self.rank();
        let start: usize = counts[..rank].iter().sum();
        self.gather_send.clear();
        self.gather_send.reserve(1);
        (self.gather_send).extend_from_slice(&values[start..start + counts[rank]]);
        self.gather_counts.clear();
        self.gather_displs.clear();
        let mut at = 0;
        for &n in counts {
            self.gather_counts.push(n as c_int);
            self.gather_displs.push(at as c_int);
            at += n;
        }
        // SAFETY: every buffer is live for the blocking call; the counts and displacements
        // stay within `values` (checked above) and fit a c_int; the send buffer holds this
        // rank's count and is allocated even when that is 0.
        let code = unsafe {
            ffi::MPI_Allgatherv(
                self.gather_send.as_ptr().cast::<c_void>(),
                counts[rank] as c_int,
                ffi::RSMPI_FLOAT,
                values.as_mut_ptr().cast::<c_void>(),
                self.gather_counts.as_ptr(),
                self.gather_displs.as_ptr(),
                ffi::RSMPI_FLOAT,
                self.world.as_raw(),
            )
        };
        Self::check(OP, code)
    }

    fn set_buckets(&mut self, buckets: &[Bucket]) -> Result<()> {
        const OP: &str = "Mpi::set_buckets";
        if self.in_flight.iter().any(|&f| f) {
            return Err(Error::invalid(OP, "a bucket's sum is in flight"));
        }
        if let Some(b) = buckets.iter().find(|b| b.len() > c_int::MAX as usize) {
            return Err(Error::invalid(
                OP,
                format!("a bucket of {} elements is over MPI's count limit", b.len()),
            ));
        }
        let (rank, ranks) = (self.rank(), self.size());
        self.received = (buckets.iter())
            .map(|b| b.received(rank, ranks))
            .collect::<Result<_>>()?;
        self.send = buckets.iter().map(|b| vec![0.0; b.len()]).collect();
        self.recv = self.received.iter().map(|&n| vec![0.0; n.max(1)]).collect();
        self.pieces = (buckets.iter())
            .map(|b| match b {
                Bucket::Whole(_) => None,
                Bucket::Scattered(pieces) => Some(pieces.iter().map(|&n| n as c_int).collect()),
            })
            .collect();
        // SAFETY: reading an immutable handle that MPI_Init set.
        let null = unsafe { ffi::RSMPI_REQUEST_NULL };
        self.requests = vec![null; buckets.len()];
        self.in_flight = vec![false; buckets.len()];
        Ok(())
    }

    fn bucket_mut(&mut self, id: usize) -> Result<&mut [f32]> {
        self.check_bucket("Mpi::bucket_mut", id)?;
        Ok(&mut self.send[id])
    }

    fn start_bucket_sum(&mut self, id: usize) -> Result<()> {
        const OP: &str = "Mpi::start_bucket_sum";
        self.check_bucket(OP, id)?;
        let (send, recv) = (&self.send[id], &mut self.recv[id]);
        // SAFETY: both buffers (and a scattered bucket's piece lengths) belong to `self` and
        // are neither read, written, moved nor freed until the request completes:
        // `bucket_mut`, `bucket_sum` and `set_buckets` refuse a bucket in flight, and `drop`
        // waits for it. The counts fit a c_int (checked in `set_buckets`), and the receive
        // buffer holds this rank's piece.
        let code = unsafe {
            match &self.pieces[id] {
                None => ffi::MPI_Iallreduce(
                    send.as_ptr().cast::<c_void>(),
                    recv.as_mut_ptr().cast::<c_void>(),
                    send.len() as c_int,
                    ffi::RSMPI_FLOAT,
                    ffi::RSMPI_SUM,
                    self.world.as_raw(),
                    &mut self.requests[id],
                ),
                Some(pieces) => ffi::MPI_Ireduce_scatter(
                    send.as_ptr().cast::<c_void>(),
                    recv.as_mut_ptr().cast::<c_void>(),
                    pieces.as_ptr(),
                    ffi::RSMPI_FLOAT,
                    ffi::RSMPI_SUM,
                    self.world.as_raw(),
                    &mut self.requests[id],
                ),
            }
        };
        Self::check(OP, code)?;
        self.in_flight[id] = true;
        Ok(())
    }

    fn progress(&mut self) -> Result<()> {
        if !self.in_flight.iter().any(|&f| f) {
            return Ok(());
        }
        let mut done: c_int = 0;
        // SAFETY: the requests are valid or MPI_REQUEST_NULL, which MPI_Testall accepts.
        let code = unsafe {
            ffi::MPI_Testall(
                self.requests.len() as c_int,
                self.requests.as_mut_ptr(),
                &mut done,
                ffi::RSMPI_STATUSES_IGNORE,
            )
        };
        Self::check("MPI_Testall", code)?;
        if done != 0 {
            self.in_flight.fill(false);
        }
        Ok(())
    }

    fn finish_bucket_sums(&mut self) -> Result<()> {
        if !self.in_flight.iter().any(|&f| f) {
            return Ok(());
        }
        // SAFETY: as in `progress`.
        let code = unsafe {
            ffi::MPI_Waitall(
                self.requests.len() as c_int,
                self.requests.as_mut_ptr(),
                ffi::RSMPI_STATUSES_IGNORE,
            )
        };
        Self::check("MPI_Waitall", code)?;
        self.in_flight.fill(false);
        Ok(())
    }

    fn bucket_sum(&self, id: usize) -> Result<&[f32]> {
        self.check_bucket("Mpi::bucket_sum", id)?;
        Ok(&self.recv[id][..self.received[id]])
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        // A sum still in flight writes into buffers about to be freed: wait for it first.
        let _ = self.finish_bucket_sums();
    }
}
