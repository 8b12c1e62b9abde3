//! Corpus BLEU and chrF against sacreBLEU 2.6 on the fixtures of tools/fixtures/sacrebleu.py:
//! corner cases (punctuation, Spanish, empty and short lines, whitespace, numbers) and 300
//! real test lines with perturbed hypotheses (rebuilt from ../shared/data when present).

mod common;

use resnorm::translate::{corpus_bleu, corpus_chrf};
use serde_json::Value;

const TOLERANCE: f64 = 0.01;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/metrics_sacrebleu.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn check(name: &str, hyps: &[String], refs: &[String], expected: &Value) {
    let bleu = corpus_bleu(hyps, refs).unwrap();
    let want = expected["bleu"].as_f64().unwrap();
    assert!(
        (bleu.score - want).abs() < TOLERANCE,
        "{name}: BLEU {} but sacreBLEU {want} ({bleu:?})",
        bleu.score
    );
    let counts: Vec<u64> = serde_json::from_value(expected["counts"].clone()).unwrap();
    let totals: Vec<u64> = serde_json::from_value(expected["totals"].clone()).unwrap();
    assert_eq!(bleu.counts.to_vec(), counts, "{name}: matches");
    assert_eq!(bleu.totals.to_vec(), totals, "{name}: n-grams");
    assert_eq!(
        bleu.sys_len,
        expected["sys_len"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        bleu.ref_len,
        expected["ref_len"].as_u64().unwrap(),
        "{name}"
    );
    assert!(
        (bleu.bp - expected["bp"].as_f64().unwrap()).abs() < 1e-9,
        "{name}: BP"
    );
    let chrf = corpus_chrf(hyps, refs).unwrap();
    let want = expected["chrf"].as_f64().unwrap();
    assert!(
        (chrf - want).abs() < TOLERANCE,
        "{name}: chrF {chrf} but sacreBLEU {want}"
    );
}

#[test]
fn corner_cases_match_sacrebleu() {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        check(name, &strings(&case["hyps"]), &strings(&case["refs"]), case);
    }
}

#[test]
fn real_lines_with_perturbed_hypotheses_match_sacrebleu() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let fixture = fixture();
    let real = &fixture["real"];
    let text = std::fs::read_to_string(data.join(real["file"].as_str().unwrap())).unwrap();
    let lines = real["lines"].as_u64().unwrap() as usize;
    let refs: Vec<String> = text.split('\n').take(lines).map(str::to_string).collect();
    let hyps: Vec<String> = refs
        .iter()
        .zip(real["edits"].as_array().unwrap())
        .map(|(reference, edit)| {
            let words: Vec<&str> = reference.split(' ').collect();
            let hyp: Vec<&str> = edit
                .as_array()
                .unwrap()
                .iter()
                .map(|e| match e {
                    Value::String(s) => s.as_str(),
                    index => words[index.as_u64().unwrap() as usize],
                })
                .collect();
            hyp.join(" ")
        })
        .collect();
    assert_eq!(hyps.len(), lines);
    check("real lines", &hyps, &refs, real);
}

#[test]
fn mismatched_lengths_are_refused() {
    common::assert_invalid(corpus_bleu(&["a"], &["a", "b"]), "1 hypotheses but 2");
    common::assert_invalid(corpus_chrf(&["a", "b"], &["a"]), "2 hypotheses but 1");
}
