//! Direct 3x3 convolution with stride 1 and padding 1 (the convolution of every ResNet block),
//! forward and backward, on images laid out between zero rows: no patch matrix.
//!
//! A group of `G` images of `H x W` pixels is laid out per channel as one zero, then per
//! image a zero row and the image's `H` rows, then zeros ([`Conv3x3Layout::pad`]). With
//! `P = (H+1)·W`, pixel `(h, w)` of image `g` sits at span position `q = g·P + h·W + w`
//! (flat index `q + W + 1`), and every tap of the kernel is one fixed shift of that index:
//!
//! ```text
//! y[o, q] = Σ_{c, i, j} w[o, c, i, j] · m_j(q) · xp[c, q + i·W + j]
//! ```
//!
//! The zero rows supply the padding above and below every image. Left and right there is
//! none: the shift of a `j = 0` tap from column 0 lands on the previous row's last pixel, so
//! `m_0(q) = 0` in column 0, `m_2(q) = 0` in column `W - 1`, and 1 elsewhere; the kernels
//! apply these as masked loads. The forward kernel computes every `q` of the group's span,
//! sixteen positions per vector and several output channels at once, with one load per input
//! channel and tap; positions on the zero rows are computed too (`(H+1)/H` times the useful
//! work) and dropped by [`Conv3x3Layout::extract`], whose copies, like those of `pad`, are
//! whole images. Backward, with `dy` laid out the same way (zero on its zero rows):
//!
//! ```text
//! ∂L/∂w[o, c, i, j] = Σ_q dyp[o, q + W + 1] · m_j(q) · xp[c, q + i·W + j]
//! ∂L/∂x = the same convolution of dyp with w transposed (c ↔ o) and flipped (i, j → 2-i, 2-j)
//! ```
//!
//! (the zero rows of `dyp` make the sum over the span exactly the sum over the pixels).
//! Sums run in a fixed order, so results depend only on the instruction-set level
//! ([`simd::level`]): AVX-512 (fused multiply-add, masked loads), AVX2 with FMA (smaller
//! tiles for its sixteen registers), or the scalar level (SSE on x86-64, no fused multiply-add).
//!
//! ```
//! use resnorm::kernels::{conv3x3_forward, Conv3x3Layout, Conv3x3Weights};
//! // One 2x2 image, one channel in and out, a 3x3 box filter: each output sums the image.
//! let layout = Conv3x3Layout::new(2, 2, 1).unwrap();
//! let mut padded = vec![f32::NAN; layout.padded_len(1)];
//! layout.pad(&[1.0, 2.0, 3.0, 4.0], 1, &mut padded).unwrap();
//! let weights = Conv3x3Weights::forward(&[1.0; 9], 1, 1).unwrap();
//! let mut span = vec![0.0; layout.span_len(1)];
//! conv3x3_forward(&layout, &weights, &padded, &mut span).unwrap();
//! let mut y = [0.0; 4];
//! layout.extract(&span, 1, &mut y).unwrap();
//! assert_eq!(y, [10.0; 4]);
//! ```

use crate::{Error, Result};

mod kernels;
mod layout;

pub use layout::Conv3x3Layout;

use crate::kernels::simd::{self, Level, LANES};
#[cfg(target_arch = "x86_64")]
use kernels::{avx2, avx512};
use kernels::{out_block, scalar};

/// A 3x3 weight rearranged for [`conv3x3_forward`]: blocks of output channels, each as
/// `[in_channels, 9 taps, block]`, so the kernel reads its multipliers in order. The block
/// is that of the level in force ([`simd::level`]).
#[derive(Clone, Debug, Default)]
pub struct Conv3x3Weights {
    packed: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
    out_block: usize,
}

impl Conv3x3Weights {
    /// From a layer's weight `[out, in, 3, 3]`, to compute its output.
    pub fn forward(weight: &[f32], out_channels: usize, in_channels: usize) -> Result<Self> {
        let mut packed = Self::default();
        packed.repack(weight, out_channels, in_channels, false)?;
        Ok(packed)
    }

    /// Rearranges `weight` (`[out, in, 3, 3]`) in place of the current contents, reusing the
    /// allocation. With `transposed`, the result computes `∂L/∂input` from `∂L/∂output`: the
    /// kernel's inputs are the layer's outputs and its taps are flipped.
    pub fn repack(
        &mut self,
        weight: &[f32],
        out_channels: usize,
        in_channels: usize,
        transposed: bool,
    ) -> Result<()> {
        self.repack_for(simd::level(), weight, out_channels, in_channels, transposed)
    }

