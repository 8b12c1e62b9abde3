//! Optimizers, schedules and clipping against PyTorch (fixture `optim`, written by
//! tools/fixtures/optim.py) and against hand-computed values.

mod common;

use common::{assert_close, Fixture};
use resnorm::nn::{Param, ParamKind};
use resnorm::optim::{
    clip_grad_norm, grad_norm, AdamW, AdamWConfig, DecayScope, Optimizer, OptimizerState, Schedule,
    Sgd, SgdConfig, StepDecay, WarmupCosine,
};
use resnorm::{Error, Tensor};

/// Values after each step: |diff| <= 1e-6 · |expected| + 1e-7. Values are O(1) and
/// PyTorch's CPU kernels may fuse multiply-adds that we round separately, so a few ulps
/// per step are expected and allowed.
const VALUE_RTOL: f32 = 1e-6;
const VALUE_ATOL: f32 = 1e-7;
/// Optimizer buffers: the same relative bound; `v` holds squares down to ~1e-5, so the
/// absolute floor is smaller.
const STATE_RTOL: f32 = 1e-6;
const STATE_ATOL: f32 = 1e-9;

/// The fixture's parameters at their initial values, in the fixture's order.
fn initial_params(fx: &Fixture) -> Vec<Param> {
    fx.metadata["params"]
        .split(',')
        .map(|entry| {
            let (name, kind) = entry.split_once(':').unwrap();
            let kind = match kind {
                "weight" => ParamKind::Weight,
                "bias" => ParamKind::Bias,
                "norm" => ParamKind::Norm,
                "embedding" => ParamKind::Embedding,
                other => panic!("unknown kind {other}"),
            };
            let init = fx.get(&format!("init.{name}"));
            let mut p = Param::zeros(name, init.shape.clone(), kind);
            p.value.copy_from_slice(&init.data);
            p
        })
        .collect()
}

/// Row `step` of a fixture tensor stacked over steps.
fn at_step<'a>(fx: &'a Fixture, key: &str, step: usize, len: usize) -> &'a [f32] {
    &fx.get(key).data[step * len..(step + 1) * len]
}

fn adamw_config(fx: &Fixture, decay: DecayScope) -> AdamWConfig {
    AdamWConfig {
        beta1: fx.meta_f32("beta1"),
        beta2: fx.meta_f32("beta2"),
        eps: fx.meta_f32("eps"),
        weight_decay: fx.meta_f32("adamw_weight_decay"),
        decay,
    }
}

fn sgd_config(fx: &Fixture, momentum: bool) -> SgdConfig {
    SgdConfig {
        momentum: if momentum {
            fx.meta_f32("sgd_momentum")
        } else {
            0.0
        },
        weight_decay: fx.meta_f32("sgd_weight_decay"),
        decay: DecayScope::WeightsOnly,
    }
}

/// Steps `optimizer` through the fixture's gradients for steps `range`, comparing values and
/// buffers (`buffers`, named as in resnorm's state) with PyTorch's run `prefix` after each.
fn run_and_compare(
    fx: &Fixture,
    optimizer: &mut dyn Optimizer,
    params: &mut [Param],
    prefix: &str,
    buffers: &[&str],
    range: std::ops::Range<usize>,
) {
    let lrs = &fx.get("lrs").data;
    for step in range {
        for p in params.iter_mut() {
            let len = p.len();
            p.grad
                .copy_from_slice(at_step(fx, &format!("grads.{}", p.name), step, len));
        }
        let mut refs: Vec<&mut Param> = params.iter_mut().collect();
        optimizer.step(&mut refs, lrs[step]).unwrap();
        let state = optimizer.state();
        assert_eq!(state.step, step as u64 + 1);
        for p in params.iter() {
            let what = format!("{prefix} step {step} {}", p.name);
            let expected = at_step(fx, &format!("{prefix}.value.{}", p.name), step, p.len());
            assert_close(&what, &p.value, expected, VALUE_RTOL, VALUE_ATOL);
            for buffer in buffers {
                let key = format!("{buffer}.{}", p.name);
                let expected = at_step(fx, &format!("{prefix}.{key}"), step, p.len());
                let actual = state.tensors[&key].data();
                assert_close(
                    &format!("{what} {buffer}"),
                    actual,
                    expected,
                    STATE_RTOL,
                    STATE_ATOL,
                );
            }
        }
    }
}

fn steps(fx: &Fixture) -> usize {
    fx.metadata["steps"].parse().unwrap()
}

