//! Any model's gradients averaged over the ranks of a [`Communicator`], from its flat list
//! of trainable parameters, with each rank's share weighted by what its loss is a mean over.
//!
//! ```text
//! rank r sends     w_r·g_r (every parameter's gradient, in list order), w_r, w_r·loss_r
//! every rank gets  W = Σ_r w_r,   g = Σ_r w_r·g_r / W,   loss = Σ_r w_r·loss_r / W
//! ```
//! If rank `r`'s loss is the mean of `w_r` terms (examples, or target tokens), then
//! `w_r·loss_r` is their sum, and `g` is the gradient of the mean over all `W` terms of the
//! global batch: `N` ranks train as one process with the whole batch, up to the order of
//! floating-point sums, even when the shares are unequal (a translation batch's sentences
//! differ in length) or empty (`w_r = 0`: a batch with fewer sentences than ranks). With
//! equal weights `g` is the plain mean of the `g_r`, as in the GPT's
//! [`crate::lm::GradientAverage`].
//!
//! Gradients travel in buckets of at most [`BUCKET_ELEMENTS`] (whole parameters; a larger
//! one alone), every sum started as soon as its bucket is filled, then all waited for; the
//! weight and the weighted loss ride at the end of the last bucket, so a step costs no
//! collective besides the gradients'. This averaging runs after the backward pass: it does
//! not overlap it, which the GPT's per-unit buckets do. With one rank nothing is copied and
//! the gradients are left as they are, bit for bit.
//!
//! ```
//! use resnorm::distributed::{FlatAverage, SingleProcess};
//! use resnorm::nn::{Param, ParamKind};
//! let mut w = Param::filled("w", vec![2], ParamKind::Weight, 0.5);
//! w.grad.copy_from_slice(&[1.0, -2.0]);
//! let mut params = vec![&mut w];
//! let mut comm = SingleProcess::default();
//! let average = FlatAverage::new(&params, &mut comm).unwrap();
//! let mean = average.average(&mut params, &mut comm, 7.0, 0.25).unwrap();
//! assert_eq!((mean.loss, mean.weight), (0.25, 7.0)); // one rank: its own
//! assert_eq!(&params[0].grad[..], &[1.0, -2.0]);
//! ```

use super::{Bucket, Communicator};
use crate::nn::Param;
use crate::{Error, Result};

/// The most gradient elements in one bucket (64 MB of `f32`): far below MPI's `int` counts,
/// and small enough that the first sums travel while the last buckets are filled.
pub const BUCKET_ELEMENTS: usize = 1 << 24;

/// The weighted means of one step over every rank.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Averaged {
    /// `Σ w_r·loss_r / W`.
    pub loss: f32,
    /// `W = Σ w_r`.
    pub weight: f32,
}

/// The bucket layout of one list of parameters.
#[derive(Clone, Debug)]
pub struct FlatAverage {
    /// Each parameter's gradient length, in list order.
    lens: Vec<usize>,
    /// How many parameters each bucket holds, in order.
    counts: Vec<usize>,
}

impl FlatAverage {
    /// The layout for `params` (a model's trainable parameters, in the order every step will
    /// pass them), with its buckets allocated in `comm`. With one rank nothing is allocated.
    pub fn new(params: &[&mut Param], comm: &mut dyn Communicator) -> Result<Self> {
        let lens: Vec<usize> = params.iter().map(|p| p.grad.len()).collect();
        let mut counts = vec![0usize];
        let mut sizes = vec![0usize];
        for &len in &lens {
            let last = sizes.len() - 1;
            if counts[last] > 0 && sizes[last] + len > BUCKET_ELEMENTS {
                counts.push(0);
                sizes.push(0);
            }
            let last = sizes.len() - 1;
            counts[last] += 1;
            sizes[last] += len;
        }
        // The weight and the weighted loss, after the last bucket's gradients.
        *sizes.last_mut().expect("one bucket at least") += 2;
        if comm.size() > 1 {
            let buckets: Vec<Bucket> = sizes.into_iter().map(Bucket::Whole).collect();
            comm.set_buckets(&buckets)?;
        }
        Ok(FlatAverage { lens, counts })
    }

    /// Gradient elements each rank sends per step.
    pub fn elements(&self) -> usize {
        self.lens.iter().sum::<usize>() + 2
    }

