//! The encoder-decoder: parity with `torch.nn.Transformer` and the hand-written PyTorch twin
//! (tools/fixtures/seq2seq.py), gradient checks of every placement and norm against the f64
//! reference (with dropout and label smoothing on too), dropout off in evaluation, and
//! padding that does not leak into valid positions.

mod common;

use common::{assert_close, Fixture};
use resnorm::gradcheck::seq2seq::{check_model, check_training, tiny_config, OwnedBatch};
use resnorm::kernels::NormKind;
use resnorm::models::gpt::Placement;
use resnorm::models::seq2seq::{Batch, Dropout, Seq2Seq, Seq2SeqConfig};
use resnorm::rng::Rng;

/// Fixture tolerances: float32 PyTorch vs float32 resnorm, different summation orders.
const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn parity(name: &str) {
    let fx = Fixture::load(name);
    let meta = |k: &str| fx.metadata[k].parse::<usize>().unwrap();
    let config = Seq2SeqConfig {
        vocab: meta("vocab"),
        width: meta("width"),
        heads: meta("heads"),
        encoder_layers: meta("encoder_layers"),
        decoder_layers: meta("decoder_layers"),
        max_len: meta("max_len"),
        placement: fx.metadata["placement"].parse().unwrap(),
        norm: fx.metadata["norm"].parse().unwrap(),
        eps: fx.meta_f32("eps"),
    };
    let mut model = Seq2Seq::new(config, 0).unwrap();
    let mut count = 0;
    model.visit_params_mut(&mut |p| {
        let t = fx.get(&format!("param.{}", p.name));
        assert_eq!(t.shape, p.shape, "{}: shape", p.name);
        p.value.copy_from_slice(&t.data);
        count += 1;
    });
    let fixture_params = fx
        .tensors
        .keys()
        .filter(|k| k.starts_with("param."))
        .count();
    assert_eq!(
        fixture_params, count,
        "{name}: the model and PyTorch have the same parameters"
    );
    let ints = |k: &str| {
        fx.get(k)
            .data
            .iter()
            .map(|&v| v as u32)
            .collect::<Vec<u32>>()
    };
    let lengths = |k: &str| {
        fx.get(k)
            .data
            .iter()
            .map(|&v| v as usize)
            .collect::<Vec<usize>>()
    };
    let (src, tgt, targets) = (ints("src"), ints("tgt"), ints("targets"));
    let (src_lengths, tgt_lengths) = (lengths("src_lengths"), lengths("tgt_lengths"));
    let batch = Batch {
        batch: src_lengths.len(),
        src: &src,
        src_lengths: &src_lengths,
        tgt: &tgt,
        tgt_lengths: &tgt_lengths,
        targets: Some(&targets),
    };
    let loss = model.forward(&batch).unwrap().unwrap();
    assert_close(
        &format!("{name} loss"),
        &[loss],
        &fx.get("loss").data,
        RTOL,
        0.0,
    );
    assert_close(
        &format!("{name} logits"),
        model.logits(),
        &fx.get("logits").data,
        RTOL,
        ATOL,
    );
    model.backward().unwrap();
    model.visit_params(&mut |p| {
        let want = &fx.get(&format!("grad.{}", p.name)).data;
        assert_close(
            &format!("{name} grad {}", p.name),
            &p.grad,
            want,
            RTOL,
            ATOL,
        );
    });
}

#[test]
fn post_ln_and_pre_ln_match_torch_nn_transformer() {
    parity("seq2seq_torch_post-ln_layer");
    parity("seq2seq_torch_pre-ln_layer");
}

#[test]
fn the_other_placements_match_the_hand_written_twin() {
    for name in [
        "deep-norm_layer",
        "resi-dual_rms",
        "sandwich_rms",
        "re-zero_layer",
    ] {
        parity(&format!("seq2seq_hand_{name}"));
    }
}

#[test]
fn every_placement_and_norm_passes_the_gradient_check() {
    for placement in Placement::ALL {
        for norm in [NormKind::Layer, NormKind::Rms] {
            let results = check_model(placement, norm);
            let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
            assert!(failed.is_empty(), "{placement} {norm}: {failed:#?}");
        }
    }
}

#[test]
fn dropout_and_label_smoothing_pass_the_gradient_check() {
    for placement in [
        Placement::PostLn,
        Placement::PreLn,
        Placement::ReZero,
        Placement::ResiDual,
    ] {
        let results = check_training(placement, NormKind::Layer);
        let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
        assert!(failed.is_empty(), "{placement}: {failed:#?}");
    }
}

#[test]
fn dropout_is_off_without_a_dropout_and_seeded_with_one() {
    let config = Seq2SeqConfig {
        encoder_layers: 2,
        decoder_layers: 2,
        ..tiny_config(Placement::PreLn, NormKind::Layer)
    };
    let mut model = Seq2Seq::new(config, 3).unwrap();
    let batch = OwnedBatch::random(&mut Rng::new(5), 11, (5, &[5, 3]), (4, &[4, 2]));
    let plain = model.forward(&batch.view()).unwrap();
    let logits = model.logits().to_vec();
    let off = model.forward_training(&batch.view(), None, 0.0).unwrap();
    assert_eq!((plain, model.logits()), (off, &logits[..]));
    let zero = Dropout::new(0.0, 0.0, 9).unwrap();
    model
        .forward_training(&batch.view(), Some(zero), 0.0)
        .unwrap();
    assert_eq!(model.logits(), &logits[..], "rates of 0 drop nothing");
    let attention_only = zero.with_attention(0.3).unwrap();
    model
        .forward_training(&batch.view(), Some(attention_only), 0.0)
        .unwrap();
    assert_ne!(model.logits(), &logits[..], "attention dropout alone drops");
    let dropout = Dropout::new(0.3, 0.1, 9).unwrap();
    let a = model
        .forward_training(&batch.view(), Some(dropout), 0.0)
        .unwrap();
    let dropped = model.logits().to_vec();
    assert_ne!(dropped, logits);
    let b = model
        .forward_training(&batch.view(), Some(dropout), 0.0)
        .unwrap();
    assert_eq!(
        (a, &dropped[..]),
        (b, model.logits()),
        "the same seed, the same masks"
    );
    model
        .forward_training(&batch.view(), Some(dropout.for_step(1)), 0.0)
        .unwrap();
    assert_ne!(model.logits(), &dropped[..], "another step, other masks");
    assert_eq!(
        model.forward(&batch.view()).unwrap(),
        plain,
        "evaluation after training"
    );
    let smoothed = model.forward_training(&batch.view(), None, 0.1).unwrap();
    assert!(smoothed.unwrap() > plain.unwrap() - 1.0 && smoothed != plain);
}