#[test]
fn adamw_matches_pytorch_decaying_weights_only() {
    let fx = Fixture::load("optim");
    let mut params = initial_params(&fx);
    let mut adamw = AdamW::new(adamw_config(&fx, DecayScope::WeightsOnly)).unwrap();
    run_and_compare(
        &fx,
        &mut adamw,
        &mut params,
        "adamw",
        &["m", "v"],
        0..steps(&fx),
    );
}

#[test]
fn adamw_matches_pytorch_decaying_everything() {
    let fx = Fixture::load("optim");
    let mut params = initial_params(&fx);
    let mut adamw = AdamW::new(adamw_config(&fx, DecayScope::All)).unwrap();
    run_and_compare(
        &fx,
        &mut adamw,
        &mut params,
        "adamw_all",
        &["m", "v"],
        0..steps(&fx),
    );
}

#[test]
fn sgd_with_momentum_matches_pytorch() {
    let fx = Fixture::load("optim");
    let mut params = initial_params(&fx);
    let mut sgd = Sgd::new(sgd_config(&fx, true)).unwrap();
    run_and_compare(
        &fx,
        &mut sgd,
        &mut params,
        "sgd",
        &["momentum"],
        0..steps(&fx),
    );
}

#[test]
fn plain_sgd_matches_pytorch_and_keeps_no_state() {
    let fx = Fixture::load("optim");
    let mut params = initial_params(&fx);
    let mut sgd = Sgd::new(sgd_config(&fx, false)).unwrap();
    run_and_compare(&fx, &mut sgd, &mut params, "sgd_plain", &[], 0..steps(&fx));
    let state = sgd.state();
    assert!(state.params.is_empty() && state.tensors.is_empty());
}

/// Stops after two steps, saves the state to a file, resumes with a fresh optimizer and
/// must land on PyTorch's uninterrupted trajectory.
fn resume_through_file(
    fx: &Fixture,
    mut first: Box<dyn Optimizer>,
    mut second: Box<dyn Optimizer>,
    prefix: &str,
    buffers: &[&str],
) {
    let mut params = initial_params(fx);
    run_and_compare(fx, first.as_mut(), &mut params, prefix, buffers, 0..2);
    let path = scratch(&format!("resume-{prefix}.safetensors"));
    first.state().save(&path).unwrap();
    let loaded = OptimizerState::load(&path).unwrap();
    assert_eq!(
        loaded,
        first.state(),
        "state changed in the file round trip"
    );
    second.load_state(loaded).unwrap();
    run_and_compare(
        fx,
        second.as_mut(),
        &mut params,
        prefix,
        buffers,
        2..steps(fx),
    );
}

#[test]
fn adamw_resumes_from_saved_state() {
    let fx = Fixture::load("optim");
    let config = adamw_config(&fx, DecayScope::WeightsOnly);
    let make = || Box::new(AdamW::new(config).unwrap());
    resume_through_file(&fx, make(), make(), "adamw", &["m", "v"]);
}

