//! BatchNorm kernels against the naive f64 reference, PyTorch fixtures, themselves (determinism)
//! and bad input.

mod common;

use common::{assert_close, Fixture};
use resnorm::gradcheck::batch_norm::{
    batch_norm_backward_reference, batch_norm_eval_reference, batch_norm_stats_reference,
    batch_norm_train_reference, checks,
};
use resnorm::kernels::batch_norm::{
    batch_norm_backward, batch_norm_forward_eval, batch_norm_forward_train, Activation,
    BatchNormGrads, BatchNormParams, BatchNormShape, RunningStats, SavedStats, SavedStatsMut,
};
use resnorm::rng::Rng;
use resnorm::Error;

const EPS: f32 = 1e-5;
const MOMENTUM: f32 = 0.1;

fn shape(batch: usize, channels: usize, spatial: usize) -> BatchNormShape {
    BatchNormShape {
        batch,
        channels,
        spatial,
    }
}

fn normal(rng: &mut Rng, len: usize, mean: f32, std: f32) -> Vec<f32> {
    let mut v = vec![0.0; len];
    rng.fill_normal(&mut v, mean, std);
    v
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

/// Everything one training step reads and writes.
struct Step {
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    dy: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    out: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    shift: Vec<f32>,
    dx: Vec<f32>,
    dweight: Vec<f32>,
    dbias: Vec<f32>,
}

impl Step {
    fn random(s: BatchNormShape, seed: u64, x_mean: f32, x_std: f32) -> Step {
        let mut rng = Rng::new(seed);
        let (len, c) = (s.batch * s.channels * s.spatial, s.channels);
        Step {
            x: normal(&mut rng, len, x_mean, x_std),
            weight: normal(&mut rng, c, 1.0, 0.5),
            bias: normal(&mut rng, c, 0.0, 0.5),
            dy: normal(&mut rng, len, 0.0, 1.0),
            running_mean: normal(&mut rng, c, 0.0, 1.0),
            running_var: normal(&mut rng, c, 0.0, 1.0)
                .iter()
                .map(|v| v.abs() + 0.5)
                .collect(),
            out: vec![0.0; len],
            mean: vec![0.0; c],
            rstd: vec![0.0; c],
            shift: vec![0.0; c],
            dx: vec![f32::NAN; len],
            dweight: normal(&mut rng, c, 0.0, 1.0),
            dbias: normal(&mut rng, c, 0.0, 1.0),
        }
    }

    fn forward(&mut self, s: BatchNormShape) {
        let params = BatchNormParams {
            weight: &self.weight,
            bias: &self.bias,
            eps: EPS,
        };
        let running = RunningStats {
            mean: &mut self.running_mean,
            var: &mut self.running_var,
            momentum: MOMENTUM,
        };
        let saved = SavedStatsMut {
            mean: &mut self.mean,
            rstd: &mut self.rstd,
            shift: &mut self.shift,
        };
        let identity = Activation::Identity;
        batch_norm_forward_train(&self.x, s, params, running, identity, &mut self.out, saved)
            .unwrap();
    }

    fn backward(&mut self, s: BatchNormShape) {
        let saved = SavedStats {
            mean: &self.mean,
            rstd: &self.rstd,
            shift: &self.shift,
        };
        let grads = BatchNormGrads {
            dweight: &mut self.dweight,
            dbias: &mut self.dbias,
        };
        batch_norm_backward(
            &self.dy,
            &self.x,
            s,
            &self.weight,
            saved,
            &mut self.dx,
            grads,
        )
        .unwrap();
    }
}

/// N, C, S: odd sizes, C = 1, N = 1 with S > 1, the 2-D (N, C) case, and more channels than
/// the kernels hold per group (1024).
const SHAPES: [(usize, usize, usize); 8] = [
    (2, 3, 7),
    (1, 1, 5),
    (1, 4, 9),
    (4, 1, 1),
    (5, 3, 1),
    (3, 2, 33),
    (6, 17, 1),
    (2, 1030, 2),
];

/// Checks forward (output, saved statistics, running statistics) and backward (dx, and the
/// parameter gradients *added* to their previous values) against the f64 reference.
fn check_against_reference(s: BatchNormShape, seed: u64, x_mean: f32, x_std: f32) {
    let mut step = Step::random(s, seed, x_mean, x_std);
    let before = (
        step.running_mean.clone(),
        step.running_var.clone(),
        step.dweight.clone(),
        step.dbias.clone(),
    );
    step.forward(s);
    step.backward(s);
    let what = format!("{s:?} x ~ N({x_mean}, {x_std}²)");
    let (x, w, b, dy) = (
        to_f64(&step.x),
        to_f64(&step.weight),
        to_f64(&step.bias),
        to_f64(&step.dy),
    );
    let (mean, var) = batch_norm_stats_reference(&x, s);
    let out = batch_norm_train_reference(&x, s, &w, &b, EPS as f64);
    assert_close(&format!("{what} out"), &step.out, &to_f32(&out), 1e-6, 1e-6);
    assert_close(
        &format!("{what} mean"),
        &step.mean,
        &to_f32(&mean),
        1.2e-7,
        1e-7 * x_std,
    );
    let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + EPS as f64).sqrt()).collect();
    assert_close(
        &format!("{what} rstd"),
        &step.rstd,
        &to_f32(&rstd),
        2e-6,
        0.0,
    );

    let count = s.per_channel() as f64;
    let momentum = MOMENTUM as f64;
    let blend = |old: &[f32], new: &[f64], factor: f64| -> Vec<f32> {
        old.iter()
            .zip(new)
            .map(|(&o, &n)| ((1.0 - momentum) * o as f64 + momentum * n * factor) as f32)
            .collect()
    };
    let unbiased = count / (count - 1.0);
    let running_mean = blend(&before.0, &mean, 1.0);
    let running_var = blend(&before.1, &var, unbiased);
    assert_close(
        &format!("{what} running mean"),
        &step.running_mean,
        &running_mean,
        3e-7,
        1e-7,
    );
    assert_close(
        &format!("{what} running var"),
        &step.running_var,
        &running_var,
        2e-6,
        0.0,
    );

    let dx = batch_norm_backward_reference(&dy, &x, s, &w, EPS as f64);
    let rstd_max = rstd.iter().fold(0.0f64, |m, &r| m.max(r)) as f32;
    let dx_atol = 1e-6 * rstd_max * w.iter().fold(1.0f64, |m, &v| m.max(v.abs())) as f32;
    assert_close(&format!("{what} dx"), &step.dx, &to_f32(&dx), 1e-5, dx_atol);
    let mut dweight: Vec<f64> = to_f64(&before.2);
    let mut dbias: Vec<f64> = to_f64(&before.3);
    for (i, (&g, &x)) in dy.iter().zip(&x).enumerate() {
        let c = (i / s.spatial) % s.channels;
        dweight[c] += g * (x - mean[c]) * rstd[c];
        dbias[c] += g;
    }
    let grad_atol = 1e-5 * count.sqrt() as f32;
    assert_close(
        &format!("{what} dweight"),
        &step.dweight,
        &to_f32(&dweight),
        1e-5,
        grad_atol,
    );
    assert_close(
        &format!("{what} dbias"),
        &step.dbias,
        &to_f32(&dbias),
        1e-5,
        grad_atol,
    );
}

