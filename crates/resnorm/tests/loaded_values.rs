//! Loading checks values, not only shapes: non-finite weights and optimizer moments, labels
//! beyond the data set's classes and an all-zero generator state are refused with the file
//! and the position; the byte tokenizer takes any bytes; a study refuses a bad model name
//! before it trains anything.

use std::path::{Path, PathBuf};

mod common;
use common::idx;

use resnorm::checkpoint::{read_tensors, Checkpoint};
use resnorm::checkpoint_set::LIVE_DIR;
use resnorm::data::image::read_mnist;
use resnorm::lm::{
    load_checkpoint, load_data, TokenizerKind, TrainConfig, Trainer, MODEL_FILE, OPTIMIZER_FILE,
    STATE_FILE,
};
use resnorm::optim::OptimizerState;
use resnorm::vision::{run_study, ImageSplits, StudyConfig};
use resnorm::Error;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnorm-values-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The one-line message of a [`Error::Format`] about `path`.
fn format_detail<T: std::fmt::Debug>(result: resnorm::Result<T>, path: &Path) -> String {
    match result {
        Err(Error::Format { path: p, detail }) if p == path => detail,
        other => panic!(
            "expected a format error about {}, got {other:?}",
            path.display()
        ),
    }
}

/// A checkpoint of a one-step run of a tiny model, in `dir`.
fn saved_run(dir: &Path) -> TrainConfig {
    common::saved_tiny_run(dir, 16, 2)
}

/// Rewrites the safetensors file at `path` with `value` at flat index `index` of `tensor`,
/// and reseals its set.
fn poison(path: &Path, tensor: &str, index: usize, value: f32) {
    rewrite(path, |checkpoint| {
        let target = checkpoint.tensors.get_mut(tensor).unwrap();
        target.data_mut()[index] = value;
    });
}

/// Rewrites the safetensors file at `path` as `edit` changes it, and reseals its set.
fn rewrite(path: &Path, edit: impl FnOnce(&mut Checkpoint)) {
    let mut checkpoint = read_tensors(path).unwrap();
    edit(&mut checkpoint);
    checkpoint.write(path).unwrap();
    common::reseal_set(path.parent().unwrap());
}

