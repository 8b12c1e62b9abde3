//! `resnorm train --init-from HFDIR` on the tiny Hugging Face checkpoints of the library's
//! fixtures: a fine-tuned Llama-family model is read by `sample`, `eval` and `export` (whose
//! directory `sample --model` reads again), and every bad input ends in one error line and
//! exit code 2.

mod common;

use common::one_thread as resnorm;
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../resnorm/tests/fixtures/hf")
        .join(arch)
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
}

/// A fresh folder with the training text, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("resnorm-ft-cli-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let text = "the quick brown fox jumps over the lazy dog. ".repeat(20);
        std::fs::write(dir.join("data.txt"), text).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fine_tune(dir: &Scratch, model: &Path, extra: &[&str]) -> Output {
    let (model, data, out) = (
        model.to_string_lossy(),
        dir.path("data.txt"),
        dir.path("run"),
    );
    let mut args = vec![
        "train",
        "--init-from",
        &model,
        "--data",
        &data,
        "--out",
        &out,
        "--context",
        "16",
        "--batch",
        "4",
        "--steps",
        "3",
        "--lr",
        "3e-3",
        "--sample-tokens",
        "8",
    ];
    args.extend(extra);
    resnorm(&args)
}

#[test]
fn a_fine_tuned_llama_samples_evaluates_and_exports() {
    let dir = Scratch::new("llama");
    let text = ok(&fine_tune(&dir, &fixture("qwen2"), &[]));
    assert!(text.contains("validation loss"), "{text}");
    let checkpoint = dir.path("run");
    let sampled = ok(&resnorm(&[
        "sample",
        "--checkpoint",
        &checkpoint,
        "--prompt",
        "the quick",
        "--tokens",
        "5",
    ]));
    assert!(sampled.starts_with("the quick"), "{sampled}");
    let eval = ok(&resnorm(&["eval", "--checkpoint", &checkpoint, "--json"]));
    let json: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert!(json["loss"].as_f64().unwrap().is_finite(), "{json}");
    let hf = dir.path("hf");
    let exported = ok(&resnorm(&[
        "export",
        "--checkpoint",
        &checkpoint,
        "--out",
        &hf,
    ]));
    assert!(exported.contains("Qwen2ForCausalLM"), "{exported}");
    let args = [
        "--prompt",
        "the quick",
        "--tokens",
        "5",
        "--temperature",
        "0",
    ];
    let from_checkpoint = ok(&resnorm(
        &[&["sample", "--checkpoint", &checkpoint], &args[..]].concat(),
    ));
    let from_export = ok(&resnorm(&[&["sample", "--model", &hf], &args[..]].concat()));
    assert_eq!(from_checkpoint, from_export);
}

#[test]
fn a_fine_tune_resumes_after_more_steps_are_asked() {
    let dir = Scratch::new("resume");
    ok(&fine_tune(&dir, &fixture("gpt2"), &[]));
    let run = dir.path("run");
    let more = ok(&resnorm(&[
        "train",
        "--resume",
        &run,
        "--steps",
        "5",
        "--sample-tokens",
        "0",
    ]));
    assert!(more.contains("step 5"), "{more}");
}

#[test]
fn bad_fine_tunes_are_one_line() {
    let dir = Scratch::new("bad");
    let llama = fixture("llama");
    assert_one_line_error(&fine_tune(&dir, &llama, &["--layers", "2"]), "--layers");
    assert_one_line_error(
        &fine_tune(&dir, &llama, &["--tokenizer", "byte"]),
        "--tokenizer",
    );
    assert_one_line_error(
        &fine_tune(&dir, &llama, &["--context", "65"]),
        "64 positions",
    );

    let copy = |name: &str| {
        let to = dir.0.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&llama).unwrap() {
            let from = entry.unwrap().path();
            std::fs::copy(&from, to.join(from.file_name().unwrap())).unwrap();
        }
        to
    };
    let unsupported = copy("bert");
    let config = std::fs::read_to_string(unsupported.join("config.json")).unwrap();
    let config = config.replace("LlamaForCausalLM", "BertForMaskedLM");
    std::fs::write(unsupported.join("config.json"), config).unwrap();
    assert_one_line_error(&fine_tune(&dir, &unsupported, &[]), "BertForMaskedLM");

    // Without its last shard, the tensors that shard held are missing.
    let missing = copy("missing");
    let index_path = missing.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    let map = index["weight_map"].as_object_mut().unwrap();
    let last = map
        .values()
        .filter_map(|f| f.as_str())
        .max()
        .unwrap()
        .to_string();
    map.retain(|_, file| file != last.as_str());
    std::fs::write(&index_path, index.to_string()).unwrap();
    std::fs::remove_file(missing.join(&last)).unwrap();
    assert_one_line_error(&fine_tune(&dir, &missing, &[]), "missing tensor");
}
