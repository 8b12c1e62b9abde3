//! [`Vector`] on x86-64 registers: [`Avx512`] (one 512-bit register, masked loads),
//! [`Avx2`] (two 256-bit registers, fused multiply-add) and [`Scalar`] (four SSE registers,
//! the baseline every x86-64 CPU has).
//!
//! A value of the first two exists only where [`level`](super::level) (or a test that checked
//! [`Level::detected`](super::Level::detected)) established that the CPU has its instruction
//! set; the kernels use them inside functions compiled for it by
//! `simd::dispatch!`, where the intrinsics below are inlined. That is the
//! safety argument of every `unsafe` block for them; loads and stores besides follow the
//! trait's contracts.

use super::{Kernel, Vector, LANES};
use std::arch::x86_64::*;
use std::ops::{Add, AddAssign, Mul, Sub};

/// [`Vector::compiled`] in a function compiled with `$features` (none: the baseline).
macro_rules! compiled {
    ($($features:literal)?) => {
        #[inline(always)]
        unsafe fn compiled<K: Kernel>(kernel: K) -> K::Output {
            $(#[target_feature(enable = $features)])?
            #[inline(never)]
            unsafe fn run<K: Kernel>(kernel: K) -> K::Output {
                // SAFETY: the caller's contract.
                unsafe { kernel.run() }
            }
            // SAFETY: the caller's contract (the CPU has `$features`).
            unsafe { run(kernel) }
        }
    };
}

/// Implements the operators of `$ty([register; N])` register by register with one
/// intrinsic per operator.
macro_rules! operators {
    ($ty:ident, $add:path, $sub:path, $mul:path) => {
        operators!(@op $ty, Add, add, $add);
        operators!(@op $ty, Sub, sub, $sub);
        operators!(@op $ty, Mul, mul, $mul);
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
                // SAFETY: see the module documentation; registers only.
                $ty(std::array::from_fn(|i| unsafe { $f(self.0[i], other.0[i]) }))
            }
        }
    };
}

/// Two AVX2 registers, lanes 0-7 and 8-15, with FMA's fused multiply-add.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2([__m256; 2]);

operators!(Avx2, _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps);

impl Vector for Avx2 {
    #[inline(always)]
    fn splat(value: f32) -> Avx2 {
        // SAFETY: see the module documentation.
        Avx2([unsafe { _mm256_set1_ps(value) }; 2])
    }

    #[inline(always)]
    unsafe fn load(data: *const f32) -> Avx2 {
        // SAFETY: see the module documentation; the caller's contract.
        Avx2(std::array::from_fn(|i| unsafe {
            _mm256_loadu_ps(data.add(8 * i))
        }))
    }

    /// One table load and one `and` per register ([`LANE_MASKS`]) rather than a mask computed
    /// for a masked load: fewer instructions, and what the AVX2 convolution was tuned with.
    #[inline(always)]
    unsafe fn load_kept(data: *const f32, keep: u16) -> Avx2 {
        // SAFETY: see the module documentation; the caller's contract. Half i keeps the
        // lanes of byte i of `keep`.
        Avx2(std::array::from_fn(|i| unsafe {
            let byte = usize::from(keep >> (8 * i) & 0xff);
            let mask = _mm256_load_ps(LANE_MASKS.0[byte].as_ptr().cast());
            _mm256_and_ps(mask, _mm256_loadu_ps(data.add(8 * i)))
        }))
    }

    #[inline(always)]
    unsafe fn store(self, data: *mut f32) {
        for (i, register) in self.0.into_iter().enumerate() {
            // SAFETY: see the module documentation; the caller's contract.
            unsafe { _mm256_storeu_ps(data.add(8 * i), register) };
        }
    }

    const STREAM_ALIGN: usize = 32;

    #[inline(always)]
    unsafe fn stream(self, chunk: &mut [f32; LANES]) {
        for (i, register) in self.0.into_iter().enumerate() {
            // SAFETY: see the module documentation; each store writes 8 elements of `chunk`,
            // at a 32-byte boundary since `chunk` starts at one (the caller's contract).
            unsafe { _mm256_stream_ps(chunk[8 * i..].as_mut_ptr(), register) };
        }
    }

