//! ZeRO stage 1 (`zero = 1`): AdamW's moments sharded over the ranks, so that each holds
//! `1/N` of the optimizer state instead of all of it.
//!
//! ```text
//! parameters in visit order, cut into N contiguous runs of about equal elements: rank r owns run r
//! reduce-scatter: rank r receives the averaged gradients of its run only  (GradientAverage)
//! global norm:    ‖g‖² = Σ_r (rank r's Σ g² over its run), one all-reduce of one number
//! rank r:         clip and AdamW-step its own run (its m and v exist nowhere else)
//! all-gather:     every run's new weights to every rank, one MPI_Allgatherv
//! save:           rank r sends its m and v; rank 0 writes the whole state, as one process would
//! resume:         every rank reads the whole state and keeps its own run
//! ```
//! Each rank sends `(N-1)/N` of the gradient and receives `(N-1)/N` of the weights: the
//! bytes of one all-reduce, while holding `1/N` of AdamW's moments. AdamW is element-wise
//! and the gradient sums are those of the all-reduce, so each weight gets the bits it would
//! get without sharding, except that the norm's sum of squares is added in another order
//! (per run, then over the ranks), which can move the clipping factor by a rounding step;
//! its checkpoint does not depend on `N`.
//!
//! ```
//! use resnorm::lm::OptimizerShard;
//! use resnorm::models::gpt::{Gpt, GptConfig};
//! let model = Gpt::new(GptConfig { layers: 1, heads: 1, width: 8, context: 4, vocab: 5, ..GptConfig::default() }, 0).unwrap();
//! let (mut params, shard) = (0, OptimizerShard::new(&model, 0, 1));
//! model.visit_params(&mut |_| params += 1);
//! assert_eq!(shard.owned(), 0..params); // one rank owns everything
//! ```

use std::collections::BTreeMap;
use std::ops::Range;

use crate::distributed::Communicator;
use crate::models::gpt::Gpt;
use crate::nn::Param;
use crate::optim::{AdamW, AdamWConfig, Optimizer, OptimizerState};
use crate::{Error, Result, Tensor};

/// Which rank owns which parameter's optimizer state.
#[derive(Clone, Debug)]
pub struct OptimizerShard {
    rank: usize,
    /// The owner of each parameter, in visit order (non-decreasing).
    owners: Vec<usize>,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    /// Where each parameter's weights start in the visit-order concatenation of all.
    offsets: Vec<usize>,
    /// Where each rank's run starts in that concatenation, and (last) its length.
    run_starts: Vec<usize>,
    /// One window of the concatenation, for the all-gather (allocated once).
    window: Vec<f32>,
    /// Each rank's part of the current window.
    counts: Vec<usize>,
}

/// Weights gathered per all-gather: the scratch window is bounded by this, not by the model.
const GATHER_WINDOW: usize = 1 << 22;

impl OptimizerShard {
    /// The split of `model`'s parameters over `ranks` ranks, seen from `rank`: parameter `i`,
    /// whose elements start at offset `s` of `total`, belongs to rank `⌊s·ranks/total⌋`.
    pub fn new(model: &Gpt, rank: usize, ranks: usize) -> Self {
        let mut sizes = Vec::new();
        let (mut names, mut shapes) = (Vec::new(), Vec::new());
        model.visit_params(&mut |p| {
            sizes.push(p.value.len());
            names.push(p.name.clone());
            shapes.push(p.shape.clone());
        });
        let total: usize = sizes.iter().sum::<usize>();
        let mut start = 0;
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut run_starts = vec![total; ranks + 1];
        let owners: Vec<usize> = sizes
            .iter()
            .map(|&n| {
                let owner = (start * ranks / total.max(1)).min(ranks - 1);
                run_starts[owner] = run_starts[owner].min(start);
                offsets.push(start);
                start += n;
                owner
            })
            .collect();
        // A rank that owns nothing starts where the next one does.
        for r in (0..ranks).rev() {
            run_starts[r] = run_starts[r].min(run_starts[r + 1]);
        }
        OptimizerShard {
            rank,
            owners,
            names,
            shapes,
            offsets,
            run_starts,
            window: vec![0.0; total.min(GATHER_WINDOW)],
            counts: vec![0; ranks],
        }
    }

    /// The rank that owns parameter `index` (in visit order).
    pub fn owner(&self, index: usize) -> usize {
        self.owners[index]
    }

    /// The indices (in visit order) of the parameters this rank updates.
    pub fn owned(&self) -> Range<usize> {
        self.run(self.rank)
    }

    fn run(&self, rank: usize) -> Range<usize> {
        let first = self.owners.partition_point(|&o| o < rank);
        let end = self.owners.partition_point(|&o| o <= rank);
        first..end
    }

