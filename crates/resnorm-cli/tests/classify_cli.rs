//! `resnorm classify`: a tiny train / resume / eval / predict round trip on a synthetic TSV,
//! regression with Pearson's r, and every bad input ending in one error line and exit 2.

mod common;

use common::corpora::write_sentiment_tsv;
use common::{assert_one_line_error, resnorm, temp_dir};

const TINY: &str =
    "--tokenizer byte --layers 1 --heads 2 --width 16 --context 24 --batch 8 --lr 1e-2 --warmup 5 --eval-every 0";

/// `classify train` on s.tsv with the [`TINY`] model, then `extra` (space-separated).
fn train_args(extra: &str) -> Vec<&str> {
    "--threads 1 classify train --data s.tsv"
        .split(' ')
        .chain(TINY.split(' '))
        .chain(extra.split_whitespace())
        .collect()
}

#[test]
fn train_resume_eval_and_predict() {
    let dir = temp_dir("classify-cli", "round-trip");
    write_sentiment_tsv(&dir);
    let out = resnorm(
        &train_args("--label-column label --group-column domain --steps 30 --out run"),
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("test: loss "), "{stdout}");
    assert!(dir.join("run/split.tsv").exists() && dir.join("run/metrics.jsonl").exists());
    let resume = [
        "--threads",
        "1",
        "classify",
        "train",
        "--resume",
        "--out",
        "run",
        "--steps",
        "40",
    ];
    let out = resnorm(&resume, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 40);
    let changed = [
        "classify", "train", "--resume", "--out", "run", "--lr", "0.5",
    ];
    assert_one_line_error(
        &resnorm(&changed, &dir),
        &["--lr 0.5", "only --steps may change"],
    );

    let eval = [
        "--threads",
        "1",
        "classify",
        "eval",
        "--checkpoint",
        "run",
        "--json",
    ];
    let out = resnorm(&eval, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 12);
    assert!(report["accuracy"].as_f64().unwrap() >= 0.9, "{report}");
    assert_eq!(report["classes"], serde_json::json!(["neg", "pos"]));
    assert_eq!(report["confusion"].as_array().unwrap().len(), 2);
    assert_eq!(report["per_group"].as_object().unwrap().len(), 2);

    let out = common::resnorm_with_stdin(
        &["classify", "predict", "--checkpoint", "run"],
        &dir,
        b"the film lovely 3\nit was so awful 1\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let labels: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(labels, ["pos", "neg"], "{stdout}");
    let prob: f32 = stdout
        .lines()
        .next()
        .unwrap()
        .split('\t')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.5..=1.0).contains(&prob));
}

#[test]
fn regression_reports_pearson_r() {
    let dir = temp_dir("classify-cli", "regression");
    write_sentiment_tsv(&dir);
    let out = resnorm(
        &train_args("--score-column score --steps 60 --out run"),
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = resnorm(&["classify", "eval", "--checkpoint", "run", "--json"], &dir);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["pearson"].as_f64().unwrap() > 0.8, "{report}");
    let out = resnorm(
        &[
            "classify",
            "predict",
            "--checkpoint",
            "run",
            "--input",
            "s.tsv",
        ],
        &dir,
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .all(|l| l.parse::<f32>().is_ok()));
}

/// `--body encoder --pool cls`, with dropout inside the encoder and before the head: train,
/// then eval and predict read the encoder back; cls pooling and encoder dropout on a GPT
/// body are refused in one line.
#[test]
fn the_encoder_body_trains_evaluates_and_predicts() {
    let dir = temp_dir("classify-cli", "encoder");
    write_sentiment_tsv(&dir);
    let out = resnorm(
        &train_args("--label-column label --body encoder --pool cls --dropout 0.1 --encoder-dropout 0.1 --placement post-ln --steps 40 --out run"),
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("post-ln encoder classifier (cls pooling)")
    );
    let out = resnorm(&["classify", "eval", "--checkpoint", "run", "--json"], &dir);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["accuracy"].as_f64().unwrap() > 0.8, "{report}");
    let out = resnorm(
        &[
            "classify",
            "predict",
            "--checkpoint",
            "run",
            "--input",
            "s.tsv",
        ],
        &dir,
    );
    assert!(out.status.success());
    let out = resnorm(
        &train_args("--label-column label --pool cls --steps 1 --out gpt"),
        &dir,
    );
    assert_one_line_error(&out, &["cls pooling needs the encoder body"]);
    let out = resnorm(
        &train_args("--label-column label --encoder-dropout 0.1 --steps 1 --out gpt"),
        &dir,
    );
    assert_one_line_error(&out, &["encoder dropout applies to the encoder body"]);
    let out = resnorm(
        &train_args("--label-column label --body encoder --encoder-dropout 1 --steps 1 --out bad"),
        &dir,
    );
    assert_one_line_error(&out, &["encoder dropout must be in [0, 1)"]);
}

#[test]
fn bad_input_is_one_line_naming_file_line_and_column() {
    let dir = temp_dir("classify-cli", "bad-input");
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "text\tlabel\nhi\tpos\n",
            "--label-column lab",
            &["s.tsv", "line 1", "column `lab`", "no such column"],
        ),
        (
            "text\tlabel\nhi\tpos\nho\tmeh\n",
            "--label-column label --labels neg,pos",
            &[
                "s.tsv",
                "line 3",
                "column `label`",
                "`meh` is not one of neg, pos",
            ],
        ),
        (
            "text\tscore\nhi\t1\nho\tlots\n",
            "--score-column score",
            &[
                "s.tsv",
                "line 3",
                "column `score`",
                "`lots` is not a number",
            ],
        ),
        (
            "text\tlabel\nhi\tpos\n\"\"\tneg\n",
            "--label-column label",
            &["s.tsv", "line 3", "column `text`", "the text is empty"],
        ),
        (
            "",
            "--label-column label",
            &[
                "s.tsv",
                "column `label`",
                "class `pos` has no examples in the valid split (1 in all)",
            ],
        ),
    ];
    for (text, flags, expected) in cases {
        // One positive among twenty negatives: 10 % of one rounds to none.
        let one_class_short = format!("text\tlabel\na\tpos\n{}", "b\tneg\n".repeat(20));
        let text = if text.is_empty() {
            one_class_short.as_str()
        } else {
            text
        };
        std::fs::write(dir.join("s.tsv"), text.replace("\"\"", " ")).unwrap();
        let mut a = vec![
            "classify",
            "train",
            "--data",
            "s.tsv",
            "--out",
            "run",
            "--overwrite",
        ];
        a.extend(flags.split(' '));
        assert_one_line_error(&resnorm(&a, &dir), expected);
    }
    let out = resnorm(&["classify", "eval", "--checkpoint", "nowhere"], &dir);
    assert_one_line_error(&out, &["nowhere"]);
}