#[test]
fn sgd_resumes_from_saved_state() {
    let fx = Fixture::load("optim");
    let config = sgd_config(&fx, true);
    let make = || Box::new(Sgd::new(config).unwrap());
    resume_through_file(&fx, make(), make(), "sgd", &["momentum"]);
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("optim-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn two_params() -> (Param, Param) {
    let mut w = Param::filled("w", vec![2, 2], ParamKind::Weight, 1.0);
    let mut b = Param::filled("b", vec![2], ParamKind::Bias, 1.0);
    w.grad.fill(0.5);
    b.grad.fill(-0.5);
    (w, b)
}

fn is_invalid(err: &Error) -> bool {
    matches!(err, Error::InvalidArgument { .. })
}

#[test]
fn optimizers_refuse_parameters_in_another_order_or_renamed_or_reshaped() {
    let optimizers: Vec<Box<dyn Optimizer>> = vec![
        Box::new(AdamW::new(AdamWConfig::default()).unwrap()),
        Box::new(
            Sgd::new(SgdConfig {
                momentum: 0.9,
                ..SgdConfig::default()
            })
            .unwrap(),
        ),
    ];
    for mut opt in optimizers {
        let (mut w, mut b) = two_params();
        opt.step(&mut [&mut w, &mut b], 0.1).unwrap();
        let (w_before, b_before, state_before) = (w.clone(), b.clone(), opt.state());

        let err = opt.step(&mut [&mut b, &mut w], 0.1).unwrap_err();
        assert!(
            is_invalid(&err) && err.to_string().contains("parameter 0 is `b`"),
            "{err}"
        );
        let err = opt.step(&mut [&mut w], 0.1).unwrap_err();
        assert!(err.to_string().contains("1 parameters given"), "{err}");

        let mut renamed = b.clone();
        renamed.name = "c".into();
        let err = opt.step(&mut [&mut w, &mut renamed], 0.1).unwrap_err();
        assert!(err.to_string().contains("`c`"), "{err}");

        let mut reshaped = Param::zeros("b", vec![1, 2], ParamKind::Bias);
        let err = opt.step(&mut [&mut w, &mut reshaped], 0.1).unwrap_err();
        assert!(err.to_string().contains("[1, 2]"), "{err}");

        let mut short_grad = b.clone();
        short_grad.grad = short_grad.grad[1..].into();
        let err = opt.step(&mut [&mut w, &mut short_grad], 0.1).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");

        for lr in [-1.0, f32::NAN, f32::INFINITY] {
            assert!(is_invalid(
                &opt.step(&mut [&mut w, &mut b], lr).unwrap_err()
            ));
        }
        assert_eq!(
            (w, b),
            (w_before, b_before),
            "a refused step changed parameters"
        );
        assert_eq!(
            opt.state(),
            state_before,
            "a refused step changed the state"
        );
    }
}

#[test]
fn plain_sgd_refuses_inconsistent_parameters() {
    let mut sgd = Sgd::new(SgdConfig::default()).unwrap();
    let (mut w, _) = two_params();
    w.value = w.value[1..].into();
    let err = sgd.step(&mut [&mut w], 0.1).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert_eq!(sgd.steps(), 0);
}

#[test]
fn invalid_hyperparameters_are_refused() {
    let adamw = |c: AdamWConfig| AdamW::new(c).map(|_| ()).unwrap_err();
    let base = AdamWConfig::default();
    for err in [
        adamw(AdamWConfig { beta1: 1.0, ..base }),
        adamw(AdamWConfig {
            beta2: -0.1,
            ..base
        }),
        adamw(AdamWConfig { eps: 0.0, ..base }),
        adamw(AdamWConfig {
            eps: f32::NAN,
            ..base
        }),
        adamw(AdamWConfig {
            weight_decay: -1.0,
            ..base
        }),
    ] {
        assert!(is_invalid(&err), "{err}");
    }
    let sgd = |c: SgdConfig| Sgd::new(c).map(|_| ()).unwrap_err();
    for err in [
        sgd(SgdConfig {
            momentum: 1.0,
            ..SgdConfig::default()
        }),
        sgd(SgdConfig {
            weight_decay: f32::INFINITY,
            ..SgdConfig::default()
        }),
    ] {
        assert!(is_invalid(&err), "{err}");
    }
}

#[test]
fn load_state_refuses_foreign_or_incomplete_state() {
    let mut adamw = AdamW::new(AdamWConfig::default()).unwrap();
    let (mut w, mut b) = two_params();
    adamw.step(&mut [&mut w, &mut b], 0.1).unwrap();
    let good = adamw.state();
    let expect_err = |state: OptimizerState, needle: &str| {
        let mut fresh = AdamW::new(AdamWConfig::default()).unwrap();
        let err = fresh.load_state(state).unwrap_err();
        assert!(
            is_invalid(&err) && err.to_string().contains(needle),
            "{err}"
        );
        assert_eq!(fresh.steps(), 0);
    };

    let mut foreign = good.clone();
    foreign.optimizer = "sgd".into();
    expect_err(foreign, "optimizer `sgd`");

    let mut missing = good.clone();
    missing.tensors.remove("v.b");
    expect_err(missing, "missing state tensor `v.b`");

    let mut extra = good.clone();
    extra
        .tensors
        .insert("m.ghost".into(), Tensor::zeros(vec![1]));
    expect_err(extra, "unexpected state tensor `m.ghost`");

    let mut mismatched = good.clone();
    mismatched
        .tensors
        .insert("v.w".into(), Tensor::zeros(vec![4]));
    expect_err(mismatched, "`v.w` has shape [4]");

    let mut sgd_state = good;
    sgd_state.optimizer = "sgd".into();
    let mut plain = Sgd::new(SgdConfig::default()).unwrap();
    let err = plain.load_state(sgd_state).unwrap_err();
    assert!(is_invalid(&err), "{err}");
}

#[test]
fn loaded_state_is_checked_against_parameters_at_the_next_step() {
    let mut adamw = AdamW::new(AdamWConfig::default()).unwrap();
    let (mut w, mut b) = two_params();
    adamw.step(&mut [&mut w, &mut b], 0.1).unwrap();
    let mut resumed = AdamW::new(AdamWConfig::default()).unwrap();
    resumed.load_state(adamw.state()).unwrap();
    assert_eq!(resumed.steps(), 1);
    let err = resumed.step(&mut [&mut b, &mut w], 0.1).unwrap_err();
    assert!(err.to_string().contains("parameter 0 is `b`"), "{err}");
    resumed.step(&mut [&mut w, &mut b], 0.1).unwrap();
}

#[test]
fn optimizer_state_files_without_metadata_are_format_errors() {
    let path = scratch("not-optimizer-state.safetensors");
    let w = Param::zeros("w", vec![2], ParamKind::Weight);
    let mut metadata = std::collections::BTreeMap::new();
    resnorm::checkpoint::save_params(&path, &[&w], &metadata).unwrap();
    let err = OptimizerState::load(&path).unwrap_err();
    assert!(
        matches!(err, Error::Format { .. }) && err.to_string().contains("`optimizer`"),
        "{err}"
    );

    metadata.insert("optimizer".into(), "adamw".into());
    metadata.insert("step".into(), "three".into());
    metadata.insert("params".into(), "[]".into());
    resnorm::checkpoint::save_params(&path, &[&w], &metadata).unwrap();
    let err = OptimizerState::load(&path).unwrap_err();
    assert!(err.to_string().contains("`three`"), "{err}");

    metadata.insert("step".into(), "3".into());
    metadata.insert("params".into(), "w".into());
    resnorm::checkpoint::save_params(&path, &[&w], &metadata).unwrap();
    let err = OptimizerState::load(&path).unwrap_err();
    assert!(err.to_string().contains("`params`"), "{err}");
}

#[test]
fn warmup_cosine_at_key_points() {
    let s = WarmupCosine::new(6e-4, 6e-5, 10, 110).unwrap();
    assert!((s.lr_at(0) - 6e-5).abs() < 1e-11); // max_lr · 1 / 10
    assert!((s.lr_at(4) - 3e-4).abs() < 1e-10);
    assert_eq!(s.lr_at(9), 6e-4);
    assert_eq!(s.lr_at(10), 6e-4); // cosine starts at max_lr
    let halfway = (6e-4 + 6e-5) / 2.0;
    assert!((s.lr_at(60) - halfway).abs() < 1e-10, "{}", s.lr_at(60));
    let quarter = 6e-5 + 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos()) * (6e-4 - 6e-5);
    assert!((s.lr_at(35) as f64 - quarter).abs() < 1e-10);
    let last = 6e-5 + 0.5 * (1.0 + (0.99 * std::f64::consts::PI).cos()) * (6e-4 - 6e-5);
    assert!((s.lr_at(109) as f64 - last).abs() < 1e-11); // 6e-5 + 1.3e-7
    assert_eq!(s.lr_at(110), 6e-5);
    assert_eq!(s.lr_at(u64::MAX), 6e-5);
    let lrs: Vec<f32> = (10..=110).map(|t| s.lr_at(t)).collect();
    assert!(
        lrs.windows(2).all(|w| w[1] <= w[0]),
        "cosine part must not increase"
    );

    let no_warmup = WarmupCosine::new(1.0, 0.0, 0, 4).unwrap();
    assert_eq!(no_warmup.lr_at(0), 1.0);
    assert!((no_warmup.lr_at(2) - 0.5).abs() < 1e-7);
    let all_warmup = WarmupCosine::new(1.0, 0.5, 4, 4).unwrap();
    assert_eq!([all_warmup.lr_at(3), all_warmup.lr_at(4)], [1.0, 0.5]);
}

