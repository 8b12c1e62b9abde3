//! Nothing lost, whatever happens to a training run (see docs/reliability.md):
//! - SIGKILL at 50+ seeded random instants of a run that saves every step: after every kill
//!   `eval` loads the checkpoint, its step never goes back, and `--resume` ends with the
//!   weights and optimizer state of the run that was never killed, bit for bit;
//!   the translation and classification trainers likewise, at fewer instants;
//! - SIGINT, SIGTERM and a double SIGINT in both trainers: exit 130 / 143, then a resume
//!   that ends bit for bit where the uninterrupted run does;
//! - a full disk (a 300 KB tmpfs, when running as root) during a save: one error line,
//!   exit 2, the previous checkpoint intact.
//!
//! Every run uses two threads: results are bit-identical only for one thread count.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use resnorm::checkpoint_set::CheckpointSet;

mod common;

use common::corpora::{write_parallel_corpus, write_sentiment_tsv};
use common::{command, resnorm, stderr, temp_dir, tiny};

/// A model and corpus that train in about a millisecond a step (debug build), on two threads.
fn tiny_train() -> Vec<&'static str> {
    let mut args = vec!["--threads", "2", "train"];
    args.extend(tiny("--eval-every 0 --sample-tokens 0"));
    args
}

fn spawn(args: &[&str], dir: &Path) -> Child {
    command(args, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

fn with(parts: &[&[&str]]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .map(|s| s.to_string())
        .collect()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The files of a finished run that must be bit-identical to the uninterrupted run's.
fn final_state(run: &Path, files: &[&str]) -> Vec<Vec<u8>> {
    let set = CheckpointSet::open(run).unwrap();
    files.iter().map(|f| set.read(f).unwrap()).collect()
}

/// `state.json`'s generator state and last loss (its elapsed time differs from run to run).
fn lm_state(run: &Path) -> (serde_json::Value, serde_json::Value) {
    let set = CheckpointSet::open(run).unwrap();
    let state: serde_json::Value = set.read_json("state.json").unwrap();
    (state["rng_state"].clone(), state["last_loss"].clone())
}

/// A fixed-seed generator of kill delays (xorshift64*).
struct Delays(u64);

impl Delays {
    fn next_ms(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Waits until `ready` says the run is under way (or it ended), polling every 2 ms.
fn wait_for(child: &mut Child, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() && child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn metrics_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count())
}

const LM_FILES: &[&str] = &["model.safetensors", "optimizer.safetensors"];

/// The run in `run_dir` has finished: the same weights, optimizer, generator state and last
/// loss as the uninterrupted run in `straight`, and nothing left of its saves.
fn assert_finished_like(run_dir: &Path, straight: &Path) {
    assert_eq!(
        final_state(run_dir, LM_FILES),
        final_state(straight, LM_FILES)
    );
    assert_eq!(lm_state(run_dir), lm_state(straight));
    let mut left: Vec<String> = std::fs::read_dir(run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["checkpoint", "metrics.jsonl"]);
}

/// A trainer's run to kill: its command lines from scratch and resuming, the command that
/// must load every checkpoint it leaves, its directory, and the check that a finished run
/// ends where the uninterrupted one did.
struct KillTarget<'a> {
    fresh: Vec<String>,
    resume: Vec<String>,
    eval: Vec<String>,
    run_dir: PathBuf,
    finished_like_straight: &'a dyn Fn(),
}

/// Kills runs at random moments (up to `max_delay_ms` after each start) until `kills` kills
/// have landed; a run that finishes first is checked against the uninterrupted one and
/// started again, so that the count does not depend on how fast this machine trains.
/// After every kill the checkpoint loads and its step never goes back.
fn kill_at_random_points(dir: &Path, kills: usize, max_delay_ms: u64, target: KillTarget) {
    let mut delays = Delays(0x25);
    let (mut landed, mut mid_saves, mut finished, mut last_step) = (0, 0, 0, None::<u64>);
    while landed < kills {
        let args = if last_step.is_some() {
            &target.resume
        } else {
            &target.fresh
        };
        let mut child = spawn(&strs(args), dir);
        std::thread::sleep(Duration::from_millis(5 + delays.next_ms(max_delay_ms)));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a run ended with {status}");
            (target.finished_like_straight)();
            (finished, last_step) = (finished + 1, None);
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        landed += 1;
        let mid_save = ["checkpoint.partial", "checkpoint.previous"];
        mid_saves += usize::from(mid_save.iter().any(|d| target.run_dir.join(d).exists()));
        let eval = resnorm(&strs(&target.eval), dir);
        match last_step {
            None if !eval.status.success() => continue, // killed before its first save
            _ => assert!(eval.status.success(), "kill {landed}: {}", stderr(&eval)),
        }
        let step = CheckpointSet::open(&target.run_dir).unwrap().step();
        assert!(
            last_step.is_none_or(|last| step >= last),
            "went back to {step}"
        );
        last_step = Some(step);
    }
    eprintln!(
        "{landed} kills, {mid_saves} of them in the middle of a save; {finished} runs finished \
         between kills"
    );
    let finish = resnorm(
        &strs(if last_step.is_some() {
            &target.resume
        } else {
            &target.fresh
        }),
        dir,
    );
    assert!(finish.status.success(), "{}", stderr(&finish));
    (target.finished_like_straight)();
}

#[test]
fn sigkill_at_random_points_never_loses_the_checkpoint() {
    let dir = temp_dir("faults", "sigkill");
    let steps = ["--steps", "120", "--save-every", "1"];
    let reference = resnorm(
        &strs(&with(&[&tiny_train()[..], &steps, &["--out", "straight"]])),
        &dir,
    );
    assert!(reference.status.success(), "{}", stderr(&reference));
    let (run_dir, straight) = (dir.join("run"), dir.join("straight"));
    let target = KillTarget {
        fresh: with(&[&tiny_train()[..], &steps, &["--out", "run", "--overwrite"]]),
        resume: with(&[&tiny_train()[..], &["--resume", "run"]]),
        eval: with(&[&["eval", "--checkpoint", "run", "--json"]]),
        run_dir: run_dir.clone(),
        finished_like_straight: &|| assert_finished_like(&run_dir, &straight),
    };
    kill_at_random_points(&dir, 50, 200, target);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The translation trainer, killed at random points: every checkpoint loads, and a resumed
/// run ends with the uninterrupted run's weights and optimizer state, bit for bit.
#[test]
fn sigkill_never_loses_the_translation_checkpoint() {
    let dir = temp_dir("faults", "sigkill-translate");
    write_parallel_corpus(&dir);
    let base: Vec<String> = "--threads 2 translate train --data data --src en --tgt es \
        --vocab 40 --width 16 --heads 2 --encoder-layers 1 --decoder-layers 1 --max-len 16 \
        --max-tokens 24 --warmup 1 --eval-every 0 --save-every 1"
        .split_whitespace()
        .map(String::from)
        .collect();
    let fresh = |out: &str| {
        with(&[
            &strs(&base),
            &["--steps", "60", "--out", out, "--overwrite"],
        ])
    };
    let reference = resnorm(&strs(&fresh("straight")), &dir);
    assert!(reference.status.success(), "{}", stderr(&reference));
    let (run_dir, straight) = (dir.join("run"), dir.join("straight"));
    let target = KillTarget {
        fresh: fresh("run"),
        resume: with(&[&strs(&base), &["--resume", "run"]]),
        eval: with(&[&[
            "translate",
            "eval",
            "--checkpoint",
            "run",
            "--data",
            "data/test",
            "--json",
        ]]),
        run_dir: run_dir.clone(),
        finished_like_straight: &|| {
            assert_eq!(
                final_state(&run_dir, LM_FILES),
                final_state(&straight, LM_FILES)
            )
        },
    };
    kill_at_random_points(&dir, 12, 400, target);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The classification trainer, killed at random points, as the translation trainer above.
#[test]
fn sigkill_never_loses_the_classification_checkpoint() {
    let dir = temp_dir("faults", "sigkill-classify");
    write_sentiment_tsv(&dir);
    let base: Vec<String> = "--threads 2 classify train --data s.tsv --label-column label \
        --tokenizer byte --layers 1 --heads 2 --width 16 --context 24 --batch 8 --lr 1e-2 \
        --warmup 5 --eval-every 0 --save-every 1"
        .split_whitespace()
        .map(String::from)
        .collect();
    let fresh = |out: &str| {
        with(&[
            &strs(&base),
            &["--steps", "60", "--out", out, "--overwrite"],
        ])
    };
    let reference = resnorm(&strs(&fresh("straight")), &dir);
    assert!(reference.status.success(), "{}", stderr(&reference));
    let (run_dir, straight) = (dir.join("run"), dir.join("straight"));
    let target = KillTarget {
        fresh: fresh("run"),
        resume: with(&[&strs(&base), &["--resume", "--out", "run"]]),
        eval: with(&[&["classify", "eval", "--checkpoint", "run", "--json"]]),
        run_dir: run_dir.clone(),
        finished_like_straight: &|| {
            assert_eq!(
                final_state(&run_dir, LM_FILES),
                final_state(&straight, LM_FILES)
            )
        },
    };
    kill_at_random_points(&dir, 12, 400, target);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Stops a run with `signals` once `ready` says it is under way; returns its exit code and
/// stderr.
fn stop_with(args: &[String], dir: &Path, ready: impl Fn() -> bool, signals: &[&str]) -> Output {
    let mut child = spawn(&strs(args), dir);
    wait_for(&mut child, ready);
    for name in signals {
        signal(&child, name);
    }
    child.wait_with_output().unwrap()
}

#[test]
fn sigint_and_sigterm_stop_the_lm_trainer_resumably() {
    let dir = temp_dir("faults", "lm-signals");
    let steps = ["--steps", "2500", "--save-every", "1000"];
    let reference = resnorm(
        &strs(&with(&[&tiny_train()[..], &steps, &["--out", "straight"]])),
        &dir,
    );
    assert!(reference.status.success(), "{}", stderr(&reference));
    let straight = dir.join("straight");
    // The double signal ends the run at once, so it comes after the first save.
    for (name, signals, code, after) in [
        ("int", &["INT"][..], 130, 30),
        ("term", &["TERM"][..], 143, 30),
        ("int-twice", &["INT", "INT"][..], 130, 1010),
    ] {
        let run_dir = dir.join(name);
        let args = with(&[&tiny_train()[..], &steps, &["--out", name]]);
        let out = stop_with(&args, &dir, || metrics_lines(&run_dir) >= after, signals);
        assert_eq!(out.status.code(), Some(code), "{name}: {}", stderr(&out));
        if signals.len() == 1 {
            assert!(stderr(&out).contains("saved in"), "{}", stderr(&out));
            let step = CheckpointSet::open(&run_dir).unwrap().step();
            assert!((30..2500).contains(&step), "{name}: saved at step {step}");
        }
        let eval = resnorm(&["eval", "--checkpoint", name], &dir);
        assert!(eval.status.success(), "{name}: {}", stderr(&eval));
        let resumed = resnorm(
            &strs(&with(&[&tiny_train()[..], &["--resume", name]])),
            &dir,
        );
        assert!(resumed.status.success(), "{name}: {}", stderr(&resumed));
        assert_eq!(
            final_state(&run_dir, LM_FILES),
            final_state(&straight, LM_FILES),
            "{name}"
        );
        assert_eq!(lm_state(&run_dir), lm_state(&straight), "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// 96 digits-CSV rows: label `i % 4`, pixels a bright band whose row is the label.
fn write_digits(path: &Path) {
    let mut text = String::new();
    for i in 0..96 {
        let label = i % 4;
        let row: Vec<String> = (0..64)
            .map(|p| if p / 8 == 2 * label { 16 } else { (p + i) % 3 })
            .chain([label])
            .map(|v| v.to_string())
            .collect();
        text.push_str(&row.join(","));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn sigint_and_sigterm_stop_the_vision_trainer_resumably() {
    let dir = temp_dir("faults", "vision-signals");
    write_digits(&dir.join("digits.csv"));
    let base = [
        "--threads",
        "2",
        "vision",
        "train",
        "--data",
        "digits.csv",
        "--batch-size",
        "4",
        "--epochs",
        "40",
        "--crop-padding",
        "1",
    ];
    let model = ["--model", "mlp", "--depth", "2", "--width", "16"];
    let reference = resnorm(&strs(&with(&[&base, &model, &["--out", "straight"]])), &dir);
    assert!(reference.status.success(), "{}", stderr(&reference));
    let files = &["model.safetensors", "optimizer.safetensors"];
    let straight = final_state(&dir.join("straight"), files);
    for (name, signals, code) in [
        ("int", &["INT"][..], 130),
        ("term", &["TERM"][..], 143),
        ("int-twice", &["INT", "INT"][..], 130),
    ] {
        let run_dir = dir.join(name);
        let args = with(&[&base, &model, &["--out", name]]);
        let out = stop_with(&args, &dir, || metrics_lines(&run_dir) >= 2, signals);
        assert_eq!(out.status.code(), Some(code), "{name}: {}", stderr(&out));
        let eval = resnorm(
            &[
                "vision",
                "eval",
                "--checkpoint",
                name,
                "--data",
                "digits.csv",
            ],
            &dir,
        );
        assert!(eval.status.success(), "{name}: {}", stderr(&eval));
        let resumed = resnorm(&strs(&with(&[&base, &["--out", name, "--resume"]])), &dir);
        assert!(resumed.status.success(), "{name}: {}", stderr(&resumed));
        assert_eq!(final_state(&run_dir, files), straight, "{name}");
        let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count(), 40, "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A disk that fills up during the second save: the save fails with one line and exit 2,
/// and the first checkpoint stays whole. Needs root for the 300 KB tmpfs; skipped otherwise.
#[test]
fn a_full_disk_during_a_save_keeps_the_previous_checkpoint() {
    let dir = temp_dir("faults", "full-disk");
    let disk = dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=300k", "tmpfs"])
        .arg(&disk)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: a full-disk test needs `mount -t tmpfs` (run the tests as root)");
        return;
    }
    // Width 32: about 170 KB a checkpoint, so one fits in 300 KB but not two.
    let args = with(&[
        &tiny_train()[..],
        &[
            "--width",
            "32",
            "--steps",
            "5",
            "--save-every",
            "1",
            "--out",
            "disk/run",
        ],
    ]);
    let out = resnorm(&strs(&args), &dir);
    let eval = resnorm(&["eval", "--checkpoint", "disk/run"], &dir);
    let kept = CheckpointSet::open(&disk.join("run")).and_then(|set| {
        set.verify()?;
        Ok(set.step())
    });
    let partial_left = disk.join("run/checkpoint.partial").exists();
    let unmounted = Command::new("umount").arg(&disk).status();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.lines().count(), 2, "a start line and one error: {err}");
    assert!(eval.status.success(), "{}", stderr(&eval));
    assert_eq!(kept.unwrap(), 1);
    assert!(!partial_left, "the failed save is cleaned up");
    assert!(unmounted.unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
