//! Sixteen `f32` lanes with a multiply-add, on AVX-512 registers and on plain arrays: the
//! vector that the register-tiled kernels (the 3x3 convolution, attention's per-head
//! products) are written over once, generically.
//!
//! A kernel takes `V: Vector` and is instantiated twice: with [`Portable`], which the
//! compiler vectorizes for whatever the target (or [`wide`]) allows, and with [`Avx512`]
//! inside a `#[target_feature(enable = "avx512f")]` function that runs only after the CPU was
//! checked. [`Avx512`]'s multiply-add is fused (one rounding), [`Portable`]'s is not, so the
//! two agree to rounding, not bit for bit.
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
pub(crate) use avx512::Avx512;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Vector;

    /// One 512-bit register. Only for code compiled with `avx512f` that runs on CPUs that
    /// have it (checked by the caller with `is_x86_feature_detected!`).
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