#[test]
fn training_forward_and_backward_match_the_f64_reference() {
    for (i, &(n, c, hw)) in SHAPES.iter().enumerate() {
        check_against_reference(shape(n, c, hw), 10 + i as u64, 0.5, 2.0);
    }
}

/// Inputs far from zero relative to their spread: the corrected two-pass statistics keep the
/// output at f32 precision (`x - mean` is exact in f32 there), where `E[x²] - E[x]²` or
/// `x·scale + shift` would lose every digit.
#[test]
fn large_offsets_keep_full_precision() {
    for (i, &(n, c, hw)) in SHAPES.iter().enumerate() {
        check_against_reference(shape(n, c, hw), 30 + i as u64, 1e4, 1e-2);
    }
}

#[test]
fn eval_forward_matches_the_f64_reference() {
    for (i, &(n, c, hw)) in SHAPES.iter().enumerate() {
        let s = shape(n, c, hw);
        let mut step = Step::random(s, 50 + i as u64, 0.5, 2.0);
        let params = BatchNormParams {
            weight: &step.weight,
            bias: &step.bias,
            eps: EPS,
        };
        batch_norm_forward_eval(
            &step.x,
            s,
            params,
            &step.running_mean,
            &step.running_var,
            Activation::Identity,
            &mut step.out,
        )
        .unwrap();
        let expected = batch_norm_eval_reference(
            &to_f64(&step.x),
            s,
            &to_f64(&step.weight),
            &to_f64(&step.bias),
            &to_f64(&step.running_mean),
            &to_f64(&step.running_var),
            EPS as f64,
        );
        assert_close(
            &format!("{s:?} eval out"),
            &step.out,
            &to_f32(&expected),
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn eval_accepts_a_single_value_per_channel() {
    let s = shape(1, 2, 1);
    let mut out = [0.0; 2];
    let params = BatchNormParams {
        weight: &[1.0, 2.0],
        bias: &[0.0, 1.0],
        eps: EPS,
    };
    let (mean, var) = ([1.0, 2.0], [4.0, 0.0]);
    let identity = Activation::Identity;
    batch_norm_forward_eval(&[3.0, 4.0], s, params, &mean, &var, identity, &mut out).unwrap();
    let expected = [2.0 / (4.0 + EPS).sqrt(), 1.0 + 2.0 * 2.0 / EPS.sqrt()];
    assert_close("eval N=1", &out, &expected, 1e-6, 0.0);
}

fn fixture_step(fx: &Fixture, s: BatchNormShape, suffix: &str) -> Step {
    let mut step = Step::random(s, 0, 0.0, 1.0);
    step.x = fx.get(&format!("x{suffix}")).data.clone();
    step.dy = fx.get(&format!("dy{suffix}")).data.clone();
    step.weight = fx.get("weight").data.clone();
    step.bias = fx.get("bias").data.clone();
    step.dweight.fill(0.0);
    step.dbias.fill(0.0);
    step
}

fn assert_step_matches(fx: &Fixture, step: &Step, suffix: &str) {
    let name = |key: &str| format!("{}/{key}{suffix}", fx.name);
    for (key, actual) in [
        ("y", &step.out),
        ("dx", &step.dx),
        ("dweight", &step.dweight),
        ("dbias", &step.dbias),
        ("running_mean", &step.running_mean),
        ("running_var", &step.running_var),
    ] {
        let expected = &fx.get(&format!("{key}{suffix}")).data;
        assert_close(&name(key), actual, expected, 1e-5, 1e-5);
    }
}

#[test]
fn batch_norm2d_training_matches_pytorch_over_two_steps() {
    let fx = Fixture::load("batch_norm2d_train");
    assert_eq!(
        (fx.meta_f32("eps"), fx.meta_f32("momentum")),
        (EPS, MOMENTUM)
    );
    let dims = &fx.get("x1").shape;
    let s = shape(dims[0], dims[1], dims[2] * dims[3]);
    let mut running_mean = fx.get("running_mean0").data.clone();
    let mut running_var = fx.get("running_var0").data.clone();
    for suffix in ["1", "2"] {
        let mut step = fixture_step(&fx, s, suffix);
        step.running_mean = running_mean;
        step.running_var = running_var;
        step.forward(s);
        step.backward(s);
        assert_step_matches(&fx, &step, suffix);
        (running_mean, running_var) = (step.running_mean, step.running_var);
    }
}

#[test]
fn batch_norm1d_training_matches_pytorch() {
    let fx = Fixture::load("batch_norm1d_train");
    let dims = &fx.get("x1").shape;
    let s = shape(dims[0], dims[1], 1);
    let mut step = fixture_step(&fx, s, "1");
    step.running_mean = fx.get("running_mean0").data.clone();
    step.running_var = fx.get("running_var0").data.clone();
    step.forward(s);
    step.backward(s);
    assert_step_matches(&fx, &step, "1");
}

#[test]
fn batch_norm2d_eval_matches_pytorch() {
    let fx = Fixture::load("batch_norm2d_eval");
    let dims = &fx.get("x").shape;
    let s = shape(dims[0], dims[1], dims[2] * dims[3]);
    let mut out = vec![0.0; fx.get("x").data.len()];
    let params = BatchNormParams {
        weight: &fx.get("weight").data,
        bias: &fx.get("bias").data,
        eps: fx.meta_f32("eps"),
    };
    batch_norm_forward_eval(
        &fx.get("x").data,
        s,
        params,
        &fx.get("running_mean").data,
        &fx.get("running_var").data,
        Activation::Identity,
        &mut out,
    )
    .unwrap();
    assert_close("batch_norm2d_eval/y", &out, &fx.get("y").data, 1e-5, 1e-5);
}

#[test]
fn results_are_bitwise_reproducible() {
    for &(n, c, hw) in &[(3, 5, 1000), (700, 9, 1), (2, 1030, 3)] {
        let s = shape(n, c, hw);
        let run = || {
            let mut step = Step::random(s, 99, 3.0, 2.0);
            step.forward(s);
            step.backward(s);
            step
        };
        let (a, b) = (run(), run());
        for (what, x, y) in [
            ("out", &a.out, &b.out),
            ("mean", &a.mean, &b.mean),
            ("rstd", &a.rstd, &b.rstd),
            ("running var", &a.running_var, &b.running_var),
            ("dx", &a.dx, &b.dx),
            ("dweight", &a.dweight, &b.dweight),
            ("dbias", &a.dbias, &b.dbias),
        ] {
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(x), bits(y), "{s:?} {what} differs between runs");
        }
    }
}

#[test]
fn gradient_checks_pass() {
    let results = checks();
    assert_eq!(
        results.len(),
        6,
        "dx, dweight, dbias without and with a ReLU"
    );
    for r in results {
        println!("{r:?}");
        assert!(r.passed, "{r:?}");
    }
}

/// A valid (2, 3, 4) input, whose buffer lengths each validation test breaks one at a time.
const VALID: BatchNormShape = BatchNormShape {
    batch: 2,
    channels: 3,
    spatial: 4,
};

fn assert_shape_error(result: resnorm::Result<()>, what: &str) {
    match result {
        Err(Error::Shape { .. }) => {}
        other => panic!("{what}: expected a shape error, got {other:?}"),
    }
}

fn assert_invalid(result: resnorm::Result<()>, what: &str) {
    match result {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("{what}: expected an invalid-argument error, got {other:?}"),
    }
}

/// A training forward on buffers of the given lengths (x, out, weight, bias, running mean,
/// running var, saved mean, saved rstd, saved shift); checks that nothing was written on error.
fn train_with(s: BatchNormShape, lens: [usize; 9], eps: f32, momentum: f32) -> resnorm::Result<()> {
    let (x, mut out) = (vec![1.0; lens[0]], vec![0.0; lens[1]]);
    let (weight, bias) = (vec![1.0; lens[2]], vec![0.0; lens[3]]);
    let (mut run_mean, mut run_var) = (vec![0.0; lens[4]], vec![1.0; lens[5]]);
    let (mut mean, mut rstd, mut shift) =
        (vec![0.0; lens[6]], vec![0.0; lens[7]], vec![0.0; lens[8]]);
    let params = BatchNormParams {
        weight: &weight,
        bias: &bias,
        eps,
    };
    let running = RunningStats {
        mean: &mut run_mean,
        var: &mut run_var,
        momentum,
    };
    let saved = SavedStatsMut {
        mean: &mut mean,
        rstd: &mut rstd,
        shift: &mut shift,
    };
    let identity = Activation::Identity;
    let result = batch_norm_forward_train(&x, s, params, running, identity, &mut out, saved);
    if result.is_err() {
        assert!(
            run_mean.iter().chain(&out).all(|&v| v == 0.0),
            "written on error"
        );
    }
    result
}

#[test]
fn training_forward_rejects_bad_input() {
    let ok = [24, 24, 3, 3, 3, 3, 3, 3, 3];
    assert!(train_with(VALID, ok, EPS, MOMENTUM).is_ok());
    for i in 0..ok.len() {
        let mut lens = ok;
        lens[i] -= 1;
        assert_shape_error(
            train_with(VALID, lens, EPS, MOMENTUM),
            &format!("length {i}"),
        );
    }
    for eps in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
        assert_invalid(train_with(VALID, ok, eps, MOMENTUM), &format!("eps {eps}"));
    }
    for momentum in [-0.1, 1.5, f32::NAN] {
        let what = format!("momentum {momentum}");
        assert_invalid(train_with(VALID, ok, EPS, momentum), &what);
    }
    // PyTorch: "Expected more than 1 value per channel when training".
    assert_invalid(
        train_with(shape(1, 3, 1), [3; 9], EPS, MOMENTUM),
        "one value per channel",
    );
    for zero in [shape(0, 3, 4), shape(2, 0, 4), shape(2, 3, 0)] {
        let lens = [0, 0, 3, 3, 3, 3, 3, 3, 3];
        assert_invalid(train_with(zero, lens, EPS, MOMENTUM), &format!("{zero:?}"));
    }
    let overflowing = shape(usize::MAX, 2, 2);
    assert_invalid(
        train_with(overflowing, ok, EPS, MOMENTUM),
        "overflowing shape",
    );
}

/// An eval forward on buffers of the given lengths (x, out, weight, bias, running mean,
/// running var), with `var_value` in every running variance.
fn eval_with(s: BatchNormShape, lens: [usize; 6], eps: f32, var_value: f32) -> resnorm::Result<()> {
    let (x, mut out) = (vec![1.0; lens[0]], vec![0.0; lens[1]]);
    let (weight, bias) = (vec![1.0; lens[2]], vec![0.0; lens[3]]);
    let (mean, var) = (vec![0.0; lens[4]], vec![var_value; lens[5]]);
    let params = BatchNormParams {
        weight: &weight,
        bias: &bias,
        eps,
    };
    batch_norm_forward_eval(&x, s, params, &mean, &var, Activation::Identity, &mut out)
}

#[test]
fn eval_forward_rejects_bad_input() {
    let ok = [24, 24, 3, 3, 3, 3];
    assert!(eval_with(VALID, ok, EPS, 1.0).is_ok());
    for i in 0..ok.len() {
        let mut lens = ok;
        lens[i] += 1;
        assert_shape_error(eval_with(VALID, lens, EPS, 1.0), &format!("length {i}"));
    }
    for eps in [0.0, f32::NAN] {
        assert_invalid(eval_with(VALID, ok, eps, 1.0), &format!("eps {eps}"));
    }
    for var in [-1.0, f32::NAN, f32::INFINITY] {
        assert_invalid(
            eval_with(VALID, ok, EPS, var),
            &format!("running var {var}"),
        );
    }
    assert_invalid(eval_with(shape(2, 0, 4), [0; 6], EPS, 1.0), "zero channels");
}

#[test]
fn backward_rejects_bad_input() {
    // Lengths of dy, x, dx, weight, saved mean, saved rstd, saved shift, dweight, dbias.
    let run = |s: BatchNormShape, lens: [usize; 9]| {
        let (dy, x, mut dx) = (vec![1.0; lens[0]], vec![1.0; lens[1]], vec![0.0; lens[2]]);
        let (weight, mean, rstd) = (vec![1.0; lens[3]], vec![0.0; lens[4]], vec![1.0; lens[5]]);
        let shift = vec![0.0; lens[6]];
        let (mut dweight, mut dbias) = (vec![0.0; lens[7]], vec![0.0; lens[8]]);
        let saved = SavedStats {
            mean: &mean,
            rstd: &rstd,
            shift: &shift,
        };
        let grads = BatchNormGrads {
            dweight: &mut dweight,
            dbias: &mut dbias,
        };
        let result = batch_norm_backward(&dy, &x, s, &weight, saved, &mut dx, grads);
        if result.is_err() {
            assert!(
                dweight.iter().chain(&dbias).chain(&dx).all(|&v| v == 0.0),
                "written on error"
            );
        }
        result
    };
    let ok = [24, 24, 24, 3, 3, 3, 3, 3, 3];
    assert!(run(VALID, ok).is_ok());
    for i in 0..ok.len() {
        let mut lens = ok;
        lens[i] += 1;
        assert_shape_error(run(VALID, lens), &format!("length {i}"));
    }
    assert_invalid(run(shape(1, 3, 1), [3; 9]), "one value per channel");
    assert_invalid(
        run(shape(2, 3, 0), [0, 0, 0, 3, 3, 3, 3, 3, 3]),
        "zero spatial",
    );
}
