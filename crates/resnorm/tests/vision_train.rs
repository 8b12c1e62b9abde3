//! The MLP's wiring (finite differences through the whole network for every norm, with and
//! without skips), the learning-rate schedule, a tiny training run that learns, checkpoint
//! round trips and the study (its report is tested in the CLI crate).

use resnorm::data::image::LabeledImages;
use resnorm::kernels::{cross_entropy_backward, cross_entropy_forward};
use resnorm::models::mlp::{Mlp, MlpConfig, MlpNorm};
use resnorm::nn::ImageShape;
use resnorm::rng::Rng;
use resnorm::vision::{
    load_model, run_study, ImageSplits, LrSchedule, ModelSpec, StudyConfig, TrainConfig, Trainer,
};

fn loss_of(mlp: &mut Mlp, images: &[f32], shape: ImageShape, labels: &[u32]) -> f64 {
    let logits = mlp.forward(images, shape).unwrap().to_vec();
    let (mut losses, mut lse) = (vec![0.0; labels.len()], vec![0.0; labels.len()]);
    cross_entropy_forward(&logits, labels, 3, &mut losses, &mut lse).unwrap() as f64
}

/// Central differences of the `f32` network itself (step 3e-3, where `f32` rounding of the
/// loss stays far below the differences) against backward, on every weight of the first
/// block and of the input layer. A difference step can move some ReLU input across 0, which
/// spoils that element's difference (measured: median error 2e-5, 90th percentile <= 5e-4,
/// a few elements up to 8e-2), so the check asks 90% of the elements to agree to 2e-3 of the
/// gradient's scale. The layers themselves are checked exactly in `gradcheck`.
#[test]
fn mlp_gradients_match_finite_differences_for_every_wiring() {
    for norm in [MlpNorm::Layer, MlpNorm::Rms, MlpNorm::Batch, MlpNorm::None] {
        for residual in [true, false] {
            let config = MlpConfig {
                in_features: 6,
                depth: 3,
                width: 5,
                num_classes: 3,
                norm,
                residual,
            };
            let mut mlp = Mlp::new(&config, &mut Rng::new(7)).unwrap();
            let shape = ImageShape::new(8, 1, 2, 3);
            let mut rng = Rng::new(8);
            let images: Vec<f32> = (0..shape.len()).map(|_| rng.normal()).collect();
            let labels = [0, 2, 1, 2, 1, 0, 0, 2];
            let logits = mlp.forward(&images, shape).unwrap().to_vec();
            let (mut losses, mut lse) = (vec![0.0; 8], vec![0.0; 8]);
            cross_entropy_forward(&logits, &labels, 3, &mut losses, &mut lse).unwrap();
            let mut dlogits = vec![0.0; 24];
            cross_entropy_backward(&mut dlogits, &logits, &lse, &labels, 3, 1.0).unwrap();
            mlp.backward(&images, &dlogits).unwrap();
            let analytic = mlp.blocks[0].linear.weight.grad.clone();
            let input_analytic = mlp.input.weight.grad.clone();
            let step = 3e-3f32;
            let mut errs = Vec::new();
            for (which, analytic) in [(0, &analytic), (1, &input_analytic)] {
                let scale = analytic.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
                for i in 0..analytic.len() {
                    let mut probe = |delta: f32| {
                        let w = if which == 0 {
                            &mut mlp.blocks[0].linear.weight.value
                        } else {
                            &mut mlp.input.weight.value
                        };
                        w[i] += delta;
                        let loss = loss_of(&mut mlp, &images, shape, &labels);
                        let w = if which == 0 {
                            &mut mlp.blocks[0].linear.weight.value
                        } else {
                            &mut mlp.input.weight.value
                        };
                        w[i] -= delta;
                        loss
                    };
                    let numeric = (probe(step) - probe(-step)) / (2.0 * step as f64);
                    let err = (numeric - analytic[i] as f64).abs() / scale;
                    errs.push(err);
                }
            }
            errs.sort_by(|a, b| a.total_cmp(b));
            let p90 = errs[errs.len() * 9 / 10];
            assert!(
                p90 < 2e-3,
                "{norm:?} residual={residual}: 90th percentile error {p90}"
            );
        }
    }
}

