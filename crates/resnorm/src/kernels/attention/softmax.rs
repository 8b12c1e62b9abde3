//! The softmax of one row of scores and its backward, as attention uses them: on the keys a
//! query sees, with the scale folded in.
//!
//! ```text
//! forward   p_j = exp(s·z_j - max) / Σ_k exp(s·z_k - max)
//! backward  dz_j = s · p_j · (dp_j - Σ_k p_k dp_k)
//! ```
//!
//! Both are `#[inline(always)]` and written on plain `f32`: their callers are kernels already
//! compiled for the level in force (`simd::dispatch!`), into which they vectorize.

use crate::kernels::exp::{exp, row_max};

/// `row` becomes `softmax(scale · row)`; `scale > 0`, `row` not empty. The maximum and the
/// sum run in sixteen partial results, so that they vectorize (a plain fold is one chain of dependent operations). The values past the last
/// whole vector are computed first, as one vector: the row's last sixteen, the lanes before
/// them left out of the sum (element by element, their `exp`s are slow).
#[inline(always)]
pub(super) fn softmax(row: &mut [f32], scale: f32) {
    // scale > 0, so the largest scaled score is scale times the largest score.
    let max = row_max(row);
    let rem = row.len() % 16;
    let mut partial = [0.0f32; 16];
    // A row shorter than a vector is padded with its maximum.
    let mut last = [max; 16];
    let n = row.len().min(16);
    last[16 - n..].copy_from_slice(&row[row.len() - n..]);
    for (j, (sum, v)) in partial.iter_mut().zip(&mut last).enumerate() {
        *v = exp((*v - max) * scale);
        *sum += if j >= 16 - rem { *v } else { 0.0 };
    }
    let (whole, tail) = row.split_at_mut(row.len() - rem);
    for chunk in whole.chunks_exact_mut(16) {
        for (sum, v) in partial.iter_mut().zip(chunk) {
            *v = exp((*v - max) * scale);
            *sum += *v;
        }
    }
    tail.copy_from_slice(&last[16 - rem..]);
    let inv = 1.0 / partial.iter().sum::<f32>();
    row.iter_mut().for_each(|v| *v *= inv);
}

/// A row of `dP` becomes `dS = scale · P ⊙ (dP - Σ P ⊙ dP)` (`p` as long as `seen`).
#[inline(always)]
pub(super) fn softmax_backward(seen: &mut [f32], p: &[f32], scale: f32) {
    let dot = dot(seen, p);
    for (d, &p) in seen.iter_mut().zip(p) {
        *d = scale * p * (*d - dot);
    }
}

/// `Σ a ⊙ b` in sixteen partial sums, so that it vectorizes (one running sum is a chain of
/// dependent additions), added up by halves: decoding takes one per cached key, where
/// adding the sixteen one after another cost more than the products.
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut partial = [0.0f32; 16];
    let (mut a_chunks, mut b_chunks) = (a.chunks_exact(16), b.chunks_exact(16));
    for (a, b) in (&mut a_chunks).zip(&mut b_chunks) {
        for ((s, a), b) in partial.iter_mut().zip(a).zip(b) {
            *s += a * b;
        }
    }
    let tail: f32 = (a_chunks.remainder().iter())
        .zip(b_chunks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            partial[i] += partial[i + width];
        }
    }
    partial[0] + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_every_length_sum_to_one_and_match_f64() {
        for len in [1, 3, 16, 17, 40] {
            let z: Vec<f32> = (0..len).map(|i| (i as f32 * 0.7).sin() * 5.0).collect();
            let mut p = z.clone();
            softmax(&mut p, 0.5);
            let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = z.iter().map(|&v| (0.5 * (v as f64 - max)).exp()).collect();
            let total: f64 = e.iter().sum();
            for (got, want) in p.iter().zip(&e) {
                assert!((*got as f64 - want / total).abs() < 1e-6, "len {len}");
            }
        }
    }
}