#[test]
fn buffers_reserved_for_the_largest_batch_give_every_batch_the_same_results() {
    let config = Seq2SeqConfig {
        placement: Placement::ResiDual,
        ..tiny_config(Placement::PreLn, NormKind::Layer)
    };
    let mut reserved = Seq2Seq::new(config.clone(), 3).unwrap();
    reserved.reserve_for_tokens(12);
    let mut fresh = Seq2Seq::new(config, 3).unwrap();
    let mut rng = Rng::new(8);
    // Every batch has B·max(S, T) <= 12: growing, shrinking, then growing again.
    type Side = (usize, &'static [usize]);
    let shapes: [(Side, Side); 4] = [
        ((3, &[3, 2]), (2, &[2, 1])),
        ((6, &[6, 4]), (5, &[5, 5])),
        ((2, &[2, 1, 2, 2, 1, 2]), (2, &[1, 2, 2, 1, 2, 2])),
        ((4, &[4, 3, 1]), (3, &[3, 3, 2])),
    ];
    let dropout = Dropout::new(0.2, 0.1, 4).unwrap();
    for (src, tgt) in shapes {
        let batch = OwnedBatch::random(&mut rng, 11, src, tgt);
        let mut results = Vec::new();
        for model in [&mut reserved, &mut fresh] {
            model.zero_grad();
            let loss = model.forward_training(&batch.view(), Some(dropout), 0.1);
            let logits = model.logits().to_vec();
            model.backward().unwrap();
            let mut grads = Vec::new();
            model.visit_params(&mut |p| grads.extend_from_slice(&p.grad));
            results.push((loss.unwrap(), logits, grads));
        }
        assert_eq!(results[0], results[1], "sources {src:?}, targets {tgt:?}");
    }
}

#[test]
fn padding_does_not_change_the_valid_positions() {
    let config = Seq2SeqConfig {
        vocab: 13,
        width: 8,
        heads: 2,
        encoder_layers: 2,
        decoder_layers: 2,
        max_len: 8,
        placement: Placement::PreLn,
        ..Seq2SeqConfig::default()
    };
    let mut model = Seq2Seq::new(config, 3).unwrap();
    let mut rng = Rng::new(5);
    let batch = OwnedBatch::random(&mut rng, 13, (5, &[5, 3]), (4, &[4, 2]));
    model.forward(&batch.view()).unwrap();
    let logits = model.logits().to_vec();
    let mut padded = batch.clone();
    padded.src[5 + 3..].fill(7);
    padded.tgt[4 + 2..].fill(9);
    padded.targets[4 + 2..].fill(1);
    let loss = model.forward(&padded.view()).unwrap();
    assert_eq!(model.logits(), &logits[..]);
    assert!(loss.unwrap().is_finite());
}

#[test]
fn step_by_step_decoding_gives_the_full_forwards_logits() {
    use resnorm::models::seq2seq::decode::StepDecoder;
    for placement in [Placement::PostLn, Placement::ResiDual, Placement::DeepNorm] {
        let config = Seq2SeqConfig {
            vocab: 13,
            width: 8,
            heads: 2,
            encoder_layers: 2,
            decoder_layers: 2,
            max_len: 8,
            placement,
            ..Seq2SeqConfig::default()
        };
        let mut model = Seq2Seq::new(config, 3).unwrap();
        let mut rng = Rng::new(9);
        model.visit_params_mut(&mut |p| {
            resnorm::gradcheck::gpt::randomize_param(p, &mut rng);
        });
        let (tgt_seq, tgt_lengths) = (4, [4, 4]);
        let batch = OwnedBatch::random(&mut rng, 13, (5, &[5, 3]), (tgt_seq, &tgt_lengths));
        let view = resnorm::models::seq2seq::Batch {
            targets: None,
            ..batch.view()
        };
        model.forward(&view).unwrap();
        let full = model.logits().to_vec();
        let mut decoder =
            StepDecoder::new(&model, &batch.src, &batch.src_lengths, tgt_seq).unwrap();
        for t in 0..tgt_seq {
            let tokens: Vec<u32> = (0..2).map(|b| batch.tgt[b * tgt_seq + t]).collect();
            let logits = decoder.step(&tokens).unwrap();
            for b in 0..2 {
                let want = &full[(b * tgt_seq + t) * 13..][..13];
                let what = format!("{placement} sentence {b} position {t}");
                assert_close(&what, &logits[b * 13..][..13], want, 1e-4, 1e-5);
            }
        }
        assert!(decoder.step(&[1, 1]).is_err(), "the cache is full");
    }
}
