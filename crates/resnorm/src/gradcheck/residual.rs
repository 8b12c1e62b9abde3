//! Naive `f64` references for the residual adds and the finite-difference checks of their
//! backward passes.
//!
//! ```
//! use resnorm::gradcheck::residual::gated_residual_add_reference;
//! assert_eq!(gated_residual_add_reference(&[1.0], 0.5, &[4.0]), vec![3.0]);
//! ```

use super::{compare, numeric_gradient, CheckResult};
use crate::kernels::residual::{
    gated_residual_add_backward, residual_add_backward, scaled_residual_add_backward,
};
use crate::rng::Rng;

/// `x + f`.
pub fn residual_add_reference(x: &[f64], f: &[f64]) -> Vec<f64> {
    x.iter().zip(f).map(|(x, f)| x + f).collect()
}

/// `alpha·x + f`.
pub fn scaled_residual_add_reference(alpha: f64, x: &[f64], f: &[f64]) -> Vec<f64> {
    x.iter().zip(f).map(|(x, f)| alpha * x + f).collect()
}

/// `x + alpha·f`.
pub fn gated_residual_add_reference(x: &[f64], alpha: f64, f: &[f64]) -> Vec<f64> {
    x.iter().zip(f).map(|(x, f)| x + alpha * f).collect()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
    let mut v = vec![0.0; len];
    rng.fill_normal(&mut v, 0.0, 1.0);
    v
}

/// `Σ g·y`, the scalar loss whose gradient a backward pass fed `ȳ = g` computes.
fn project(y: &[f64], g: &[f64]) -> f64 {
    y.iter().zip(g).map(|(y, g)| y * g).sum()
}

/// Checks `dx`, `df` (and `dalpha`) of every residual backward on a small input.
pub fn checks() -> Vec<CheckResult> {
    const TOLERANCE: f64 = 1e-5;
    const STEP: f64 = 1e-3;
    const LEN: usize = 37;
    let mut rng = Rng::new(0x4E5);
    let (x, f, upstream) = (
        random(&mut rng, LEN),
        random(&mut rng, LEN),
        random(&mut rng, LEN),
    );
    let (alpha, scale) = (0.37f32, 1.8f32);
    let (x64, f64_, g64) = (to_f64(&x), to_f64(&f), to_f64(&upstream));
    let (alpha64, scale64) = (alpha as f64, scale as f64);
    let mut results = Vec::new();
    let (mut dx, mut df) = (vec![0.0; LEN], vec![0.0; LEN]);

    residual_add_backward(&upstream, &mut dx, &mut df).expect("equal lengths");
    let numeric_dx = numeric_gradient(
        |v| project(&residual_add_reference(v, &f64_), &g64),
        &x64,
        STEP,
    );
    let numeric_df = numeric_gradient(
        |v| project(&residual_add_reference(&x64, v), &g64),
        &f64_,
        STEP,
    );
    results.push(compare("residual_add dx", &dx, &numeric_dx, TOLERANCE));
    results.push(compare("residual_add df", &df, &numeric_df, TOLERANCE));

    scaled_residual_add_backward(scale, &upstream, &mut dx, &mut df).expect("equal lengths");
    let numeric_dx = numeric_gradient(
        |v| project(&scaled_residual_add_reference(scale64, v, &f64_), &g64),
        &x64,
        STEP,
    );
    let numeric_df = numeric_gradient(
        |v| project(&scaled_residual_add_reference(scale64, &x64, v), &g64),
        &f64_,
        STEP,
    );
    results.push(compare(
        "scaled_residual_add dx",
        &dx,
        &numeric_dx,
        TOLERANCE,
    ));
    results.push(compare(
        "scaled_residual_add df",
        &df,
        &numeric_df,
        TOLERANCE,
    ));

    let mut dalpha = 0.0f32;
    gated_residual_add_backward(&upstream, &f, alpha, &mut dx, &mut df, &mut dalpha)
        .expect("equal lengths");
    let numeric_dx = numeric_gradient(
        |v| project(&gated_residual_add_reference(v, alpha64, &f64_), &g64),
        &x64,
        STEP,
    );
    let numeric_df = numeric_gradient(
        |v| project(&gated_residual_add_reference(&x64, alpha64, v), &g64),
        &f64_,
        STEP,
    );
    let numeric_dalpha = numeric_gradient(
        |v| project(&gated_residual_add_reference(&x64, v[0], &f64_), &g64),
        &[alpha64],
        STEP,
    );
    results.push(compare(
        "gated_residual_add dx",
        &dx,
        &numeric_dx,
        TOLERANCE,
    ));
    results.push(compare(
        "gated_residual_add df",
        &df,
        &numeric_df,
        TOLERANCE,
    ));
    results.push(compare(
        "gated_residual_add dalpha",
        &[dalpha],
        &numeric_dalpha,
        TOLERANCE,
    ));
    results
}
