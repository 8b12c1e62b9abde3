//! LayerNorm against RMSNorm at a model's shape: one forward and backward of a
//! [`Norm`] layer, the two kinds measured alternately (so that a busy machine slows both
//! alike), median of the repeats.

use super::spec::NormTimingSpec;
use crate::kernels::NormKind;
use crate::nn::norm::{Norm, NormSaved};
use crate::rng::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Median time of one norm's forward plus backward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormTimingResult {
    /// LayerNorm, microseconds.
    pub layer_us: f64,
    /// RMSNorm, microseconds.
    pub rms_us: f64,
}

/// Runs the timing `spec`.
pub fn run_norm_timing(spec: &NormTimingSpec) -> Result<NormTimingResult> {
    if spec.repeats == 0 || spec.rows == 0 || spec.width == 0 {
        return Err(Error::invalid(
            "run_norm_timing",
            "rows, width and repeats must be at least 1",
        ));
    }
    let n = spec.rows * spec.width;
    let mut x = vec![0.0; n];
    let mut dy = vec![0.0; n];
    let mut rng = Rng::new(0);
    rng.fill_normal(&mut x, 0.0, 1.0);
    rng.fill_normal(&mut dy, 0.0, 1.0);
    let mut kinds = [NormKind::Layer, NormKind::Rms].map(|kind| {
        (
            Norm::new("norm", kind, spec.width, 1e-5),
            NormSaved::new(kind, spec.rows),
            Vec::with_capacity(spec.repeats),
        )
    });
    let (mut out, mut dx) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..spec.repeats {
        for (norm, saved, times) in &mut kinds {
            let start = Instant::now();
            norm.forward(&x, &mut out, saved)?;
            norm.backward(&dy, &x, saved, &mut dx)?;
            times.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    let [layer, rms] = kinds.map(|(_, _, mut times)| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    });
    Ok(NormTimingResult {
        layer_us: layer,
        rms_us: rms,
    })
}