#[test]
fn learning_rate_warms_up_then_follows_the_schedule() {
    let mut config = TrainConfig::new(ModelSpec::Resnet {
        arch: "resnet20".into(),
        small_stem: false,
        zero_init_residual: false,
    });
    config.epochs = 4;
    config.warmup_epochs = 1.0;
    let lr = |c: &TrainConfig, step| c.lr_at(step, 10).unwrap();
    assert!((lr(&config, 0) - 0.01).abs() < 1e-7);
    assert!((lr(&config, 9) - 0.1).abs() < 1e-7);
    assert!((lr(&config, 25) - 0.05).abs() < 1e-6, "cosine halfway");
    config.schedule = LrSchedule::Step {
        every_epochs: 2,
        gamma: 0.1,
    };
    assert!((lr(&config, 15) - 0.1).abs() < 1e-7);
    assert!((lr(&config, 20) - 0.01).abs() < 1e-7);
    config.warmup_epochs = 5.0;
    assert!(config.validate().is_err(), "warm-up longer than the run");
    config.warmup_epochs = 0.0;
    config.batch_size = 1;
    assert!(config.validate().is_err(), "BatchNorm needs two images");
}

/// Four classes told apart by which row of an 8x8 image is bright.
fn bands(count: usize, seed: u64) -> LabeledImages {
    let mut rng = Rng::new(seed);
    let shape = ImageShape::new(count, 1, 8, 8);
    let labels: Vec<u32> = (0..count).map(|i| (i % 4) as u32).collect();
    let mut pixels = vec![0.0; shape.len()];
    for (image, &label) in pixels.chunks_mut(64).zip(&labels) {
        for (p, v) in image.iter_mut().enumerate() {
            *v = 0.2 * rng.uniform()
                + if p / 8 == 2 * label as usize {
                    0.8
                } else {
                    0.0
                };
        }
    }
    LabeledImages::new(shape, pixels, labels).unwrap()
}

