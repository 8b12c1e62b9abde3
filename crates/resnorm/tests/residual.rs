//! Residual-add kernels against the f64 reference, PyTorch, finite differences, themselves
//! (determinism) and bad input.

mod common;

use common::{assert_close, Fixture};
use resnorm::gradcheck::residual::{
    checks, gated_residual_add_reference, residual_add_reference, scaled_residual_add_reference,
};
use resnorm::kernels::residual::{
    gated_residual_add, gated_residual_add_backward, residual_add, residual_add_assign,
    residual_add_backward, scaled_residual_add, scaled_residual_add_backward,
};
use resnorm::rng::Rng;
use resnorm::Error;

fn normal(rng: &mut Rng, len: usize) -> Vec<f32> {
    let mut v = vec![0.0; len];
    rng.fill_normal(&mut v, 0.0, 1.0);
    v
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|v| v.abs()).collect()
}

/// `|actual - expected| <= 2^-23 · magnitude` element-wise: one f32 ulp of the operands.
fn assert_within_rounding(what: &str, actual: &[f32], expected: &[f64], magnitude: &[f64]) {
    for (i, ((&a, &e), &m)) in actual.iter().zip(expected).zip(magnitude).enumerate() {
        let bound = m * f32::EPSILON as f64;
        assert!(
            (a as f64 - e).abs() <= bound,
            "{what}[{i}]: {a} vs {e} (bound {bound})"
        );
    }
}

/// Lengths around the serial/parallel threshold (65536) and the block length (16384).
const LENS: [usize; 5] = [1, 37, 16_385, 65_535, 200_003];

#[test]
fn forwards_match_the_f64_reference() {
    let (alpha, scale) = (0.37f32, 1.8f32);
    for (i, &len) in LENS.iter().enumerate() {
        let mut rng = Rng::new(i as u64);
        let (x, f) = (normal(&mut rng, len), normal(&mut rng, len));
        let (x64, f64_) = (to_f64(&x), to_f64(&f));
        let mut out = vec![f32::NAN; len];
        // One rounding of an exact f64 result: correctly rounded, so exact equality.
        residual_add(&x, &f, &mut out).unwrap();
        assert_eq!(
            out,
            to_f32(&residual_add_reference(&x64, &f64_)),
            "plain {len}"
        );
        // alpha·x (or alpha·f) is rounded before the add: two roundings, so the error is
        // bounded by one ulp of the operands' magnitude, not of the (possibly cancelled) sum.
        scaled_residual_add(scale, &x, &f, &mut out).unwrap();
        let expected = scaled_residual_add_reference(scale as f64, &x64, &f64_);
        let magnitude = scaled_residual_add_reference(scale as f64, &abs(&x64), &abs(&f64_));
        assert_within_rounding(&format!("scaled {len}"), &out, &expected, &magnitude);
        gated_residual_add(&x, alpha, &f, &mut out).unwrap();
        let expected = gated_residual_add_reference(&x64, alpha as f64, &f64_);
        let magnitude = gated_residual_add_reference(&abs(&x64), alpha as f64, &abs(&f64_));
        assert_within_rounding(&format!("gated {len}"), &out, &expected, &magnitude);
        let mut acc = x.clone();
        residual_add_assign(&mut acc, &f).unwrap();
        assert_eq!(
            acc,
            to_f32(&residual_add_reference(&x64, &f64_)),
            "assign {len}"
        );
    }
}

#[test]
fn backwards_match_their_definitions() {
    let (alpha, scale) = (0.37f32, 1.8f32);
    for (i, &len) in LENS.iter().enumerate() {
        let mut rng = Rng::new(100 + i as u64);
        let (dy, f) = (normal(&mut rng, len), normal(&mut rng, len));
        let (mut dx, mut df) = (vec![f32::NAN; len], vec![f32::NAN; len]);
        residual_add_backward(&dy, &mut dx, &mut df).unwrap();
        assert_eq!((&dx, &df), (&dy, &dy), "plain {len}");

        scaled_residual_add_backward(scale, &dy, &mut dx, &mut df).unwrap();
        let scaled: Vec<f32> = dy.iter().map(|g| scale * g).collect();
        assert_eq!((&dx, &df), (&scaled, &dy), "scaled {len}");

        let mut dalpha = 0.5f32;
        gated_residual_add_backward(&dy, &f, alpha, &mut dx, &mut df, &mut dalpha).unwrap();
        let gated: Vec<f32> = dy.iter().map(|g| alpha * g).collect();
        assert_eq!((&dx, &df), (&dy, &gated), "gated {len}");
        // dalpha is added to: 0.5 + Σ dy·f, summed in f32 over blocks of eight lanes each;
        // its error is measured against Σ |dy·f|, the scale of the rounding errors.
        let exact = 0.5
            + dy.iter()
                .zip(&f)
                .map(|(&g, &v)| g as f64 * v as f64)
                .sum::<f64>();
        let magnitude: f64 = dy.iter().zip(&f).map(|(&g, &v)| (g * v).abs() as f64).sum();
        let err = (dalpha as f64 - exact).abs();
        assert!(
            err <= 1e-6 * magnitude,
            "gated dalpha {len}: {dalpha} vs {exact}"
        );
    }
}

#[test]
fn gradient_checks_pass() {
    let results = checks();
    assert_eq!(results.len(), 7);
    for r in results {
        println!("{r:?}");
        assert!(r.passed, "{r:?}");
    }
}

