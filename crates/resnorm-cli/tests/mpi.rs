//! Data-parallel training under `mpirun` (built with `--features mpi`; CI runs these after
//! the default tests): two ranks with batch `B/2` each train as one process with batch `B`,
//! also across a resume that changes the number of ranks; and every disagreement or failure
//! of a rank stops every rank with one `error:` line, never a hang (each run is bounded by
//! `mpirun --timeout` and by a deadline here).
//!
//! **Tolerance.** The two trainings differ only in the order of floating-point sums (each
//! rank's gradient is reduced over its own rows, then the two are added), a relative
//! difference of about 1e-7 per gradient. AdamW moves a weight by at most about `lr` per
//! step, so two runs can never be more than `2 Σ lr` apart; a rounding-level gradient
//! difference moves an update by about the same relative amount, except where the gradient
//! itself is rounding noise (the attention's key bias, whose exact gradient is 0, where
//! AdamW's normalization can blow noise up to a step of either sign). Measured after 20
//! steps: 1.4e-6 = 4e-5 `Σ lr`, in the key bias. The test asserts `1e-3 Σ lr`: 25 times the
//! measurement and still 2000 times below what a wrong shard, a missing bucket or a wrong
//! scale (each an error of order `lr` per step) would give. Overlapping the sums with the
//! backward pass or not changes nothing but timing: those runs are compared bit for bit.
//! So is `--zero 1` (reduce-scatter, sharded AdamW, all-gather), with tolerance 0: on two
//! ranks every gradient sum is one addition `a + b`, exact and commutative, so the
//! reduce-scatter gives the all-reduce's bits; the one other change is the order in which
//! the norm's `f64` sum of squares is added (per rank's run, then over ranks), a relative
//! difference of about 1e-16 that reaches the `f32` clipping factor only if it straddles an
//! `f32` rounding boundary (about 2^-29 of the time per step). On more ranks the sums'
//! order would differ and the tolerance above would apply.

#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::corpora::{write_parallel_corpus, write_sentiment_tsv};
use common::{command, temp_dir, tiny};

/// Seconds after which `mpirun` aborts the job; the test gives up a little later.
const MPI_TIMEOUT: u64 = 60;

/// What a run left: its exit status and stderr.
struct Run {
    status: ExitStatus,
    stderr: String,
}

