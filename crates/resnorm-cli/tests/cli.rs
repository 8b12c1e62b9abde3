//! The `resnorm` binary end to end: a tiny training run, resume, eval and sample; and every
//! kind of bad input answered with one `error:` line and exit code 2 (divergence: exit 1).

mod common;

use std::path::Path;
use std::process::Output;

use common::{assert_one_line_error, resnorm, stderr, temp_dir, tiny};

fn train(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train"];
    args.extend(tiny("--eval-every 2 --sample-tokens 10"));
    args.extend_from_slice(extra);
    resnorm(&args, dir)
}

/// Exit code 2 and exactly one line on stderr, an `error:` containing `expected`.
#[test]
fn train_resume_eval_and_sample() {
    let dir = temp_dir("cli", "flow");
    let out = train(&dir, &["--steps", "4", "--out", "run", "--threads", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("validation loss"), "{stdout}");
    assert!(stdout.contains("sample:\nOnce there was a"), "{stdout}");
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "config.json",
        "tokenizer.json",
        "train.json",
        "state.json",
        "set.json",
    ] {
        assert!(
            dir.join("run/checkpoint").join(file).is_file(),
            "{file} missing"
        );
    }
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["step"], 4);
    for key in [
        "loss",
        "val_loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "elapsed",
    ] {
        assert!(lines[3][key].is_number(), "{key} in {}", lines[3]);
    }
    assert!(lines[0].get("val_loss").is_none());

    assert_one_line_error(
        &train(&dir, &["--steps", "4", "--out", "run"]),
        &["--out run already holds a run; pass --resume run to continue it, or --overwrite"],
    );
    assert_one_line_error(
        &resnorm(&["train", "--resume", "run", "--steps", "3"], &dir),
        &["--steps 3 is below the saved run's step 4"],
    );
    assert_one_line_error(
        &resnorm(&["train", "--resume", "run", "--tokenizer", "byte"], &dir),
        &["--tokenizer \"byte\" (the saved run has \"char\")"],
    );
    let out = resnorm(
        &["train", "--resume", "run", "--steps", "6", "--threads", "1"],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("trained with 2 threads and continues with 1"),
        "{}",
        stderr(&out)
    );
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);

    let out = resnorm(&["eval", "--checkpoint", "run", "--json"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loss = json["loss"].as_f64().unwrap();
    let perplexity = json["perplexity"].as_f64().unwrap();
    assert!((perplexity - loss.exp()).abs() < 1e-9 * perplexity);
    // 500 validation characters of 5000 (+ the last story's tail): 31 windows of 16.
    assert_eq!(json["tokens"].as_u64().unwrap() % 16, 0);

    let out = resnorm(
        &[
            "sample",
            "--checkpoint",
            "run",
            "--prompt",
            "The",
            "--tokens",
            "40",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("The"), "{text}");
    assert_eq!(text.trim_end_matches('\n').chars().count(), 43);

    // --overwrite starts a new run in its place.
    let out = train(&dir, &["--steps", "2", "--out", "run", "--overwrite"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_toml_config_is_read_and_flags_override_it() {
    let dir = temp_dir("cli", "toml");
    std::fs::write(dir.join("run.toml"), "steps = 3\nplacement = \"post-ln\"\n").unwrap();
    let out = train(
        &dir,
        &["--config", "run.toml", "--steps", "2", "--out", "run"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/checkpoint/train.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(settings["steps"], 2);
    assert_eq!(settings["placement"], "post-ln");

    std::fs::write(dir.join("bad.toml"), "stepz = 3\n").unwrap();
    let out = train(&dir, &["--config", "bad.toml"]);
    assert_one_line_error(&out, &["stepz"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_data_is_one_line_and_exit_2() {
    let dir = temp_dir("cli", "data");
    assert_one_line_error(
        &train(&dir, &["--data", "missing.txt"]),
        &["missing.txt: No such file"],
    );
    std::fs::write(dir.join("empty.txt"), "").unwrap();
    assert_one_line_error(
        &train(&dir, &["--data", "empty.txt"]),
        &["empty.txt: file is empty"],
    );
    std::fs::write(
        dir.join("short.txt"),
        "a short text, shorter than two windows",
    )
    .unwrap();
    assert_one_line_error(
        &train(&dir, &["--data", "short.txt"]),
        &["each part needs at least context + 1 = 17"],
    );
    std::fs::write(dir.join("latin1.txt"), b"caf\xE9 au lait").unwrap();
    assert_one_line_error(
        &train(&dir, &["--data", "latin1.txt"]),
        &["not valid UTF-8: byte 0xE9 at byte offset 3"],
    );
    std::fs::write(dir.join("odd.bin"), [1u8, 0, 2]).unwrap();
    assert_one_line_error(
        &train(&dir, &["--data", "odd.bin", "--tokenizer", "gpt2"]),
        &["odd length"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_translation_study_without_its_corpus_is_one_line_and_exit_2() {
    let dir = temp_dir("cli", "study-translation");
    let out = resnorm(
        &["study", "--preset", "translation", "--data", "no-corpus"],
        &dir,
    );
    assert_one_line_error(&out, &["no-corpus does not exist", "--data DIR"]);
    assert!(!dir.join("runs/study").exists(), "nothing written");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flag_values_are_one_line_and_exit_2() {
    let dir = temp_dir("cli", "flags");
    assert_one_line_error(&train(&dir, &["--placement", "pre_ln"]), &["pre_ln"]);
    assert_one_line_error(&train(&dir, &["--tokenizer", "words"]), &["words"]);
    assert_one_line_error(&train(&dir, &["--norm", "batch"]), &["batch"]);
    assert_one_line_error(&train(&dir, &["--steps", "-3"]), &["'-3'"]);
    assert_one_line_error(
        &train(&dir, &["--steps", "0"]),
        &["steps must be at least 1"],
    );
    assert_one_line_error(&train(&dir, &["--width", "15"]), &["divisible"]);
    assert_one_line_error(&train(&dir, &["--min-lr", "1"]), &["min_lr"]);
    assert_one_line_error(&resnorm(&["train", "--bogus"], &dir), &["--bogus"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_or_foreign_checkpoints_are_one_line_and_exit_2() {
    let dir = temp_dir("cli", "checkpoints");
    let out = train(
        &dir,
        &["--steps", "2", "--out", "run", "--sample-tokens", "0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = resnorm(&["train", "--resume", "run", "--layers", "2"], &dir);
    assert_one_line_error(&out, &["--layers 2 (the saved run has 1)"]);
    assert_one_line_error(
        &resnorm(&["eval", "--checkpoint", "nowhere"], &dir),
        &["not a checkpoint directory"],
    );

    // Any change to a file of the set is refused by the manifest, naming the file.
    let config_path = dir.join("run/checkpoint/config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace("\"width\": 16", "\"width\": 32"),
    )
    .unwrap();
    let out = resnorm(&["sample", "--checkpoint", "run"], &dir);
    assert_one_line_error(&out, &["config.json: checksum"]);
    std::fs::write(&config_path, &config).unwrap();

    let model_path = dir.join("run/checkpoint/model.safetensors");
    let model = std::fs::read(&model_path).unwrap();
    std::fs::write(&model_path, &model[..model.len() - 100]).unwrap();
    assert_one_line_error(
        &resnorm(&["eval", "--checkpoint", "run"], &dir),
        &["model.safetensors: 1"],
    );
    std::fs::write(&model_path, &model).unwrap();
    let out = resnorm(&["eval", "--checkpoint", "run"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A learning rate of 1e30 from the first step makes every weight about 1e30, so the second
/// step overflows: exit code 1, one line naming the step, the checkpoint of step 1 kept.
#[test]
fn divergence_stops_with_exit_1_and_keeps_the_last_checkpoint() {
    let dir = temp_dir("cli", "nan");
    let out = train(
        &dir,
        &[
            "--steps",
            "50",
            "--lr",
            "1e30",
            "--min-lr",
            "1e29",
            "--warmup",
            "0",
            "--grad-clip",
            "0",
            "--out",
            "run",
            "--save-every",
            "1",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err.lines().last().unwrap();
    assert!(
        line.starts_with("error: training diverged at step "),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/checkpoint/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 1);
    assert!(
        line.contains("at step 1:") && line.contains("(step 1)"),
        "{line}"
    );
    let out = resnorm(&["eval", "--checkpoint", "run"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_bench_and_thread_flags_are_one_line_and_exit_2() {
    let dir = temp_dir("cli", "bench-flags");
    let zero_rows = resnorm(&["bench", "norms", "--shape", "0x768"], &dir);
    assert_one_line_error(&zero_rows, &["ROWSxCOLS"]);
    let no_x = resnorm(&["bench", "norms", "--shape", "8192"], &dir);
    assert_one_line_error(&no_x, &["ROWSxCOLS"]);
    let no_threads = resnorm(&["--threads", "0", "gradcheck"], &dir);
    assert_one_line_error(&no_threads, &["at least 1"]);
    let bad_model = resnorm(&["bench", "train", "--width", "10", "--heads", "3"], &dir);
    assert_one_line_error(&bad_model, &["divisible"]);
    let bad_sample_model = resnorm(&["bench", "sample", "--width", "10", "--heads", "3"], &dir);
    assert_one_line_error(&bad_sample_model, &["divisible"]);
    let no_tokens = resnorm(&["bench", "sample", "--tokens", "abc"], &dir);
    assert_one_line_error(&no_tokens, &["--tokens"]);
    let bad_llama = ["bench", "train", "--preset", "llama-135m", "--width", "10"];
    assert_one_line_error(&resnorm(&bad_llama, &dir), &["divisible"]);
    let bad_kv = ["bench", "sample", "--preset", "llama-135m", "--heads", "4"];
    assert_one_line_error(&resnorm(&bad_kv, &dir), &["key/value heads"]);
    let bad_preset = resnorm(&["bench", "train", "--preset", "gpt2-xl"], &dir);
    assert_one_line_error(&bad_preset, &["--preset"]);
}

/// Each preset with its sizes shrunk by flags: the flags override the preset's fields, and a
/// Llama trains and decodes through the same commands as a GPT.
#[test]
fn bench_presets_take_flags_over_their_sizes() {
    let dir = temp_dir("cli", "bench-presets");
    let small = [
        "--layers", "1", "--width", "24", "--heads", "3", "--vocab", "50",
    ];
    for preset in ["gpt2-124m", "llama-135m"] {
        let mut args = vec![
            "bench",
            "train",
            "--json",
            "--preset",
            preset,
            "--context",
            "8",
        ];
        args.extend_from_slice(&small);
        args.extend_from_slice(&["--steps", "1"]);
        let out = resnorm(&args, &dir);
        assert!(out.status.success(), "{}", stderr(&out));
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (line["batch"].as_u64(), line["context"].as_u64()),
            (Some(1), Some(8))
        );
        let params = line["params"].as_u64().unwrap();
        assert!(params < 200_000, "{preset}: {params} parameters");
        let mut args = vec![
            "bench",
            "sample",
            "--json",
            "--preset",
            preset,
            "--context",
            "16",
        ];
        args.extend_from_slice(&small);
        args.extend_from_slice(&["--tokens", "4", "--runs", "1"]);
        let out = resnorm(&args, &dir);
        assert!(out.status.success(), "{}", stderr(&out));
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(line["tokens"].as_u64(), Some(4));
        // The GPT's position table has a row per token of the context, 8 more here.
        let positions = if preset == "gpt2-124m" { 8 * 24 } else { 0 };
        assert_eq!(line["params"].as_u64(), Some(params + positions));
    }
}
