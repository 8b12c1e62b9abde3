//! `resnorm vision`: a tiny train/resume/eval round trip on a synthetic digits CSV, and every
//! bad input ending in one error line and exit code 2.

mod common;

use common::one_thread as resnorm;
use std::path::{Path, PathBuf};
use std::process::Output;

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("resnorm-vision-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 100 digits-CSV rows: label `i % 4`, pixels a bright band whose row is the label.
fn write_digits(path: &Path) {
    let mut text = String::new();
    for i in 0..100 {
        let label = i % 4;
        let row: Vec<String> = (0..64)
            .map(|p| {
                if p / 8 == 2 * label {
                    "16".to_string()
                } else {
                    ((p + i) % 3).to_string()
                }
                .to_string()
            })
            .chain([label.to_string()])
            .collect();
        text.push_str(&row.join(","));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn idx(magic_type: u8, dims: &[u32], body: usize) -> Vec<u8> {
    let mut bytes = vec![0, 0, magic_type, dims.len() as u8];
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.resize(bytes.len() + body, 7);
    bytes
}

/// A Fashion-MNIST-style folder whose files are replaced by `images` and `labels`.
fn write_idx_dir(dir: &Path, images: &[u8], labels: &[u8]) {
    for split in ["train", "t10k"] {
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), labels).unwrap();
    }
}

fn assert_refused(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(needle),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn train_resume_and_eval_round_trip() {
    let dir = temp_dir("round-trip");
    let data = dir.join("digits.csv");
    write_digits(&data);
    let out = dir.join("run");
    let (data_arg, out_arg) = (data.to_str().unwrap(), out.to_str().unwrap());
    let train = |epochs: &str, resume: bool| {
        let mut args = vec![
            "vision",
            "train",
            "--model",
            "resnet20",
            "--data",
            data_arg,
            "--out",
            out_arg,
            "--epochs",
            epochs,
            "--batch-size",
            "16",
            "--lr",
            "0.05",
            "--flip",
            "--crop-padding",
            "1",
        ];
        if resume {
            args.push("--resume");
        }
        resnorm(&args)
    };
    let first = train("1", false);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for file in [
        "checkpoint/model.safetensors",
        "checkpoint/optimizer.safetensors",
        "checkpoint/trainer.json",
        "checkpoint/set.json",
        "metrics.jsonl",
    ] {
        assert!(out.join(file).is_file(), "{file} written");
    }
    assert_refused(&train("2", false), "already holds a run");
    let mut changed = vec!["vision", "train", "--data", data_arg, "--out", out_arg];
    changed.extend(["--resume", "--epochs", "2", "--lr", "0.01"]);
    assert_refused(&resnorm(&changed), "--lr 0.01 (the saved run has 0.05");
    let resumed = train("2", true);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, [1, 2], "the resumed run continues at epoch 2");
    assert_refused(&train("1", true), "--epochs 1 is below the 2 epochs");

    let eval = resnorm(&[
        "vision",
        "eval",
        "--checkpoint",
        out_arg,
        "--data",
        data_arg,
        "--json",
    ]);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(line["images"], 20);
    let accuracy = line["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_model_is_refused() {
    let dir = temp_dir("unknown-model");
    let data = dir.join("digits.csv");
    write_digits(&data);
    let output = resnorm(&[
        "vision",
        "train",
        "--model",
        "resnet21",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    assert_refused(&output, "unknown model `resnet21`");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_wrong_magic_and_mismatched_idx_files_are_refused() {
    let labels = idx(8, &[3], 3);
    let cases: [(&str, Vec<u8>, Vec<u8>, &str); 4] = [
        (
            "truncated body",
            idx(8, &[3, 28, 28], 100),
            labels.clone(),
            "not an IDX file",
        ),
        (
            "truncated header",
            vec![0, 0, 8, 3, 0, 0],
            labels.clone(),
            "not an IDX file",
        ),
        (
            "wrong magic",
            {
                let mut bytes = idx(8, &[3, 28, 28], 3 * 784);
                bytes[0] = 0x50;
                bytes
            },
            labels.clone(),
            "not an IDX file",
        ),
        (
            "count mismatch",
            idx(8, &[3, 28, 28], 3 * 784),
            idx(8, &[4], 4),
            "4 labels",
        ),
    ];
    for (name, images, labels, needle) in cases {
        let dir = temp_dir(&name.replace(' ', "-"));
        write_idx_dir(&dir, &images, &labels);
        let output = resnorm(&[
            "vision",
            "train",
            "--model",
            "resnet20",
            "--data",
            dir.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ]);
        assert_refused(&output, needle);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn eval_of_a_missing_checkpoint_is_refused() {
    let dir = temp_dir("missing-checkpoint");
    let data = dir.join("digits.csv");
    write_digits(&data);
    let output = resnorm(&[
        "vision",
        "eval",
        "--checkpoint",
        dir.join("nothing").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_refused(&output, "not a checkpoint directory");
    std::fs::remove_dir_all(&dir).unwrap();
}