#[test]
fn a_small_resnet_learns_and_its_checkpoint_round_trips() {
    let splits = ImageSplits {
        train: bands(128, 1),
        test: bands(32, 2),
    };
    let mut config = TrainConfig::new(ModelSpec::Resnet {
        arch: "resnet20".into(),
        small_stem: false,
        zero_init_residual: true,
    });
    config.epochs = 3;
    config.batch_size = 16;
    config.lr = 0.05;
    let mut trainer = Trainer::new(config, splits.clone()).unwrap();
    for _ in 0..3 {
        trainer.train_epoch(&mut |_| {}).unwrap();
    }
    let last = trainer.history().last().unwrap().clone();
    assert!(last.test_error < 0.1, "learned: {last:?}");
    let dir = std::env::temp_dir().join(format!("resnorm-vision-train-{}", std::process::id()));
    trainer.save(&dir).unwrap();
    let (card, mut model) = load_model(&dir).unwrap();
    assert_eq!(card.image, [1, 8, 8]);
    let saved = trainer.evaluate_test().unwrap();
    let test = resnorm::data::image::ImageDataset::new(
        splits.test.clone(),
        card.normalization().unwrap().as_ref(),
    )
    .unwrap();
    let loaded = resnorm::vision::evaluate(model.as_mut(), &test, 16).unwrap();
    assert_eq!(
        saved, loaded,
        "the loaded model predicts exactly as the saved one"
    );
    // A resumed run continues where the saved one stopped, with identical state.
    let mut resumed = Trainer::resume(&dir, splits.clone(), Some(4)).unwrap();
    assert_eq!((resumed.epoch(), resumed.history().len()), (3, 3));
    let next = resumed.train_epoch(&mut |_| {}).unwrap();
    assert_eq!(next.epoch, 4);
    // Corrupting the trainer's step count is refused.
    std::fs::write(
        dir.join("checkpoint/trainer.json"),
        "{\"epoch\":1,\"step\":1,\"rng_state\":[1,2,3,4],\"history\":[]}",
    )
    .unwrap();
    let err = Trainer::resume(&dir, splits, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("trainer.json") && err.contains("torn"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Stopped after any batch of an epoch, saved and resumed, a run ends with the weights,
/// history and generator state of the run that never stopped.
#[test]
fn a_run_stopped_mid_epoch_resumes_bit_for_bit() {
    let splits = ImageSplits {
        train: bands(64, 1),
        test: bands(16, 2),
    };
    let mut config = TrainConfig::new(ModelSpec::Mlp {
        depth: 2,
        width: 16,
        norm: "batch".into(),
        residual: true,
    });
    config.epochs = 2;
    config.batch_size = 16;
    config.crop_padding = 1;
    let weights = |trainer: &mut Trainer| {
        let mut out = Vec::new();
        trainer
            .model()
            .visit_params(&mut |p| out.push(p.value.to_vec()));
        trainer
            .model()
            .visit_buffers(&mut |p| out.push(p.value.to_vec()));
        out
    };
    let mut straight = Trainer::new(config.clone(), splits.clone()).unwrap();
    while straight.epoch() < config.epochs {
        straight.train_epoch(&mut |_| {}).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("resnorm-vision-stop-{}", std::process::id()));
    for stop_at in [0u64, 1, 3, 4, 6] {
        let mut first = Trainer::new(config.clone(), splits.clone()).unwrap();
        let steps = std::cell::Cell::new(0u64);
        let mut count = |_: &resnorm::vision::BatchReport| steps.set(steps.get() + 1);
        while first
            .train_epoch_until(&mut count, &|| steps.get() == stop_at)
            .unwrap()
            .is_some()
        {}
        first.save(&dir).unwrap();
        let mut resumed = Trainer::resume(&dir, splits.clone(), None).unwrap();
        while resumed.epoch() < config.epochs {
            resumed.train_epoch(&mut |_| {}).unwrap();
        }
        assert_eq!(
            weights(&mut resumed),
            weights(&mut straight),
            "stop at {stop_at}"
        );
        let train_losses = |t: &Trainer| {
            t.history()
                .iter()
                .map(|r| r.train_loss.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            train_losses(&resumed),
            train_losses(&straight),
            "stop at {stop_at}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_study_runs_every_panel() {
    let splits = ImageSplits {
        train: bands(64, 3),
        test: bands(16, 4),
    };
    let study = StudyConfig {
        resnet_models: vec!["plain20".into(), "resnet20".into()],
        resnet_epochs: 1,
        resnet_train_limit: Some(32),
        resnet_crop_padding: 2,
        resnet_flip: true,
        test_limit: Some(12),
        mlp_depths: vec![2],
        mlp_width: 16,
        mlp_epochs: 1,
        mlp_train_limit: None,
        mlp_lr: 0.02,
        batch_size: 16,
        lr: 0.05,
        log_every: 1,
        response_images: 8,
        seed: 0,
    };
    let mut steps = 0;
    let results = run_study(&splits, &study, &mut |event| {
        if let resnorm::vision::StudyEvent::Batch(_) = event {
            steps += 1;
        }
    })
    .unwrap();
    assert_eq!(steps, 2 * 2 + 4 * 4);
    assert_eq!(results.resnets.len(), 2);
    assert_eq!(results.resnets[1].response_std.len(), 2 * 9);
    assert_eq!(results.resnets[0].train_error_curve.len(), 2);
    assert_eq!(results.mlps.len(), 4);
    assert_eq!(
        results.mlps[0].grad_norms_at_init.len(),
        2 + 2,
        "input, 2 blocks, head"
    );
    assert_eq!(results.mlps[0].model, "mlp-d2-layer-skip");
}