    #[inline(always)]
    fn relu_gate(self, g: Avx2) -> Avx2 {
        // SAFETY: see the module documentation; registers only. NLE_UQ: "not <=", true for
        // NaN.
        Avx2(std::array::from_fn(|i| unsafe {
            let keep = _mm256_cmp_ps::<_CMP_NLE_UQ>(self.0[i], _mm256_setzero_ps());
            _mm256_and_ps(keep, g.0[i])
        }))
    }

    #[inline(always)]
    fn mul_add(self, a: Avx2, b: Avx2) -> Avx2 {
        // SAFETY: see the module documentation; registers only.
        Avx2(std::array::from_fn(|i| unsafe {
            _mm256_fmadd_ps(a.0[i], b.0[i], self.0[i])
        }))
    }

    /// The trait's pairwise order in registers: the two halves added make the first step.
    #[inline(always)]
    fn sum(self) -> f32 {
        // SAFETY: see the module documentation; registers only.
        unsafe { sum_eight(_mm256_add_ps(self.0[0], self.0[1])) }
    }

    compiled!("avx2,fma");
}

/// Per byte of a `keep` mask, eight lanes: all ones where its bit is set. AVX2 has no mask
/// registers; a lookup is one load per register, and only the few entries that a kernel's
/// masks take are ever in the cache.
#[repr(align(32))]
struct LaneMasks([[u32; 8]; 256]);

static LANE_MASKS: LaneMasks = {
    let mut masks = [[0; 8]; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut lane = 0;
        while lane < 8 {
            if byte >> lane & 1 == 1 {
                masks[byte][lane] = u32::MAX;
            }
            lane += 1;
        }
        byte += 1;
    }
    LaneMasks(masks)
};

/// The pairwise sum of eight lanes (8 → 4 → 2 → 1), the last steps of [`Vector::sum`].
#[inline(always)]
unsafe fn sum_eight(eight: __m256) -> f32 {
    // SAFETY: see the module documentation; registers only.
    unsafe {
        let four = _mm_add_ps(
            _mm256_castps256_ps128(eight),
            _mm256_extractf128_ps::<1>(eight),
        );
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)))
    }
}

/// One AVX-512 register.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512([__m512; 1]);

operators!(Avx512, _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps);

impl Vector for Avx512 {
    #[inline(always)]
    fn splat(value: f32) -> Avx512 {
        // SAFETY: see the module documentation.
        Avx512([unsafe { _mm512_set1_ps(value) }])
    }

    #[inline(always)]
    unsafe fn load(data: *const f32) -> Avx512 {
        // SAFETY: see the module documentation; the caller's contract.
        Avx512([unsafe { _mm512_loadu_ps(data) }])
    }

    #[inline(always)]
    unsafe fn load_kept(data: *const f32, keep: u16) -> Avx512 {
        // SAFETY: see the module documentation; the caller's contract.
        Avx512([unsafe { _mm512_maskz_loadu_ps(keep, data) }])
    }

    #[inline(always)]
    unsafe fn store(self, data: *mut f32) {
        // SAFETY: see the module documentation; the caller's contract.
        unsafe { _mm512_storeu_ps(data, self.0[0]) }
    }

    const STREAM_ALIGN: usize = 64;

    #[inline(always)]
    unsafe fn stream(self, chunk: &mut [f32; LANES]) {
        // SAFETY: see the module documentation; the store writes the 16 elements, at a
        // 64-byte boundary since `chunk` starts at one (the caller's contract).
        unsafe { _mm512_stream_ps(chunk.as_mut_ptr(), self.0[0]) }
    }

