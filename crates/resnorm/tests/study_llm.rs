//! The study's runs of today's LLM placements (findings 11 to 13): they are in both presets'
//! plans, a tiny version runs and is evaluated, and the Llama-family decoder's stream
//! measurements and diagnostics follow their definitions.

use resnorm::diagnostics::PendingDiagnostics;
use resnorm::models::gpt::stream_stats::rms;
use resnorm::models::llama::{Llama, LlamaConfig, LlamaPlacement, QkNorm};
use resnorm::study::{
    evaluate, run_study, spread, Plan, Preset, RunSpec, Status, StudyData, LLM_PLACEMENTS,
};

#[test]
fn both_presets_plan_every_llm_placement_at_every_depth() {
    for preset in [Preset::Quick, Preset::Full] {
        let plan = Plan::preset(preset);
        let specs = plan.specs();
        for p in LLM_PLACEMENTS {
            for &l in &plan.probe_depths {
                assert!(specs.contains(&RunSpec::LlamaProbe(plan.llm_probe(p, l))));
            }
            let train = plan.llm_train(p);
            assert_eq!(
                (train.model.layers, train.lr),
                (plan.deep_depth, plan.high_lr)
            );
            assert!(specs.contains(&RunSpec::LlamaTrain(train)));
        }
        let reordered = plan.llm_model(LlamaPlacement::Reordered, 6);
        assert_eq!(reordered.qk_norm, QkNorm::Whole); // as OLMo 2
        assert_eq!(
            plan.llm_model(LlamaPlacement::PeriLn, 6).qk_norm,
            QkNorm::Off
        );
        let keys: std::collections::HashSet<String> = specs.iter().map(|s| s.key(1)).collect();
        assert_eq!(keys.len(), specs.len(), "every run has its own cache key");
    }
}

#[test]
fn a_tiny_llm_study_runs_and_states_findings_8_to_10() {
    let plan = Plan {
        width: 16,
        heads: 2,
        context: 8,
        batch: 4,
        probe_batches: 1,
        probe_depths: vec![2, 4],
        deep_depth: 3,
        deep_steps: 6,
        warmup: 2,
        diagnostics_every: 2,
        eval_windows: 4,
        ..Plan::preset(Preset::Quick)
    };
    let data = StudyData::built_in(1, 20_000).unwrap();
    let dir = std::env::temp_dir().join(format!("resnorm-study-llm-{}", std::process::id()));
    let results = run_study(&plan.llm_specs(), &data, &dir, &mut |_| {}).unwrap();
    let findings = evaluate(&plan, &results, data.vocab());
    for id in [11, 12, 13] {
        let f = findings.iter().find(|f| f.id == id).unwrap();
        assert_ne!(f.status, Status::NotRun, "{f:#?}");
        for c in &f.checks {
            assert!(c.values.values().all(|v| v.is_finite()), "{c:#?}");
        }
    }
    let f8 = findings.iter().find(|f| f.id == 11).unwrap();
    assert_eq!(f8.checks.len(), 3);
    // The GPT findings' runs were not made.
    assert_eq!(findings[0].status, Status::NotRun);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn llama_stream_measurements_and_diagnostics_follow_their_definitions() {
    let config = LlamaConfig::tiny(LlamaPlacement::PeriLn);
    let (layers, width) = (config.layers, config.width);
    let mut model = Llama::new(config, 4).unwrap();
    let tokens = [1, 2, 3, 4, 5, 6];
    model.record_stream_stats(true);
    let loss = model
        .forward(&tokens, 2, Some(&[2, 3, 4, 5, 6, 7]))
        .unwrap()
        .unwrap();
    let stats = model.stream_stats().unwrap();
    assert_eq!(
        (stats.rms.len(), stats.cosine.len()),
        (2 * layers + 1, 2 * layers)
    );
    assert!(stats.grad_norm.is_empty()); // until backward
                                         // x₀ is the embedding rows, times √C (Gemma's scaling in the tiny peri-ln model).
    let embedded: Vec<f32> = tokens
        .iter()
        .flat_map(|&t| model.embed.value[t as usize * width..][..width].to_vec())
        .map(|e| e * (width as f32).sqrt())
        .collect();
    assert!((stats.rms[0] - rms(&embedded)).abs() < 1e-6);
    model.backward().unwrap();
    let stats = model.stream_stats().unwrap();
    assert_eq!(stats.grad_norm.len(), 2 * layers + 1);
    assert!(stats.grad_norm.iter().all(|g| g.is_finite() && *g > 0.0));
    let pending = PendingDiagnostics::after_backward(&model, 0, loss, 0.1).unwrap();
    let d = pending.finish(&model).unwrap();
    assert_eq!(d.units.len(), 2 * layers);
    assert_eq!(
        d.other.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["embed_tokens.weight", "norm.weight"]
    );
    assert!(d.units[3]
        .params
        .iter()
        .any(|p| p.name == "layers.1.post_feedforward_layernorm.weight"));
    let mut total = 0.0f64;
    model.visit_params(&mut |p| total += p.grad.iter().map(|&g| g as f64 * g as f64).sum::<f64>());
    assert!((d.grad_norm as f64 - total.sqrt()).abs() < 1e-5 * total.sqrt());
    assert_eq!(spread(&[2.0, 1.0, 4.0]), 4.0);
}
