//! Sixteen `f32` lanes with element-wise `+`, `-`, `*` and a ReLU gate, the vector type of
//! the row and plane kernels, and the run-time choice of its widest implementation.
//!
//! Written out because LLVM's SLP vectorizer, given several accumulators updated in one loop
//! (Σd and Σd² together), packs the wrong elements together and leaves the arithmetic
//! scalar. Measured in cache on one core (ns per element, LayerNorm forward / backward):
//! auto-vectorized 0.49 / 1.1, these lanes with SSE 0.39 / 0.72, with AVX 0.26 / 0.54.
//! Sixteen lanes are one AVX-512, two AVX or four SSE registers, so with the narrower ones
//! every reduction runs several independent chains of additions.
//!
//! Implementations: [`Avx512`] (one 512-bit register) on x86-64 CPUs with AVX-512F and
//! [`Avx`] (two 256-bit registers) on those with AVX, chosen at run time by
//! [`simd_dispatch!`]; [`Sse`] (four 128-bit registers, SSE2 being part of every x86-64);
//! [`Portable`] (a plain array) elsewhere. None fuses a multiply with an add, and all fold
//! lanes in the same order, so every implementation gives the same bits. AVX-512 against
//! AVX in scratch measurements, LayerNorm on 64-byte aligned rows (2 threads, three
//! interleaved runs, forward / backward ms): 8192x768 1.40-1.81 / 2.76-4.18 against
//! 1.59-2.17 / 3.06-4.46, 2048x768 0.39-0.48 / 0.81-0.96 against 0.44-0.49 / 0.91-1.11;
//! on rows that start mid-line (a `Vec`'s) every 512-bit access straddles two lines and
//! the gain was within the noise.
//! BatchNorm + ReLU forward and backward at resnet20's three shapes (planes of 784, 196 and
//! 49 values), four interleaved runs: 2.56-2.74 ms against 2.64-2.96.

use std::ops::{Add, AddAssign, Mul, Sub};

/// Lanes per vector; chunks of rows are this long.
pub(crate) const LANES: usize = 16;

/// A vector of [`LANES`] `f32`.
pub(crate) trait Lanes:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + AddAssign
{
    /// Every lane `v`.
    fn splat(v: f32) -> Self;
    /// The first [`LANES`] values of `chunk`; panics if it is shorter (a
    /// `chunks_exact(LANES)` item never is, and the compiler removes the check).
    fn load(chunk: &[f32]) -> Self;
    /// Writes the lanes to the first [`LANES`] places of `chunk`; panics if it is shorter.
    fn store(self, chunk: &mut [f32]);
    /// The byte alignment `chunk` needs for [`Lanes::stream`].
    const STREAM_ALIGN: usize;
    /// Writes the lanes to `chunk` with non-temporal (streaming) stores, which write to
    /// memory without first reading the line into the cache; the same bits as
    /// [`Lanes::store`]. A block of such stores ends with [`streaming_fence`].
    ///
    /// # Safety
    ///
    /// `chunk` must start at a multiple of [`Lanes::STREAM_ALIGN`] bytes.
    unsafe fn stream(self, chunk: &mut [f32; LANES]);
    /// `g` in the lanes where `self > 0` or is NaN, 0 elsewhere: a ReLU's gradient gate
    /// (`self` its input or output), and with `g = self` the ReLU itself.
    fn relu_gate(self, g: Self) -> Self;

    /// All lanes zero.
    #[inline(always)]
    fn zero() -> Self {
        Self::splat(0.0)
    }

    /// The sum of the lanes, added pairwise in a fixed order.
    #[inline(always)]
    fn sum(self) -> f32 {
        let mut lanes = [0.0; LANES];
        self.store(&mut lanes);
        let mut width = LANES;
        while width > 1 {
            width /= 2;
            let (low, high) = lanes.split_at_mut(width);
            for (l, h) in low.iter_mut().zip(&*high) {
                *l += h;
            }
        }
        lanes[0]
    }
}

/// Implements the operators of a lanes type `$ty([register; N])` with one function (an
/// intrinsic on x86-64) per operator, applied register by register.
macro_rules! lanes_ops {
    ($ty:ident, $add:path, $sub:path, $mul:path) => {
        lanes_ops!(@op $ty, Add, add, $add);
        lanes_ops!(@op $ty, Sub, sub, $sub);
        lanes_ops!(@op $ty, Mul, mul, $mul);
        impl AddAssign for $ty {
            #[inline(always)]
            fn add_assign(&mut self, other: $ty) {
                *self = *self + other;
            }
        }
    };
    (@op $ty:ident, $trait:ident, $method:ident, $f:path) => {
        impl $trait for $ty {
            type Output = $ty;
            #[inline(always)]
            fn $method(self, other: $ty) -> $ty {
                // SAFETY (x86-64): see the type's documentation; registers only.
                #[allow(unused_unsafe)]
                $ty(std::array::from_fn(|i| unsafe { $f(self.0[i], other.0[i]) }))
            }
        }
    };
}