    /// `full` cut down to this rank's parameters (a fresh optimizer stays fresh).
    pub fn keep_own(&self, full: &AdamW) -> Result<AdamW> {
        let mut state = full.state();
        let mut optimizer = AdamW::new(*full.config())?;
        if state.params.is_empty() {
            return Ok(optimizer);
        }
        let own = &self.names[self.owned()];
        state.params.retain(|name| own.contains(name));
        state.tensors.retain(|key, _| {
            key.split_once('.')
                .is_some_and(|(_, name)| own.iter().any(|n| n == name))
        });
        optimizer.load_state(state)?;
        Ok(optimizer)
    }

    /// Gives every rank the value of every parameter after each owner's update
    /// (collective): the visit-order concatenation of the weights is all-gathered in
    /// windows of at most [`GATHER_WINDOW`] weights, each rank sending the part of its run
    /// in the window.
    pub fn gather_weights(
        &mut self,
        params: &mut [&mut Param],
        comm: &mut dyn Communicator,
    ) -> Result<()> {
        if params.len() != self.owners.len() {
            return Err(Error::invalid(
                "OptimizerShard::gather_weights",
                format!(
                    "{} parameters, the shard has {}",
                    params.len(),
                    self.owners.len()
                ),
            ));
        }
        let total = self.run_starts[self.run_starts.len() - 1];
        let size = self.window.len();
        let mut from = 0;
        while from < total {
            let to = (from + size).min(total);
            let overlap = |start: usize, end: usize| start.max(from)..end.min(to);
            for (r, count) in self.counts.iter_mut().enumerate() {
                *count = overlap(self.run_starts[r], self.run_starts[r + 1]).len();
            }
            let window = &mut self.window[..to - from];
            for ((param, &owner), &start) in params.iter_mut().zip(&self.owners).zip(&self.offsets)
            {
                let inside = overlap(start, start + param.value.len());
                if !inside.is_empty() && owner == self.rank {
                    window[inside.start - from..inside.end - from]
                        .copy_from_slice(&param.value[inside.start - start..inside.end - start]);
                }
            }
            comm.all_gather_f32(window, &self.counts)?;
            for ((param, &owner), &start) in params.iter_mut().zip(&self.owners).zip(&self.offsets)
            {
                let inside = overlap(start, start + param.value.len());
                if !inside.is_empty() && owner != self.rank {
                    param.value[inside.start - start..inside.end - start]
                        .copy_from_slice(&window[inside.start - from..inside.end - from]);
                }
            }
            from = to;
        }
        Ok(())
    }

    /// The whole optimizer, from every rank's `own` part (collective): what one process
    /// would hold, for saving.
    pub fn gather_state(
        &self,
        own: &AdamW,
        config: AdamWConfig,
        comm: &mut dyn Communicator,
    ) -> Result<AdamW> {
        const OP: &str = "OptimizerShard::gather_state";
        let mine = own.state();
        let mut optimizer = AdamW::new(config)?;
        if mine.params.is_empty() {
            return Ok(optimizer); // no step yet, on any rank
        }
        let mut tensors = BTreeMap::new();
        for rank in 0..comm.size() {
            let run = self.run(rank);
            let mut bytes = Vec::new();
            if rank == self.rank {
                for name in &self.names[run.clone()] {
                    for kind in ["m", "v"] {
                        let tensor = mine
                            .tensors
                            .get(&format!("{kind}.{name}"))
                            .ok_or_else(|| Error::invalid(OP, format!("no {kind} of {name}")))?;
                        bytes.extend(tensor.data().iter().flat_map(|x| x.to_le_bytes()));
                    }
                }
            }
            comm.broadcast_bytes(rank, &mut bytes)?;
            let mut floats = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            for i in run {
                for kind in ["m", "v"] {
                    let shape = self.shapes[i].clone();
                    let data: Vec<f32> = floats.by_ref().take(shape.iter().product()).collect();
                    let tensor = Tensor::from_vec(shape, data)?;
                    tensors.insert(format!("{kind}.{}", self.names[i]), tensor);
                }
            }
        }
        optimizer.load_state(OptimizerState {
            optimizer: mine.optimizer,
            step: mine.step,
            params: self.names.clone(),
            tensors,
        })?;
        Ok(optimizer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::SingleProcess;
    use crate::models::gpt::GptConfig;

    fn model() -> Gpt {
        let config = GptConfig {
            layers: 2,
            heads: 2,
            width: 8,
            context: 4,
            vocab: 7,
            ..GptConfig::default()
        };
        Gpt::new(config, 5).unwrap()
    }

    /// The runs of 1 to 5 ranks cover every parameter once, in order, and none is empty
    /// while there are enough parameters.
    #[test]
    fn the_runs_cut_the_parameters_in_order() {
        let model = model();
        let mut count = 0;
        model.visit_params(&mut |_| count += 1);
        for ranks in 1..=5 {
            let runs: Vec<Range<usize>> = (0..ranks)
                .map(|r| OptimizerShard::new(&model, r, ranks).owned())
                .collect();
            assert_eq!(runs[0].start, 0);
            assert_eq!(runs[ranks - 1].end, count);
            for pair in runs.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "{ranks} ranks: {runs:?}");
            }
            assert!(
                runs.iter().all(|r| !r.is_empty()),
                "{ranks} ranks: {runs:?}"
            );
        }
    }

