//! Sixteen `f32` lanes with a multiply-add, on AVX-512 registers, on pairs of AVX2 registers
//! and on plain arrays: the vector that the register-tiled kernels (the 3x3 convolution,
//! attention's per-head products) are written over once, generically.
//!
//! A kernel takes `V: Vector` and is instantiated once per [`Level`]: with [`Portable`], which
//! the compiler vectorizes for whatever the target (or [`wide`]) allows, and with [`Avx512`]
//! and [`Avx2`] inside `#[target_feature]` functions that run only when [`level`] says so.
//! Their multiply-adds are fused (one rounding), [`Portable`]'s is not, so the levels agree
//! to rounding, not bit for bit. An [`Avx2`] vector takes two of AVX2's sixteen registers
//! where an [`Avx512`] one takes one of thirty-two: the kernels choose their tile shapes per
//! vector.
//!
//! [`Level`]: crate::kernels::simd::Level
//! [`level`]: crate::kernels::simd::level
//!
//! [`wide`]: crate::kernels::exp::wide

/// Lanes of one vector.
pub(crate) const LANES: usize = 16;

/// Sixteen `f32` lanes with a multiply-add: what the tiled kernels need of a vector.
///
/// Loads and stores take raw pointers: the kernels check their bounds once per call, not
/// once per vector.
pub(crate) trait Vector: Copy + std::ops::Add<Output = Self> {
    fn zero() -> Self;
    fn splat(value: f32) -> Self;
    /// # Safety
    /// `data` points at [`LANES`] readable `f32`.
    unsafe fn load(data: *const f32) -> Self;
    /// Like [`Vector::load`], with zero in every lane whose bit of `keep` is clear.
    ///
    /// # Safety
    /// As for [`Vector::load`].
    unsafe fn load_kept(data: *const f32, keep: u16) -> Self;
    /// # Safety
    /// `data` points at [`LANES`] writable `f32`.
    unsafe fn store(self, data: *mut f32);
    /// `self + a · b`.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// The sum of the lanes.
    fn sum(self) -> f32;
}

/// Plain arrays: vectorized by the compiler for whatever the target (or [`wide`]) allows.
///
/// [`wide`]: crate::kernels::exp::wide
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; LANES]);

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
    unsafe fn load_kept(data: *const f32, keep: u16) -> Self {
        let loaded = data.cast::<[f32; LANES]>().read_unaligned();
        Portable(std::array::from_fn(|l| match keep >> l & 1 {
            1 => loaded[l],
            _ => 0.0,
        }))
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
pub(crate) use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::Avx512;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Vector;

    /// One 512-bit register. Only for code compiled with `avx512f` that runs on CPUs that
    /// have it (checked by the caller through `simd::level`).
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl std::ops::Add for Avx512 {
        type Output = Self;
        #[inline(always)]
        fn add(self, other: Self) -> Self {
            // SAFETY: as for the methods below.
            Avx512(unsafe { _mm512_add_ps(self.0, other.0) })
        }
    }

    // SAFETY (every method): only instantiated inside `avx512f` functions, which run only on
    // CPUs that have it; loads and stores are the callers' obligation.
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
        unsafe fn load_kept(data: *const f32, keep: u16) -> Self {
            Avx512(_mm512_maskz_loadu_ps(keep, data))
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
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Vector;

    /// Two 256-bit registers, lanes 0-7 and 8-15. Only for code compiled with `avx2,fma`
    /// that runs on CPUs that have both (checked by the caller through `simd::level`).
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256, __m256);

    impl std::ops::Add for Avx2 {
        type Output = Self;
        #[inline(always)]
        fn add(self, other: Self) -> Self {
            // SAFETY: as for the methods below.
            unsafe {
                Avx2(
                    _mm256_add_ps(self.0, other.0),
                    _mm256_add_ps(self.1, other.1),
                )
            }
        }
    }

    /// Per byte of a `keep` mask, eight lanes: all ones where its bit is set. AVX2 has no
    /// mask registers; a table lookup costs one load per register, and only the few bytes
    /// that a kernel's masks take are ever in the cache.
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

    /// The eight floats at `data`, zero in the lanes whose bit of `byte`'s low byte is clear.
    #[inline(always)]
    unsafe fn load_byte_kept(data: *const f32, byte: u16) -> __m256 {
        let mask = _mm256_load_ps(LANE_MASKS.0[usize::from(byte & 0xff)].as_ptr().cast());
        _mm256_and_ps(mask, _mm256_loadu_ps(data))
    }

    // SAFETY (every method): only instantiated inside `avx2,fma` functions, which run only on
    // CPUs that have both; loads and stores are the callers' obligation.
    impl Vector for Avx2 {
        #[inline(always)]
        fn zero() -> Self {
            unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(value: f32) -> Self {
            unsafe { Avx2(_mm256_set1_ps(value), _mm256_set1_ps(value)) }
        }
        #[inline(always)]
        unsafe fn load(data: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(data), _mm256_loadu_ps(data.add(8)))
        }
        #[inline(always)]
        unsafe fn load_kept(data: *const f32, keep: u16) -> Self {
            Avx2(
                load_byte_kept(data, keep),
                load_byte_kept(data.add(8), keep >> 8),
            )
        }
        #[inline(always)]
        unsafe fn store(self, data: *mut f32) {
            _mm256_storeu_ps(data, self.0);
            _mm256_storeu_ps(data.add(8), self.1);
        }
        #[inline(always)]
        fn mul_add(self, a: Self, b: Self) -> Self {
            unsafe {
                Avx2(
                    _mm256_fmadd_ps(a.0, b.0, self.0),
                    _mm256_fmadd_ps(a.1, b.1, self.1),
                )
            }
        }
        #[inline(always)]
        fn sum(self) -> f32 {
            unsafe {
                let v = _mm256_add_ps(self.0, self.1);
                let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
                _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector's loads, masked loads, multiply-adds and sums against plain arithmetic (exact:
    /// halves of small integers).
    fn check<V: Vector>() {
        let data: Vec<f32> = (0..LANES).map(|l| l as f32 - 5.5).collect();
        let mut out = [f32::NAN; LANES];
        for keep in [0, 1, 0x8000, 0x00ff, 0xff00, 0x5a5a, 0xfffe, 0xffff] {
            // SAFETY: `data` and `out` hold LANES floats.
            unsafe {
                let v = V::load_kept(data.as_ptr(), keep);
                v.mul_add(V::splat(2.0), V::load(data.as_ptr()))
                    .store(out.as_mut_ptr());
            }
            let kept = |l: usize| f32::from(keep >> l & 1) * data[l];
            assert!(
                (0..LANES).all(|l| out[l] == kept(l) + 2.0 * data[l]),
                "{keep:#x}: {out:?}"
            );
            // SAFETY: as above.
            let v = unsafe { V::load_kept(data.as_ptr(), keep) };
            assert_eq!((v + V::zero()).sum(), (0..LANES).map(kept).sum::<f32>());
        }
    }

    #[test]
    fn every_vector_loads_multiplies_and_sums_its_lanes() {
        check::<Portable>();
        #[cfg(target_arch = "x86_64")]
        {
            use crate::kernels::simd::Level;
            if Level::detected() >= Level::Avx2 {
                check::<Avx2>();
            }
            if Level::detected() >= Level::Avx512 {
                check::<Avx512>();
            }
        }
    }
}