/// Lanes as a plain array: the implementation for CPUs without a written-out one.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable([f32; LANES]);

#[cfg(not(target_arch = "x86_64"))]
impl Lanes for Portable {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Portable([v; LANES])
    }

    #[inline(always)]
    fn load(chunk: &[f32]) -> Self {
        Portable(std::array::from_fn(|i| chunk[i]))
    }

    #[inline(always)]
    fn store(self, chunk: &mut [f32]) {
        chunk[..LANES].copy_from_slice(&self.0);
    }

    const STREAM_ALIGN: usize = std::mem::align_of::<f32>();

    /// Plain stores: no streaming stores without a written-out implementation.
    #[inline(always)]
    unsafe fn stream(self, chunk: &mut [f32; LANES]) {
        self.store(chunk);
    }

    #[inline(always)]
    fn relu_gate(self, g: Self) -> Self {
        Portable(std::array::from_fn(|i| {
            crate::kernels::relu::relu_gate(self.0[i], g.0[i])
        }))
    }
}

#[cfg(not(target_arch = "x86_64"))]
lanes_ops!(Portable, portable::add, portable::sub, portable::mul);

#[cfg(not(target_arch = "x86_64"))]
mod portable {
    pub(super) fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    pub(super) fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    pub(super) fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx, Avx512, Sse};

