//! The attention kernels in every mode (causal or bidirectional x self or cross x padded or
//! not x grouped or not, and decoding with a cache) against the naive `f64` references of
//! `resnorm::gradcheck::attention`, at sizes that cross the kernels' blocks and vectors;
//! padding that is neither attended nor given gradient; biases added as the heads read.

mod common;

use common::attention::{assert_modes_match_the_reference, named_modes};
use common::{assert_close, is_invalid, is_shape, normal};
use resnorm::gradcheck::attention::{checks, modes, operands, run_kernels, Mode, Packed};
use resnorm::kernels::attention::{
    attention_backward, attention_decode, attention_forward, AttentionShape, GradTarget, Grads,
    Rows,
};
use resnorm::rng::Rng;

/// The gradient-check modes, and larger ones: 37 and 53 positions (blocks of four and
/// vectors of sixteen with remainders), heads of 12 and 64 features.
fn all_modes() -> Vec<Mode> {
    let mut all = modes();
    let big = |tq, tk, d| AttentionShape::new(2, 4, tq, tk, d);
    all.extend(named_modes([
        ("causal self 37", big(37, 37, 12).causal(), None),
        (
            "causal self padded grouped 37",
            big(37, 37, 64).causal().grouped(2),
            Some(vec![30, 37]),
        ),
        (
            "bidirectional self padded 53",
            big(53, 53, 12),
            Some(vec![53, 17]),
        ),
        (
            "cross padded 37x53",
            big(37, 53, 64).grouped(1),
            Some(vec![5, 53]),
        ),
        ("cross empty 21x40", big(21, 40, 12), Some(vec![40, 0])),
        (
            "causal cache 5x53",
            big(5, 53, 64).causal().grouped(2),
            Some(vec![53, 50]),
        ),
    ]));
    all
}

#[test]
fn every_mode_matches_the_f64_reference_forward_and_backward() {
    assert_modes_match_the_reference(all_modes(), &mut Rng::new(5));
}

#[test]
fn every_mode_passes_the_gradient_check() {
    for result in checks() {
        assert!(result.passed, "{result:?}");
    }
}

#[test]
fn decoding_equals_the_tiled_forward_in_every_mode() {
    let mut rng = Rng::new(6);
    for mode in all_modes() {
        let (q, k, v) = operands(&mode, &mut rng);
        let packed = Packed::new(&mode, (&q, &k, &v));
        let s = &mode.shape;
        let lengths = mode.key_lengths.as_deref();
        let (mut out, mut probs) = (vec![0.0; s.out_len()], vec![0.0; s.probs_len()]);
        attention_forward(&mut out, &mut probs, packed.views(&mode), s, lengths).unwrap();
        let (mut dec, mut dec_probs) = (vec![f32::NAN; s.out_len()], vec![f32::NAN; s.probs_len()]);
        attention_decode(&mut dec, &mut dec_probs, packed.views(&mode), s, lengths).unwrap();
        assert_close(mode.name, &dec, &out, 1e-5, 1e-6);
        // Decoding writes every probability: zeros where the zeroed tiled buffer has them.
        assert_close(mode.name, &dec_probs, &probs, 1e-5, 1e-6);
    }
}

/// Padded keys and values full of NaN: never read, so every result stays finite, the
/// padded keys' gradients are zero, and a sequence with no valid key gives zeros.
#[test]
fn padding_is_neither_attended_nor_given_gradient() {
    let mut rng = Rng::new(7);
    let mode = Mode {
        name: "nan padding",
        fused: false,
        shape: AttentionShape::new(3, 2, 9, 21, 16).grouped(1),
        key_lengths: Some(vec![21, 6, 0]),
    };
    let (q, mut k, mut v) = operands(&mode, &mut rng);
    let s = mode.shape;
    let width = s.kv_heads * s.head_dim;
    for (b, &len) in mode.key_lengths.as_ref().unwrap().iter().enumerate() {
        for j in len..s.kv_len {
            k[(b * s.kv_len + j) * width..][..width].fill(f32::NAN);
            v[(b * s.kv_len + j) * width..][..width].fill(f32::NAN);
        }
    }
    let dout = normal(8, s.out_len());
    let (out, _, [dq, dk, dv]) = run_kernels(&mode, (&q, &k, &v), &dout).unwrap();
    assert!(out
        .iter()
        .chain(&dq)
        .chain(&dk)
        .chain(&dv)
        .all(|x| x.is_finite()));
    for (b, &len) in [21usize, 6, 0].iter().enumerate() {
        let rows = |m: &[f32], from: usize, to: usize, w: usize| -> Vec<f32> {
            m[(b * (m.len() / s.batch / w) + from) * w..(b * (m.len() / s.batch / w) + to) * w]
                .to_vec()
        };
        assert!(rows(&dk, len, s.kv_len, width).iter().all(|&g| g == 0.0));
        assert!(rows(&dv, len, s.kv_len, width).iter().all(|&g| g == 0.0));
        if len == 0 {
            let qw = s.heads * s.head_dim;
            assert!(rows(&out, 0, s.q_len, qw).iter().all(|&o| o == 0.0));
            assert!(rows(&dq, 0, s.q_len, qw).iter().all(|&g| g == 0.0));
        }
    }
}

