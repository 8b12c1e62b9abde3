//! Helpers of the attention kernels' tests (`attention_modes.rs`, `attention_dropout.rs`).

use super::assert_close;
use resnorm::gradcheck::attention::{
    operands, reference_backward, reference_forward, run_kernels, Mode,
};
use resnorm::kernels::attention::AttentionShape;
use resnorm::rng::Rng;

pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

pub fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

/// Modes named `name` of these shapes, their q/k/v fused when the name says `self`.
pub fn named_modes(
    cases: impl IntoIterator<Item = (&'static str, AttentionShape, Option<Vec<usize>>)>,
) -> impl Iterator<Item = Mode> {
    cases.into_iter().map(|(name, shape, key_lengths)| Mode {
        name,
        fused: name.contains("self"),
        shape,
        key_lengths,
    })
}

/// Probabilities on the keys each query sees (the kernels leave the others as they were).
pub fn seen_probs(mode: &Mode, probs: &[f32]) -> Vec<f32> {
    let s = &mode.shape;
    let mut seen = Vec::new();
    for (row, p) in probs.chunks_exact(s.kv_len).enumerate() {
        let (b, i) = (row / (s.heads * s.q_len), row % s.q_len);
        let len = mode.key_lengths.as_ref().map_or(s.kv_len, |l| l[b]);
        seen.extend_from_slice(&p[..s.visible(i, len)]);
    }
    seen
}

/// Runs the kernels on random operands of every mode and asserts the output, the saved
/// (undropped) probabilities and `dq`, `dk`, `dv` equal the `f64` references (with the same
/// dropout mask, where the mode has one): 2e-5 forward, 1e-4 backward.
pub fn assert_modes_match_the_reference(modes: Vec<Mode>, rng: &mut Rng) {
    for mode in modes {
        let (q, k, v) = operands(&mode, rng);
        let dout: Vec<f32> = (0..mode.shape.out_len()).map(|_| rng.normal()).collect();
        let (out, probs, grads) = run_kernels(&mode, (&q, &k, &v), &dout).unwrap();
        let lengths = mode.key_lengths.as_deref();
        let operands = (&widen(&q)[..], &widen(&k)[..], &widen(&v)[..]);
        let (want_out, want_probs) = reference_forward(operands, &mode.shape, lengths);
        let name = |what| format!("{} {what}", mode.name);
        assert_close(&name("out"), &out, &narrow(&want_out), 2e-5, 2e-5);
        let want_seen = seen_probs(&mode, &narrow(&want_probs));
        let seen = seen_probs(&mode, &probs);
        assert_close(&name("probs"), &seen, &want_seen, 2e-5, 2e-5);
        let want = reference_backward(&widen(&dout), operands, &mode.shape, lengths);
        for (part, (got, want)) in ["dq", "dk", "dv"]
            .iter()
            .zip(grads.iter().zip([want.0, want.1, want.2]))
        {
            assert_close(&name(part), got, &narrow(&want), 1e-4, 1e-4);
        }
    }
}
