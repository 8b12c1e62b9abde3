//! Training: loss falls on the built-in corpus, runs are deterministic, resuming is
//! bit-identical, gradient accumulation equals a larger batch, divergence stops cleanly,
//! damaged checkpoints are refused; incremental decoding equals a full forward pass.

use std::path::{Path, PathBuf};

use resnorm::checkpoint_set::{save_set, CheckpointSet};
use resnorm::kernels::NormKind;
use resnorm::lm::{
    load_checkpoint, load_data, TrainConfig, Trainer, CONFIG_FILE, MODEL_FILE, STATE_FILE,
    TRAIN_CONFIG_FILE,
};
use resnorm::models::gpt::{generate, Decoder, Gpt, GptConfig, Placement, Sampling};
use resnorm::models::CausalLm;
use resnorm::rng::Rng;
use resnorm::Error;

/// A model and corpus small enough for a few hundred steps in seconds (dev profile).
fn tiny(steps: u64) -> TrainConfig {
    TrainConfig {
        layers: 2,
        heads: 2,
        width: 64,
        context: 32,
        batch: 8,
        steps,
        lr: 1e-2,
        min_lr: 1e-3,
        warmup: 10,
        corpus_chars: 60_000,
        eval_windows: 0,
        ..TrainConfig::default()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnorm-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Re-saves the checkpoint of the run `dir` with the file `name` replaced by `edit` of it,
/// as a consistent set: what another writer (or an older resnorm) could have produced.
fn reseal(dir: &Path, name: &str, edit: impl Fn(String) -> String) {
    let set = CheckpointSet::open(dir).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(set.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != "set.json")
        .map(|f| (f.clone(), set.read(&f).unwrap()))
        .collect();
    for (file, bytes) in &mut files {
        if file == name {
            *bytes = edit(String::from_utf8(bytes.clone()).unwrap()).into_bytes();
        }
    }
    save_set(dir, set.step(), |w| {
        files
            .iter()
            .try_for_each(|(file, bytes)| w.file(file, |out| out.write_all(bytes)))
    })
    .unwrap();
}

fn run(config: &TrainConfig) -> (Trainer, Vec<f32>) {
    let data = load_data(config, None).unwrap();
    let mut trainer = Trainer::new(config.clone(), data).unwrap();
    let mut losses = Vec::new();
    while !trainer.is_done() {
        losses.push(trainer.step().unwrap().loss);
    }
    (trainer, losses)
}

fn weights(model: &CausalLm) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    model.visit_params(&mut |p| out.push((p.name.clone(), p.value.to_vec())));
    out
}

/// The corpus has 0.29 nats/char of entropy; a model starts near ln 41 = 3.7 nats/char. 300
/// steps of a 2-layer, width-64 model must get the validation loss to within 0.8 nats/char
/// of the entropy (measured: 0.85, i.e. 0.56 above): far below the unigram entropy of the
/// text (3.0 nats, 41 characters), so the model has learned words, not letter frequencies.
#[test]
fn short_run_learns_the_built_in_corpus() {
    let config = tiny(300);
    let data = load_data(&config, None).unwrap();
    let entropy = data.corpus_nats_per_char.unwrap();
    let mut trainer = Trainer::new(config, data).unwrap();
    let initial = trainer.evaluate().unwrap().loss;
    while !trainer.is_done() {
        trainer.step().unwrap();
    }
    let eval = trainer.evaluate().unwrap();
    let bound = entropy + 0.8;
    assert!(
        eval.loss < bound,
        "validation loss {:.3} nats/char, bound {bound:.3} (entropy {entropy:.3}, initial {initial:.3})",
        eval.loss
    );
}

#[test]
fn same_seed_gives_bit_identical_losses_and_weights() {
    let config = tiny(20);
    let (a, losses_a) = run(&config);
    let (b, losses_b) = run(&config);
    assert_eq!(
        losses_a.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        losses_b.iter().map(|l| l.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(weights(a.model()), weights(b.model()));
    let (_, losses_c) = run(&TrainConfig { seed: 7, ..config });
    assert_ne!(losses_a, losses_c, "another seed gives another run");
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let config = TrainConfig {
        accum: 2,
        ..tiny(16)
    };
    let (straight, straight_losses) = run(&config);

    let dir = temp_dir("resume");
    let mut first = Trainer::new(config.clone(), load_data(&config, None).unwrap()).unwrap();
    let mut losses = Vec::new();
    for _ in 0..8 {
        losses.push(first.step().unwrap().loss);
    }
    first.save(&dir).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&dir, config).unwrap();
    assert_eq!(resumed.steps_taken(), 8);
    while !resumed.is_done() {
        losses.push(resumed.step().unwrap().loss);
    }
    assert_eq!(
        losses.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        straight_losses
            .iter()
            .map(|l| l.to_bits())
            .collect::<Vec<_>>()
    );
    assert_eq!(weights(resumed.model()), weights(straight.model()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `accum` micro-batches of `batch / accum` windows draw the same windows in the same order
/// as one batch, so the averaged gradient, and hence the step, agrees up to rounding.
#[test]
fn accumulation_matches_one_larger_batch() {
    let big = tiny(3);
    let split = TrainConfig {
        batch: 4,
        accum: 2,
        ..big.clone()
    };
    let (a, losses_a) = run(&big);
    let (b, losses_b) = run(&split);
    for (x, y) in losses_a.iter().zip(&losses_b) {
        assert!((x - y).abs() < 1e-5 * x.abs(), "loss {x} vs {y}");
    }
    for ((name, wa), (_, wb)) in weights(a.model()).iter().zip(weights(b.model())) {
        let worst = wa
            .iter()
            .zip(&wb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "{name}: weights differ by {worst}");
    }
}

#[test]
fn a_nan_stops_training_without_touching_the_weights() {
    let config = tiny(5);
    let mut trainer = Trainer::new(config.clone(), load_data(&config, None).unwrap()).unwrap();
    let first_loss = trainer.step().unwrap().loss;
    trainer
        .model_mut()
        .visit_params_mut(&mut |p| p.value[0] = f32::NAN);
    let before = weights(trainer.model());
    match trainer.step().unwrap_err() {
        Error::Diverged {
            step,
            loss,
            last_finite_loss,
        } => {
            assert_eq!(step, 1);
            assert!(!loss.is_finite());
            assert_eq!(last_finite_loss, Some(first_loss));
        }
        other => panic!("expected Diverged, got {other}"),
    }
    let after = weights(trainer.model());
    for ((name, x), (_, y)) in before.iter().zip(&after) {
        let same = x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name} changed");
    }
    assert_eq!(trainer.steps_taken(), 1);
}

#[test]
fn data_shorter_than_a_context_window_is_refused() {
    let config = TrainConfig {
        corpus_chars: 200,
        context: 64,
        ..tiny(1)
    };
    let err = Trainer::new(config.clone(), load_data(&config, None).unwrap()).unwrap_err();
    assert!(err.to_string().contains("context + 1 = 65"), "{err}");
}

#[test]
fn damaged_or_mismatched_checkpoints_are_refused() {
    let config = tiny(2);
    let dir = temp_dir("damaged");
    let (trainer, _) = run(&config);
    trainer.save(&dir).unwrap();
    let saved = load_checkpoint(&dir).unwrap();
    assert_eq!(weights(&saved.model), weights(trainer.model()));
    assert_eq!(saved.state.step, 2);

    let other_model = TrainConfig {
        layers: 3,
        ..config.clone()
    };
    let err = Trainer::resume(&dir, other_model).unwrap_err().to_string();
    assert!(err.contains("layers 2 (run asks for 3)"), "{err}");

    // A hand-edited file no longer matches the set's manifest.
    let set_dir = dir.join("checkpoint");
    let state = std::fs::read_to_string(set_dir.join(STATE_FILE)).unwrap();
    std::fs::write(
        set_dir.join(STATE_FILE),
        state.replace("\"step\": 2", "\"step\": 3"),
    )
    .unwrap();
    let err = load_checkpoint(&dir).unwrap_err().to_string();
    assert!(
        err.contains(STATE_FILE) && err.contains("checksum") && err.contains("torn"),
        "{err}"
    );
    std::fs::write(set_dir.join(STATE_FILE), &state).unwrap();
    // A consistent set whose files disagree on the step is refused too.
    reseal(&dir, STATE_FILE, |s| {
        s.replace("\"step\": 2", "\"step\": 3")
    });
    let err = load_checkpoint(&dir).unwrap_err().to_string();
    assert!(err.contains("holds step 3, but set.json says 2"), "{err}");
    reseal(&dir, STATE_FILE, |s| {
        s.replace("\"step\": 3", "\"step\": 2")
    });
    load_checkpoint(&dir).unwrap();

    let model = std::fs::read(set_dir.join(MODEL_FILE)).unwrap();
    std::fs::write(set_dir.join(MODEL_FILE), &model[..model.len() / 2]).unwrap();
    let err = load_checkpoint(&dir).unwrap_err().to_string();
    assert!(err.contains(MODEL_FILE) && err.contains("bytes"), "{err}");
    std::fs::write(set_dir.join(MODEL_FILE), &model).unwrap();

    reseal(&dir, TRAIN_CONFIG_FILE, |_| "{\"layers\": ".to_string());
    let err = load_checkpoint(&dir).unwrap_err().to_string();
    assert!(err.contains(TRAIN_CONFIG_FILE), "{err}");

    std::fs::remove_file(dir.join("checkpoint").join(STATE_FILE)).unwrap();
    let err = load_checkpoint(&dir).unwrap_err().to_string();
    assert!(err.contains(STATE_FILE), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `residual_scaling` came after the first checkpoints: a `config.json` without it reads as
/// GPT-2's scaling, the only one there was, and the run resumes.
#[test]
fn a_checkpoint_from_before_residual_scaling_loads_and_resumes() {
    let config = tiny(4);
    let dir = temp_dir("old-config");
    let (trainer, _) = run(&TrainConfig {
        steps: 2,
        ..config.clone()
    });
    trainer.save(&dir).unwrap();
    reseal(&dir, CONFIG_FILE, |text| {
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let fields = json.as_object_mut().unwrap();
        assert_eq!(fields.remove("residual_scaling"), Some(true.into()));
        json.to_string()
    });

    let saved = load_checkpoint(&dir).unwrap();
    let CausalLm::Gpt(gpt) = &saved.model else {
        panic!("the run trained a GPT");
    };
    assert!(gpt.config().residual_scaling);
    assert_eq!(weights(&saved.model), weights(trainer.model()));
    let mut resumed = Trainer::resume(&dir, config).unwrap();
    while !resumed.is_done() {
        resumed.step().unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every parameter moved off its initial value (ReZero gates start at 0, which would hide
/// the attention path), so that every path of every placement shows in the logits.
fn perturbed_model(placement: Placement, norm: NormKind) -> Gpt {
    let config = GptConfig {
        layers: 2,
        heads: 2,
        width: 8,
        context: 7,
        vocab: 11,
        placement,
        norm,
        ..GptConfig::default()
    };
    let mut model = Gpt::new(config, 5).unwrap();
    let mut rng = Rng::new(9);
    model.visit_params_mut(&mut |p| {
        for v in &mut p.value {
            *v += 0.3 * rng.normal();
        }
    });
    model
}

/// Feeds `tokens` one by one to a fresh decoder of `model` and asserts that the logits after
/// each equal that token's row of a full forward within `tol` (absolute); returns the
/// decoder, its cache holding `tokens`.
fn assert_cached_logits_match_the_full_forward<'m>(
    model: &'m mut Gpt,
    tokens: &[u32],
    tol: f32,
    what: &str,
) -> Decoder<'m> {
    model.forward(tokens, 1, None).unwrap();
    let full = model.logits().to_vec();
    let vocab = model.config().vocab;
    let mut decoder = Decoder::new(model);
    for (t, &token) in tokens.iter().enumerate() {
        let cached = decoder.push(token).unwrap();
        let row = &full[t * vocab..(t + 1) * vocab];
        let worst = cached
            .iter()
            .zip(row)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < tol, "{what} position {t}: {worst}");
    }
    decoder
}

/// Cached logits of token t equal row t of a full forward, for every placement (1e-5).
#[test]
fn cached_decoding_matches_the_full_forward_for_every_placement() {
    let tokens = [3u32, 1, 4, 1, 5, 9, 2];
    for placement in Placement::ALL {
        for norm in [NormKind::Layer, NormKind::Rms] {
            let mut model = perturbed_model(placement, norm);
            let what = format!("{placement} {norm}");
            let mut decoder =
                assert_cached_logits_match_the_full_forward(&mut model, &tokens, 1e-5, &what);
            let err = decoder.push(0).unwrap_err().to_string();
            assert!(err.contains("cache is full"), "{err}");
        }
    }
}

/// A model wide enough that decoding's one-row products are split between threads (the
/// MLP's `128×512` and `512×128` sums in blocks, the `600×128` head by columns) decodes the
/// same logits as a full forward (1e-5 absolute; logits of magnitude ~1, measured
/// differences ~3e-7).
#[test]
fn cached_decoding_of_a_wide_model_matches_the_full_forward() {
    let config = GptConfig {
        layers: 1,
        heads: 4,
        width: 128,
        context: 5,
        vocab: 600,
        ..GptConfig::default()
    };
    const { assert!(128 * 512 >= resnorm::kernels::VECTOR_PARALLEL_MIN_WORK) };
    let mut model = Gpt::new(config, 5).unwrap();
    let tokens = [3u32, 599, 41, 1, 250];
    assert_cached_logits_match_the_full_forward(&mut model, &tokens, 1e-5, "width 128");
}

/// Greedy decoding past the context: each token is the argmax of a full forward over the
/// last `context` tokens, i.e. the window slides exactly.
#[test]
fn greedy_generation_slides_the_window_exactly() {
    let mut model = perturbed_model(Placement::ResiDual, NormKind::Layer);
    let prompt = [2u32, 7, 1];
    let greedy = Sampling {
        temperature: 0.0,
        top_k: 0,
    };
    let sampled = generate(&model, &prompt, 12, greedy, &mut Rng::new(0)).unwrap();
    let mut sequence = prompt.to_vec();
    for &next in &sampled {
        let window = &sequence[sequence.len().saturating_sub(7)..];
        model.forward(window, 1, None).unwrap();
        let last = &model.logits()[(window.len() - 1) * 11..];
        let best = (0..11).fold(0, |b, i| if last[i] > last[b] { i } else { b });
        assert_eq!(next as usize, best, "after {sequence:?}");
        sequence.push(next);
    }
}

#[test]
fn sampling_is_seeded_and_respects_top_k() {
    let model = perturbed_model(Placement::PreLn, NormKind::Rms);
    let sampling = Sampling {
        temperature: 1.0,
        top_k: 1,
    };
    let top1 = generate(&model, &[1], 6, sampling, &mut Rng::new(1)).unwrap();
    let greedy = Sampling {
        temperature: 0.0,
        ..sampling
    };
    assert_eq!(
        top1,
        generate(&model, &[1], 6, greedy, &mut Rng::new(2)).unwrap()
    );
    let free = Sampling {
        temperature: 1.5,
        top_k: 0,
    };
    let a = generate(&model, &[1], 20, free, &mut Rng::new(3)).unwrap();
    assert_eq!(
        a,
        generate(&model, &[1], 20, free, &mut Rng::new(3)).unwrap()
    );
    assert!(generate(&model, &[], 1, free, &mut Rng::new(3)).is_err());
    let bad = Sampling {
        temperature: -1.0,
        top_k: 0,
    };
    assert!(generate(&model, &[1], 1, bad, &mut Rng::new(3)).is_err());
    assert!(generate(&model, &[11], 1, free, &mut Rng::new(3)).is_err());
}

#[test]
fn diagnostics_come_on_the_steps_asked_for_and_change_nothing_else() {
    let config = TrainConfig {
        diagnostics_every: 2,
        ..tiny(4)
    };
    let mut trainer = Trainer::new(config.clone(), load_data(&config, None).unwrap()).unwrap();
    let reports: Vec<_> = (0..4).map(|_| trainer.step().unwrap()).collect();
    let measured: Vec<u64> = reports
        .iter()
        .filter(|r| r.diagnostics.is_some())
        .map(|r| r.step)
        .collect();
    assert_eq!(measured, vec![2, 4]);
    let d = reports[3].diagnostics.as_ref().unwrap();
    assert_eq!(d.units.len(), 2 * config.layers);
    assert_eq!(d.stream_rms.len(), 2 * config.layers + 1);
    assert!(d
        .units
        .iter()
        .all(|u| u.update_ratio.is_some_and(|r| r > 0.0 && r.is_finite())));
    assert!((d.grad_norm - reports[3].grad_norm).abs() <= 1e-4 * reports[3].grad_norm);
    let (plain, _) = run(&tiny(4));
    assert_eq!(
        weights(trainer.model()),
        weights(plain.model()),
        "measuring does not change training"
    );
}
