//! Sentence classification: the GPT's hidden-state backward agrees with its language-model
//! backward, padding changes nothing, training learns a separable task, resuming is bit for
//! bit, a frozen body stays put, fine-tuning starts from the pretrained weights, and the
//! PyTorch twin agrees on logits and gradients.

mod common;

use common::{assert_close, saved_tiny_run, Fixture, TempDir};
use resnorm::classify::{
    load_classifier, BodyKind, Classifier, ClassifierBody, ClassifyConfig, EncoderBody,
    EncoderConfig, Pooling, TableSpec, Task, Trainer,
};
use resnorm::kernels::NormKind;
use resnorm::lm::TokenizerKind;
use resnorm::models::gpt::{Gpt, GptConfig, Placement};
use resnorm::nn::Param;
use resnorm::rng::Rng;

fn tiny_gpt(placement: Placement) -> Gpt {
    let config = GptConfig {
        layers: 2,
        heads: 2,
        width: 16,
        context: 6,
        vocab: 13,
        placement,
        norm: NormKind::Layer,
        ..GptConfig::default()
    };
    Gpt::new(config, 4).unwrap()
}

fn grads(params: &[&mut Param]) -> Vec<(String, Vec<f32>)> {
    params
        .iter()
        .map(|p| (p.name.clone(), p.grad.to_vec()))
        .collect()
}

#[test]
fn hidden_backward_equals_the_language_model_backward_but_the_head() {
    for placement in [Placement::PreLn, Placement::ResiDual, Placement::PostLn] {
        let mut gpt = tiny_gpt(placement);
        let (batch, seq, width, vocab) = (2, 5, 16, 13);
        let mut rng = Rng::new(1);
        let tokens: Vec<u32> = (0..batch * seq).map(|_| rng.below(vocab) as u32).collect();
        let targets: Vec<u32> = (0..batch * seq).map(|_| rng.below(vocab) as u32).collect();
        gpt.zero_grad();
        gpt.forward(&tokens, batch, Some(&targets)).unwrap();
        gpt.backward().unwrap();
        let lm = grads(&gpt.params_mut());
        let dlogits = gpt.logits().to_vec(); // backward left the logits' gradient there
        let wte = gpt.embedding.wte.value.to_vec();
        // dz = dlogits · wte: what the tied head sends back into the hidden states.
        let mut dz = vec![0.0f32; batch * seq * width];
        for (r, row) in dz.chunks_exact_mut(width).enumerate() {
            for (v, &g) in dlogits[r * vocab..][..vocab].iter().enumerate() {
                for (d, &w) in row.iter_mut().zip(&wte[v * width..][..width]) {
                    *d += g * w;
                }
            }
        }
        gpt.zero_grad();
        gpt.forward_hidden(&tokens, batch).unwrap();
        gpt.backward_hidden(&dz).unwrap();
        for ((name, expected), (_, actual)) in lm.iter().zip(grads(&gpt.params_mut())) {
            if name != "wte.weight" {
                assert_close(
                    &format!("{placement} {name}"),
                    &actual,
                    expected,
                    1e-4,
                    1e-6,
                );
            }
        }
        assert!(
            gpt.backward_hidden(&dz).is_err(),
            "a second backward is refused"
        );
        assert!(
            gpt.backward().is_err(),
            "an LM backward after a hidden forward is refused"
        );
    }
}

#[test]
fn pads_change_no_output() {
    for pooling in [Pooling::Last, Pooling::Mean] {
        let task = Task::Classes(vec!["a".into(), "b".into()]);
        let body = ClassifierBody::Gpt(tiny_gpt(Placement::PreLn));
        let mut model = Classifier::new(body, &task, pooling, false, 2).unwrap();
        let alone = model.forward(&[3, 4, 5], &[3]).unwrap().to_vec();
        let padded = model
            .forward(&[7, 8, 9, 1, 2, 6, 3, 4, 5, 0, 0, 0], &[6, 3])
            .unwrap()
            .to_vec();
        assert_close(&format!("{pooling}"), &padded[2..], &alone, 1e-5, 1e-6);
        let other_pads = model
            .forward(&[7, 8, 9, 1, 2, 6, 3, 4, 5, 11, 12, 1], &[6, 3])
            .unwrap();
        assert_eq!(
            other_pads,
            &padded[..],
            "{pooling}: the pads' values reach no output"
        );
    }
}