#[test]
fn non_finite_weights_are_refused_by_tensor_and_position() {
    let dir = temp_dir("nan-weights");
    saved_run(&dir);
    let model = dir.join(LIVE_DIR).join(MODEL_FILE);
    poison(&model, "h.0.attn.c_proj.weight", 37, f32::NAN);
    let detail = format_detail(load_checkpoint(&dir), &model);
    assert_eq!(
        detail,
        "tensor `h.0.attn.c_proj.weight` holds NaN at flat index 37"
    );
    poison(&model, "h.0.attn.c_proj.weight", 37, 0.5);
    poison(&model, "wte.weight", 3, f32::NEG_INFINITY);
    let detail = format_detail(load_checkpoint(&dir), &model);
    assert_eq!(detail, "tensor `wte.weight` holds -inf at flat index 3");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_optimizer_state_is_refused_by_tensor_and_position() {
    let dir = temp_dir("nan-moments");
    let config = saved_run(&dir);
    let optimizer = dir.join(LIVE_DIR).join(OPTIMIZER_FILE);
    poison(&optimizer, "v.wpe.weight", 5, f32::INFINITY);
    let detail = format_detail(OptimizerState::load(&optimizer), &optimizer);
    assert_eq!(detail, "tensor `v.wpe.weight` holds inf at flat index 5");
    let detail = format_detail(Trainer::resume(&dir, config).map(|_| ()), &optimizer);
    assert!(detail.contains("v.wpe.weight"), "{detail}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_all_zero_generator_state_is_refused() {
    let dir = temp_dir("zero-rng");
    let config = saved_run(&dir);
    let state_path = dir.join(LIVE_DIR).join(STATE_FILE);
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["rng_state"] = serde_json::json!([0, 0, 0, 0]);
    std::fs::write(&state_path, state.to_string()).unwrap();
    common::reseal_set(state_path.parent().unwrap());
    let detail = format_detail(Trainer::resume(&dir, config).map(|_| ()), &state_path);
    assert!(
        detail.contains("rng_state") && detail.contains("all zeros"),
        "{detail}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn labels_beyond_the_ten_classes_are_refused_by_record() {
    let dir = temp_dir("labels");
    let images = dir.join("images");
    let labels = dir.join("labels");
    std::fs::write(&images, idx(&[3, 2, 2], &[0; 12])).unwrap();
    std::fs::write(&labels, idx(&[3], &[9, 0, 9])).unwrap();
    assert_eq!(read_mnist(&images, &labels).unwrap().labels, vec![9, 0, 9]);
    std::fs::write(&labels, idx(&[3], &[1, 200, 3])).unwrap();
    let detail = format_detail(read_mnist(&images, &labels), &labels);
    assert_eq!(
        detail,
        "label 200 of record 1 is not one of the 10 classes (0..=9)"
    );
    std::fs::write(&labels, idx(&[3], &[1, 2, 10])).unwrap();
    assert!(format_detail(read_mnist(&images, &labels), &labels).contains("record 2"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_byte_tokenizer_takes_any_bytes() {
    let dir = temp_dir("bytes");
    let text = dir.join("latin1.txt");
    let bytes: Vec<u8> = (0..400u32).map(|i| (i * 37 % 256) as u8).collect();
    std::fs::write(&text, &bytes).unwrap();
    let config = TrainConfig {
        data: Some(text.clone()),
        tokenizer: TokenizerKind::Byte,
        ..TrainConfig::default()
    };
    let data = load_data(&config, None).unwrap();
    let mut tokens = data.dataset.train().to_vec();
    tokens.extend_from_slice(data.dataset.validation());
    assert_eq!(
        tokens,
        bytes.iter().map(|&b| u32::from(b)).collect::<Vec<_>>()
    );
    // A character vocabulary is still built from text only.
    let chars = TrainConfig {
        tokenizer: TokenizerKind::Char,
        ..config
    };
    assert!(format_detail(load_data(&chars, None), &text).contains("not valid UTF-8"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_study_refuses_a_bad_model_name_before_training() {
    let images = resnorm::data::image::LabeledImages::new(
        resnorm::nn::ImageShape::new(4, 1, 8, 8),
        vec![0.5; 4 * 64],
        vec![0, 1, 0, 1],
    )
    .unwrap();
    let splits = ImageSplits {
        train: images.clone(),
        test: images,
    };
    let study = StudyConfig {
        resnet_models: vec!["resnet20".into(), "bogus".into()],
        resnet_epochs: 1,
        resnet_train_limit: None,
        resnet_crop_padding: 0,
        resnet_flip: false,
        test_limit: None,
        mlp_depths: vec![2],
        mlp_width: 8,
        mlp_epochs: 1,
        mlp_train_limit: None,
        mlp_lr: 0.02,
        batch_size: 2,
        lr: 0.05,
        log_every: 1,
        response_images: 2,
        seed: 0,
    };
    let error = study.validate().unwrap_err().to_string();
    assert!(error.contains("bogus"), "{error}");
    let mut events = 0;
    let error = run_study(&splits, &study, &mut |_| events += 1).unwrap_err();
    assert!(error.to_string().contains("bogus"), "{error}");
    assert_eq!(events, 0, "nothing was trained");
}

/// Sets every `width` inside `value` to `width`.
fn set_widths(value: &mut serde_json::Value, width: u64) {
    match value {
        serde_json::Value::Object(map) => map.iter_mut().for_each(|(key, v)| match key.as_str() {
            "width" => *v = width.into(),
            _ => set_widths(v, width),
        }),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| set_widths(v, width)),
        _ => {}
    }
}

#[test]
fn a_vision_card_larger_than_its_model_file_is_refused_before_building() {
    use resnorm::vision;

    let dir = temp_dir("vision-card");
    common::saved_tiny_vision_run(&dir, 1);

    let model = dir.join(LIVE_DIR).join("model.safetensors");
    rewrite(&model, |checkpoint| {
        let card = &checkpoint.metadata["card"];
        let mut card: serde_json::Value = serde_json::from_str(card).unwrap();
        set_widths(&mut card, 1 << 20);
        checkpoint.metadata.insert("card".into(), card.to_string());
    });
    let detail = format_detail(vision::load_card(&dir), &model);
    assert!(detail.contains("but the model of its card has"), "{detail}");
    let detail = format_detail(vision::load_model(&dir).map(|_| ()), &model);
    assert!(detail.contains("but the model of its card has"), "{detail}");
    std::fs::remove_dir_all(&dir).unwrap();
}