#[test]
fn step_decay_matches_pytorch_step_lr() {
    let fx = Fixture::load("optim");
    let every = fx.metadata["steplr_every"].parse().unwrap();
    let s = StepDecay::new(fx.meta_f32("steplr_lr"), fx.meta_f32("steplr_gamma"), every).unwrap();
    let actual: Vec<f32> = (0..10).map(|t| s.lr_at(t)).collect();
    assert_close("StepLR", &actual, &fx.get("steplr.lrs").data, 1e-6, 0.0);
    let schedule = Schedule::StepDecay(s);
    assert_eq!(schedule.lr_at(7), s.lr_at(7));
}

#[test]
fn invalid_schedules_are_refused() {
    for err in [
        WarmupCosine::new(f32::NAN, 0.0, 0, 1).unwrap_err(),
        WarmupCosine::new(-1.0, 0.0, 0, 1).unwrap_err(),
        WarmupCosine::new(1.0, 2.0, 0, 1).unwrap_err(),
        WarmupCosine::new(1.0, -0.1, 0, 1).unwrap_err(),
        WarmupCosine::new(1.0, 0.1, 5, 4).unwrap_err(),
        StepDecay::new(-1.0, 0.5, 1).unwrap_err(),
        StepDecay::new(1.0, 0.0, 1).unwrap_err(),
        StepDecay::new(1.0, 0.5, 0).unwrap_err(),
    ] {
        assert!(is_invalid(&err), "{err}");
    }
}