/// Sentences that say which class they are by one word among noise.
fn separable_tsv(dir: &TempDir, rows: usize) -> std::path::PathBuf {
    let mut rng = Rng::new(3);
    let noise = [
        "the", "a", "film", "was", "is", "it", "and", "so", "very", "plot",
    ];
    let mut text = String::from("topic\tlabel\ttext\n");
    for i in 0..rows {
        let label = ["neg", "pos"][i % 2];
        let word = ["awful", "lovely"][i % 2];
        let mut words: Vec<&str> = (0..4).map(|_| noise[rng.below(noise.len())]).collect();
        words.insert(rng.below(5), word);
        text.push_str(&format!("t{}\t{label}\t{}\n", i % 3, words.join(" ")));
    }
    dir.write("s.tsv", text.as_bytes())
}

fn tiny_config(data: std::path::PathBuf, steps: u64) -> ClassifyConfig {
    ClassifyConfig {
        data,
        table: TableSpec {
            label_column: Some("label".into()),
            group_column: Some("topic".into()),
            ..TableSpec::new("text")
        },
        layers: 1,
        heads: 2,
        width: 16,
        context: 24,
        tokenizer: TokenizerKind::Char,
        batch: 8,
        steps,
        lr: 1e-2,
        warmup: 5,
        eval_every: 0,
        ..ClassifyConfig::default()
    }
}

#[test]
fn learns_a_separable_task_and_resumes_bit_for_bit() {
    learns_and_resumes("learns", |c| c);
}

/// The encoder body with a [CLS] token and dropout before the head and inside the encoder:
/// both kinds of masks come from the saved data RNG, so resuming stays bit for bit.
#[test]
fn the_encoder_learns_a_separable_task_and_resumes_bit_for_bit() {
    learns_and_resumes("encoder-learns", |c| ClassifyConfig {
        body: BodyKind::Encoder,
        pooling: Pooling::Cls,
        placement: Placement::PostLn,
        dropout: 0.1,
        encoder_dropout: 0.1,
        ..c
    });
}

fn learns_and_resumes(name: &str, setup: fn(ClassifyConfig) -> ClassifyConfig) {
    let dir = TempDir::new(name);
    let data = separable_tsv(&dir, 200);
    let (straight, halves) = (dir.0.join("straight"), dir.0.join("halves"));
    let tiny_config = |data, steps| setup(tiny_config(data, steps));
    let mut trainer = Trainer::new(tiny_config(data.clone(), 120), &straight).unwrap();
    let first = trainer.step().unwrap().loss;
    while !trainer.is_done() {
        trainer.step().unwrap();
    }
    let report = trainer.evaluate(true).unwrap();
    let classes = report.classes.as_ref().unwrap();
    assert!(classes.accuracy >= 0.9, "{report:?} (first loss {first})");
    assert_eq!(classes.per_group.as_ref().unwrap().len(), 3);
    let mut half = Trainer::new(tiny_config(data, 120), &halves).unwrap();
    for _ in 0..60 {
        half.step().unwrap();
    }
    half.save(&halves).unwrap();
    drop(half);
    let mut resumed = Trainer::resume(&halves, None).unwrap();
    while !resumed.is_done() {
        resumed.step().unwrap();
    }
    let values = |t: &Trainer| {
        let mut v = Vec::new();
        t.model().visit_params(&mut |p| v.push(p.value.to_vec()));
        v
    };
    assert_eq!(values(&trainer), values(&resumed));
    assert_eq!(
        std::fs::read(straight.join("split.tsv")).unwrap(),
        std::fs::read(halves.join("split.tsv")).unwrap()
    );
    trainer.save(&straight).unwrap();
    let loaded = load_classifier(&straight).unwrap();
    let mut v = Vec::new();
    loaded.model.visit_params(&mut |p| v.push(p.value.to_vec()));
    assert_eq!(v, values(&trainer));
}