/// Cross-attention with projection biases added as the heads read them equals the biases
/// added first, and the bias gradients are the gradients' column sums.
#[test]
fn biases_added_as_read_equal_biases_added_first() {
    let s = AttentionShape::new(2, 4, 11, 19, 8).grouped(2);
    let lengths = Some(&[19usize, 7][..]);
    let (qw, kvw) = (s.heads * s.head_dim, 2 * s.kv_heads * s.head_dim);
    let q = normal(10, s.batch * s.q_len * qw);
    let kv = normal(11, s.batch * s.kv_len * kvw);
    let (q_bias, kv_bias) = (normal(12, qw), normal(13, kvw));
    let add = |m: &[f32], bias: &[f32]| -> Vec<f32> {
        m.iter()
            .enumerate()
            .map(|(i, x)| x + bias[i % bias.len()])
            .collect()
    };
    let (q_added, kv_added) = (add(&q, &q_bias), add(&kv, &kv_bias));
    let half = kvw / 2;
    let views = |q: &'static [f32], kv: &'static [f32]| {
        (
            Rows::new(q, qw, 0, s.q_len),
            Rows::new(kv, kvw, 0, s.kv_len),
            Rows::new(kv, kvw, half, s.kv_len),
        )
    };
    let leak = |v: Vec<f32>| -> &'static [f32] { Vec::leak(v) };
    let (q, kv, q_added, kv_added) = (leak(q), leak(kv), leak(q_added), leak(kv_added));
    let (qr, kr, vr) = views(q, kv);
    let biased = (
        qr.with_bias(&q_bias),
        kr.with_bias(&kv_bias),
        vr.with_bias(&kv_bias),
    );
    let dout = normal(14, s.out_len());
    let run = |views: (Rows<'_>, Rows<'_>, Rows<'_>)| {
        let (mut out, mut probs) = (vec![0.0; s.out_len()], vec![0.0; s.probs_len()]);
        attention_forward(&mut out, &mut probs, views, &s, lengths).unwrap();
        let (mut dq, mut dkv) = (vec![0.0; q.len()], vec![0.0; kv.len()]);
        let (mut dq_bias, mut dkv_bias) = (vec![0.5; qw], vec![0.5; kvw]);
        let grads = Grads::Split {
            dq: GradTarget::with_bias(&mut dq, &mut dq_bias),
            dkv: GradTarget::with_bias(&mut dkv, &mut dkv_bias),
        };
        attention_backward(grads, &dout, &probs, views, &s, lengths).unwrap();
        (out, dq, dkv, dq_bias, dkv_bias)
    };
    let got = run(biased);
    let want = run(views(q_added, kv_added));
    assert_close("out", &got.0, &want.0, 1e-5, 1e-6);
    assert_close("dq", &got.1, &want.1, 1e-5, 1e-6);
    assert_close("dkv", &got.2, &want.2, 1e-5, 1e-6);
    let column_sums = |m: &[f32], w: usize| -> Vec<f32> {
        (0..w)
            .map(|j| 0.5 + m.iter().skip(j).step_by(w).sum::<f32>())
            .collect()
    };
    assert_close("dq bias", &got.3, &column_sums(&got.1, qw), 1e-4, 1e-5);
    assert_close("dkv bias", &got.4, &column_sums(&got.2, kvw), 1e-4, 1e-5);
}

#[test]
fn bad_shapes_and_layouts_are_errors() {
    let data = vec![0.0f32; 2 * 4 * 12];
    let (mut out, mut probs) = (vec![0.0; 2 * 4 * 4], vec![0.0; 2 * 2 * 4 * 4]);
    let shape = AttentionShape::new(2, 2, 4, 4, 2);
    let view = |column| Rows::new(&data, 12, column, 4);
    let good = (view(0), view(4), view(8));
    let mut fwd = |shape: &AttentionShape, views, lengths: Option<&[usize]>| {
        attention_forward(&mut out, &mut probs, views, shape, lengths)
    };
    assert!(fwd(&shape, good, None).is_ok());
    assert!(is_invalid(fwd(&shape.grouped(3), good, None)));
    assert!(is_invalid(fwd(&shape.scaled(0.0), good, None)));
    assert!(is_invalid(fwd(
        &AttentionShape::new(2, 2, 4, 3, 2).causal(),
        good,
        None
    )));
    assert!(is_invalid(fwd(&shape, good, Some(&[4, 5]))));
    assert!(is_shape(fwd(&shape, good, Some(&[4]))));
    assert!(is_shape(fwd(&shape, (view(0), view(4), view(9)), None)));
    assert!(is_shape(fwd(
        &shape,
        (Rows::new(&data, 12, 0, 3), view(4), view(8)),
        None
    )));
    // A fused gradient buffer whose parts overlap would be written twice.
    let mut dqkv = vec![0.0; data.len()];
    let overlapping = (view(0), view(2), view(8));
    let grads = Grads::Packed(GradTarget::new(&mut dqkv));
    assert!(is_invalid(attention_backward(
        grads,
        &out,
        &probs,
        overlapping,
        &shape,
        None
    )));
    let biased = (view(0).with_bias(&data[..12]), view(4), view(8));
    assert!(is_invalid(attention_decode(
        &mut out, &mut probs, biased, &shape, None
    )));
}