/// Orders every streaming store issued so far by this thread before its later stores, so
/// that a block's outputs are in memory before the block reports itself done.
#[inline]
pub(crate) fn streaming_fence() {
    // SAFETY: SSE is baseline on x86-64; a fence touches no memory.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Bytes per cache line, the unit [`prefetch`] requests.
const LINE_BYTES: usize = 64;

/// Asks the CPU to bring `data` into the cache; a hint, with no effect on any result.
#[inline(always)]
pub(crate) fn prefetch(data: &[f32]) {
    prefetch_lines(data.as_ptr(), data.len());
}

/// [`prefetch`] for the `len` floats from `start`, which may be any address (a prefetch
/// reads nothing and never faults): for buffers that are written through raw pointers.
#[inline(always)]
pub(crate) fn prefetch_lines(start: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..len).step_by(LINE_BYTES / std::mem::size_of::<f32>()) {
        // SAFETY: SSE is baseline on x86-64; a prefetch reads nothing and never faults.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, LANES};
    use std::arch::x86_64::*;
    use std::ops::{Add, AddAssign, Mul, Sub};

    /// Four SSE registers. Every x86-64 CPU has SSE2, so its intrinsics are always safe to
    /// call; loads and stores stay inside the slices they are given.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Sse([__m128; LANES / 4]);

    impl Lanes for Sse {
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: SSE2 is baseline on x86-64.
            Sse([unsafe { _mm_set1_ps(v) }; LANES / 4])
        }

        #[inline(always)]
        fn load(chunk: &[f32]) -> Self {
            let chunk = &chunk[..LANES];
            // SAFETY: SSE2 is baseline; each unaligned load reads 4 elements inside `chunk`.
            Sse(std::array::from_fn(|i| unsafe {
                _mm_loadu_ps(chunk[4 * i..].as_ptr())
            }))
        }

        #[inline(always)]
        fn store(self, chunk: &mut [f32]) {
            let chunk = &mut chunk[..LANES];
            for (i, register) in self.0.into_iter().enumerate() {
                // SAFETY: SSE2 is baseline; each unaligned store writes 4 elements in `chunk`.
                unsafe { _mm_storeu_ps(chunk[4 * i..].as_mut_ptr(), register) };
            }
        }

        const STREAM_ALIGN: usize = 16;

        #[inline(always)]
        unsafe fn stream(self, chunk: &mut [f32; LANES]) {
            for (i, register) in self.0.into_iter().enumerate() {
                // SAFETY: SSE2 is baseline; each store writes 4 elements in `chunk`, at a
                // 16-byte boundary since `chunk` starts at one (the caller's contract).
                unsafe { _mm_stream_ps(chunk[4 * i..].as_mut_ptr(), register) };
            }
        }

        #[inline(always)]
        fn relu_gate(self, g: Self) -> Self {
            // SAFETY: SSE2 is baseline; registers only. "Not <=" is true for NaN.
            Sse(std::array::from_fn(|i| unsafe {
                _mm_and_ps(_mm_cmpnle_ps(self.0[i], _mm_setzero_ps()), g.0[i])
            }))
        }
    }

    lanes_ops!(Sse, _mm_add_ps, _mm_sub_ps, _mm_mul_ps);

    /// Two AVX registers. Only used inside functions compiled with AVX enabled, which
    /// [`simd_dispatch!`] calls only after checking that the CPU has it; loads and stores stay
    /// inside the slices they are given.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx([__m256; LANES / 8]);

    impl Lanes for Avx {
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: see the type's documentation.
            Avx([unsafe { _mm256_set1_ps(v) }; LANES / 8])
        }

        #[inline(always)]
        fn load(chunk: &[f32]) -> Self {
            let chunk = &chunk[..LANES];
            // SAFETY: see the type's documentation; each load reads 8 elements of `chunk`.
            Avx(std::array::from_fn(|i| unsafe {
                _mm256_loadu_ps(chunk[8 * i..].as_ptr())
            }))
        }

        #[inline(always)]
        fn store(self, chunk: &mut [f32]) {
            let chunk = &mut chunk[..LANES];
            for (i, register) in self.0.into_iter().enumerate() {
                // SAFETY: see the type's documentation; each store writes 8 elements.
                unsafe { _mm256_storeu_ps(chunk[8 * i..].as_mut_ptr(), register) };
            }
        }

        const STREAM_ALIGN: usize = 32;

        #[inline(always)]
        unsafe fn stream(self, chunk: &mut [f32; LANES]) {
            for (i, register) in self.0.into_iter().enumerate() {
                // SAFETY: see the type's documentation; each store writes 8 elements, at a
                // 32-byte boundary since `chunk` starts at one (the caller's contract).
                unsafe { _mm256_stream_ps(chunk[8 * i..].as_mut_ptr(), register) };
            }
        }

        #[inline(always)]
        fn relu_gate(self, g: Self) -> Self {
            // SAFETY: see the type's documentation; registers only. NLE_UQ: "not <=",
            // true for NaN.
            Avx(std::array::from_fn(|i| unsafe {
                let keep = _mm256_cmp_ps::<_CMP_NLE_UQ>(self.0[i], _mm256_setzero_ps());
                _mm256_and_ps(keep, g.0[i])
            }))
        }
    }

    lanes_ops!(Avx, _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps);

    /// One AVX-512 register. Only used inside functions compiled with AVX-512F enabled,
    /// which [`simd_dispatch!`] calls only after checking that the CPU has it; loads and
    /// stores stay inside the slices they are given.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512([__m512; 1]);

    impl Lanes for Avx512 {
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: see the type's documentation.
            Avx512([unsafe { _mm512_set1_ps(v) }])
        }

        #[inline(always)]
        fn load(chunk: &[f32]) -> Self {
            let chunk = &chunk[..LANES];
            // SAFETY: see the type's documentation; the load reads the 16 elements of `chunk`.
            Avx512([unsafe { _mm512_loadu_ps(chunk.as_ptr()) }])
        }

        #[inline(always)]
        fn store(self, chunk: &mut [f32]) {
            let chunk = &mut chunk[..LANES];
            // SAFETY: see the type's documentation; the store writes the 16 elements.
            unsafe { _mm512_storeu_ps(chunk.as_mut_ptr(), self.0[0]) };
        }

        const STREAM_ALIGN: usize = 64;

        #[inline(always)]
        unsafe fn stream(self, chunk: &mut [f32; LANES]) {
            // SAFETY: see the type's documentation; the store writes the 16 elements, at a
            // 64-byte boundary since `chunk` starts at one (the caller's contract).
            unsafe { _mm512_stream_ps(chunk.as_mut_ptr(), self.0[0]) };
        }

        /// The trait's pairwise order (the upper half onto the lower, 16 → 8 → 4 → 2 → 1)
        /// in four shuffle-and-add steps, where the generic version goes through memory.
        #[inline(always)]
        fn sum(self) -> f32 {
            let v = self.0[0];
            // SAFETY: see the type's documentation; registers only.
            unsafe {
                let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
                let eight = _mm256_add_ps(_mm512_castps512_ps256(v), high);
                let four = _mm_add_ps(
                    _mm256_castps256_ps128(eight),
                    _mm256_extractf128_ps::<1>(eight),
                );
                let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
                _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)))
            }
        }

        #[inline(always)]
        fn relu_gate(self, g: Self) -> Self {
            // SAFETY: see the type's documentation; registers only. NLE_UQ: "not <=",
            // true for NaN.
            Avx512([unsafe {
                let keep = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(self.0[0], _mm512_setzero_ps());
                _mm512_maskz_mov_ps(keep, g.0[0])
            }])
        }
    }

    lanes_ops!(Avx512, _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps);
}