    #[inline(always)]
    fn relu_gate(self, g: Avx512) -> Avx512 {
        // SAFETY: see the module documentation; registers only. NLE_UQ: "not <=", true for
        // NaN.
        Avx512([unsafe {
            let keep = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(self.0[0], _mm512_setzero_ps());
            _mm512_maskz_mov_ps(keep, g.0[0])
        }])
    }

    #[inline(always)]
    fn mul_add(self, a: Avx512, b: Avx512) -> Avx512 {
        // SAFETY: see the module documentation; registers only.
        Avx512([unsafe { _mm512_fmadd_ps(a.0[0], b.0[0], self.0[0]) }])
    }

    /// The trait's pairwise order in registers: the upper 256 bits onto the lower first.
    #[inline(always)]
    fn sum(self) -> f32 {
        let v = self.0[0];
        // SAFETY: see the module documentation; registers only.
        unsafe {
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            sum_eight(_mm256_add_ps(_mm512_castps512_ps256(v), high))
        }
    }

    compiled!("avx512f");
}

/// Four SSE registers: the scalar level on x86-64, where every CPU has SSE2 (safe to use
/// without a check). Written out because the plain arrays that other targets use ran the
/// norm kernels about 2x slower here (docs/benchmarks.md, "SIMD layer: AVX-512 and AVX2").
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar([__m128; 4]);

operators!(Scalar, _mm_add_ps, _mm_sub_ps, _mm_mul_ps);

impl Vector for Scalar {
    #[inline(always)]
    fn splat(value: f32) -> Scalar {
        // SAFETY: SSE2 is baseline on x86-64.
        Scalar([unsafe { _mm_set1_ps(value) }; 4])
    }

    #[inline(always)]
    unsafe fn load(data: *const f32) -> Scalar {
        // SAFETY: SSE2 is baseline on x86-64; the caller's contract.
        Scalar(std::array::from_fn(|i| unsafe {
            _mm_loadu_ps(data.add(4 * i))
        }))
    }

    #[inline(always)]
    unsafe fn load_kept(data: *const f32, keep: u16) -> Scalar {
        // SAFETY: SSE2 is baseline on x86-64; the caller's contract. Lane l of quarter i is
        // kept when bit 4i + l of `keep` is set: its bit, isolated, equals its selector.
        Scalar(std::array::from_fn(|i| unsafe {
            let select = _mm_setr_epi32(1, 2, 4, 8);
            let bits = _mm_and_si128(_mm_set1_epi32(i32::from(keep >> (4 * i))), select);
            let mask = _mm_castsi128_ps(_mm_cmpeq_epi32(bits, select));
            _mm_and_ps(_mm_loadu_ps(data.add(4 * i)), mask)
        }))
    }

    #[inline(always)]
    unsafe fn store(self, data: *mut f32) {
        for (i, register) in self.0.into_iter().enumerate() {
            // SAFETY: SSE2 is baseline on x86-64; the caller's contract.
            unsafe { _mm_storeu_ps(data.add(4 * i), register) };
        }
    }

    const STREAM_ALIGN: usize = 16;

    #[inline(always)]
    unsafe fn stream(self, chunk: &mut [f32; LANES]) {
        for (i, register) in self.0.into_iter().enumerate() {
            // SAFETY: SSE2 is baseline on x86-64; each store writes 4 elements of `chunk`, at
            // a 16-byte boundary since `chunk` starts at one (the caller's contract).
            unsafe { _mm_stream_ps(chunk[4 * i..].as_mut_ptr(), register) };
        }
    }

    #[inline(always)]
    fn relu_gate(self, g: Scalar) -> Scalar {
        // SAFETY: SSE2 is baseline on x86-64; registers only. "Not <=" is true for NaN.
        Scalar(std::array::from_fn(|i| unsafe {
            _mm_and_ps(_mm_cmpnle_ps(self.0[i], _mm_setzero_ps()), g.0[i])
        }))
    }

    /// Two roundings: SSE2 has no fused multiply-add.
    #[inline(always)]
    fn mul_add(self, a: Scalar, b: Scalar) -> Scalar {
        self + a * b
    }

    compiled!();
}