    /// Two ranks as seen from one: the other rank's weights come from `theirs`, window by
    /// window.
    #[derive(Debug)]
    struct Mirror {
        rank: usize,
        theirs: Vec<f32>,
        at: usize,
    }

    impl Communicator for Mirror {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            2
        }
        fn sum_f64(&mut self, _: &mut [f64]) -> Result<()> {
            unreachable!()
        }
        fn broadcast_bytes(&mut self, _: usize, _: &mut Vec<u8>) -> Result<()> {
            unreachable!()
        }
        fn all_gather_f32(&mut self, values: &mut [f32], counts: &[usize]) -> Result<()> {
            let other = 1 - self.rank;
            let start: usize = counts[..other].iter().sum();
            let part = start..start + counts[other];
            values[part.clone()].copy_from_slice(&self.theirs[self.at..][part]);
            self.at += values.len();
            Ok(())
        }
        fn set_buckets(&mut self, _: &[crate::distributed::Bucket]) -> Result<()> {
            unreachable!()
        }
        fn bucket_mut(&mut self, _: usize) -> Result<&mut [f32]> {
            unreachable!()
        }
        fn start_bucket_sum(&mut self, _: usize) -> Result<()> {
            unreachable!()
        }
        fn progress(&mut self) -> Result<()> {
            unreachable!()
        }
        fn finish_bucket_sums(&mut self) -> Result<()> {
            unreachable!()
        }
        fn bucket_sum(&self, _: usize) -> Result<&[f32]> {
            unreachable!()
        }
        fn abort(&self, code: i32) -> ! {
            std::process::exit(code)
        }
    }

    /// After the all-gather, each rank holds its own run's weights and the other's, in
    /// windows of any size (one of 1 and 7 weights here, the whole model by default).
    #[test]
    fn gathered_weights_come_from_their_owners() {
        let theirs_model = Gpt::new(model().config().clone(), 6).unwrap();
        let mut theirs = Vec::new();
        theirs_model.visit_params(&mut |p| theirs.extend_from_slice(&p.value));
        for rank in 0..2 {
            for window in [1, 7, usize::MAX] {
                let mut mine = model();
                let mut shard = OptimizerShard::new(&mine, rank, 2);
                shard.window.truncate(window);
                let mut comm = Mirror {
                    rank,
                    theirs: theirs.clone(),
                    at: 0,
                };
                shard
                    .gather_weights(&mut mine.params_mut(), &mut comm)
                    .unwrap();
                assert_eq!(comm.at, theirs.len());
                let mut ours = Vec::new();
                model().visit_params(&mut |p| ours.push(p.value.to_vec()));
                let (mut at, mut i) = (0, 0);
                mine.visit_params(&mut |p| {
                    let n = p.value.len();
                    let want = if shard.owner(i) == rank {
                        &ours[i][..]
                    } else {
                        &theirs[at..at + n]
                    };
                    assert_eq!(
                        &p.value[..],
                        want,
                        "rank {rank}, window {window}, {}",
                        p.name
                    );
                    at += n;
                    i += 1;
                });
                assert!(shard.owned().len() < i, "both ranks own some");
            }
        }
    }

    /// A share cut from a stepped optimizer holds only its own parameters' moments, and
    /// gathering the shares gives back the whole state.
    #[test]
    fn shares_cut_and_gathered_give_the_whole_state_back() {
        let mut model = model();
        model
            .forward(
                &[1, 2, 3, 4, 5, 6, 0, 1],
                2,
                Some(&[2, 3, 4, 5, 6, 0, 1, 2]),
            )
            .unwrap();
        model.backward().unwrap();
        let mut full = AdamW::new(AdamWConfig::default()).unwrap();
        full.step(&mut model.params_mut(), 1e-3).unwrap();

        let second = OptimizerShard::new(&model, 1, 2);
        let own = second.keep_own(&full).unwrap().state();
        let names = &second.names[second.owned()];
        assert_eq!(own.params, names);
        assert_eq!(own.tensors.len(), 2 * names.len());
        assert_eq!(own.step, 1);

        let one = OptimizerShard::new(&model, 0, 1);
        let mut comm = SingleProcess::default();
        let own = one.keep_own(&full).unwrap();
        let gathered = one
            .gather_state(&own, AdamWConfig::default(), &mut comm)
            .unwrap();
        assert_eq!(gathered.state(), full.state());
    }
}