    /// Replaces the gradients of `params` (the list [`FlatAverage::new`] was built for) by
    /// their weighted mean over the ranks, this rank's loss being the mean of `weight` terms
    /// (see the module documentation). Collective. Returns the weighted mean loss and the
    /// total weight; an error when every rank's weight is 0.
    pub fn average(
        &self,
        params: &mut [&mut Param],
        comm: &mut dyn Communicator,
        weight: f32,
        loss: f32,
    ) -> Result<Averaged> {
        const OP: &str = "FlatAverage::average";
        if comm.size() == 1 {
            return Ok(Averaged { loss, weight });
        }
        let same = params.len() == self.lens.len()
            && params
                .iter()
                .zip(&self.lens)
                .all(|(p, &n)| p.grad.len() == n);
        if !same {
            return Err(Error::invalid(
                OP,
                "the parameters differ from those the layout was built for",
            ));
        }
        let buckets = self.counts.len();
        let mut first = 0;
        for (id, &count) in self.counts.iter().enumerate() {
            let bucket = comm.bucket_mut(id)?;
            let mut at = 0;
            for p in &params[first..first + count] {
                let n = p.grad.len();
                for (b, &g) in bucket[at..at + n].iter_mut().zip(p.grad.iter()) {
                    *b = weight * g;
                }
                at += n;
            }
            if id + 1 == buckets {
                bucket[at] = weight;
                bucket[at + 1] = weight * loss;
            }
            comm.start_bucket_sum(id)?;
            first += count;
        }
        comm.finish_bucket_sums()?;
        let tail = comm.bucket_sum(buckets - 1)?;
        let (total, loss_sum) = (tail[tail.len() - 2], tail[tail.len() - 1]);
        if total <= 0.0 {
            return Err(Error::invalid(OP, "no rank had anything to average"));
        }
        let scale = 1.0 / total;
        let mut first = 0;
        for (id, &count) in self.counts.iter().enumerate() {
            let sum = comm.bucket_sum(id)?;
            let mut at = 0;
            for p in params[first..first + count].iter_mut() {
                let n = p.grad.len();
                for (g, &s) in p.grad.iter_mut().zip(&sum[at..at + n]) {
                    *g = s * scale;
                }
                at += n;
            }
            first += count;
        }
        Ok(Averaged {
            loss: loss_sum * scale,
            weight: total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;
    use crate::nn::ParamKind;

    /// Rank 0 of two whose other rank sent `other` (its buckets, in order): each sum is this
    /// rank's bucket plus the other's.
    #[derive(Debug, Default)]
    struct Pair {
        own: SingleProcess,
        other: Vec<Vec<f32>>,
        sums: Vec<Vec<f32>>,
    }

    impl Communicator for Pair {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn sum_f64(&mut self, _values: &mut [f64]) -> Result<()> {
            unreachable!("the average needs no other collective")
        }
        fn broadcast_bytes(&mut self, root: usize, bytes: &mut Vec<u8>) -> Result<()> {
            self.own.broadcast_bytes(root, bytes)
        }
        fn all_gather_f32(&mut self, values: &mut [f32], counts: &[usize]) -> Result<()> {
            self.own.all_gather_f32(values, counts)
        }
        fn set_buckets(&mut self, buckets: &[Bucket]) -> Result<()> {
            self.sums = buckets.iter().map(|b| vec![0.0; b.len()]).collect();
            self.own.set_buckets(buckets)
        }
        fn bucket_mut(&mut self, id: usize) -> Result<&mut [f32]> {
            self.own.bucket_mut(id)
        }
        fn start_bucket_sum(&mut self, id: usize) -> Result<()> {
            let own = self.own.bucket_sum(id)?;
            self.sums[id] = own
                .iter()
                .zip(&self.other[id])
                .map(|(a, b)| a + b)
                .collect();
            Ok(())
        }
        fn progress(&mut self) -> Result<()> {
            Ok(())
        }
        fn finish_bucket_sums(&mut self) -> Result<()> {
            Ok(())
        }
        fn bucket_sum(&self, id: usize) -> Result<&[f32]> {
            Ok(&self.sums[id])
        }
        fn abort(&self, code: i32) -> ! {
            self.own.abort(code)
        }
    }

    /// Rank 0 holds the per-token mean of 1 token, rank 1 that of 3: the result is the mean
    /// over all 4 tokens, gradients and loss (exact in binary: every value a small dyadic).
    #[test]
    fn unequal_shares_average_to_the_mean_over_every_term() {
        let mut a = Param::zeros("a", vec![2], ParamKind::Weight);
        let mut b = Param::zeros("b", vec![1], ParamKind::Bias);
        a.grad.copy_from_slice(&[4.0, -2.0]);
        b.grad.copy_from_slice(&[1.0]);
        let mut params = vec![&mut a, &mut b];
        let mut comm = Pair::default();
        let average = FlatAverage::new(&params, &mut comm).unwrap();
        assert_eq!(average.elements(), 5);
        // Rank 1: per-token mean gradients [0, 2], [3], loss 2 over 3 tokens, times 3.
        comm.other = vec![vec![0.0, 6.0, 9.0, 3.0, 6.0]];
        let mean = average.average(&mut params, &mut comm, 1.0, 0.5).unwrap();
        assert_eq!(
            mean,
            Averaged {
                loss: 1.625,
                weight: 4.0
            }
        );
        assert_eq!(&params[0].grad[..], &[1.0, 1.0]);
        assert_eq!(&params[1].grad[..], &[2.5]);
    }

    #[test]
    fn a_parameter_list_it_was_not_built_for_is_refused() {
        let mut a = Param::zeros("a", vec![2], ParamKind::Weight);
        let mut comm = Pair::default();
        let average = FlatAverage::new(&[&mut a], &mut comm).unwrap();
        let mut c = Param::zeros("c", vec![3], ParamKind::Weight);
        assert!(average.average(&mut [&mut c], &mut comm, 1.0, 0.0).is_err());
    }
}
