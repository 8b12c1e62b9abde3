//! The inner loops: the forward and weight-gradient kernels, written once over a
//! [`Vector`] of 16 lanes, and instantiated per level with tile shapes that fit its
//! registers: `OUT_BLOCK` output channels by `STRIP` vectors of positions in the forward
//! kernel, `GRAD_BLOCK` output channels (three taps each) in the weight gradient's.

use super::layout::Columns;
use super::{Conv3x3Layout, Conv3x3Weights};
use crate::kernels::simd::Level;
use crate::kernels::simd::{Scalar, Vector, LANES};

/// Input channels summed in registers before their sum is added to the output.
const CHANNEL_GROUP: usize = 8;
/// Vectors per segment of the weight gradient's span, each summed in registers and then
/// added to `dweight`: the sums of a large image's span run in chains of at most this many
/// vectors, as those of a group of small images do (about `GROUP_POSITIONS / LANES`).
const SEGMENT: usize = 64;

/// The conv kernels' entry points on a [`Vector`]: the AVX-512 and AVX2 vectors override
/// them with instances compiled for their registers.
pub(super) trait ConvVector: Vector {
    /// [`block_strip`] on this vector. (The AVX-512 and AVX2 ones compile each instance as a
    /// function of its own, whose registers its accumulators have to themselves: inlined into
    /// a larger function, LLVM was seen to spill them in the innermost loop, 2x slower.)
    ///
    /// # Safety
    /// As for [`block_strip`].
    #[inline(always)]
    unsafe fn block_strip<const B: usize, const S: usize>(
        strip: Strip,
        weights: &[f32],
        out: &mut [f32],
    ) {
        block_strip::<Self, B, S>(strip, weights, out)
    }

    /// [`tap_sums`] on this vector, compiled like [`Vector::block_strip`].
    ///
    /// # Safety
    /// As for [`tap_sums`].
    #[inline(always)]
    unsafe fn tap_sums<const B: usize>(
        layout: &Conv3x3Layout,
        segment: &Segment<'_>,
        dy: &[f32],
        x: &[f32],
        c: usize,
        dweight: &mut [f32],
    ) {
        tap_sums::<Self, B>(layout, segment, dy, x, c, dweight)
    }
}

/// The bounds every kernel's pointer arithmetic relies on: each padded channel reaches
/// from a span position by at most `2·origin` (the last tap), and the span's last vector
/// ends at `span`.
fn check_reach(layout: &Conv3x3Layout, padded: &[f32], span_len: usize) {
    let len = layout.channel_len();
    assert!(
        padded.len().is_multiple_of(len)
            && 2 * layout.origin() + span_len == len
            && span_len.is_multiple_of(LANES),
        "conv3x3: padded group of {} floats does not fit its layout {layout:?}",
        padded.len()
    );
}

/// The output-channel block that [`Conv3x3Weights`] are packed in for `level`'s kernel.
pub(super) fn out_block(level: Level) -> usize {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => avx512::OUT_BLOCK,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => avx2::OUT_BLOCK,
        _ => scalar::OUT_BLOCK,
    }
}

/// The forward kernel: `B` output channels by `S` vectors of positions in registers, one
/// pass over every input channel and tap. The weights are packed in blocks of `B`.
#[inline(always)]
fn forward<V: ConvVector, const B: usize, const S: usize>(
    layout: &Conv3x3Layout,
    weights: &Conv3x3Weights,
    padded: &[f32],
    span: &mut [f32],
) {
    let (width, len, span_len) = (layout.width(), layout.channel_len(), layout.span());
    let columns = Columns::new(layout.width());
    check_reach(layout, padded, span_len);
    let in_channels = weights.in_channels;
    assert_eq!(padded.len(), in_channels * len);
    assert_eq!(span.len(), weights.out_channels * span_len);
    assert_eq!(
        weights.out_block, B,
        "conv3x3: weights packed for another level"
    );
    for (first, block) in super::out_blocks(weights.out_channels, B) {
        let w = &weights.packed[first * in_channels * 9..][..block * in_channels * 9];
        let out = &mut span[first * span_len..][..block * span_len];
        let wide = span_len / (S * LANES) * (S * LANES);
        let x = padded.as_ptr();
        // SAFETY: `start + S·LANES <= span_len`, every tap is at most `2·origin`, and each
        // of the `in_channels` channels holds `2·origin + span_len` floats (check_reach);
        // `out` holds `block` rows of `span_len`.
        unsafe {
            let strip = |start| Strip {
                width,
                columns,
                x,
                channel_len: len,
                start,
            };
            for start in (0..wide).step_by(S * LANES) {
                match block == B {
                    true => V::block_strip::<B, S>(strip(start), w, out),
                    false => V::block_strip::<1, S>(strip(start), w, out),
                }
            }
            for start in (wide..span_len).step_by(LANES) {
                match block == B {
                    true => V::block_strip::<B, 1>(strip(start), w, out),
                    false => V::block_strip::<1, 1>(strip(start), w, out),
                }
            }
        }
    }
}