#[test]
fn residual_adds_match_pytorch() {
    let fx = Fixture::load("residual");
    let (x, f, dy) = (&fx.get("x").data, &fx.get("f").data, &fx.get("dy").data);
    let (scale, gate) = (fx.get("scale").data[0], fx.get("gate").data[0]);
    let len = x.len();
    let (mut y, mut dx, mut df) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
    let expect = |name: &str, key: &str, actual: &[f32]| {
        let key = format!("{name}_{key}");
        assert_close(&key, actual, &fx.get(&key).data, 1e-6, 1e-6);
    };

    residual_add(x, f, &mut y).unwrap();
    residual_add_backward(dy, &mut dx, &mut df).unwrap();
    for (key, actual) in [("y", &y), ("dx", &dx), ("df", &df)] {
        expect("plain", key, actual);
    }

    scaled_residual_add(scale, x, f, &mut y).unwrap();
    scaled_residual_add_backward(scale, dy, &mut dx, &mut df).unwrap();
    for (key, actual) in [("y", &y), ("dx", &dx), ("df", &df)] {
        expect("scaled", key, actual);
    }

    let mut dgate = 0.0;
    gated_residual_add(x, gate, f, &mut y).unwrap();
    gated_residual_add_backward(dy, f, gate, &mut dx, &mut df, &mut dgate).unwrap();
    for (key, actual) in [("y", &y), ("dx", &dx), ("df", &df)] {
        expect("gated", key, actual);
    }
    expect("gated", "dgate", &[dgate]);
}

#[test]
fn dalpha_is_bitwise_reproducible() {
    let mut rng = Rng::new(7);
    let (dy, f) = (normal(&mut rng, 300_001), normal(&mut rng, 300_001));
    let run = || {
        let (mut dx, mut df, mut dalpha) = (vec![0.0; dy.len()], vec![0.0; dy.len()], 0.0f32);
        gated_residual_add_backward(&dy, &f, 0.3, &mut dx, &mut df, &mut dalpha).unwrap();
        dalpha
    };
    assert_eq!(run().to_bits(), run().to_bits());
}

fn assert_shape_error(result: resnorm::Result<()>, what: &str) {
    assert!(
        matches!(result, Err(Error::Shape { .. })),
        "{what}: {result:?}"
    );
}

fn assert_invalid(result: resnorm::Result<()>, what: &str) {
    let is_invalid = matches!(result, Err(Error::InvalidArgument { .. }));
    assert!(is_invalid, "{what}: {result:?}");
}

#[test]
fn every_kernel_rejects_mismatched_lengths() {
    let (a, b) = ([1.0f32; 4], [1.0f32; 3]);
    let (mut out4, mut out3, mut dalpha) = ([0.0f32; 4], [0.0f32; 3], 0.0f32);
    assert_shape_error(residual_add(&a, &b, &mut out4), "residual_add f");
    assert_shape_error(residual_add(&a, &a, &mut out3), "residual_add out");
    assert_shape_error(residual_add_assign(&mut out3, &a), "residual_add_assign");
    assert_shape_error(
        residual_add_backward(&a, &mut out3, &mut out4),
        "residual_add_backward dx",
    );
    assert_shape_error(
        residual_add_backward(&a, &mut out4.clone(), &mut out3),
        "residual_add_backward df",
    );
    assert_shape_error(scaled_residual_add(2.0, &a, &b, &mut out4), "scaled f");
    assert_shape_error(scaled_residual_add(2.0, &a, &a, &mut out3), "scaled out");
    assert_shape_error(
        scaled_residual_add_backward(2.0, &a, &mut out3, &mut out4),
        "scaled backward dx",
    );
    assert_shape_error(
        scaled_residual_add_backward(2.0, &a, &mut out4.clone(), &mut out3),
        "scaled backward df",
    );
    assert_shape_error(gated_residual_add(&a, 0.5, &b, &mut out4), "gated f");
    assert_shape_error(gated_residual_add(&a, 0.5, &a, &mut out3), "gated out");
    let mut dx4 = [0.0f32; 4];
    for (what, result) in [
        (
            "gated backward f",
            gated_residual_add_backward(&a, &b, 0.5, &mut dx4, &mut out4, &mut dalpha),
        ),
        (
            "gated backward dx",
            gated_residual_add_backward(&a, &a, 0.5, &mut out3, &mut out4, &mut dalpha),
        ),
        (
            "gated backward df",
            gated_residual_add_backward(&a, &a, 0.5, &mut dx4, &mut out3, &mut dalpha),
        ),
    ] {
        assert_shape_error(result, what);
    }
    assert_eq!(dalpha, 0.0, "dalpha touched on error");
}

#[test]
fn every_alpha_must_be_finite() {
    let a = [1.0f32; 4];
    let (mut out, mut df, mut dalpha) = ([0.0f32; 4], [0.0f32; 4], 0.0f32);
    for alpha in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_invalid(scaled_residual_add(alpha, &a, &a, &mut out), "scaled");
        assert_invalid(
            scaled_residual_add_backward(alpha, &a, &mut out, &mut df),
            "scaled backward",
        );
        assert_invalid(gated_residual_add(&a, alpha, &a, &mut out), "gated");
        assert_invalid(
            gated_residual_add_backward(&a, &a, alpha, &mut out, &mut df, &mut dalpha),
            "gated backward",
        );
    }
    assert_eq!(out, [0.0; 4], "out touched on error");
}
