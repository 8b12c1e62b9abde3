//! Memory estimates: parameter counts equal what the models allocate, sizes that overflow
//! are errors, and a checkpoint whose config describes a larger model than its file holds is
//! refused before anything of that size is allocated.

mod common;

use resnorm::checkpoint_set::LIVE_DIR;
use resnorm::data::text::Corpus;
use resnorm::gradcheck::gpt::tiny_config;
use resnorm::kernels::NormKind;
use resnorm::lm::{load_checkpoint, CONFIG_FILE, MODEL_FILE};
use resnorm::memory::Workload;
use resnorm::models::gpt::{generate, Gpt, GptConfig, Placement, Sampling};
use resnorm::nn::ImageShape;
use resnorm::rng::Rng;
use resnorm::vision::ModelSpec;
use resnorm::Error;

#[test]
fn gpt_parameter_counts_are_exact_for_every_wiring() {
    for placement in Placement::ALL {
        for norm in [NormKind::Layer, NormKind::Rms] {
            let config = tiny_config(placement, norm);
            let model = Gpt::new(config.clone(), 0).unwrap();
            assert_eq!(
                config.num_params().unwrap(),
                model.num_params() as u64,
                "{placement} {norm:?}"
            );
        }
    }
}

#[test]
fn vision_parameter_counts_are_exact_for_every_model() {
    let mut specs: Vec<ModelSpec> = resnorm::models::resnet::ARCHITECTURES
        .iter()
        .flat_map(|arch| {
            [false, true].map(|small_stem| ModelSpec::Resnet {
                arch: arch.to_string(),
                small_stem,
                zero_init_residual: false,
            })
        })
        .collect();
    for norm in ["layer", "rms", "batch", "none"] {
        specs.push(ModelSpec::Mlp {
            depth: 3,
            width: 16,
            norm: norm.into(),
            residual: true,
        });
    }
    for spec in specs {
        let model = spec
            .build(ImageShape::new(1, 3, 8, 8), 7, &mut Rng::new(0))
            .unwrap();
        let mut count = 0u64;
        model.visit_params(&mut |p| count += p.len() as u64);
        assert_eq!(spec.num_params([3, 8, 8], 7).unwrap(), count, "{spec:?}");
    }
}

#[test]
fn estimates_grow_with_the_batch_and_overflow_is_an_error() {
    let config = GptConfig::default();
    let one = config.memory_estimate(1, Workload::Train).unwrap();
    let many = config.memory_estimate(64, Workload::Train).unwrap();
    assert_eq!(one.weight_bytes, many.weight_bytes);
    assert_eq!(many.activation_bytes, 64 * one.activation_bytes);
    let eval = config.memory_estimate(1, Workload::Evaluate).unwrap();
    assert_eq!(
        2 * eval.weight_bytes,
        one.weight_bytes,
        "AdamW doubles the floats"
    );
    // A width of 2^40 overflows the parameter count: validation refuses it.
    let huge = GptConfig {
        width: 1 << 40,
        ..GptConfig::default()
    };
    assert!(huge
        .validate()
        .unwrap_err()
        .to_string()
        .contains("overflow"));
    assert!(config.memory_estimate(usize::MAX, Workload::Train).is_err());
    let wide = GptConfig {
        width: 1_000_000,
        ..GptConfig::default()
    };
    let bytes = wide
        .memory_estimate(16, Workload::Train)
        .unwrap()
        .total_bytes();
    assert!(bytes > 1 << 44, "{bytes}");
}

#[test]
fn a_corpus_beyond_any_machine_is_an_error() {
    assert!(Corpus::memory_estimate(usize::MAX).is_err());
    let big = Corpus::memory_estimate(100_000_000_000).unwrap();
    assert_eq!(big.total_bytes(), 1_600_000_000_000);
    let error = Corpus::generate(0, usize::MAX).unwrap_err().to_string();
    assert!(error.contains("cannot hold"), "{error}");
}

#[test]
fn sampling_more_tokens_than_any_machine_holds_is_an_error() {
    let config = GptConfig {
        layers: 1,
        heads: 2,
        width: 8,
        context: 4,
        vocab: 5,
        ..GptConfig::default()
    };
    let model = Gpt::new(config, 0).unwrap();
    let sampling = Sampling {
        temperature: 1.0,
        top_k: 0,
    };
    let error = generate(&model, &[1, 2], usize::MAX, sampling, &mut Rng::new(0)).unwrap_err();
    assert!(error.to_string().contains("cannot hold"), "{error}");
    assert_eq!(
        generate(&model, &[1, 2], 6, sampling, &mut Rng::new(0))
            .unwrap()
            .len(),
        6
    );
}

#[test]
fn a_config_larger_than_its_checkpoint_is_refused_before_allocating() {
    let dir = std::env::temp_dir().join(format!("resnorm-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    common::saved_tiny_run(&dir, 16, 1);
    let set = dir.join(LIVE_DIR);
    let path = set.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    for (field, value, expected) in [
        ("width", 1u64 << 40, "overflow"),
        (
            "width",
            1 << 24,
            "has shape [40, 16], the model of config.json [40, 16777216]",
        ),
        ("layers", 4000, "but the model of config.json has"),
    ] {
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json[field] = value.into();
        std::fs::write(&path, json.to_string()).unwrap();
        common::reseal_set(&set);
        match load_checkpoint(&dir) {
            Err(Error::Format { path: p, detail }) => {
                assert!(p == path || p == set.join(MODEL_FILE), "{}", p.display());
                assert!(detail.contains(expected), "{detail}");
            }
            other => panic!("{field} {value}: {other:?}"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