/// Where one step of the forward kernel reads: vectors of span positions from `start`, in
/// every channel of the laid-out group at `x`.
#[derive(Clone, Copy)]
pub(super) struct Strip {
    /// The flat shift from one row of taps to the next.
    width: usize,
    columns: Columns,
    x: *const f32,
    channel_len: usize,
    start: usize,
}

/// `B` output channels times `S` vectors of positions from `strip.start`.
///
/// The sum runs over groups of [`CHANNEL_GROUP`] input channels, each group's partial sum
/// added to the output separately: a two-level sum, whose rounding error grows like that of
/// `9·CHANNEL_GROUP` terms, not of all `9·in_channels` in one chain.
///
/// # Safety
/// `strip.x` holds `weights.len() / (9·B)` channels of `channel_len` floats, each readable
/// from `start` up to the largest tap plus `S·LANES`; `out` holds `B` equal rows, each at
/// least `start + S·LANES` long.
#[inline(always)]
unsafe fn block_strip<V: Vector, const B: usize, const S: usize>(
    strip: Strip,
    weights: &[f32],
    out: &mut [f32],
) {
    let Strip {
        width,
        columns,
        x,
        channel_len,
        start,
    } = strip;
    let mut column = columns.column(start);
    let mut keep = [(0, 0); S];
    for keep in &mut keep {
        *keep = columns.keep(column);
        column = columns.next(column);
    }
    let span_len = out.len() / B;
    let groups = weights.chunks(9 * B * CHANNEL_GROUP);
    for (group, weights) in groups.enumerate() {
        let mut acc = [[V::zero(); S]; B];
        let first = group * CHANNEL_GROUP;
        for (c, w) in weights.chunks_exact(9 * B).enumerate() {
            let x = x.add((first + c) * channel_len + start);
            for i in 0..3 {
                let (x, w) = (x.add(i * width), &w[3 * i * B..]);
                let (mut left, mut middle, mut right) =
                    ([V::zero(); S], [V::zero(); S], [V::zero(); S]);
                for s in 0..S {
                    left[s] = V::load_kept(x.add(s * LANES), keep[s].0);
                    middle[s] = V::load(x.add(1 + s * LANES));
                    right[s] = V::load_kept(x.add(2 + s * LANES), keep[s].1);
                }
                acc = multiply_add(acc, left, w);
                acc = multiply_add(acc, middle, &w[B..]);
                acc = multiply_add(acc, right, &w[2 * B..]);
            }
        }
        for (acc, out) in acc.iter().zip(out.chunks_exact_mut(span_len)) {
            let out = out[start..start + S * LANES].as_mut_ptr();
            for (s, &acc) in acc.iter().enumerate() {
                let out = out.add(s * LANES);
                let total = if group == 0 { acc } else { V::load(out) + acc };
                total.store(out);
            }
        }
    }
}

/// `acc[b][s] + w[b] · x[s]`: one tap of the forward kernel. (By value and with plain
/// loops: through a `&mut`, LLVM was seen to keep a copy of the accumulators in memory,
/// stored after every update, and `std::array::from_fn` was sometimes left a call.)
#[inline(always)]
fn multiply_add<V: Vector, const B: usize, const S: usize>(
    mut acc: [[V; S]; B],
    x: [V; S],
    w: &[f32],
) -> [[V; S]; B] {
    for b in 0..B {
        let w = V::splat(w[b]);
        for s in 0..S {
            acc[b][s] = acc[b][s].mul_add(w, x[s]);
        }
    }
    acc
}