#[test]
fn a_frozen_body_keeps_its_pretrained_weights() {
    let dir = TempDir::new("frozen");
    let pretrained = dir.0.join("lm");
    saved_tiny_run(&pretrained, 16, 2);
    let lm = resnorm::lm::load_checkpoint(&pretrained).unwrap().model;
    let data = separable_tsv(&dir, 60);
    for freeze_body in [true, false] {
        let config = ClassifyConfig {
            init: Some(pretrained.clone()),
            freeze_body,
            ..tiny_config(data.clone(), 3)
        };
        let run = dir.0.join(format!("run-{freeze_body}"));
        let mut trainer = Trainer::new(config, &run).unwrap();
        assert_eq!(
            trainer.config().width,
            16,
            "the body's size is the checkpoint's"
        );
        let body = |t: &Trainer| {
            let ClassifierBody::Gpt(gpt) = &t.model().body else {
                panic!("fine-tuning keeps a GPT body")
            };
            let mut v = Vec::new();
            gpt.visit_params(&mut |p| v.push(p.value.to_vec()));
            v
        };
        let mut start = Vec::new();
        lm.visit_params(&mut |p| start.push(p.value.to_vec()));
        assert_eq!(body(&trainer), start);
        for _ in 0..3 {
            trainer.step().unwrap();
        }
        assert_eq!(body(&trainer) == start, freeze_body);
    }
}

/// tools/fixtures/classify.py: a pre-ln GPT body with mean pooling and a three-class head,
/// logits, loss and every gradient against PyTorch.
#[test]
fn pytorch_parity_of_logits_loss_and_gradients() {
    let fx = Fixture::load("classify");
    let config = GptConfig {
        layers: 2,
        heads: 2,
        width: 16,
        context: 6,
        vocab: 13,
        placement: Placement::PreLn,
        norm: NormKind::Layer,
        ..GptConfig::default()
    };
    for pooling in [Pooling::Last, Pooling::Mean] {
        let task = Task::Classes(vec!["a".into(), "b".into(), "c".into()]);
        let body = ClassifierBody::Gpt(Gpt::new(config.clone(), 0).unwrap());
        let mut model = Classifier::new(body, &task, pooling, false, 0).unwrap();
        for p in model.params_mut() {
            p.value.copy_from_slice(&fx.get(&p.name).data);
        }
        let tokens: Vec<u32> = fx.get("tokens").data.iter().map(|&t| t as u32).collect();
        let lengths: Vec<usize> = fx.get("lengths").data.iter().map(|&n| n as usize).collect();
        let labels: Vec<u32> = fx.get("labels").data.iter().map(|&l| l as u32).collect();
        let logits = model.forward(&tokens, &lengths).unwrap().to_vec();
        assert_close(
            &format!("{pooling} logits"),
            &logits,
            &fx.get(&format!("{pooling}.logits")).data,
            1e-4,
            1e-5,
        );
        let loss = model.loss(&labels, &vec![0.0; labels.len()]).unwrap();
        assert_close(
            &format!("{pooling} loss"),
            &[loss],
            &fx.get(&format!("{pooling}.loss")).data,
            1e-5,
            1e-6,
        );
        model.zero_grad();
        model.backward().unwrap();
        for p in model.params_mut() {
            let expected = &fx.get(&format!("{pooling}.grad.{}", p.name)).data;
            assert_close(
                &format!("{pooling} d{}", p.name),
                &p.grad,
                expected,
                1e-3,
                1e-5,
            );
        }
    }
}

/// Every placement, [CLS] and mean pooling, a padded batch: the whole encoder classifier's
/// gradients against finite differences of an `f64` reference.
#[test]
fn encoder_classifier_gradients_match_finite_differences() {
    for result in resnorm::gradcheck::encoder_classifier::checks() {
        assert!(result.passed, "{result:?}");
    }
}