    /// [`Conv3x3Weights::repack`] for the kernel of `level`.
    fn repack_for(
        &mut self,
        level: Level,
        weight: &[f32],
        out_channels: usize,
        in_channels: usize,
        transposed: bool,
    ) -> Result<()> {
        let len = out_channels * in_channels * 9;
        check_len("Conv3x3Weights::repack", "weight", weight, len)?;
        let (kernel_out, kernel_in) = match transposed {
            false => (out_channels, in_channels),
            true => (in_channels, out_channels),
        };
        let tap = |o: usize, c: usize, t: usize| match transposed {
            false => weight[(o * in_channels + c) * 9 + t],
            true => weight[(c * in_channels + o) * 9 + 8 - t],
        };
        self.packed.clear();
        self.out_block = out_block(level);
        for (first, block) in out_blocks(kernel_out, self.out_block) {
            for c in 0..kernel_in {
                for t in 0..9 {
                    self.packed
                        .extend((first..first + block).map(|o| tap(o, c, t)));
                }
            }
        }
        (self.out_channels, self.in_channels) = (kernel_out, kernel_in);
        Ok(())
    }
}

/// The forward kernel's output-channel blocks, `(first channel, size)`: `out_block` wide,
/// then one at a time.
fn out_blocks(channels: usize, out_block: usize) -> impl Iterator<Item = (usize, usize)> {
    let full = channels / out_block * out_block;
    let wide = (0..full).step_by(out_block).map(move |o| (o, out_block));
    wide.chain((full..channels).map(|o| (o, 1)))
}

fn check_len(op: &'static str, what: &str, data: &[f32], expected: usize) -> Result<()> {
    if data.len() != expected {
        return Err(Error::shape(
            op,
            format!("{what} has {} elements, expected {expected}", data.len()),
        ));
    }
    Ok(())
}

/// Writes `span` (`[out, span]`, see [`Conv3x3Layout::span_len`]) with the convolution of the
/// padded group `padded` (`[in, ...]`, from [`Conv3x3Layout::pad`]) by `weights`.
pub fn conv3x3_forward(
    layout: &Conv3x3Layout,
    weights: &Conv3x3Weights,
    padded: &[f32],
    span: &mut [f32],
) -> Result<()> {
    const OP: &str = "conv3x3_forward";
    check_len(OP, "padded", padded, layout.padded_len(weights.in_channels))?;
    check_len(OP, "span", span, layout.span_len(weights.out_channels))?;
    forward_at(simd::level(), layout, weights, padded, span);
    Ok(())
}

/// The forward kernel of `level`, which the CPU runs, on weights packed for it.
fn forward_at(
    level: Level,
    layout: &Conv3x3Layout,
    weights: &Conv3x3Weights,
    padded: &[f32],
    span: &mut [f32],
) {
    assert!(level <= Level::detected());
    match level {
        // SAFETY: the CPU has the level's instructions, asserted just above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { avx512::forward(layout, weights, padded, span) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::forward(layout, weights, padded, span) },
        _ => scalar::forward(layout, weights, padded, span),
    }
}

/// Adds `∂L/∂w` (`[out, in, 3, 3]`) into `dweight`, from the padded group of the layer's
/// input `padded_input` (`[in, ...]`) and of `∂L/∂output` `padded_doutput` (`[out, ...]`).
pub fn conv3x3_weight_grad(
    layout: &Conv3x3Layout,
    padded_input: &[f32],
    padded_doutput: &[f32],
    dweight: &mut [f32],
) -> Result<()> {
    const OP: &str = "conv3x3_weight_grad";
    let in_channels = padded_input.len() / layout.channel_len();
    let out_channels = padded_doutput.len() / layout.channel_len();
    check_len(
        OP,
        "padded input",
        padded_input,
        layout.padded_len(in_channels),
    )?;
    check_len(
        OP,
        "padded doutput",
        padded_doutput,
        layout.padded_len(out_channels),
    )?;
    check_len(OP, "dweight", dweight, out_channels * in_channels * 9)?;
    weight_grad_at(simd::level(), layout, padded_input, padded_doutput, dweight);
    Ok(())
}

