//! The one-process [`Communicator`]: rank 0 of 1, where the sum over ranks of anything is
//! itself. Training with it is training without distribution, so the default build runs the
//! data-parallel code paths in every test.
//!
//! ```
//! use resnorm::distributed::{Communicator, SingleProcess};
//! let mut comm = SingleProcess::default();
//! let mut bytes = b"settings".to_vec();
//! comm.broadcast_bytes(0, &mut bytes).unwrap();
//! assert_eq!(bytes, b"settings");
//! ```

use super::{check_parts, Bucket, Communicator};
use crate::{Error, Result};

/// One process, no transport; sums are the identity.
#[derive(Clone, Debug, Default)]
pub struct SingleProcess {
    buckets: Vec<Vec<f32>>,
}

impl SingleProcess {
    fn bucket_index(&self, op: &'static str, id: usize) -> Result<usize> {
        if id < self.buckets.len() {
            Ok(id)
        } else {
            Err(Error::invalid(
                op,
                format!("bucket {id} of {}", self.buckets.len()),
            ))
        }
    }
}

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn sum_f64(&mut self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn broadcast_bytes(&mut self, root: usize, _bytes: &mut Vec<u8>) -> Result<()> {
        if root != 0 {
            return Err(Error::invalid(
                "SingleProcess::broadcast_bytes",
                format!("root {root} of 1 rank"),
            ));
        }
        Ok(())
    }

    fn all_gather_f32(&mut self, values: &mut [f32], counts: &[usize]) -> Result<()> {
        check_parts("SingleProcess::all_gather_f32", values.len(), counts, 1)
    }

    fn set_buckets(&mut self, buckets: &[Bucket]) -> Result<()> {
        self.buckets = buckets
            .iter()
            .map(|b| b.received(0, 1).map(|n| vec![0.0; n]))
            .collect::<Result<_>>()?;
        Ok(())
    }

    fn bucket_mut(&mut self, id: usize) -> Result<&mut [f32]> {
        let id = self.bucket_index("SingleProcess::bucket_mut", id)?;
        Ok(&mut self.buckets[id])
    }

    fn start_bucket_sum(&mut self, id: usize) -> Result<()> {
        self.bucket_index("SingleProcess::start_bucket_sum", id)
            .map(|_| ())
    }

    fn progress(&mut self) -> Result<()> {
        Ok(())
    }

    fn finish_bucket_sums(&mut self) -> Result<()> {
        Ok(())
    }

    fn bucket_sum(&self, id: usize) -> Result<&[f32]> {
        let id = self.bucket_index("SingleProcess::bucket_sum", id)?;
        Ok(&self.buckets[id])
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
