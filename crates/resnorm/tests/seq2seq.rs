//! The encoder-decoder: gradient checks of every placement and norm against the f64
//! reference, and padding that does not leak into valid positions.

use resnorm::gradcheck::seq2seq::{check_model, OwnedBatch};
use resnorm::kernels::NormKind;
use resnorm::models::gpt::Placement;
use resnorm::models::seq2seq::{Seq2Seq, Seq2SeqConfig};
use resnorm::rng::Rng;

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
