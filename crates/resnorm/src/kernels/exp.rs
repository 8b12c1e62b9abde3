//! `eˣ` that the compiler can vectorize, and the row maximum a softmax subtracts first.
//!
//! `f32::exp` is a call into libm, which no loop around it can vectorize; in a GPT training
//! step the softmaxes, the GELUs and the cross-entropy spent ~10 % of the time there. [`exp`]
//! is a few multiply-adds inlined into the loop (Cephes' `expf`):
//!
//! ```text
//! n = round(x · log₂e)                 (|n| ≤ 127 after clamping x to [-87.3, 88])
//! r = x - n·ln 2                       (ln 2 in two parts, so r is exact; |r| ≤ ½ ln 2)
//! eʳ ≈ 1 + r + r²·p(r)                 (p of degree 5: relative error < 2·10⁻⁷)
//! eˣ = 2ⁿ · eʳ                          (2ⁿ built from its exponent bits)
//! ```
//!
//! Arguments above 88 give `e⁸⁸` (not infinity), below -87.3 about `2⁻¹²⁶` (not zero): the
//! kernels use it where that cannot matter (`σ(u) = 1/(1+e⁻ᵘ)` is then `0` or `1` to within
//! `10⁻³⁸`; a softmax subtracts its row maximum first).
//!
//! Loops around it run in functions compiled for the instruction-set level (`simd::dispatch!`'s
//! `auto` form); every operation is element-wise IEEE arithmetic (no fused multiply-add), so
//! the bits do not depend on the register width.
//!
//! ```
//! use resnorm::kernels::exp;
//! for x in [-20.0f32, -1.0, 0.0, 0.5, 10.0, 80.0] {
//!     let rel = (exp::exp(x) as f64 / (x as f64).exp() - 1.0).abs();
//!     assert!(rel < 3e-7, "x = {x}: {rel}");
//! }
//! assert_eq!(exp::exp(0.0), 1.0);
//! //! ```

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so that `n · LN2_HI` is exact for `|n| ≤ 2⁹`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5 · 2²³`: adding it rounds an `f32` of magnitude below `2²²` to an integer.
const ROUND_SHIFT: f32 = 12_582_912.0;
/// Clamp bounds: `2ⁿ` stays a normal number for every `n` they allow.
const MAX_ARG: f32 = 88.0;
const MIN_ARG: f32 = -87.336_55;

/// `eˣ` to within 2 units in the last place for `x` in `[-87.3, 88]`, clamped outside.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(MIN_ARG, MAX_ARG);
    // The shifted sum holds n in its low mantissa bits: its bits are SHIFT's plus n.
    let shifted = x * LOG2_E + ROUND_SHIFT;
    let n = shifted - ROUND_SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e_r = p * (r * r) + r + 1.0;
    // Integer arithmetic on the bits (not `n as i32`, whose NaN and saturation rules do not
    // vectorize); a NaN `x` gives a NaN `e_r` and so a NaN result whatever these bits are.
    let biased_n = shifted
        .to_bits()
        .wrapping_sub(ROUND_SHIFT.to_bits())
        .wrapping_add(127);
    let two_n = f32::from_bits(biased_n << 23);
    e_r * two_n
}

/// The largest element (`-∞` for an empty row; NaNs are skipped), in sixteen running
/// maxima so that the loop vectorizes: what a softmax subtracts before [`exp`].
#[inline(always)]
pub(crate) fn row_max(z: &[f32]) -> f32 {
    let mut partial = [f32::NEG_INFINITY; 16];
    let mut chunks = z.chunks_exact(16);
    for chunk in &mut chunks {
        for (m, &v) in partial.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    partial.iter().fold(tail, |m, &v| m.max(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f64_exp_over_the_whole_range() {
        let mut worst = 0.0f64;
        let mut x = MIN_ARG;
        while x <= MAX_ARG {
            let want = (x as f64).exp();
            worst = worst.max((exp(x) as f64 / want - 1.0).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "max relative error {worst}");
    }

    #[test]
    fn keeps_nan() {
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn clamps_instead_of_overflowing() {
        assert!(exp(1000.0).is_finite() && exp(1000.0) == exp(MAX_ARG));
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1.2e-38);
        assert_eq!(exp(f32::NEG_INFINITY), exp(MIN_ARG));
    }

    #[inline(always)]
    fn exp_all(xs: &[f32]) -> Vec<f32> {
        xs.iter().map(|&x| exp(x)).collect()
    }

    crate::kernels::simd::dispatch! {
        fn exp_in_force(xs: &[f32]) -> Vec<f32> => auto exp_all
    }

    /// The same bits compiled for the level in force as for the baseline (the suite runs
    /// under each `RESNORM_SIMD` cap).
    #[test]
    fn same_bits_at_the_level_in_force() {
        let xs: Vec<f32> = (0..1000).map(|i| i as f32 * 0.173 - 86.0).collect();
        assert_eq!(exp_in_force(&xs), exp_all(&xs));
    }
}