/// The [CLS] token goes with cls pooling, and only there.
#[test]
fn cls_pooling_needs_the_encoders_cls_token() {
    let task = Task::Classes(vec!["a".into(), "b".into()]);
    let encoder = |cls| {
        let config = EncoderConfig {
            vocab: 5,
            layers: 1,
            heads: 2,
            width: 8,
            context: 4,
            cls,
            ..EncoderConfig::default()
        };
        ClassifierBody::Encoder(EncoderBody::new(config, 0).unwrap())
    };
    assert!(Classifier::new(encoder(false), &task, Pooling::Cls, false, 0).is_err());
    assert!(Classifier::new(encoder(true), &task, Pooling::Mean, false, 0).is_err());
    let gpt = ClassifierBody::Gpt(tiny_gpt(Placement::PreLn));
    assert!(Classifier::new(gpt, &task, Pooling::Cls, false, 0).is_err());
    assert!(Classifier::new(encoder(true), &task, Pooling::Cls, false, 0).is_ok());
}

/// tools/fixtures/encoder_classify.py: `torch.nn.TransformerEncoder` (post-ln, pre-ln) and a
/// hand-written twin (the other placements), [CLS] and mean pooling, a padded batch: logits,
/// loss and every gradient.
#[test]
fn encoder_pytorch_parity_of_logits_loss_and_gradients() {
    use Placement::*;
    let cases = [
        ("torch", PostLn, NormKind::Layer, Pooling::Cls),
        ("torch", PreLn, NormKind::Layer, Pooling::Mean),
        ("torch", PreLn, NormKind::Layer, Pooling::Cls),
        ("hand", DeepNorm, NormKind::Layer, Pooling::Mean),
        ("hand", ResiDual, NormKind::Rms, Pooling::Cls),
        ("hand", Sandwich, NormKind::Rms, Pooling::Mean),
        ("hand", ReZero, NormKind::Layer, Pooling::Cls),
        ("hand", NoNorm, NormKind::Layer, Pooling::Mean),
        ("hand", NoResidual, NormKind::Rms, Pooling::Cls),
    ];
    for (twin, placement, norm, pooling) in cases {
        let name = format!("encoder_classify_{twin}_{placement}_{norm}_{pooling}");
        let fx = Fixture::load(&name);
        let config = EncoderConfig {
            vocab: 13,
            layers: 2,
            heads: 2,
            width: 8,
            context: 6,
            placement,
            norm,
            cls: pooling == Pooling::Cls,
            ..EncoderConfig::default()
        };
        let task = Task::Classes(vec!["a".into(), "b".into(), "c".into()]);
        let body = ClassifierBody::Encoder(EncoderBody::new(config, 0).unwrap());
        let mut model = Classifier::new(body, &task, pooling, false, 0).unwrap();
        for p in model.params_mut() {
            p.value
                .copy_from_slice(&fx.get(&format!("param.{}", p.name)).data);
        }
        let ints = |key: &str| {
            fx.get(key)
                .data
                .iter()
                .map(|&v| v as usize)
                .collect::<Vec<_>>()
        };
        let tokens: Vec<u32> = ints("tokens").iter().map(|&t| t as u32).collect();
        let labels: Vec<u32> = ints("labels").iter().map(|&l| l as u32).collect();
        let logits = model.forward(&tokens, &ints("lengths")).unwrap().to_vec();
        assert_close(
            &format!("{name} logits"),
            &logits,
            &fx.get("logits").data,
            1e-4,
            1e-5,
        );
        let loss = model.loss(&labels, &[0.0; 3]).unwrap();
        assert_close(
            &format!("{name} loss"),
            &[loss],
            &fx.get("loss").data,
            1e-5,
            1e-6,
        );
        model.zero_grad();
        model.backward().unwrap();
        for p in model.params_mut() {
            let expected = &fx.get(&format!("grad.{}", p.name)).data;
            assert_close(
                &format!("{name} d{}", p.name),
                &p.grad,
                expected,
                1e-4,
                1e-5,
            );
        }
    }
}
