//! A GPT's gradients averaged over the ranks of a [`Communicator`], in buckets that start
//! travelling as the backward pass finishes them.
//!
//! ```text
//! bucket k  (k = 0 .. 2L-1)  unit k's gradients        started right after unit k's backward
//! bucket 2L                  wte, wpe, ln_f; the loss   started when the backward ends
//! wait for every bucket;  g = Σ_ranks g / N;  loss = Σ_ranks loss / N
//! ```
//! Units finish from the last to the first, so while unit `k`'s sum travels, units
//! `k-1 .. 0` still compute: only the last bucket, whose embedding gradient is complete only
//! at the very end, cannot overlap. The local loss rides in that bucket as one more element,
//! which saves a collective per step. With one rank nothing is copied.
//!
//! With ZeRO stage 1 ([`OptimizerShard`]) each bucket is reduce-scattered instead: cut at
//! the parameters' owners, every rank receives the summed gradients of the weights it
//! updates and nothing else, half the bytes of an all-reduce (the weights come back by an
//! all-gather after the update). The loss then travels alone in a one-number sum.
//!
//! ```
//! use resnorm::distributed::SingleProcess;
//! use resnorm::lm::GradientAverage;
//! use resnorm::models::gpt::{Gpt, GptConfig};
//! let config = GptConfig { layers: 1, heads: 1, width: 8, context: 4, vocab: 5, ..GptConfig::default() };
//! let mut model = Gpt::new(config, 0).unwrap();
//! let mut comm = SingleProcess::default();
//! let average = GradientAverage::new(&model, &mut comm, None).unwrap();
//! assert_eq!(average.buckets(), 3); // two units and the last bucket
//! model.forward(&[1, 2, 3, 4], 1, Some(&[2, 3, 4, 0])).unwrap();
//! model.backward().unwrap();
//! let loss = average.sum_and_average(&mut model, &mut comm, 1.25, |_, _| Ok(())).unwrap();
//! assert_eq!(loss.0, 1.25); // one rank: its own loss
//! ```

use std::time::Instant;

use crate::distributed::{Bucket, Communicator};
use crate::models::gpt::{Gpt, ResidualUnit};
use crate::nn::Param;
use crate::{Error, Result};

use super::OptimizerShard;

/// The bucket layout of one GPT shape.
#[derive(Clone, Debug)]
pub struct GradientAverage {
    /// Elements each rank sends per bucket (one per unit, then the last).
    lens: Vec<usize>,
    /// For each parameter in [`Gpt::visit_params`] order: the bucket it travels in and
    /// where its sum starts in what this rank receives of that bucket; `None` for a
    /// parameter whose sum goes to another rank (ZeRO).
    sources: Vec<Option<(usize, usize)>>,
    /// Whether the buckets are reduce-scattered (ZeRO) rather than all-reduced.
    scattered: bool,
}

impl GradientAverage {
    /// The layout for `model`, with the buckets allocated in `comm`: all-reduced, or with
    /// `shard` reduce-scattered at its owners.
    pub fn new(
        model: &Gpt,
        comm: &mut dyn Communicator,
        shard: Option<&OptimizerShard>,
    ) -> Result<Self> {
        let (rank, ranks) = (comm.rank(), comm.size());
        let last = model.units.len();
        // Each parameter's bucket and length, in visit order: embedding, units, final norm.
        let mut params: Vec<(usize, usize)> = Vec::new();
        model
            .embedding
            .visit_params(&mut |p| params.push((last, p.grad.len())));
        for (k, unit) in model.units.iter().enumerate() {
            unit.visit_params(&mut |p| params.push((k, p.grad.len())));
        }
        if let Some(ln_f) = &model.ln_f {
            ln_f.visit_params(&mut |p| params.push((last, p.grad.len())));
        }
        // Within a bucket the parameters lie in visit order, so the owners never decrease:
        // each rank's piece is one run of the bucket.
        let mut pieces = vec![vec![0; ranks]; last + 1];
        let mut received = vec![0; last + 1];
        let mut sources = Vec::with_capacity(params.len());
        for (i, &(bucket, len)) in params.iter().enumerate() {
            let owner = shard.map_or(rank, |s| s.owner(i));
            if owner >= ranks {
                return Err(Error::invalid(
                    "GradientAverage::new",
                    format!("parameter {i}'s owner is rank {owner} of {ranks}"),
                ));
            }
            pieces[bucket][owner] += len;
            sources.push((owner == rank).then_some((bucket, received[bucket])));
            if owner == rank {
                received[bucket] += len;
            }
        }
        let buckets: Vec<Bucket> = match shard {
            Some(_) => pieces.into_iter().map(Bucket::Scattered).collect(),
            None => {
                // The last bucket carries the loss after its gradients.
                received[last] += 1;
                received.iter().map(|&n| Bucket::Whole(n)).collect()
            }
        };
        comm.set_buckets(&buckets)?;
        Ok(GradientAverage {
            lens: buckets.iter().map(Bucket::len).collect(),
            sources,
            scattered: shard.is_some(),
        })
    }

