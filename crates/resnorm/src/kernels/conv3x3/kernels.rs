//! The inner loops: a 16-lane vector with a multiply-add, implemented on AVX-512 and on
//! plain arrays, and the forward and weight-gradient kernels written once over it.

use super::{Conv3x3Layout, Conv3x3Weights, LANES, OUT_BLOCK};

/// Vectors of positions per step of the forward kernel.
const STRIP: usize = 4;
/// Input channels summed in registers before their sum is added to the output.
const CHANNEL_GROUP: usize = 8;
/// Output channels per block of the weight-gradient kernel.
const GRAD_BLOCK: usize = 4;

/// Sixteen `f32` lanes with a multiply-add: what the two kernels need of a vector.
///
/// Loads and stores take raw pointers: the kernels check their bounds once per call (see
/// [`check_reach`]), not once per vector.
pub(super) trait Vector: Copy + std::ops::Add<Output = Self> {
    fn zero() -> Self;
    fn splat(value: f32) -> Self;
    /// # Safety
    /// `data` points at [`LANES`] readable `f32`.
    unsafe fn load(data: *const f32) -> Self;
    /// # Safety
    /// `data` points at [`LANES`] writable `f32`.
    unsafe fn store(self, data: *mut f32);
    /// `self + a · b`.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// The sum of the lanes.
    fn sum(self) -> f32;
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

/// The forward kernel: [`OUT_BLOCK`] output channels by [`STRIP`] vectors of positions in
/// registers, one pass over every input channel and tap.
#[inline(always)]
pub(super) fn forward<V: Vector>(
    layout: &Conv3x3Layout,
    weights: &Conv3x3Weights,
    padded: &[f32],
    span: &mut [f32],
) {
    let (taps, len, span_len) = (layout.taps(), layout.channel_len(), layout.span());
    check_reach(layout, padded, span_len);
    let in_channels = weights.in_channels;
    assert_eq!(padded.len(), in_channels * len);
    assert_eq!(span.len(), weights.out_channels * span_len);
    for (first, block) in super::out_blocks(weights.out_channels) {
        let w = &weights.packed[first * in_channels * 9..][..block * in_channels * 9];
        let out = &mut span[first * span_len..][..block * span_len];
        let wide = span_len / (STRIP * LANES) * (STRIP * LANES);
        let x = padded.as_ptr();
        // SAFETY: `start + S·LANES <= span_len`, every tap is at most `2·origin`, and each
        // of the `in_channels` channels holds `2·origin + span_len` floats (check_reach);
        // `out` holds `block` rows of `span_len`.
        unsafe {
            for start in (0..wide).step_by(STRIP * LANES) {
                match block {
                    OUT_BLOCK => block_strip::<V, OUT_BLOCK, STRIP>(&taps, w, x, len, start, out),
                    _ => block_strip::<V, 1, STRIP>(&taps, w, x, len, start, out),
                }
            }
            for start in (wide..span_len).step_by(LANES) {
                match block {
                    OUT_BLOCK => block_strip::<V, OUT_BLOCK, 1>(&taps, w, x, len, start, out),
                    _ => block_strip::<V, 1, 1>(&taps, w, x, len, start, out),
                }
            }
        }
    }
}

/// `B` output channels times `S` vectors of positions from `start`.
///
/// The sum runs over groups of [`CHANNEL_GROUP`] input channels, each group's partial sum
/// added to the output separately: a two-level sum, whose rounding error grows like that of
/// `9·CHANNEL_GROUP` terms, not of all `9·in_channels` in one chain.
///
/// # Safety
/// `padded` holds `weights.len() / (9·B)` channels of `channel_len` floats, each readable
/// from `start` up to the largest tap plus `S·LANES`; `out` holds `B` equal rows, each at
/// least `start + S·LANES` long.
#[inline(always)]
unsafe fn block_strip<V: Vector, const B: usize, const S: usize>(
    taps: &[usize; 9],
    weights: &[f32],
    padded: *const f32,
    channel_len: usize,
    start: usize,
    out: &mut [f32],
) {
    let span_len = out.len() / B;
    let groups = weights.chunks(9 * B * CHANNEL_GROUP);
    for (group, weights) in groups.enumerate() {
        let mut acc = [[V::zero(); S]; B];
        let first = group * CHANNEL_GROUP;
        for (c, w) in weights.chunks_exact(9 * B).enumerate() {
            let x = padded.add((first + c) * channel_len + start);
            for t in 0..9 {
                let x = x.add(taps[t]);
                let x: [V; S] = std::array::from_fn(|s| V::load(x.add(s * LANES)));
                for b in 0..B {
                    let w = V::splat(w[t * B + b]);
                    for s in 0..S {
                        acc[b][s] = acc[b][s].mul_add(w, x[s]);
                    }
                }
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

/// The weight-gradient kernel: for [`GRAD_BLOCK`] output channels and one input channel,
/// nine taps each, accumulated over the whole span in registers and summed once.
#[inline(always)]
pub(super) fn weight_grad<V: Vector>(
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
    let mut first = 0;
    while first < out_channels {
        let block = if out_channels - first >= GRAD_BLOCK {
            GRAD_BLOCK
        } else {
            1
        };
        let dy = &padded_doutput[first * len..][..block * len];
        let dw = &mut dweight[first * in_channels * 9..][..block * in_channels * 9];
        for (c, x) in padded_input.chunks_exact(len).enumerate() {
            // SAFETY: `dy` is `block` channels and `x` one channel of a padded group that
            // fits the layout (check_reach above).
            unsafe {
                match block {
                    GRAD_BLOCK => tap_sums::<V, GRAD_BLOCK>(layout, dy, x, c, dw),
                    _ => tap_sums::<V, 1>(layout, dy, x, c, dw),
                }
            }
        }
        first += block;
    }
}

/// Adds `Σ_q dy[b, origin + q] · x[q + tap]` for `B` rows of `dy`, one channel `x` and the
/// nine taps into `dweight` (`[B, in, 9]`) at input channel `c`: one pass over the span per
/// row of taps, `3·B` accumulators.
///
/// # Safety
/// `dy` holds `B` channels and `x` one channel, each `layout.channel_len()` floats.
#[inline(always)]
unsafe fn tap_sums<V: Vector, const B: usize>(
    layout: &Conv3x3Layout,
    dy: &[f32],
    x: &[f32],
    c: usize,
    dweight: &mut [f32],
) {
    let (len, origin, row) = (layout.channel_len(), layout.origin(), layout.row());
    let (dy, x) = (dy.as_ptr().add(origin), x.as_ptr());
    let in_channels = dweight.len() / (B * 9);
    for i in 0..3 {
        let mut acc = [[V::zero(); 3]; B];
        let x = x.add(i * row);
        for start in (0..layout.span()).step_by(LANES) {
            let x: [V; 3] = std::array::from_fn(|j| V::load(x.add(start + j)));
            for (b, acc) in acc.iter_mut().enumerate() {
                let d = V::load(dy.add(b * len + start));
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

/// Plain arrays: vectorized by the compiler for whatever the target (or [`wide`]) allows.
///
/// [`wide`]: crate::kernels::exp::wide
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; LANES]);

impl std::ops::Add for Portable {
    type Output = Self;
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] + other.0[l]))
    }
}

impl Vector for Portable {
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    fn splat(value: f32) -> Self {
        Portable([value; LANES])
    }
    #[inline(always)]
    unsafe fn load(data: *const f32) -> Self {
        Portable(data.cast::<[f32; LANES]>().read_unaligned())
    }
    #[inline(always)]
    unsafe fn store(self, data: *mut f32) {
        data.cast::<[f32; LANES]>().write_unaligned(self.0)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] + a.0[l] * b.0[l]))
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        self.0.iter().sum()
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    //! The kernels on 512-bit registers with fused multiply-add.
    use std::arch::x86_64::*;

    use super::{Conv3x3Layout, Conv3x3Weights, Vector};

    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    impl std::ops::Add for Avx512 {
        type Output = Self;
        #[inline(always)]
        fn add(self, other: Self) -> Self {
            // SAFETY: as for the methods below.
            Avx512(unsafe { _mm512_add_ps(self.0, other.0) })
        }
    }

    // SAFETY (every method): only instantiated inside the `avx512f` functions below, which
    // run only on CPUs that have it; loads and stores are the callers' obligation.
    impl Vector for Avx512 {
        #[inline(always)]
        fn zero() -> Self {
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        fn splat(value: f32) -> Self {
            Avx512(unsafe { _mm512_set1_ps(value) })
        }
        #[inline(always)]
        unsafe fn load(data: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(data))
        }
        #[inline(always)]
        unsafe fn store(self, data: *mut f32) {
            _mm512_storeu_ps(data, self.0)
        }
        #[inline(always)]
        fn mul_add(self, a: Self, b: Self) -> Self {
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
        }
        #[inline(always)]
        fn sum(self) -> f32 {
            unsafe { _mm512_reduce_add_ps(self.0) }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(in crate::kernels::conv3x3) fn forward(
        layout: &Conv3x3Layout,
        weights: &Conv3x3Weights,
        padded: &[f32],
        span: &mut [f32],
    ) {
        super::forward::<Avx512>(layout, weights, padded, span)
    }

    #[target_feature(enable = "avx512f")]
    pub(in crate::kernels::conv3x3) fn weight_grad(
        layout: &Conv3x3Layout,
        padded_input: &[f32],
        padded_doutput: &[f32],
        dweight: &mut [f32],
    ) {
        super::weight_grad::<Avx512>(layout, padded_input, padded_doutput, dweight)
    }
}
