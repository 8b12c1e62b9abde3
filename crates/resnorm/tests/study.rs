//! The study at initialization: findings 1 (gradient gap without residuals), 2 (last-layer
//! gradient vs depth, Xiong et al. 2020) and 5 (residual-stream RMS) on the quick preset's
//! probes; the diagnostics' definitions; the per-run cache; bad input.

use resnorm::diagnostics::PendingDiagnostics;
use resnorm::kernels::NormKind;
use resnorm::models::gpt::{Gpt, GptConfig, Placement};
use resnorm::study::{
    evaluate, run_probe, run_study, run_train, Finding, ModelSpec, Plan, Preset, ProbeSpec,
    Progress, RunSpec, Status, StudyData, TrainSpec,
};
use resnorm::Error;

fn quick_data() -> StudyData {
    StudyData::built_in(1, 50_000).unwrap()
}

fn finding(findings: &[Finding], id: u8) -> &Finding {
    findings.iter().find(|f| f.id == id).unwrap()
}

#[test]
fn quick_preset_findings_at_initialization() {
    let plan = Plan::preset(Preset::Quick);
    let data = quick_data();
    let dir = std::env::temp_dir().join(format!("resnorm-study-test-{}", std::process::id()));
    let specs = plan.probe_specs();
    let results = run_study(&specs, &data, &dir, &mut |_| {}).unwrap();
    let findings = evaluate(&plan, &results, data.vocab());
    let f1 = finding(&findings, 1);
    assert_eq!(f1.checks[0].status, Status::Pass, "{:?}", f1.checks[0]);
    assert!(f1.checks[0].values["no_residual_ratio_deepest"] < 1e-2);
    assert_eq!(f1.checks[1].status, Status::NotRun); // needs training runs
    for id in [2, 5] {
        let f = finding(&findings, id);
        assert_eq!(f.status, Status::Pass, "{f:#?}");
    }
    let slopes: Vec<f64> = finding(&findings, 2)
        .checks
        .iter()
        .map(|c| c.values["slope"])
        .collect();
    assert!(
        (slopes[0] + 0.5).abs() < 0.25 && slopes[1].abs() < 0.15,
        "{slopes:?}"
    );

    // A second run reads every result from the cache.
    let mut cached = 0;
    let again = run_study(&specs, &data, &dir, &mut |p| {
        if matches!(p, Progress::Started { cached: true, .. }) {
            cached += 1;
        }
    })
    .unwrap();
    assert_eq!((cached, &again), (specs.len(), &results));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_cache_file_is_recomputed() {
    let data = quick_data();
    let dir = std::env::temp_dir().join(format!("resnorm-study-cache-{}", std::process::id()));
    let spec = RunSpec::Probe(ProbeSpec {
        model: tiny_model(Placement::PreLn),
        batch: 2,
        batches: 1,
    });
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{}.json", spec.key(data.fingerprint))),
        "{ not json",
    )
    .unwrap();
    let mut cached = false;
    let results = run_study(std::slice::from_ref(&spec), &data, &dir, &mut |p| {
        if let Progress::Started { cached: c, .. } = p {
            cached = c;
        }
    })
    .unwrap();
    assert!(!cached);
    assert_eq!(results.runs.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tiny_model(placement: Placement) -> ModelSpec {
    ModelSpec {
        placement,
        norm: NormKind::Layer,
        layers: 2,
        width: 16,
        heads: 2,
        context: 16,
        residual_scaling: true,
        seed: 3,
    }
}

#[test]
fn a_short_training_run_learns_and_collects_diagnostics() {
    let data = quick_data();
    let spec = TrainSpec {
        model: tiny_model(Placement::PreLn),
        batch: 4,
        steps: 30,
        lr: 1e-2,
        warmup: 5,
        clip: 1.0,
        diagnostics_every: 10,
        eval_windows: 8,
    };
    let run = run_train(&spec, &data, &mut |_| {}).unwrap();
    assert!(!run.diverged);
    assert_eq!(run.losses.len(), 30);
    assert!(
        run.final_train_loss < run.losses[0] - 0.3,
        "{} -> {}",
        run.losses[0],
        run.final_train_loss
    );
    assert!(run.val_loss.is_finite());
    let steps: Vec<u64> = run.diagnostics.iter().map(|d| d.step).collect();
    assert_eq!(steps, [0, 10, 20, 29]);
    let d = &run.diagnostics[1];
    assert_eq!(
        (d.units.len(), d.stream_rms.len(), d.stream_grad_norm.len()),
        (4, 5, 5)
    );
    // AdamW moves every weight by about lr per element: ratios of order lr·√n/‖w‖, all positive.
    assert!(d.units.iter().all(|u| u.update_ratio.unwrap() > 0.0));
}

#[test]
fn diagnostics_match_their_definitions() {
    let config = GptConfig {
        layers: 2,
        heads: 2,
        width: 8,
        context: 4,
        vocab: 7,
        placement: Placement::ReZero,
        ..GptConfig::default()
    };
    let mut model = Gpt::new(config, 5).unwrap();
    model.record_stream_stats(true);
    let loss = model
        .forward(&[1, 2, 3, 4], 1, Some(&[2, 3, 4, 5]))
        .unwrap()
        .unwrap();
    model.backward().unwrap();
    let pending = PendingDiagnostics::after_backward(&model, 7, loss, 0.5).unwrap();
    let mut total = 0.0f64;
    model.visit_params(&mut |p| total += p.grad.iter().map(|&g| g as f64 * g as f64).sum::<f64>());
    // Add 1 to the first element of every parameter.
    model.visit_params_mut(&mut |p| p.value[0] += 1.0);
    let d = pending.finish(&model).unwrap();
    assert_eq!((d.step, d.lr), (7, 0.5));
    assert!((d.grad_norm as f64 - total.sqrt()).abs() < 1e-5 * total.sqrt());
    let c_fc = d.units[1]
        .params
        .iter()
        .find(|p| p.name == "h.0.mlp.c_fc.weight")
        .unwrap();
    assert!((c_fc.update_ratio.unwrap() - 1.0 / c_fc.weight_norm).abs() < 1e-5);
    // The ReZero gate starts at 0: no ratio.
    let gate = d.units[0]
        .params
        .iter()
        .find(|p| p.name == "h.0.rezero_attn")
        .unwrap();
    assert_eq!((gate.weight_norm, gate.update_ratio), (0.0, None));
    assert_eq!(
        d.other.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["wte.weight", "wpe.weight"]
    );
}

#[test]
fn diagnostics_refuse_a_model_without_stream_statistics_or_another_model() {
    let config = GptConfig {
        layers: 1,
        heads: 1,
        width: 4,
        context: 2,
        vocab: 5,
        ..GptConfig::default()
    };
    let mut model = Gpt::new(config.clone(), 0).unwrap();
    model.forward(&[1, 2], 1, Some(&[2, 3])).unwrap();
    model.backward().unwrap();
    let err = PendingDiagnostics::after_backward(&model, 0, 1.0, 0.1).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    model.record_stream_stats(true);
    model.forward(&[1, 2], 1, Some(&[2, 3])).unwrap();
    let err = PendingDiagnostics::after_backward(&model, 0, 1.0, 0.1).unwrap_err(); // no backward yet
    assert!(err.to_string().contains("backward"), "{err}");
    model.backward().unwrap();
    let pending = PendingDiagnostics::after_backward(&model, 0, 1.0, 0.1).unwrap();
    let other = Gpt::new(
        GptConfig {
            layers: 2,
            ..config
        },
        0,
    )
    .unwrap();
    assert!(matches!(
        pending.finish(&other).unwrap_err(),
        Error::Shape { .. }
    ));
}

#[test]
fn runs_refuse_empty_settings() {
    let data = quick_data();
    let probe = ProbeSpec {
        model: tiny_model(Placement::PostLn),
        batch: 2,
        batches: 0,
    };
    assert!(matches!(
        run_probe(&probe, &data).unwrap_err(),
        Error::InvalidArgument { .. }
    ));
    let train = TrainSpec {
        model: tiny_model(Placement::PostLn),
        batch: 2,
        steps: 0,
        lr: 1e-3,
        warmup: 0,
        clip: 1.0,
        diagnostics_every: 1,
        eval_windows: 1,
    };
    assert!(matches!(
        run_train(&train, &data, &mut |_| {}).unwrap_err(),
        Error::InvalidArgument { .. }
    ));
    let bad_width = ModelSpec {
        width: 15,
        ..tiny_model(Placement::PreLn)
    };
    let probe = ProbeSpec {
        model: bad_width,
        batch: 2,
        batches: 1,
    };
    assert!(matches!(
        run_probe(&probe, &data).unwrap_err(),
        Error::Config(_)
    ));
    assert!("medium".parse::<Preset>().is_err());
}