/// The weight-gradient kernel: for `B` output channels and one input channel, nine taps
/// each, accumulated over a segment of the span in registers and summed once. The edge
/// masks of a segment's vectors are worked out once, for every channel.
#[inline(always)]
fn weight_grad<V: ConvVector, const B: usize>(
    layout: &Conv3x3Layout,
    padded_input: &[f32],
    padded_doutput: &[f32],
    dweight: &mut [f32],
) {
    check_reach(layout, padded_input, layout.span());
    check_reach(layout, padded_doutput, layout.span());
    let len = layout.channel_len();
    let (in_channels, out_channels) = (padded_input.len() / len, padded_doutput.len() / len);
    assert_eq!(dweight.len(), out_channels * in_channels * 9);
    let columns = Columns::new(layout.width());
    let mut keep = [(0, 0); SEGMENT];
    let mut column = 0;
    let vectors = layout.span() / LANES;
    for segment_start in (0..vectors).step_by(SEGMENT) {
        let keep = &mut keep[..SEGMENT.min(vectors - segment_start)];
        for keep in keep.iter_mut() {
            *keep = columns.keep(column);
            column = columns.next(column);
        }
        let segment = Segment {
            start: segment_start * LANES,
            keep,
        };
        let mut first = 0;
        while first < out_channels {
            let block = match out_channels - first >= B {
                true => B,
                false => 1,
            };
            let dy = &padded_doutput[first * len..][..block * len];
            let dw = &mut dweight[first * in_channels * 9..][..block * in_channels * 9];
            for (c, x) in padded_input.chunks_exact(len).enumerate() {
                // SAFETY: `dy` is `block` channels and `x` one channel of a laid-out group
                // that fits the layout (check_reach above), the segment lies in its span.
                unsafe {
                    match block == B {
                        true => V::tap_sums::<B>(layout, &segment, dy, x, c, dw),
                        false => V::tap_sums::<1>(layout, &segment, dy, x, c, dw),
                    }
                }
            }
            first += block;
        }
    }
}

/// Vectors of the weight gradient's span from position `start`, with the lanes that keep
/// their left and right taps ([`Columns::keep`]).
pub(super) struct Segment<'a> {
    start: usize,
    keep: &'a [(u16, u16)],
}

/// Adds `Σ_q dy[b, origin + q] · m_j(q) · x[q + tap]` over the segment's positions `q` for `B`
/// rows of `dy`, one channel `x` and the nine taps into `dweight` (`[B, in, 9]`) at input
/// channel `c`: one pass per row of taps, `3·B` accumulators.
///
/// # Safety
/// `dy` holds `B` channels and `x` one channel, each `layout.channel_len()` floats; the
/// segment lies within the span.
#[inline(always)]
unsafe fn tap_sums<V: Vector, const B: usize>(
    layout: &Conv3x3Layout,
    segment: &Segment<'_>,
    dy: &[f32],
    x: &[f32],
    c: usize,
    dweight: &mut [f32],
) {
    let (len, origin, width) = (layout.channel_len(), layout.origin(), layout.width());
    let dy = dy.as_ptr().add(origin + segment.start);
    let x = x.as_ptr().add(segment.start);
    let in_channels = dweight.len() / (B * 9);
    for i in 0..3 {
        let mut acc = [[V::zero(); 3]; B];
        let x = x.add(i * width);
        for (v, &(left, right)) in segment.keep.iter().enumerate() {
            let at = v * LANES;
            let x = [
                V::load_kept(x.add(at), left),
                V::load(x.add(at + 1)),
                V::load_kept(x.add(at + 2), right),
            ];
            for (b, acc) in acc.iter_mut().enumerate() {
                let d = V::load(dy.add(b * len + at));
                for j in 0..3 {
                    acc[j] = acc[j].mul_add(d, x[j]);
                }
            }
        }
        for (acc, dw) in acc.iter().zip(dweight.chunks_exact_mut(in_channels * 9)) {
            for (acc, dw) in acc.iter().zip(&mut dw[c * 9 + i * 3..c * 9 + i * 3 + 3]) {
                *dw += acc.sum();
            }
        }
    }
}

impl ConvVector for Scalar {}

pub(super) mod scalar {
    //! The kernels at the scalar level.
    use super::{Conv3x3Layout, Conv3x3Weights, Scalar};

    /// AVX-512's shapes, not tuned for the sixteen 4-lane SSE registers.
    pub(super) const OUT_BLOCK: usize = 8;
    const STRIP: usize = 3;
    const GRAD_BLOCK: usize = 4;