fn clip_params(fx: &Fixture, prefix: &str) -> Vec<Param> {
    let mut params = initial_params(fx);
    for p in &mut params {
        p.grad
            .copy_from_slice(&fx.get(&format!("{prefix}{}", p.name)).data);
    }
    params
}

/// The global norm, naively: every square in f64, one sum.
fn naive_norm(params: &[Param]) -> f64 {
    let squares: Vec<f64> = params
        .iter()
        .flat_map(|p| p.grad.iter().map(|&g| (g as f64).powi(2)))
        .collect();
    squares.iter().sum::<f64>().sqrt()
}

#[test]
fn clipping_matches_pytorch_and_the_naive_norm() {
    let fx = Fixture::load("optim");
    for case in ["clipped", "unclipped"] {
        let mut params = clip_params(&fx, "clip.grad.");
        let naive = naive_norm(&params);
        assert!((grad_norm(&params) as f64 - naive).abs() <= 1e-7 * naive);
        let max_norm = fx.get(&format!("clip.{case}.max_norm")).data[0];
        let mut refs: Vec<&mut Param> = params.iter_mut().collect();
        let norm = clip_grad_norm(&mut refs, max_norm).unwrap();
        assert_close(
            case,
            &[norm],
            &fx.get(&format!("clip.{case}.norm")).data,
            1e-6,
            0.0,
        );
        assert_eq!(norm, naive as f32);
        let original = clip_params(&fx, "clip.grad.");
        for (p, before) in params.iter().zip(&original) {
            let expected = &fx.get(&format!("clip.{case}.grad.{}", p.name)).data;
            assert_close(&format!("{case} {}", p.name), &p.grad, expected, 1e-6, 1e-9);
            if case == "unclipped" {
                assert_eq!(
                    p.grad, before.grad,
                    "a norm under the bound changes nothing"
                );
            }
        }
        if case == "clipped" {
            let clipped = naive_norm(&params);
            assert!((clipped - max_norm as f64).abs() < 1e-6, "{clipped}");
        }
    }
}

#[test]
fn non_finite_gradients_are_reported_and_left_alone() {
    for bad in [f32::INFINITY, f32::NAN] {
        let (mut w, mut b) = two_params();
        b.grad[1] = bad;
        let (w_before, b_before) = (w.grad.clone(), b.grad.clone());
        let norm = clip_grad_norm(&mut [&mut w, &mut b], 1.0).unwrap();
        assert!(!norm.is_finite());
        assert_eq!(w.grad, w_before);
        assert_eq!(b.grad[0], b_before[0]);
    }
    // Finite elements whose squares overflow f32 still give the right norm in f64.
    let mut big = Param::zeros("big", vec![2], ParamKind::Weight);
    big.grad = vec![3e30, 4e30].into();
    let norm = clip_grad_norm(&mut [&mut big], 1.0).unwrap();
    assert!((norm / 5e30 - 1.0).abs() < 1e-6);
    assert!((big.grad[0] - 0.6).abs() < 1e-6 && (big.grad[1] - 0.8).abs() < 1e-6);
}

#[test]
fn clipping_refuses_a_bad_bound() {
    let (mut w, _) = two_params();
    for max_norm in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let err = clip_grad_norm(&mut [&mut w], max_norm).unwrap_err();
        assert!(is_invalid(&err), "{err}");
    }
    assert_eq!(w.grad[..], [0.5; 4]);
}