/// Defines `fn $name(args) -> ret` that runs `$generic::<L>(args)` with the widest
/// [`Lanes`] the CPU supports: on x86-64 a copy compiled with AVX-512F or AVX enabled when
/// the CPU has it (checked at run time, a cached flag), else SSE; elsewhere the portable
/// lanes.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $generic:ident) => {
        $(#[$meta])*
        #[inline]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn with_avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic::<$crate::kernels::lanes::Avx512>($($arg),*)
                }
                #[target_feature(enable = "avx")]
                unsafe fn with_avx($($arg: $ty),*) $(-> $ret)? {
                    $generic::<$crate::kernels::lanes::Avx>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { with_avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: the CPU has AVX, checked just above.
                    return unsafe { with_avx($($arg),*) };
                }
                $generic::<$crate::kernels::lanes::Sse>($($arg),*)
            }
            #[cfg(not(target_arch = "x86_64"))]
            $generic::<$crate::kernels::lanes::Portable>($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// `Σ (a ⊙ b - c) + Σ a` over 64 values, through lanes `L`.
    fn mixed<L: Lanes>(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
        let mut acc = L::zero();
        let mut out = [0.0; LANES];
        for ((a, b), c) in a
            .chunks_exact(LANES)
            .zip(b.chunks_exact(LANES))
            .zip(c.chunks_exact(LANES))
        {
            let (a, b, c) = (L::load(a), L::load(b), L::load(c));
            acc += a * b - c;
            (acc + a).store(&mut out);
            acc = L::load(&out);
        }
        acc.sum()
    }

    /// The gate keeps `g` where the input is positive or NaN, like the scalar
    /// `relu_gate` of the element-wise kernels, on both instruction sets.
    #[test]
    fn relu_gate_matches_the_scalar_gate() {
        let special = [
            -1.0,
            -0.0,
            0.0,
            1e-30,
            2.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let x: Vec<f32> = (0..LANES).map(|i| special[i % special.len()]).collect();
        let g: Vec<f32> = (0..LANES).map(|i| i as f32 + 0.5).collect();
        let expected: Vec<u32> = x
            .iter()
            .zip(&g)
            .map(|(&x, &g)| crate::kernels::relu::relu_gate(x, g).to_bits())
            .collect();
        let bits = |out: [f32; LANES]| out.map(f32::to_bits).to_vec();
        let mut out = [0.0; LANES];
        Sse::load(&x).relu_gate(Sse::load(&g)).store(&mut out);
        assert_eq!(bits(out), expected, "sse");
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX, checked just above.
            unsafe { avx_gate(&x, &g, &mut out) };
            assert_eq!(bits(out), expected, "avx");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe { avx512_gate(&x, &g, &mut out) };
            assert_eq!(bits(out), expected, "avx512");
        }
    }

    #[target_feature(enable = "avx")]
    unsafe fn avx_gate(x: &[f32], g: &[f32], out: &mut [f32]) {
        Avx::load(x).relu_gate(Avx::load(g)).store(out);
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_gate(x: &[f32], g: &[f32], out: &mut [f32]) {
        Avx512::load(x).relu_gate(Avx512::load(g)).store(out);
    }

    /// AVX-512's own lane sum adds in the trait's pairwise order: the same bits as the
    /// generic sum (SSE's), on lanes whose magnitudes span enough that any other order rounds
    /// differently.
    #[test]
    fn avx512_sum_adds_in_the_pairwise_order() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for seed in 0..200 {
            let lanes: Vec<f32> = (0..LANES)
                .map(|i| {
                    let t = (seed * LANES + i) as f32;
                    (t * 0.731).sin() * 10f32.powi(((t * 1.37).sin() * 6.0) as i32)
                })
                .collect();
            // SAFETY: the CPU has AVX-512F, checked above.
            let avx512 = unsafe { avx512_sum(&lanes) };
            assert_eq!(
                avx512.to_bits(),
                Sse::load(&lanes).sum().to_bits(),
                "{lanes:?}"
            );
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_sum(lanes: &[f32]) -> f32 {
        Avx512::load(lanes).sum()
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_mixed(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
        mixed::<Avx512>(a, b, c)
    }

    #[test]
    fn sse_avx_and_avx512_give_the_same_bits() {
        if !std::arch::is_x86_feature_detected!("avx") {
            return;
        }
        let values = |k: f32| {
            (0..64)
                .map(|i| ((i as f32 + k) * 0.731).sin() * 1e3)
                .collect::<Vec<_>>()
        };
        let (a, b, c) = (values(0.0), values(1.0), values(2.0));
        let sse = mixed::<Sse>(&a, &b, &c);
        assert_eq!(sse.to_bits(), mixed::<Avx>(&a, &b, &c).to_bits());
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            let avx512 = unsafe { avx512_mixed(&a, &b, &c) };
            assert_eq!(sse.to_bits(), avx512.to_bits());
        }
        let exact: f64 = (0..64)
            .map(|i| a[i] as f64 * b[i] as f64 - c[i] as f64 + a[i] as f64)
            .sum();
        assert!(
            (sse as f64 - exact).abs() < 1e-6 * exact.abs().max(1e3),
            "{sse} vs {exact}"
        );
    }
}
