//! Fine-tuning Hugging Face checkpoints (`TrainConfig::fine_tune`, `Trainer::fine_tune`) on
//! the tiny fixtures of tests/fixtures/hf: the loss falls, a resumed run continues bit for
//! bit, and a fine-tuned model exported again loads with the same logits.

mod common;

use common::TempDir;
use resnorm::data::text::Tokenizer;
use resnorm::hf::{self, export};
use resnorm::lm::{load_checkpoint, TrainConfig, Trainer};
use resnorm::models::CausalLm;
use std::path::{Path, PathBuf};

fn fixture(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(arch)
}

/// A short run on a repeated sentence (780 tokens of the fixtures' tokenizer), windows of 16.
fn settings(dir: &TempDir, arch: &str, steps: u64) -> TrainConfig {
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(20);
    let data = dir.write("data.txt", text.as_bytes());
    TrainConfig {
        data: Some(data),
        context: 16,
        batch: 4,
        steps,
        lr: 3e-3,
        warmup: 2,
        eval_windows: 0,
        ..TrainConfig::fine_tune(fixture(arch), 64)
    }
}

fn start(config: &TrainConfig) -> Trainer {
    let checkpoint = hf::load(config.init_from.as_ref().unwrap()).unwrap();
    Trainer::fine_tune(config.clone(), checkpoint).unwrap()
}

fn weights(model: &CausalLm) -> Vec<(String, Vec<u32>)> {
    let mut out = Vec::new();
    model.visit_params(&mut |p| {
        out.push((
            p.name.clone(),
            p.value.iter().map(|v| v.to_bits()).collect(),
        ))
    });
    out
}

#[test]
fn a_few_steps_lower_the_validation_loss_of_gpt2_and_llama() {
    for arch in ["gpt2", "llama"] {
        let dir = TempDir::new(&format!("fine-tune-loss-{arch}"));
        let mut trainer = start(&settings(&dir, arch, 8));
        assert!(matches!(trainer.tokenizer(), Tokenizer::Hf { .. }));
        let before = trainer.evaluate_all().unwrap().loss;
        while !trainer.is_done() {
            trainer.step().unwrap();
        }
        let after = trainer.evaluate_all().unwrap().loss;
        // Measured after 8 steps: gpt2 5.89 -> 3.15, llama 5.19 -> 2.69 nats/token.
        assert!(after < before - 1.0, "{arch}: {before} -> {after}");
    }
}

#[test]
fn a_resumed_fine_tune_is_bit_identical_to_an_uninterrupted_one() {
    let dir = TempDir::new("fine-tune-resume");
    let config = TrainConfig {
        accum: 2,
        ..settings(&dir, "qwen3", 6)
    };
    let mut straight = start(&config);
    let mut straight_losses = Vec::new();
    while !straight.is_done() {
        straight_losses.push(straight.step().unwrap().loss.to_bits());
    }
    let mut first = start(&config);
    let mut losses = Vec::new();
    for _ in 0..3 {
        losses.push(first.step().unwrap().loss.to_bits());
    }
    let run = dir.0.join("run");
    first.save(&run).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&run, config).unwrap();
    assert_eq!(resumed.steps_taken(), 3);
    while !resumed.is_done() {
        losses.push(resumed.step().unwrap().loss.to_bits());
    }
    assert_eq!(losses, straight_losses);
    assert_eq!(weights(resumed.model()), weights(straight.model()));
}

#[test]
fn a_fine_tuned_model_exports_and_loads_again_with_equal_logits() {
    let tokens = [5, 17, 42, 99, 3, 64, 1, 127];
    for arch in ["gpt2", "gemma2", "olmo2"] {
        let dir = TempDir::new(&format!("fine-tune-export-{arch}"));
        let mut trainer = start(&settings(&dir, arch, 2));
        while !trainer.is_done() {
            trainer.step().unwrap();
        }
        let run = dir.0.join("run");
        trainer.save(&run).unwrap();
        let mut saved = load_checkpoint(&run).unwrap();
        let out = dir.0.join("hf");
        match &saved.model {
            CausalLm::Gpt(gpt) => export::write_gpt(gpt, &out).unwrap(),
            CausalLm::Llama(llama) => {
                export::write_llama(llama, &out).unwrap();
            }
        }
        let Tokenizer::Hf { tokenizer } = &saved.tokenizer else {
            panic!("{arch}: the checkpoint lost its tokenizer.json");
        };
        export::write_tokenizer(tokenizer, &out).unwrap();
        let mut back = hf::load(&out).unwrap();
        assert!(back.tokenizer.is_some());
        let expected = saved.model.logits(&tokens, 1).unwrap().to_vec();
        let got = back.model.logits(&tokens, 1).unwrap();
        assert_eq!(got, &expected[..], "{arch}");
        let trained = trainer.model_mut().logits(&tokens, 1).unwrap();
        assert_eq!(
            trained,
            &expected[..],
            "{arch}: the checkpoint is not the trained model"
        );
    }
}

#[test]
fn settings_of_a_model_to_build_are_refused_when_fine_tuning() {
    let dir = TempDir::new("fine-tune-refuse");
    let config = TrainConfig {
        layers: 7,
        ..settings(&dir, "llama", 1)
    };
    let checkpoint = hf::load(&fixture("llama")).unwrap();
    let error = Trainer::fine_tune(config, checkpoint)
        .unwrap_err()
        .to_string();
    assert!(error.contains("`layers`"), "{error}");
    let config = TrainConfig {
        context: 65,
        ..settings(&dir, "llama", 1)
    };
    let checkpoint = hf::load(&fixture("llama")).unwrap();
    let error = Trainer::fine_tune(config, checkpoint)
        .unwrap_err()
        .to_string();
    assert!(error.contains("64 positions"), "{error}");
}
