//! End-to-end tests of `resnorm translate`: train, resume, eval, decode, and bad input, on a
//! tiny corpus written by each test (a debug binary trains its tiny model in a second).

mod common;

use std::path::Path;
use std::process::Output;

use common::corpora::write_parallel_corpus;
use common::{assert_one_line_error, resnorm, resnorm_with_stdin, stderr, temp_dir, tiny};

/// `resnorm translate train` of a tiny model on the tiny corpus, then `extra`.
fn train(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "translate",
        "train",
        "--data",
        "data",
        "--src",
        "en",
        "--tgt",
        "es",
        "--vocab",
        "40",
        "--width",
        "16",
        "--heads",
        "2",
        "--encoder-layers",
        "1",
        "--decoder-layers",
        "1",
        "--max-len",
        "16",
        "--max-tokens",
        "24",
        "--warmup",
        "1",
        "--eval-every",
        "2",
        "--bleu-sentences",
        "2",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    resnorm(&args, dir)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn train_eval_and_translate_stdin() {
    let dir = temp_dir("translate", "train");
    write_parallel_corpus(&dir);
    let out = train(&dir, &["--steps", "4", "--out", "run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("BLEU"), "{}", stdout(&out));
    assert!(dir.join("run/checkpoint/tokenizer.json").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("run/metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        4
    );

    let out = resnorm(
        &[
            "translate",
            "eval",
            "--checkpoint",
            "run",
            "--data",
            "data/test",
            "--json",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    for key in ["bleu", "chrf", "loss"] {
        assert!(json[key].as_f64().is_some_and(f64::is_finite), "{json}");
    }
    assert_eq!(json["sentences"], 3);
    assert_eq!(json["beam"], 1);

    let eval_beam = [
        "translate",
        "eval",
        "--checkpoint",
        "run",
        "--data",
        "data/test",
    ];
    let out = resnorm(&[&eval_beam[..], &["--json", "--beam", "3"]].concat(), &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(json["bleu"].as_f64().is_some_and(f64::is_finite), "{json}");
    assert_eq!((&json["sentences"], &json["beam"]), (&3.into(), &3.into()));
    let out = resnorm(
        &[&eval_beam[..], &["--beam", "2", "--lenpen-kind", "gnmt"]].concat(),
        &dir,
    );
    assert!(
        stdout(&out).contains("(beam 2, 3 sentences)"),
        "{}",
        stdout(&out)
    );

    for beam in ["1", "4"] {
        let out = resnorm_with_stdin(
            &[
                "translate",
                "--checkpoint",
                "run",
                "--beam",
                beam,
                "--max-tokens",
                "1",
            ],
            &dir,
            b"the dog\na red house\n",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
    }
}

#[test]
fn bad_search_flags_are_one_line_exit_2() {
    let dir = temp_dir("translate", "search");
    let cases: [(&[&str], &str); 5] = [
        (&["--max-tokens", "0"], "--max-tokens must be at least 1"),
        (&["--beam", "0"], "--beam 0 must be in 1..=128"),
        (&["--beam", "100000"], "--beam 100000 must be in 1..=128"),
        (&["--lenpen", "NaN"], "--lenpen NaN must be a finite number"),
        (&["--lenpen-kind", "wu"], "unknown length penalty \"wu\""),
    ];
    for (flags, message) in cases {
        let eval: &[&str] = &["translate", "eval"];
        let commands = if flags[0] == "--max-tokens" {
            &[][..]
        } else {
            &[eval][..]
        };
        for command in [&["translate"][..]].iter().chain(commands) {
            let args = [*command, &["--checkpoint", "nowhere"], flags].concat();
            assert_one_line_error(&resnorm(&args, &dir), &[message]);
        }
    }
}

#[test]
fn a_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let dir = temp_dir("translate", "resume");
    write_parallel_corpus(&dir);
    // 8 pairs in batches of 24 tokens: 6 steps cross an epoch boundary. A constant rate
    // after warm-up (min_lr = lr), so that the 3-step run's schedule is the 6-step run's.
    // Dropout on every site and label smoothing: each step's masks follow from seed and step.
    let constant = [
        "--lr",
        "0.001",
        "--min-lr",
        "0.001",
        "--dropout",
        "0.3",
        "--activation-dropout",
        "0.1",
        "--attention-dropout",
        "0.1",
        "--label-smoothing",
        "0.1",
    ];
    let whole = [&constant[..], &["--steps", "6", "--out", "whole"]].concat();
    assert!(train(&dir, &whole).status.success());
    let split = [&constant[..], &["--steps", "3", "--out", "split"]].concat();
    assert!(train(&dir, &split).status.success());
    let out = train(&dir, &["--steps", "6", "--resume", "split"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let read =
        |run: &str| std::fs::read(dir.join(run).join("checkpoint/model.safetensors")).unwrap();
    assert!(read("whole") == read("split"), "the resumed weights differ");
    let out = train(
        &dir,
        &["--steps", "6", "--resume", "split", "--width", "32"],
    );
    assert_one_line_error(&out, &["--width 32", "16"]);
    let out = train(
        &dir,
        &["--steps", "6", "--resume", "split", "--dropout", "0"],
    );
    assert_one_line_error(&out, &["--dropout 0", "0.3"]);
    let out = train(&dir, &["--steps", "1", "--out", "bad", "--dropout", "1"]);
    assert_one_line_error(&out, &["dropout 1", "[0, 1)"]);
    let out = train(
        &dir,
        &["--steps", "1", "--out", "bad", "--attention-dropout", "1"],
    );
    assert_one_line_error(&out, &["attention_dropout 1", "[0, 1)"]);
}

#[test]
fn bad_input_is_one_line_exit_2_and_nothing_is_overwritten() {
    let dir = temp_dir("translate", "bad");
    write_parallel_corpus(&dir);
    std::fs::write(dir.join("data/valid.es"), "uno\ndos\n").unwrap();
    let out = train(&dir, &["--steps", "1", "--out", "run"]);
    assert_one_line_error(&out, &["valid.en: 3 lines", "valid.es has 2"]);
    assert!(!dir.join("run").exists());
    write_parallel_corpus(&dir);
    std::fs::write(dir.join("data/train.en"), b"the \xff house\n".repeat(8)).unwrap();
    assert_one_line_error(
        &train(&dir, &["--steps", "1", "--out", "run"]),
        &["train.en", "line 1"],
    );
    write_parallel_corpus(&dir);

    // A GPT checkpoint is another kind, for every translate command; --out keeps it.
    let mut args = vec![
        "train",
        "--steps",
        "1",
        "--out",
        "gpt",
        "--sample-tokens",
        "0",
    ];
    args.extend(tiny(""));
    assert!(resnorm(&args, &dir).status.success());
    let before = std::fs::read(dir.join("gpt/checkpoint/model.safetensors")).unwrap();
    for args in [
        &[
            "translate",
            "--checkpoint",
            "gpt",
            "--input",
            "data/test.en",
        ][..],
        &["translate", "eval", "--checkpoint", "gpt"],
    ] {
        assert_one_line_error(&resnorm(args, &dir), &["another kind"]);
    }
    assert_one_line_error(
        &train(&dir, &["--steps", "1", "--resume", "gpt"]),
        &["another kind"],
    );
    assert_one_line_error(
        &train(&dir, &["--steps", "1", "--out", "gpt"]),
        &["already holds a run"],
    );
    assert_eq!(
        std::fs::read(dir.join("gpt/checkpoint/model.safetensors")).unwrap(),
        before
    );

    assert!(train(&dir, &["--steps", "1", "--out", "run"])
        .status
        .success());
    std::fs::write(dir.join("bad.en"), b"the dog\n\xfe\n").unwrap();
    std::fs::write(dir.join("empty.en"), b"the dog\n\na dog\n").unwrap();
    let decode = |input: &str| {
        resnorm(
            &["translate", "--checkpoint", "run", "--input", input],
            &dir,
        )
    };
    assert_one_line_error(&decode("bad.en"), &["bad.en", "line 2 is not UTF-8"]);
    assert_one_line_error(&decode("empty.en"), &["empty.en", "line 2 is empty"]);
}
