//! `resnorm sample --model` and `resnorm eval --model` on the tiny Hugging Face checkpoints of
//! the library's fixtures: greedy text as transformers decodes it, a loss, and every bad input
//! ending in one error line and exit code 2.

mod common;

use common::one_thread as resnorm;
use std::path::PathBuf;
use std::process::Output;

fn fixture(arch: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../resnorm/tests/fixtures/hf");
    root.join(arch).to_string_lossy().into_owned()
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
}

#[test]
fn greedy_sampling_is_deterministic_and_continues_the_prompt() {
    let args = [
        "sample",
        "--model",
        &fixture("qwen3"),
        "--prompt",
        "the quick",
        "--tokens",
        "6",
        "--temperature",
        "0",
    ];
    let (a, b) = (resnorm(&args), resnorm(&args));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    assert!(String::from_utf8_lossy(&a.stdout).starts_with("the quick"));
}

#[test]
fn eval_prints_a_finite_loss() {
    let data = std::env::temp_dir().join(format!("resnorm-hf-cli-{}.txt", std::process::id()));
    std::fs::write(
        &data,
        "the quick brown fox jumps over the lazy dog. ".repeat(4),
    )
    .unwrap();
    let out = resnorm(&[
        "eval",
        "--model",
        &fixture("gemma2"),
        "--data",
        data.to_str().unwrap(),
        "--window",
        "16",
        "--json",
    ]);
    let _ = std::fs::remove_file(&data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loss = json["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{json}");
}

#[test]
fn bad_inputs_are_one_line() {
    let llama = fixture("llama");
    assert_one_line_error(&resnorm(&["sample", "--model", &llama]), "--prompt");
    assert_one_line_error(
        &resnorm(&["sample", "--model", "/nonexistent", "--prompt", "a"]),
        "config.json",
    );
    assert_one_line_error(&resnorm(&["eval", "--model", &llama]), "--data");
    assert_one_line_error(
        &resnorm(&[
            "sample", "--model", &llama, "--prompt", "a", "--tokens", "500",
        ]),
        "context",
    );
}

#[test]
fn export_writes_gpt2_or_refuses_other_placements() {
    let dir = std::env::temp_dir().join(format!("resnorm-hf-cli-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let tiny = "--layers 1 --heads 2 --width 16 --context 16 --batch 4 --corpus-chars 5000";
    let train = |out: &str, placement: &str| {
        let mut args = vec!["train", "--steps", "1", "--sample-tokens", "0", "--out"];
        let out = path(out);
        args.push(&out);
        args.extend(tiny.split(' '));
        args.extend(["--placement", placement]);
        let run = resnorm(&args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    };
    train("pre", "pre-ln");
    let out = resnorm(&[
        "export",
        "--checkpoint",
        &path("pre/checkpoint"),
        "--out",
        &path("hf"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read_to_string(dir.join("hf/config.json")).unwrap();
    assert!(config.contains("GPT2LMHeadModel"), "{config}");
    assert!(dir.join("hf/model.safetensors").is_file());
    train("post", "post-ln");
    let out = resnorm(&[
        "export",
        "--checkpoint",
        &path("post/checkpoint"),
        "--out",
        &path("x"),
    ]);
    assert_one_line_error(&out, "pre-ln");
    let _ = std::fs::remove_dir_all(&dir);
}
