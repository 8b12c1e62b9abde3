//! Helpers of the attention kernels' tests (`attention_modes.rs`, `attention_dropout.rs`).

use resnorm::gradcheck::attention::Mode;
use resnorm::kernels::attention::AttentionShape;

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
