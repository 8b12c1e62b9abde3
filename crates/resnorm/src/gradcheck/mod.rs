//! Finite-difference gradient checks: every analytic backward pass against central
//! differences of a naive `f64` reference forward.
//!
//! For a kernel `y = f(x, θ)` a check draws inputs, a random projection `g` and defines the
//! scalar loss `L = Σ g ⊙ f(x, θ)`. The kernel's backward, fed `dy = g`, must then return
//! `∂L/∂x` and `∂L/∂θ`; the reference computes `(L(x + h e_i) - L(x - h e_i)) / 2h` in `f64`
//! for every element. Because the reference is exact to ~1e-9, the measured error is the
//! kernel's own `f32` rounding.
//!
//! ```
//! use resnorm::gradcheck::{compare, numeric_gradient};
//! // L(x) = x0^2 + 3 x1, so dL/dx = (2 x0, 3).
//! let x = [1.5, -2.0];
//! let numeric = numeric_gradient(|v| v[0] * v[0] + 3.0 * v[1], &x, 1e-4);
//! let analytic = [3.0f32, 3.0];
//! let check = compare("square", &analytic, &numeric, 1e-6);
//! assert!(check.passed, "{check:?}");
//! ```

pub mod attention;
pub mod batch_norm;
pub mod classify;
pub mod encoder_classifier;
pub mod gpt;
pub mod layers;
pub mod llama;
pub mod norms;
pub mod residual;
pub mod resnet;
pub mod seq2seq;
pub mod vision;

use std::collections::BTreeMap;

use crate::nn::Param;

/// Named `f64` parameters of a reference model.
pub type ReferenceParams = BTreeMap<String, Vec<f64>>;

/// Outcome of one gradient check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    /// What was checked, e.g. `layer_norm dx`.
    pub name: String,
    /// Largest absolute difference between analytic and numeric gradient.
    pub max_abs_err: f64,
    /// Largest difference relative to the gradient's size (see [`compare`]).
    pub max_rel_err: f64,
    /// The bound `max_rel_err` had to stay under.
    pub tolerance: f64,
    /// `max_rel_err <= tolerance` and every value finite.
    pub passed: bool,
}

/// Central-difference gradient of `loss` at `x` with step `step`.
pub fn numeric_gradient(mut loss: impl FnMut(&[f64]) -> f64, x: &[f64], step: f64) -> Vec<f64> {
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|i| {
            probe[i] = x[i] + step;
            let plus = loss(&probe);
            probe[i] = x[i] - step;
            let minus = loss(&probe);
            probe[i] = x[i];
            (plus - minus) / (2.0 * step)
        })
        .collect()
}

/// Compares an analytic gradient with a numeric one.
///
/// The relative error of element `i` is `|a_i - n_i| / max(|n_i|, 1e-2 · max_j |n_j|)`:
/// relative where the gradient is large, and measured against one percent of the largest
/// element where it is near zero (a tiny gradient cannot be checked to many digits in f32).
pub fn compare(name: &str, analytic: &[f32], numeric: &[f64], tolerance: f64) -> CheckResult {
    assert_eq!(
        analytic.len(),
        numeric.len(),
        "{name}: gradient lengths differ"
    );
    let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let floor = (1e-2 * scale).max(f64::MIN_POSITIVE);
    let mut max_abs_err = 0.0f64;
    let mut max_rel_err = 0.0f64;
    let mut finite = true;
    for (&a, &n) in analytic.iter().zip(numeric) {
        let a = a as f64;
        finite &= a.is_finite() && n.is_finite();
        let err = (a - n).abs();
        max_abs_err = max_abs_err.max(err);
        max_rel_err = max_rel_err.max(err / n.abs().max(floor));
    }
    CheckResult {
        name: name.to_string(),
        max_abs_err,
        max_rel_err,
        tolerance,
        passed: finite && max_rel_err <= tolerance,
    }
}

/// Checks the gradient of every parameter tensor that `visit` hands over (after a backward)
/// against central differences of `reference_loss`, the reference model's loss of all the
/// parameters widened to `f64`; one [`CheckResult`] per tensor, named `name(tensor)`.
pub fn check_param_gradients(
    visit: impl FnOnce(&mut dyn FnMut(&Param)),
    reference_loss: impl Fn(&ReferenceParams) -> f64,
    (step, tolerance): (f64, f64),
    name: impl Fn(&str) -> String,
) -> Vec<CheckResult> {
    let mut params = ReferenceParams::new();
    let mut analytic = Vec::new();
    visit(&mut |p| {
        params.insert(p.name.clone(), p.value.iter().map(|&v| v as f64).collect());
        analytic.push((p.name.clone(), p.grad.clone()));
    });
    analytic
        .into_iter()
        .map(|(tensor, grad)| {
            let start = params[&tensor].clone();
            let mut probe = params.clone();
            let numeric = numeric_gradient(
                |v| {
                    probe.insert(tensor.clone(), v.to_vec());
                    reference_loss(&probe)
                },
                &start,
                step,
            );
            compare(&name(&tensor), &grad, &numeric, tolerance)
        })
        .collect()
}

/// Every check the library knows, in a fixed order: the kernels first, then the layers and
/// models built on them.
pub fn all_checks() -> Vec<CheckResult> {
    let mut results = Vec::new();
    results.extend(norms::checks());
    results.extend(batch_norm::checks());
    results.extend(residual::checks());
    results.extend(layers::checks());
    results.extend(attention::checks());
    results.extend(vision::checks());
    results.extend(resnet::checks());
    results.extend(gpt::checks());
    results.extend(classify::checks());
    results.extend(encoder_classifier::checks());
    results.extend(llama::checks());
    results.extend(seq2seq::checks());
    results
}
