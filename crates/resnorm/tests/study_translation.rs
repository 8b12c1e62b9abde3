//! `resnorm study --preset translation`: the preset's plan is well formed, and a tiny version
//! of it (a made-up corpus in a temp folder, one- and two-layer models, a few steps) runs
//! end to end, records what the findings read, resumes from its cache, and is judged.

mod common;

use common::TempDir;
use resnorm::models::gpt::Placement;
use resnorm::study::{
    evaluate_translation, run_translation_study, translation_key, Status, TranslationPlan,
    TranslationProgress, TranslationResults, TranslationStudyData,
};
use resnorm::Error;

#[test]
fn the_preset_plan_is_well_formed() {
    let plan = TranslationPlan::preset("../shared/data/translation".as_ref());
    let specs = plan.specs();
    assert_eq!(specs.len(), 7, "four warm-up runs and three deep ones");
    for config in &specs {
        config.validate().unwrap();
        assert_eq!(config.encoder_layers, config.decoder_layers);
        assert_eq!(
            (config.vocab, config.max_tokens),
            (plan.vocab, plan.max_tokens)
        );
    }
    let keys: std::collections::HashSet<String> =
        specs.iter().map(|c| translation_key(c, 7)).collect();
    assert_eq!(keys.len(), specs.len(), "one cache file per run");
    for p in [Placement::PostLn, Placement::PreLn] {
        let (cold, warm) = (plan.warmup_run(p, false), plan.warmup_run(p, true));
        assert_eq!((cold.warmup, warm.warmup), (0, plan.warmup));
        assert_eq!((cold.lr, warm.lr), (plan.high_lr, plan.high_lr));
        assert_eq!(cold.placement, p);
        assert!(specs.contains(&cold) && specs.contains(&warm));
    }
    for p in [Placement::PostLn, Placement::PreLn, Placement::DeepNorm] {
        let deep = plan.deep(p);
        assert!(deep.encoder_layers > plan.layers && deep.warmup > 0);
        assert!(specs.contains(&deep));
    }
    let findings = evaluate_translation(&plan, &TranslationResults::default(), plan.vocab);
    assert_eq!(
        findings.iter().map(|f| f.id).collect::<Vec<_>>(),
        [8, 9, 10]
    );
    assert!(findings.iter().all(|f| f.status == Status::NotRun));
}

#[test]
fn a_missing_corpus_is_one_line_naming_the_folder() {
    let plan = TranslationPlan::preset("no/such/folder".as_ref());
    let err = TranslationStudyData::load(&plan).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("no/such/folder") && message.contains("--data"));
    assert!(!message.contains('\n'), "{message}");
}

/// `n` sentence pairs of a word-for-word toy language, the same for every run of the test.
fn toy_pairs(n: usize, offset: usize) -> (String, String) {
    let words = [
        ("the cat", "el gato"),
        ("the dog", "el perro"),
        ("a bird", "un pájaro"),
        ("the house", "la casa"),
        ("sees", "ve"),
        ("likes", "quiere"),
    ];
    let (mut en, mut es) = (String::new(), String::new());
    for i in offset..offset + n {
        let (a, b, v) = (words[i % 4], words[(i / 4) % 4], words[4 + i % 2]);
        en.push_str(&format!("{} {} {}.\n", a.0, v.0, b.0));
        es.push_str(&format!("{} {} {}.\n", a.1, v.1, b.1));
    }
    (en, es)
}

#[test]
fn a_tiny_study_runs_caches_and_is_judged() {
    let dir = TempDir::new("tiny-study");
    for (split, n, offset) in [("train", 48, 0), ("valid", 8, 48)] {
        let (en, es) = toy_pairs(n, offset);
        dir.write(&format!("{split}.en"), en.as_bytes());
        dir.write(&format!("{split}.es"), es.as_bytes());
    }
    let plan = TranslationPlan {
        vocab: 64,
        width: 16,
        heads: 2,
        layers: 1,
        deep_layers: 2,
        max_len: 24,
        max_tokens: 128,
        steps: 6,
        deep_steps: 6,
        warmup: 2,
        eval_every: 3,
        valid_sentences: 5,
        bleu_sentences: 3,
        ..TranslationPlan::preset(&dir.0)
    };
    let data = TranslationStudyData::load(&plan).unwrap();
    assert_eq!(data.data.valid.len(), 5);
    assert_eq!(data.data.valid_ids.len(), 5);
    let specs = plan.specs();
    let runs_dir = dir.0.join("runs");
    let mut fresh = 0;
    let results = run_translation_study(&specs, &data, &runs_dir, &mut |e| {
        if let TranslationProgress::Started { cached: false, .. } = e {
            fresh += 1;
        }
    })
    .unwrap();
    assert_eq!(fresh, specs.len());
    for (record, config) in results.runs.iter().zip(&specs) {
        let run = &record.result;
        assert_eq!(&record.config, config);
        assert_eq!(run.diverged_at, None, "{}", record.key);
        assert_eq!(run.losses.len(), 6);
        assert!(run.losses.iter().all(|l| l.is_finite() && *l > 0.0));
        let steps: Vec<u64> = run.valid_losses.iter().map(|&(s, _)| s).collect();
        assert_eq!(steps, [3, 6]);
        assert!(run.val_loss.unwrap().is_finite() && run.bleu.is_some() && run.chrf.is_some());
        assert_eq!(run.part_grad_norms.len(), 2);
        for g in &run.part_grad_norms {
            // The parts' norms, clipping undone, make up the step's global norm.
            let total = (g.embedding.powi(2) + g.encoder.powi(2) + g.decoder.powi(2)).sqrt();
            let global = run.grad_norms[g.step as usize - 1] as f64;
            assert!(
                (total - global).abs() <= 1e-3 * global,
                "{total} vs {global}"
            );
            assert!(g.encoder > 0.0 && g.decoder > 0.0 && g.embedding > 0.0);
        }
    }
    let mut cached = 0;
    let again = run_translation_study(&specs, &data, &runs_dir, &mut |e| {
        if let TranslationProgress::Started { cached: true, .. } = e {
            cached += 1;
        }
    })
    .unwrap();
    assert_eq!(cached, specs.len(), "every run read from the cache");
    for (a, b) in again.runs.iter().zip(&results.runs) {
        // JSON keeps every f32 and, to within rounding, every f64.
        assert_eq!((&a.key, &a.result.losses), (&b.key, &b.result.losses));
        let (x, y) = (a.result.val_loss.unwrap(), b.result.val_loss.unwrap());
        assert!((x - y).abs() <= 1e-12 * y, "{x} vs {y}");
    }
    let findings = evaluate_translation(&plan, &results, data.vocab());
    assert_eq!(findings.len(), 3);
    for f in &findings {
        assert_ne!(f.status, Status::NotRun, "finding {}", f.id);
        assert!(f.checks.iter().all(|c| !c.statement.is_empty()));
    }
    assert_eq!(
        findings[2].checks.len(),
        2,
        "DeepNorm and Pre-LN against Post-LN"
    );
}
