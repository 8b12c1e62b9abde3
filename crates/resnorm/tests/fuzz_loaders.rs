//! Mutation fuzzing of every loader: valid files built here are truncated, bit-flipped, cut,
//! grown, spliced and given huge length fields, and every loader must answer each with a
//! value or an error — never a panic (caught here and reported with the seed and case
//! number) or an abort (which kills this test binary, also a failure).
//!
//! `RESNORM_FUZZ_CASES` sets the number of cases (default 3000, the CI budget), and
//! `RESNORM_FUZZ_SEED` the seed (default 25), so that a failure replays exactly:
//! `RESNORM_FUZZ_CASES=200000 cargo test -p resnorm --test fuzz_loaders -- --nocapture`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

mod common;
use common::{gzip, idx};

use resnorm::checkpoint::read_tensors;
use resnorm::checkpoint_set::{LIVE_DIR, MANIFEST_FILE};
use resnorm::data::image::{read_digits_csv, read_idx, read_mnist};
use resnorm::data::text::{
    read_bytes, read_text, read_token_file, write_token_file, TokenFileFormat,
};
use resnorm::lm::{
    load_checkpoint, load_optimizer, MetricsLog, MetricsRecord, TrainConfig, Trainer,
};
use resnorm::optim::OptimizerState;
use resnorm::rng::Rng;
use resnorm::vision;

/// Values written over length fields and numbers: sizes that overflow or exhaust memory.
const HUGE: [u64; 6] = [
    u64::MAX,
    1 << 63,
    1 << 40,
    u32::MAX as u64,
    1 << 31,
    0x7fff_fff0,
];
/// Numbers written over digits in text formats: overflowing, negative, fractional, and
/// sizes that fit every type but no machine's memory.
const HUGE_TEXT: [&str; 8] = [
    "18446744073709551615",
    "99999999999999999999999",
    "1099511627776",
    "-1",
    "1e39",
    "4294967296",
    "1000000",
    "65536",
];

/// One mutation of `base`: one to three edits, some of them using bytes of `donors`.
fn mutate(rng: &mut Rng, base: &[u8], donors: &[&[u8]]) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = |rng: &mut Rng, len: usize| {
            // Half the edits hit the first 16 bytes, where the length fields live.
            if rng.below(2) == 0 {
                rng.below(len.min(16) + 1)
            } else {
                rng.below(len + 1)
            }
        };
        match rng.below(7) {
            0 => {
                let len = at(rng, out.len());
                out.truncate(len);
            }
            1 if !out.is_empty() => {
                let i = at(rng, out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            2 => {
                let i = at(rng, out.len());
                let bytes: Vec<u8> = (0..1 + rng.below(8))
                    .map(|_| rng.below(256) as u8)
                    .collect();
                out.splice(i..i, bytes);
            }
            3 if !out.is_empty() => {
                let i = rng.below(out.len());
                let end = (i + 1 + rng.below(16)).min(out.len());
                out.drain(i..end);
            }
            4 => {
                let value = HUGE[rng.below(HUGE.len())];
                let mut bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                }
                .to_vec();
                bytes.truncate([4, 8][rng.below(2)]);
                let i = at(rng, out.len());
                let end = (i + bytes.len()).min(out.len());
                out.splice(i..end, bytes);
            }
            5 => {
                let donor = donors[rng.below(donors.len())];
                let from = rng.below(donor.len() + 1);
                let piece = &donor[from..(from + rng.below(64)).min(donor.len())];
                let i = rng.below(out.len() + 1);
                let end = (i + rng.below(piece.len() + 1)).min(out.len());
                out.splice(i..end, piece.iter().copied());
            }
            _ => {
                // A number in a text format made huge, negative or fractional.
                let start = rng.below(out.len() + 1);
                if let Some(first) = out[start..].iter().position(u8::is_ascii_digit) {
                    let begin = start + first;
                    let end = begin
                        + out[begin..]
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .count();
                    let text = HUGE_TEXT[rng.below(HUGE_TEXT.len())].bytes();
                    out.splice(begin..end, text);
                }
            }
        }
    }
    out
}

