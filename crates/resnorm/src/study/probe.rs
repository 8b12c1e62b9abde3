//! Measurements at initialization: one forward and backward per batch, no update, the
//! [`crate::diagnostics`] numbers averaged over a few batches.
//!
//! What the theory predicts at initialization (and the study checks):
//! - without residual connections `‖∂L/∂W‖` of the first blocks is orders of magnitude below
//!   that of the last blocks;
//! - the gradient of the last block falls like `1/√L` under Pre-LN and stays flat under
//!   Post-LN (Xiong et al. 2020, Theorem 1);
//! - the residual stream's RMS grows like `√l` under Pre-LN and is 1 under Post-LN.

use super::data::StudyData;
use super::model::{StudyModel, StudyModelSpec};
use super::spec::ProbeSpec;
use crate::diagnostics::PendingDiagnostics;
use crate::rng::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Averages over the probe's batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Loss at initialization.
    pub loss: f32,
    /// RMS of `x_0 .. x_2L`.
    pub stream_rms: Vec<f32>,
    /// `‖∂L/∂x_k‖₂`, `k = 0 .. 2L`.
    pub stream_grad_norm: Vec<f32>,
    /// Gradient norm of each block's parameters (attention and MLP units together).
    pub block_grad_norm: Vec<f32>,
}

impl ProbeResult {
    /// Gradient norm of the last block's parameters.
    pub fn last_block_grad_norm(&self) -> f32 {
        *self
            .block_grad_norm
            .last()
            .expect("a model has at least one block")
    }

    /// Gradient norm of the first block's parameters.
    pub fn first_block_grad_norm(&self) -> f32 {
        self.block_grad_norm[0]
    }
}

/// Runs the probe `spec` on `data`.
pub fn run_probe<M: StudyModelSpec>(spec: &ProbeSpec<M>, data: &StudyData) -> Result<ProbeResult> {
    if spec.batches == 0 || spec.batch == 0 {
        return Err(Error::invalid(
            "run_probe",
            "a probe needs at least one batch of at least one row",
        ));
    }
    let mut model = spec.model.build(data.vocab())?;
    model.record_stream_stats(true);
    let mut rng = Rng::new(spec.model.seed() ^ DATA_STREAM);
    let (layers, streams) = (spec.model.layers(), 2 * spec.model.layers() + 1);
    let mut sum = ProbeResult {
        loss: 0.0,
        stream_rms: vec![0.0; streams],
        stream_grad_norm: vec![0.0; streams],
        block_grad_norm: vec![0.0; layers],
    };
    for _ in 0..spec.batches {
        let (inputs, targets) =
            data.dataset
                .sample_batch(&mut rng, spec.batch, spec.model.context())?;
        model.zero_grad();
        let loss = model
            .forward(&inputs, spec.batch, Some(&targets))?
            .expect("targets given");
        model.backward()?;
        let pending = PendingDiagnostics::after_backward(&model, 0, loss, 0.0)?;
        let d = pending.measured();
        sum.loss += loss;
        add(&mut sum.stream_rms, &d.stream_rms);
        add(&mut sum.stream_grad_norm, &d.stream_grad_norm);
        for (block, units) in sum.block_grad_norm.iter_mut().zip(d.units.chunks(2)) {
            *block += units
                .iter()
                .map(|u| u.grad_norm * u.grad_norm)
                .sum::<f32>()
                .sqrt();
        }
    }
    let n = spec.batches as f32;
    sum.loss /= n;
    for v in sum
        .stream_rms
        .iter_mut()
        .chain(&mut sum.stream_grad_norm)
        .chain(&mut sum.block_grad_norm)
    {
        *v /= n;
    }
    Ok(sum)
}

/// Mixed into a run's seed for its data order, so that weights and batches differ streams.
pub(super) const DATA_STREAM: u64 = 0x5eed_da7a;

fn add(total: &mut [f32], x: &[f32]) {
    total.iter_mut().zip(x).for_each(|(t, v)| *t += v);
}