    pub(in crate::kernels::conv3x3) fn forward(
        layout: &Conv3x3Layout,
        weights: &Conv3x3Weights,
        padded: &[f32],
        span: &mut [f32],
    ) {
        super::forward::<Scalar, OUT_BLOCK, STRIP>(layout, weights, padded, span)
    }

    pub(in crate::kernels::conv3x3) fn weight_grad(
        layout: &Conv3x3Layout,
        padded_input: &[f32],
        padded_doutput: &[f32],
        dweight: &mut [f32],
    ) {
        super::weight_grad::<Scalar, GRAD_BLOCK>(layout, padded_input, padded_doutput, dweight)
    }
}

/// The kernels of one instruction set: `ConvVector` for `$vector`, its tiles compiled in
/// functions of their own with `$features` (so that their accumulators have the registers to
/// themselves), and `forward` / `weight_grad` at the module's `OUT_BLOCK`, `STRIP` and
/// `GRAD_BLOCK`.
#[cfg(target_arch = "x86_64")]
macro_rules! level_kernels {
    ($vector:ident, $features:literal) => {
        use super::{Conv3x3Layout, Conv3x3Weights, ConvVector, Segment, Strip};
        use crate::kernels::simd::$vector;

        impl ConvVector for $vector {
            unsafe fn block_strip<const B: usize, const S: usize>(
                strip: Strip,
                weights: &[f32],
                out: &mut [f32],
            ) {
                block_strip_compiled::<B, S>(strip, weights, out)
            }
            unsafe fn tap_sums<const B: usize>(
                layout: &Conv3x3Layout,
                segment: &Segment<'_>,
                dy: &[f32],
                x: &[f32],
                c: usize,
                dweight: &mut [f32],
            ) {
                tap_sums_compiled::<B>(layout, segment, dy, x, c, dweight)
            }
        }

        #[target_feature(enable = $features)]
        #[inline(never)]
        unsafe fn block_strip_compiled<const B: usize, const S: usize>(
            strip: Strip,
            weights: &[f32],
            out: &mut [f32],
        ) {
            super::block_strip::<$vector, B, S>(strip, weights, out)
        }

        #[target_feature(enable = $features)]
        #[inline(never)]
        unsafe fn tap_sums_compiled<const B: usize>(
            layout: &Conv3x3Layout,
            segment: &Segment<'_>,
            dy: &[f32],
            x: &[f32],
            c: usize,
            dweight: &mut [f32],
        ) {
            super::tap_sums::<$vector, B>(layout, segment, dy, x, c, dweight)
        }

        #[target_feature(enable = $features)]
        pub(in crate::kernels::conv3x3) fn forward(
            layout: &Conv3x3Layout,
            weights: &Conv3x3Weights,
            padded: &[f32],
            span: &mut [f32],
        ) {
            super::forward::<$vector, OUT_BLOCK, STRIP>(layout, weights, padded, span)
        }

        #[target_feature(enable = $features)]
        pub(in crate::kernels::conv3x3) fn weight_grad(
            layout: &Conv3x3Layout,
            padded_input: &[f32],
            padded_doutput: &[f32],
            dweight: &mut [f32],
        ) {
            super::weight_grad::<$vector, GRAD_BLOCK>(layout, padded_input, padded_doutput, dweight)
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    //! The kernels compiled for 512-bit registers with fused multiply-add.

    /// 8 × 3 accumulators, 3 vectors of inputs and a broadcast: 28 of 32 registers.
    pub(super) const OUT_BLOCK: usize = 8;
    const STRIP: usize = 3;
    /// 4 × 3 accumulators, 3 vectors of inputs and one of `dy`: 16 of 32 registers.
    const GRAD_BLOCK: usize = 4;

    level_kernels!(Avx512, "avx512f");
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    //! The kernels compiled for AVX2 with fused multiply-add: sixteen 256-bit registers, two
    //! per vector, so smaller tiles than AVX-512's.

    /// 4 × 1 accumulators (8 registers), one vector of inputs (2), a broadcast and the
    /// strip's four edge masks: 15 of 16 registers.
    pub(super) const OUT_BLOCK: usize = 4;
    const STRIP: usize = 1;
    /// 4 × 3 accumulators would take 24 registers: some live in memory, yet four channels
    /// measured 1.4x faster than one (whose 6 fit), as each masked input load serves four.
    const GRAD_BLOCK: usize = 4;

    level_kernels!(Avx2, "avx2,fma");
}