/// A file a loader reads, its valid contents, and the loaders, which say whether the file
/// was accepted (an error is as good an answer as a value: only a panic fails).
struct Target {
    name: &'static str,
    path: PathBuf,
    valid: Vec<u8>,
    load: Box<dyn Fn() -> bool>,
}

fn target(name: &'static str, path: &Path, load: impl Fn() -> bool + 'static) -> Target {
    Target {
        name,
        path: path.to_path_buf(),
        valid: std::fs::read(path).unwrap(),
        load: Box::new(load),
    }
}

/// Reseals the checkpoint set `set` after a mutation of its file `mutated`, unless that is the
/// manifest itself: without it every mutation would stop at the manifest's checksum, and the
/// parsers behind it would go untested.
fn reseal(set: &Path, mutated: &str) {
    if mutated != MANIFEST_FILE {
        common::reseal_set(set);
    }
}

/// Valid files of every format in `dir`, each with the loaders that read it.
fn targets(dir: &Path) -> Vec<Target> {
    let mut targets = Vec::new();

    // A language-model run: model, optimizer, config, tokenizer, settings and state.
    let run = dir.join("run");
    let config = common::saved_tiny_run(&run, 8, 2);
    let set = run.join(LIVE_DIR);
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "config.json",
        "tokenizer.json",
        "train.json",
        "state.json",
        MANIFEST_FILE,
    ] {
        let (run, set, path, config) = (run.clone(), set.clone(), set.join(file), config.clone());
        targets.push(target("lm checkpoint", &path.clone(), move || {
            let _ = read_tensors(&path);
            let _ = OptimizerState::load(&path);
            reseal(&set, file);
            if let Ok(saved) = load_checkpoint(&run) {
                let _ = load_optimizer(&run, &saved.train);
            }
            Trainer::resume(&run, config.clone()).is_ok()
        }));
    }

    // The metrics log a resumed run trims to its step.
    let metrics = run.join("metrics.jsonl");
    let mut log = MetricsLog::open(&metrics, 0).unwrap();
    for step in 1..=3 {
        log.append(&MetricsRecord {
            step,
            loss: 3.0 / step as f32,
            val_loss: Some(2.5),
            lr: 1e-3,
            grad_norm: 0.5,
            tokens_per_s: 1e4,
            elapsed: step as f64,
            diagnostics: None,
        })
        .unwrap();
    }
    drop(log);
    let path = metrics.clone();
    targets.push(target("metrics log", &metrics, move || {
        MetricsLog::open(&path, 2).is_ok()
    }));

    // TOML settings.
    let toml = dir.join("train.toml");
    std::fs::write(
        &toml,
        "layers = 2\nwidth = 32\nheads = 4\ncontext = 16\nbatch = 8\nsteps = 100\nlr = 1e-3\n\
         placement = \"post-ln\"\nnorm = \"rms\"\ntokenizer = \"byte\"\ncorpus_chars = 2000\n",
    )
    .unwrap();
    let path = toml.clone();
    targets.push(target("toml", &toml, move || {
        TrainConfig::default()
            .with_toml_file(&path)
            .and_then(|config| config.validate())
            .is_ok()
    }));

    // Token files: nanoGPT raw and llm.c shards.
    for (name, format) in [
        ("raw.bin", TokenFileFormat::RawU16),
        ("shard.bin", TokenFileFormat::LlmcShard),
    ] {
        let path = dir.join(name);
        let tokens: Vec<u32> = (0..300).map(|i| i * 167 % 50_257).collect();
        write_token_file(&path, &tokens, format).unwrap();
        let read = path.clone();
        targets.push(target("token file", &path, move || {
            read_token_file(&read).is_ok()
        }));
    }

    // Text, for the char and byte readers.
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "héllo wörld, a short text for the readers\n".repeat(4),
    )
    .unwrap();
    let read = text.clone();
    targets.push(target("text", &text, move || {
        let _ = read_bytes(&read);
        read_text(&read).is_ok()
    }));

    // IDX images and labels, raw and gzip-compressed.
    let images = dir.join("images-idx3-ubyte");
    let labels = dir.join("labels-idx1-ubyte.gz");
    let pixels: Vec<u8> = (0..4 * 6 * 6).map(|i| (i * 31 % 256) as u8).collect();
    std::fs::write(&images, idx(&[4, 6, 6], &pixels)).unwrap();
    std::fs::write(&labels, gzip(&idx(&[4], &[3, 1, 4, 1]))).unwrap();
    for path in [&images, &labels] {
        let (images, labels, read) = (images.clone(), labels.clone(), path.clone());
        targets.push(target("idx", path, move || {
            let _ = read_idx(&read);
            read_mnist(&images, &labels).is_ok()
        }));
    }

    // scikit-learn's digits CSV.
    let csv = dir.join("digits.csv");
    let row = |label: usize| {
        let pixels: Vec<String> = (0..64).map(|i| ((i + label) % 17).to_string()).collect();
        format!("{},{label}\n", pixels.join(","))
    };
    std::fs::write(&csv, (0..5).map(row).collect::<String>()).unwrap();
    let read = csv.clone();
    targets.push(target("digits csv", &csv, move || {
        read_digits_csv(&read).is_ok()
    }));

    // A vision run: model card and tensors, optimizer, trainer state.
    let vision_dir = dir.join("vision");
    let splits = common::saved_tiny_vision_run(&vision_dir, 2);
    let vision_set = vision_dir.join(LIVE_DIR);
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "trainer.json",
        MANIFEST_FILE,
    ] {
        let (dir, set, splits) = (vision_dir.clone(), vision_set.clone(), splits.clone());
        targets.push(target(
            "vision checkpoint",
            &vision_set.join(file),
            move || {
                reseal(&set, file);
                let _ = vision::load_model(&dir);
                vision::Trainer::resume(&dir, splits.clone(), None).is_ok()
            },
        ));
    }
    targets
}

