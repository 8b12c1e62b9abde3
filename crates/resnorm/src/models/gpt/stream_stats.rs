//! Measurements of the residual stream that the theory of residual connections and
//! normalization talks about, taken by the model while it runs when asked to
//! ([`super::Gpt::record_stream_stats`]).
//!
//! For the streams `x_0 .. x_2L` (before each residual unit, and after the last):
//! - `rms[k] = √(mean(x_k²))`: grows like `√k` under Pre-LN, stays near 1 under Post-LN;
//! - `cosine[k]`: the mean over tokens of `cos(x_k, x_{k+1})`, how much unit `k` turns the stream;
//! - `grad_norm[k] = ‖∂L/∂x_k‖₂` over the whole batch: vanishes towards `k = 0` without
//!   residual connections.
//!
//! ```
//! use resnorm::models::gpt::stream_stats::{mean_row_cosine, rms};
//! assert!((rms(&[3.0, 4.0]) - (12.5f32).sqrt()).abs() < 1e-6);
//! assert!((mean_row_cosine(&[1.0, 0.0, 1.0, 1.0], &[2.0, 0.0, -1.0, -1.0], 2) - 0.0).abs() < 1e-6);
//! ```

/// Residual-stream measurements of the last forward and backward.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamStats {
    /// RMS of each stream `x_0 .. x_2L` (forward).
    pub rms: Vec<f32>,
    /// Mean per-token cosine similarity of `x_k` and `x_{k+1}`, `k = 0 .. 2L-1` (forward).
    pub cosine: Vec<f32>,
    /// `‖∂L/∂x_k‖₂` for `k = 0 .. 2L` (backward; empty until a backward ran).
    pub grad_norm: Vec<f32>,
}

/// Root mean square of `x` (0 for an empty slice), accumulated in `f64`.
pub fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64).sqrt() as f32
}

/// Euclidean norm of `x`, accumulated in `f64`.
pub fn l2_norm(x: &[f32]) -> f32 {
    x.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt() as f32
}

/// Mean over rows of width `cols` of the cosine similarity between `a`'s and `b`'s rows
/// (a row of zeros counts as similarity 0).
pub fn mean_row_cosine(a: &[f32], b: &[f32], cols: usize) -> f32 {
    let rows = a.len() / cols;
    if rows == 0 {
        return 0.0;
    }
    let total: f64 = a
        .chunks_exact(cols)
        .zip(b.chunks_exact(cols))
        .map(|(a, b)| {
            let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
            for (&x, &y) in a.iter().zip(b) {
                let (x, y) = (x as f64, y as f64);
                ab += x * y;
                aa += x * x;
                bb += y * y;
            }
            if aa == 0.0 || bb == 0.0 {
                0.0
            } else {
                ab / (aa * bb).sqrt()
            }
        })
        .sum();
    (total / rows as f64) as f32
}