/// `mpirun` over `apps` (each one rank's arguments to the binary), in `dir`.
fn mpirun(dir: &Path, apps: &[Vec<&str>]) -> Run {
    let mut mpi = Command::new("mpirun");
    mpi.args(["--oversubscribe", "--timeout", &MPI_TIMEOUT.to_string()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    for (i, app) in apps.iter().enumerate() {
        if i > 0 {
            mpi.arg(":");
        }
        mpi.args(["-np", "1", env!("CARGO_BIN_EXE_resnorm")])
            .args(app);
    }
    finish(mpi.current_dir(dir))
}

/// The binary alone (one rank), in `dir`.
fn single(dir: &Path, args: &[&str]) -> Run {
    finish(&mut command(args, dir))
}

fn finish(command: &mut Command) -> Run {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun runs (install openmpi-bin)");
    let stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(MPI_TIMEOUT + 30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run hung past its deadline");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stderr: reader.join().expect("stderr reader"),
    }
}

/// A tiny two-block run's flags and `extra`.
fn args(extra: &'static str) -> Vec<&'static str> {
    let mut args = vec!["--threads", "1", "train"];
    args.extend(tiny(
        "--layers 2 --warmup 2 --sample-tokens 0 --eval-windows 8",
    ));
    args.extend(extra.split_whitespace());
    args
}

/// Parameters by name, as a checkpoint holds them.
type Weights = Vec<(String, Vec<f32>)>;

/// What `visit` hands over, by name.
fn collect(visit: impl FnOnce(&mut dyn FnMut(&resnorm::nn::Param))) -> Weights {
    let mut out = Vec::new();
    visit(&mut |p| out.push((p.name.clone(), p.value.to_vec())));
    out
}

/// Every parameter of the language model saved in `dir/run`, by name.
fn weights(dir: &Path, run: &str) -> Weights {
    let saved = resnorm::lm::load_checkpoint(&dir.join(run)).expect("a saved run");
    collect(|f| saved.model.visit_params(f))
}

/// `weights` with the attentions' key biases apart, as `NAME (keys)`: the middle third of a
/// self-attention's `c_attn.bias` (queries, keys, values), the first half of a
/// cross-attention's `c_kv.bias` (see [`tolerance`]).
fn keys_apart(weights: Weights) -> Weights {
    let mut out = Vec::new();
    for (name, value) in weights {
        let keys = match () {
            _ if name.ends_with("attn.c_attn.bias") => value.len() / 3..2 * value.len() / 3,
            _ if name.ends_with("attn.c_kv.bias") => 0..value.len() / 2,
            _ => 0..0,
        };
        if !keys.is_empty() {
            out.push((format!("{name} (keys)"), value[keys.clone()].to_vec()));
        }
        let rest = [&value[..keys.start], &value[keys.end..]].concat();
        out.push((name, rest));
    }
    out
}

/// Every parameter of the translation model saved in `dir/run`, key biases apart.
fn translation_weights(dir: &Path, run: &str) -> Weights {
    let saved = resnorm::translate::checkpoint::load_translation(&dir.join(run)).expect("a run");
    keys_apart(collect(|f| saved.model.visit_params(f)))
}

/// The most AdamW (PyTorch's betas 0.9, 0.999) moves a weight in one step, in units of the
/// learning rate: `(1 - β₁) / √(1 - β₂)`, reached by a gradient after a history of zeros.
const KEY_BIAS_STEP: f64 = 0.1 / 0.031_622_776_601_683_79;

/// Every parameter of the classifier saved in `dir/run`, key biases apart.
fn classifier_weights(dir: &Path, run: &str) -> Weights {
    let saved = resnorm::classify::load_classifier(&dir.join(run)).expect("a saved run");
    keys_apart(collect(|f| saved.model.visit_params(f)))
}

/// `Σ lr` over the run's steps, from its metrics.
fn lr_sum(dir: &Path, run: &str) -> f64 {
    let metrics = std::fs::read_to_string(dir.join(run).join("metrics.jsonl")).unwrap();
    metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["lr"]
                .as_f64()
                .unwrap()
        })
        .sum()
}

fn assert_close(dir: &Path, a: &str, b: &str, tolerance: f64) {
    assert_close_by(weights, dir, a, b, |_| tolerance);
}

/// The largest difference of each parameter `name` of runs `a` and `b` of `dir`, read by
/// `load`, is at most `tolerance(name)`.
fn assert_close_by(
    load: fn(&Path, &str) -> Weights,
    dir: &Path,
    a: &str,
    b: &str,
    tolerance: impl Fn(&str) -> f64,
) {
    let (first, second) = (load(dir, a), load(dir, b));
    assert_eq!(first.len(), second.len());
    assert!(!first.is_empty());
    for ((name, x), (_, y)) in first.iter().zip(second) {
        let tolerance = tolerance(name);
        let worst = x
            .iter()
            .zip(&y)
            .map(|(x, y)| (x - y).abs() as f64)
            .fold(0.0, f64::max);
        assert!(
            worst <= tolerance,
            "{name}: {a} and {b} differ by {worst:e} > {tolerance:e}"
        );
    }
}

fn assert_ok(run: &Run) {
    assert!(run.status.success(), "{}", run.stderr);
}

/// The one `error:` line of a failed run (mpirun may add its own notice), exit status 2.
fn assert_one_error(run: &Run, expected: &[&str]) {
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected: {}", run.stderr);
    for part in expected {
        assert!(errors[0].contains(part), "`{part}` not in: {}", run.stderr);
    }
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
}

#[test]
fn two_ranks_train_as_one_process_with_the_whole_batch() {
    let dir = temp_dir("mpi", "equivalence");
    let two = args("--steps 20 --out two");
    assert_ok(&mpirun(&dir, &[two.clone(), two]));
    let one = args("--steps 20 --out one");
    assert_ok(&single(&dir, &one));
    assert_close(&dir, "one", "two", 1e-3 * lr_sum(&dir, "one"));

    let late = args("--steps 20 --out late --no-overlap");
    assert_ok(&mpirun(&dir, &[late.clone(), late]));
    assert_close(&dir, "two", "late", 0.0);

    // Reduce-scattering the gradients, updating each rank's share and gathering the weights
    // changes no bit on two ranks (see the module documentation).
    let zero = args("--steps 20 --out zero --zero 1");
    assert_ok(&mpirun(&dir, &[zero.clone(), zero]));
    assert_close(&dir, "two", "zero", 0.0);
}

#[test]
fn a_run_resumes_on_another_number_of_ranks() {
    let dir = temp_dir("mpi", "resume");
    // 10 steps of a 10-step schedule, then 10 more of a 20-step one: on one process, on one
    // then two ranks, and on two then one.
    assert_ok(&single(&dir, &args("--steps 10 --out whole")));
    assert_ok(&single(&dir, &args("--steps 20 --resume whole")));
    assert_ok(&single(&dir, &args("--steps 10 --out grow")));
    let grow = args("--steps 20 --resume grow");
    assert_ok(&mpirun(&dir, &[grow.clone(), grow]));
    let shrink = args("--steps 10 --out shrink");
    assert_ok(&mpirun(&dir, &[shrink.clone(), shrink]));
    assert_ok(&single(&dir, &args("--steps 20 --resume shrink")));
    // The same with the optimizer state sharded on the two ranks (ZeRO stage 1): gathered
    // for the save, split again at the resume.
    assert_ok(&single(&dir, &args("--steps 10 --out zgrow")));
    let zgrow = args("--steps 20 --resume zgrow --zero 1");
    assert_ok(&mpirun(&dir, &[zgrow.clone(), zgrow]));
    let zshrink = args("--steps 10 --out zshrink --zero 1");
    assert_ok(&mpirun(&dir, &[zshrink.clone(), zshrink]));
    assert_ok(&single(&dir, &args("--steps 20 --resume zshrink")));
    let tolerance = 1e-3 * lr_sum(&dir, "whole");
    for run in ["grow", "shrink", "zgrow", "zshrink"] {
        assert_close(&dir, "whole", run, tolerance);
    }
}

#[test]
fn ranks_that_disagree_or_fail_stop_together_with_one_line() {
    let dir = temp_dir("mpi", "disagree");
    let run = mpirun(
        &dir,
        &[
            args("--steps 2 --out a"),
            args("--steps 2 --out a --lr 0.01"),
        ],
    );
    assert_one_error(
        &run,
        &["rank 1 differs from rank 0: lr 0.01 (rank 0: 0.003)"],
    );

    let run = mpirun(
        &dir,
        &[
            args("--steps 2 --out b"),
            args("--steps 2 --out b --corpus-chars 6000"),
        ],
    );
    assert_one_error(
        &run,
        &[
            "rank 1 differs from rank 0",
            "corpus_chars",
            "training_tokens",
        ],
    );

    let run = mpirun(
        &dir,
        &[
            args("--steps 2 --out c"),
            args("--steps 2 --out c --data missing.txt"),
        ],
    );
    assert_one_error(&run, &["rank 1 failed", "missing.txt"]);

    let odd = args("--steps 2 --out d --batch 3");
    assert_one_error(
        &mpirun(&dir, &[odd.clone(), odd]),
        &["--batch 3", "2 ranks"],
    );

    // ZeRO leaves each rank the averaged gradients of its own share only.
    let sharded = args("--steps 2 --out f --zero 1 --diagnostics-every 1");
    assert_one_error(
        &mpirun(&dir, &[sharded.clone(), sharded]),
        &["--diagnostics-every with --zero 1 on 2 ranks"],
    );

    // Rank 0 alone fails after the start (its metrics file cannot be opened) while rank 1
    // waits in the first step's sums: MPI_Abort ends both.
    std::fs::create_dir_all(dir.join("e/metrics.jsonl")).unwrap();
    let broken = args("--steps 2 --out e --overwrite");
    assert_one_error(
        &mpirun(&dir, &[broken.clone(), broken]),
        &["rank 0: ", "metrics.jsonl"],
    );
}

/// A tiny encoder-decoder's `translate train` flags on the tiny corpus, without dropout (its
/// masks are drawn per rank), then `extra`.
fn translate_args(extra: &'static str) -> Vec<&'static str> {
    let mut args: Vec<&str> = "--threads 1 translate train --data data --src en --tgt es \
        --vocab 40 --width 16 --heads 2 --encoder-layers 1 --decoder-layers 1 --max-len 16 \
        --max-tokens 24 --warmup 2 --eval-every 0 --bleu-sentences 2 --dropout 0 \
        --activation-dropout 0"
        .split_whitespace()
        .collect();
    args.extend(extra.split_whitespace());
    args
}

/// A tiny GPT classifier's `classify train` flags on the sentiment table, with dropout
/// before the head (its masks are those of one process), then `extra`.
fn classify_args(extra: &'static str) -> Vec<&'static str> {
    let mut args: Vec<&str> = "--threads 1 classify train --data s.tsv --label-column label \
        --tokenizer byte --layers 1 --heads 2 --width 16 --context 24 --batch 8 --lr 1e-2 \
        --warmup 2 --eval-every 0 --dropout 0.1"
        .split_whitespace()
        .collect();
    args.extend(extra.split_whitespace());
    args
}

/// The tolerance of translation or classification runs whose `Σ lr` is `lr_sum`: that of the
/// module documentation, except for the attentions' key biases. Their exact gradient is 0 (a key
/// bias adds `q·b` to every score of a query, which the softmax ignores), so what they get
/// is rounding noise, which differs between the runs and which AdamW's normalization turns
/// into steps of up to [`KEY_BIAS_STEP`]` · lr` either way (measured after 20 steps: 9.3e-4
/// = 0.08 `Σ lr` in the translation decoder's, 3.1e-5 = 3e-4 `Σ lr` in the classifier's). Nothing data-parallel can go wrong for them alone: they
/// travel with every other gradient, which the tight tolerance checks.
fn tolerance(lr_sum: f64) -> impl Fn(&str) -> f64 {
    move |name| match name.ends_with(" (keys)") {
        true => 2.0 * KEY_BIAS_STEP * lr_sum,
        false => 1e-3 * lr_sum,
    }
}

/// The translation and classification trainers keep the language model's guarantee, with the
/// same tolerance and for the same reasons (see the module documentation, and [`tolerance`]
/// for the key biases): each rank's gradient is its own sentences' (for translation weighted
/// by its share of the target tokens, so that the ranks' unequal shares, some empty on a
/// batch of one sentence, average to the per-token mean of the whole batch), and the sums'
/// order is all that differs. Measured after 20 steps, all but the key biases: translation
/// 6.0e-8 = 5e-6 `Σ lr` (1.2e-7 under `RESNORM_SIMD=scalar`), classification (with dropout)
/// 2.5e-7 = 2e-6 `Σ lr`; asserted: `1e-3 Σ lr`, 90 times the largest and far below the
/// `lr`-sized error of a wrong share, weight or scale.
#[test]
fn two_ranks_translate_and_classify_as_one_process() {
    let dir = temp_dir("mpi", "trainers");
    write_parallel_corpus(&dir);
    write_sentiment_tsv(&dir);
    let two = translate_args("--steps 20 --out t2");
    assert_ok(&mpirun(&dir, &[two.clone(), two]));
    assert_ok(&single(&dir, &translate_args("--steps 20 --out t1")));
    let within = tolerance(lr_sum(&dir, "t1"));
    assert_close_by(translation_weights, &dir, "t1", "t2", within);

    let two = classify_args("--steps 20 --out c2");
    assert_ok(&mpirun(&dir, &[two.clone(), two]));
    assert_ok(&single(&dir, &classify_args("--steps 20 --out c1")));
    let within = tolerance(lr_sum(&dir, "c1"));
    assert_close_by(classifier_weights, &dir, "c1", "c2", within);
}

/// 10 steps of a 10-step schedule, then 10 more of a 20-step one: on one process, and on two
/// ranks then one; the same tolerance as above.
#[test]
fn translation_and_classification_resume_on_another_number_of_ranks() {
    let dir = temp_dir("mpi", "trainers-resume");
    write_parallel_corpus(&dir);
    write_sentiment_tsv(&dir);
    assert_ok(&single(&dir, &translate_args("--steps 10 --out whole")));
    assert_ok(&single(&dir, &translate_args("--steps 20 --resume whole")));
    let shrink = translate_args("--steps 10 --out shrink");
    assert_ok(&mpirun(&dir, &[shrink.clone(), shrink]));
    assert_ok(&single(&dir, &translate_args("--steps 20 --resume shrink")));
    let within = tolerance(lr_sum(&dir, "whole"));
    assert_close_by(translation_weights, &dir, "whole", "shrink", within);

    // A classifier resumes with its saved settings, only --steps given.
    let resume = |out: &'static str| -> Vec<&'static str> {
        let mut args = vec!["--threads", "1", "classify", "train", "--resume", "--out"];
        args.extend([out, "--steps", "20"]);
        args
    };
    assert_ok(&single(&dir, &classify_args("--steps 10 --out cwhole")));
    assert_ok(&single(&dir, &resume("cwhole")));
    let shrink = classify_args("--steps 10 --out cshrink");
    assert_ok(&mpirun(&dir, &[shrink.clone(), shrink]));
    assert_ok(&single(&dir, &resume("cshrink")));
    let within = tolerance(lr_sum(&dir, "cwhole"));
    assert_close_by(classifier_weights, &dir, "cwhole", "cshrink", within);
}

#[test]
fn translation_and_classification_ranks_that_disagree_stop_with_one_line() {
    let dir = temp_dir("mpi", "trainers-disagree");
    write_parallel_corpus(&dir);
    write_sentiment_tsv(&dir);
    let run = mpirun(
        &dir,
        &[
            translate_args("--steps 2 --out t"),
            translate_args("--steps 2 --out t --lr 0.01"),
        ],
    );
    assert_one_error(&run, &["rank 1 differs from rank 0: lr 0.01 (rank 0: "]);

    let run = mpirun(
        &dir,
        &[
            classify_args("--steps 2 --out c"),
            classify_args("--steps 2 --out c --width 8"),
        ],
    );
    assert_one_error(
        &run,
        &[
            "rank 1 differs from rank 0",
            "width 8 (rank 0: 16)",
            "weights_checksum",
        ],
    );

    let odd = classify_args("--steps 2 --out d --batch 7");
    assert_one_error(
        &mpirun(&dir, &[odd.clone(), odd]),
        &["--batch 7", "2 ranks"],
    );
}