    /// Buckets in the layout: one per unit and the last.
    pub fn buckets(&self) -> usize {
        self.lens.len()
    }

    /// Gradient elements sent per step by each rank (what the ring all-reduce moves
    /// `2(N-1)/N` times over each link, and a reduce-scatter `(N-1)/N` times).
    pub fn elements(&self) -> usize {
        self.lens.iter().sum()
    }

    /// Copies unit `k`'s gradients into its bucket and starts the bucket's sum: what the
    /// backward pass calls as each unit finishes (see [`Gpt::backward_each`]).
    pub fn start_unit(
        &self,
        comm: &mut dyn Communicator,
        k: usize,
        unit: &ResidualUnit,
    ) -> Result<()> {
        let bucket = comm.bucket_mut(k)?;
        let mut at = 0;
        unit.visit_params(&mut |p| {
            bucket[at..at + p.grad.len()].copy_from_slice(&p.grad);
            at += p.grad.len();
        });
        comm.start_bucket_sum(k)?;
        comm.progress()
    }

    /// Completes a step's exchange after the backward that called [`Self::start_unit`] for
    /// every unit (or `start_units` now, when it did not): sends the last bucket with
    /// `loss`, waits for every sum, and leaves the mean over ranks in the model's gradients
    /// (with ZeRO, in those of the parameters this rank owns; the others keep this rank's
    /// own gradients, which nothing may read). Returns the mean loss and the seconds spent
    /// waiting after the backward.
    pub fn sum_and_average(
        &self,
        model: &mut Gpt,
        comm: &mut dyn Communicator,
        loss: f32,
        start_units: impl FnOnce(&mut Gpt, &mut dyn Communicator) -> Result<()>,
    ) -> Result<(f32, f64)> {
        if comm.size() == 1 {
            return Ok((loss, 0.0));
        }
        let waited = Instant::now();
        start_units(model, comm)?;
        let last = self.lens.len() - 1;
        let bucket = comm.bucket_mut(last)?;
        let mut at = 0;
        let mut pack = |p: &Param| {
            bucket[at..at + p.grad.len()].copy_from_slice(&p.grad);
            at += p.grad.len();
        };
        model.embedding.visit_params(&mut pack);
        if let Some(ln_f) = &model.ln_f {
            ln_f.visit_params(&mut pack);
        }
        if !self.scattered {
            bucket[at] = loss;
        }
        comm.start_bucket_sum(last)?;
        comm.finish_bucket_sums()?;
        let loss_sum = if self.scattered {
            let mut sum = [f64::from(loss)];
            comm.sum_f64(&mut sum)?;
            sum[0] as f32
        } else {
            comm.bucket_sum(last)?[at]
        };
        let waited = waited.elapsed().as_secs_f64();

        let scale = 1.0 / comm.size() as f32;
        let comm: &dyn Communicator = comm;
        let (mut i, mut failed) = (0, None);
        model.visit_params_mut(&mut |p| {
            if let Some((bucket, at)) = self.sources[i] {
                match comm.bucket_sum(bucket) {
                    Ok(sum) => {
                        let n = p.grad.len();
                        for (g, &s) in p.grad.iter_mut().zip(&sum[at..at + n]) {
                            *g = s * scale;
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            }
            i += 1;
        });
        match failed {
            Some(e) => Err(e),
            None => Ok((loss_sum * scale, waited)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;
    use crate::models::gpt::{GptConfig, Placement};

    /// Two ranks that computed the same gradients: every sum is twice the bucket.
    #[derive(Debug, Default)]
    struct Twins(SingleProcess, Vec<Vec<f32>>);

    impl Communicator for Twins {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn sum_f64(&mut self, values: &mut [f64]) -> Result<()> {
            values.iter_mut().for_each(|v| *v *= 2.0);
            Ok(())
        }
        fn broadcast_bytes(&mut self, root: usize, bytes: &mut Vec<u8>) -> Result<()> {
            self.0.broadcast_bytes(root, bytes)
        }
        fn all_gather_f32(&mut self, values: &mut [f32], counts: &[usize]) -> Result<()> {
            self.0.all_gather_f32(values, counts)
        }
        fn set_buckets(&mut self, buckets: &[Bucket]) -> Result<()> {
            self.1 = buckets.iter().map(|b| vec![0.0; b.len()]).collect();
            self.0.set_buckets(buckets)
        }
        fn bucket_mut(&mut self, id: usize) -> Result<&mut [f32]> {
            self.0.bucket_mut(id)
        }
        fn start_bucket_sum(&mut self, id: usize) -> Result<()> {
            let sum: Vec<f32> = self.0.bucket_sum(id)?.iter().map(|x| 2.0 * x).collect();
            self.1[id] = sum;
            Ok(())
        }
        fn progress(&mut self) -> Result<()> {
            Ok(())
        }
        fn finish_bucket_sums(&mut self) -> Result<()> {
            Ok(())
        }
        fn bucket_sum(&self, id: usize) -> Result<&[f32]> {
            Ok(&self.1[id])
        }
        fn abort(&self, code: i32) -> ! {
            self.0.abort(code)
        }
    }

    fn grads(model: &Gpt) -> Vec<(String, Vec<f32>)> {
        let mut out = Vec::new();
        model.visit_params(&mut |p| out.push((p.name.clone(), p.grad.to_vec())));
        out
    }

    /// Every gradient goes out in some bucket and comes back to its own parameter: the mean
    /// of two equal gradients is the gradient, bit for bit, with and without overlap, for a
    /// placement with a final norm (resi-dual) and one without (post-ln).
    #[test]
    fn every_gradient_comes_back_to_its_parameter() {
        for placement in [Placement::ResiDual, Placement::PostLn] {
            for overlap in [true, false] {
                let config = GptConfig {
                    layers: 2,
                    heads: 2,
                    width: 8,
                    context: 4,
                    vocab: 7,
                    placement,
                    ..GptConfig::default()
                };
                let mut model = Gpt::new(config, 3).unwrap();
                let mut comm = Twins::default();
                let average = GradientAverage::new(&model, &mut comm, None).unwrap();
                model
                    .forward(
                        &[1, 2, 3, 4, 5, 6, 0, 1],
                        2,
                        Some(&[2, 3, 4, 5, 6, 0, 1, 2]),
                    )
                    .unwrap();
                if overlap {
                    model
                        .backward_each(&mut |k, unit| average.start_unit(&mut comm, k, unit))
                        .unwrap();
                } else {
                    model.backward().unwrap();
                }
                let expected = grads(&model);
                assert!(expected.iter().all(|(_, g)| g.iter().any(|&x| x != 0.0)));
                let (loss, _) = average
                    .sum_and_average(&mut model, &mut comm, 0.75, |model, comm| {
                        if overlap {
                            return Ok(());
                        }
                        for (k, unit) in model.units.iter().enumerate() {
                            average.start_unit(comm, k, unit)?;
                        }
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(loss, 0.75);
                assert_eq!(grads(&model), expected, "{placement:?}, overlap {overlap}");
            }
        }
    }
}