#[test]
fn no_loader_panics_on_mutated_files() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let cases = env("RESNORM_FUZZ_CASES", 3000);
    let seed = env("RESNORM_FUZZ_SEED", 25);
    let dir = std::env::temp_dir().join(format!("resnorm-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let targets = targets(&dir);
    for target in &targets {
        let file = target.path.display();
        assert!(
            (target.load)(),
            "{} loader refuses its valid {file}",
            target.name
        );
    }
    let donors: Vec<&[u8]> = targets.iter().map(|t| &t.valid[..]).collect();
    let mut rng = Rng::new(seed);
    let mut tally = vec![(0u64, 0u64); targets.len()]; // (cases, accepted)
    for case in 0..cases {
        let index = rng.below(targets.len());
        let target = &targets[index];
        let bytes = mutate(&mut rng, &target.valid, &donors);
        std::fs::write(&target.path, &bytes).unwrap();
        match catch_unwind(AssertUnwindSafe(|| (target.load)())) {
            Ok(accepted) => {
                tally[index].0 += 1;
                tally[index].1 += u64::from(accepted);
            }
            Err(_) => {
                let kept = dir.with_extension("crash");
                std::fs::write(&kept, &bytes).unwrap();
                panic!(
                    "{} loader panicked on case {case} of seed {seed} (RESNORM_FUZZ_SEED={seed} \
                     RESNORM_FUZZ_CASES={}); the file is kept at {}",
                    target.name,
                    case + 1,
                    kept.display()
                );
            }
        }
        std::fs::write(&target.path, &target.valid).unwrap();
    }
    println!("{cases} mutated files, seed {seed}: no panic");
    for (target, (count, accepted)) in targets.iter().zip(&tally) {
        let file = target.path.file_name().unwrap().to_string_lossy();
        println!(
            "  {:<18} {file:<24} {count:>6} cases, {accepted:>6} accepted",
            target.name
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