/// The weight-gradient kernel of `level`, which the CPU runs.
fn weight_grad_at(
    level: Level,
    layout: &Conv3x3Layout,
    padded_input: &[f32],
    padded_doutput: &[f32],
    dweight: &mut [f32],
) {
    assert!(level <= Level::detected());
    let (x, dy) = (padded_input, padded_doutput);
    match level {
        // SAFETY: the CPU has the level's instructions, asserted just above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { avx512::weight_grad(layout, x, dy, dweight) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2::weight_grad(layout, x, dy, dweight) },
        _ => scalar::weight_grad(layout, x, dy, dweight),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Every level's kernels that the CPU runs against the scalar ones, on a group of three
    /// 9x11 images with channel counts that leave partial blocks at every level: the same
    /// sums, rounded differently (fused multiply-adds), so equal to 1e-5 of the terms'
    /// scale. (The layer tests compare the dispatched kernels with direct f64 loops.)
    #[test]
    fn every_level_agrees_with_the_scalar_kernels() {
        let mut rng = Rng::new(3);
        let (c_in, c_out) = (9, 11);
        let layout = Conv3x3Layout::new(9, 11, 3).unwrap();
        let mut normal = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
        let (x, dy, w) = (
            normal(3 * c_in * 99),
            normal(3 * c_out * 99),
            normal(c_out * c_in * 9),
        );
        let (mut px, mut pdy) = (
            vec![0.0; layout.padded_len(c_in)],
            vec![0.0; layout.padded_len(c_out)],
        );
        layout.pad(&x, c_in, &mut px).unwrap();
        layout.pad(&dy, c_out, &mut pdy).unwrap();
        let close = |what: &str, a: &[f32], b: &[f32]| {
            for (i, (a, b)) in a.iter().zip(b).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{what}[{i}]: {a} vs {b}"
                );
            }
        };
        let levels = Level::ALL.into_iter().filter(|&l| l <= Level::detected());
        for level in levels.filter(|&l| l > Level::Scalar) {
            for transposed in [false, true] {
                let forward = |level| {
                    let mut weights = Conv3x3Weights::default();
                    weights
                        .repack_for(level, &w, c_out, c_in, transposed)
                        .unwrap();
                    let (input, channels) = match transposed {
                        true => (&pdy, c_in),
                        false => (&px, c_out),
                    };
                    let mut span = vec![0.0; layout.span_len(channels)];
                    forward_at(level, &layout, &weights, input, &mut span);
                    span
                };
                close(
                    &format!("{level} forward"),
                    &forward(Level::Scalar),
                    &forward(level),
                );
            }
            let weight_grad = |level| {
                let mut dweight = vec![0.0; w.len()];
                weight_grad_at(level, &layout, &px, &pdy, &mut dweight);
                dweight
            };
            close(
                &format!("{level} weight_grad"),
                &weight_grad(Level::Scalar),
                &weight_grad(level),
            );
        }
    }

    #[test]
    fn weights_packed_for_one_level_are_refused_by_another() {
        if Level::detected() < Level::Avx2 {
            return;
        }
        let layout = Conv3x3Layout::new(2, 2, 1).unwrap();
        let mut weights = Conv3x3Weights::default();
        weights
            .repack_for(Level::Scalar, &[0.0; 8 * 9], 8, 1, false)
            .unwrap();
        let padded = vec![0.0; layout.padded_len(1)];
        let mut span = vec![0.0; layout.span_len(8)];
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            forward_at(Level::Avx2, &layout, &weights, &padded, &mut span)
        }));
        assert!(refused.is_err());
    }

    #[test]
    fn pad_and_extract_are_inverse_on_the_pixels() {
        let layout = Conv3x3Layout::new(2, 3, 2).unwrap();
        let images: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        let mut padded = vec![f32::NAN; layout.padded_len(1)];
        layout.pad(&images, 1, &mut padded).unwrap();
        // One zero, then per image a zero row and its rows, then zeros to the end.
        assert_eq!(
            &padded[..20],
            &[0., 0., 0., 0., 1., 2., 3., 4., 5., 6., 0., 0., 0., 7., 8., 9., 10., 11., 12., 0.]
        );
        assert!(padded[20..].iter().all(|&v| v == 0.0));
        let span: Vec<f32> = padded[layout.origin()..][..layout.span()].to_vec();
        let mut back = vec![0.0; 12];
        layout.extract(&span, 1, &mut back).unwrap();
        assert_eq!(back, images);
        layout.extract_add(&span, 1, &mut back).unwrap();
        assert!(back.iter().zip(&images).all(|(b, i)| *b == 2.0 * i));
    }

    #[test]
    fn bad_sizes_are_shape_errors() {
        assert!(Conv3x3Layout::new(0, 3, 1).is_err());
        let layout = Conv3x3Layout::new(2, 2, 1).unwrap();
        let mut padded = vec![0.0; layout.padded_len(1)];
        let err = layout.pad(&[0.0; 3], 1, &mut padded).unwrap_err();
        assert!(
            err.to_string()
                .contains("images has 3 elements, expected 4"),
            "{err}"
        );
        let err = layout.pad(&[0.0; 4], 1, &mut padded[1..]).unwrap_err();
        assert!(err.to_string().contains("padded has"), "{err}");
        let err = layout.extract(&[0.0; 5], 1, &mut [0.0; 4]).unwrap_err();
        assert!(err.to_string().contains("span has 5 elements"), "{err}");
        let span = vec![0.0; layout.span_len(1)];
        let err = layout.extract(&span, 1, &mut [0.0; 3]).unwrap_err();
        assert!(err.to_string().contains("images has 3 elements"), "{err}");
        let err = layout.extract_add(&span, 1, &mut [0.0; 3]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("extract_add") && message.contains("images has 3"));
        let weights = Conv3x3Weights::forward(&[0.0; 9], 1, 1).unwrap();
        let err = conv3x3_forward(&layout, &weights, &padded, &mut [0.0; 3]).unwrap_err();
        assert!(err.to_string().contains("span has 3 elements"), "{err}");
        assert!(Conv3x3Weights::forward(&[0.0; 8], 1, 1).is_err());
        let err = conv3x3_weight_grad(&layout, &padded, &padded, &mut [0.0; 8]).unwrap_err();
        assert!(err.to_string().contains("dweight has 8 elements"), "{err}");
    }
}
