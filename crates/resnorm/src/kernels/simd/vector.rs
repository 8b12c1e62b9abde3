//! [`Vector`]: sixteen `f32` lanes, the one vector type every hand-vectorized kernel is
//! written over once, generically, and its scalar level on targets other than x86-64.
//!
//! Written out because LLVM's SLP vectorizer, given several accumulators updated in one loop
//! (Σd and Σd² together), packs the wrong elements together and leaves the arithmetic
//! scalar. Sixteen lanes are one AVX-512, two AVX2 or four SSE registers, so with the
//! narrower ones every reduction runs several independent chains of additions.
//!
//! Every operation except [`Vector::mul_add`] gives the same bits on every level (IEEE
//! arithmetic lane by lane, lanes summed in one fixed pairwise order), so the norm kernels,
//! written without it, agree bit for bit across levels; `mul_add` is fused (one rounding) on
//! AVX2 and AVX-512, not on the scalar level.
//!
//! ```
//! // The pairwise order of `Vector::sum`: the upper half of the lanes onto the lower,
//! // 16 → 8 → 4 → 2 → 1.
//! let mut lanes: Vec<f32> = (1..=16).map(|i| i as f32).collect();
//! while lanes.len() > 1 {
//!     let half = lanes.split_off(lanes.len() / 2);
//!     lanes.iter_mut().zip(half).for_each(|(l, h)| *l += h);
//! }
//! assert_eq!(lanes, [136.0]);
//! ```

use super::Kernel;
use std::ops::{Add, AddAssign, Mul, Sub};

/// Lanes per vector; chunks of rows are this long (one 64-byte cache line).
pub(crate) const LANES: usize = 16;

/// Sixteen `f32` lanes. Raw-pointer loads and stores are for kernels that check their bounds
/// once per call; [`Vector::read`] and [`Vector::write`] check each slice.
pub(crate) trait Vector:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + AddAssign
{
    /// Every lane `value`.
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
    /// The byte alignment `chunk` needs for [`Vector::stream`].
    const STREAM_ALIGN: usize;
    /// Writes the lanes to `chunk` with non-temporal (streaming) stores, which write to
    /// memory without first reading the line into the cache; the same bits as
    /// [`Vector::write`]. A block of such stores ends with
    /// [`streaming_fence`](super::streaming_fence).
    ///
    /// # Safety
    /// `chunk` must start at a multiple of [`Vector::STREAM_ALIGN`] bytes.
    unsafe fn stream(self, chunk: &mut [f32; LANES]);
    /// `g` in the lanes where `self > 0` or is NaN, 0 elsewhere: a ReLU's gradient gate
    /// (`self` its input or output), and with `g = self` the ReLU itself.
    fn relu_gate(self, g: Self) -> Self;
    /// `self + a · b`: fused (one rounding) on AVX2 and AVX-512, two on the scalar level.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Runs `kernel` in a function of its own, never inlined, compiled for this vector's
    /// instruction set: a register-tiled kernel's accumulators then have the registers to
    /// themselves (inlined into a larger function, LLVM was seen to spill them, 2x slower).
    ///
    /// # Safety
    /// The CPU has this vector's instruction set (see `x86`), and `kernel`'s contract holds.
    unsafe fn compiled<K: Kernel>(kernel: K) -> K::Output;

    /// All lanes zero.
    #[inline(always)]
    fn zero() -> Self {
        Self::splat(0.0)
    }

    /// The first [`LANES`] values of `chunk`; panics if it is shorter (a chunk of
    /// `as_chunks::<LANES>` never is, and the compiler removes the check).
    #[inline(always)]
    fn read(chunk: &[f32]) -> Self {
        let chunk = &chunk[..LANES];
        // SAFETY: `chunk` holds LANES readable values, checked just above.
        unsafe { Self::load(chunk.as_ptr()) }
    }

    /// Writes the lanes to the first [`LANES`] places of `chunk`; panics if it is shorter.
    #[inline(always)]
    fn write(self, chunk: &mut [f32]) {
        let chunk = &mut chunk[..LANES];
        // SAFETY: `chunk` holds LANES writable places, checked just above.
        unsafe { self.store(chunk.as_mut_ptr()) }
    }

    /// The sum of the lanes, added pairwise in a fixed order (see the module example).
    #[inline(always)]
    fn sum(self) -> f32 {
        let mut lanes = [0.0; LANES];
        self.write(&mut lanes);
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

/// Plain arrays, which the compiler vectorizes for the target's baseline: the scalar level
/// on targets other than x86-64 (where it is four SSE registers, `x86::Scalar`).
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar([f32; LANES]);

#[cfg(not(target_arch = "x86_64"))]
impl Scalar {
    #[inline(always)]
    fn map2(self, other: Scalar, f: impl Fn(f32, f32) -> f32) -> Scalar {
        Scalar(std::array::from_fn(|l| f(self.0[l], other.0[l])))
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Add for Scalar {
    type Output = Scalar;
    #[inline(always)]
    fn add(self, other: Scalar) -> Scalar {
        self.map2(other, |a, b| a + b)
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Sub for Scalar {
    type Output = Scalar;
    #[inline(always)]
    fn sub(self, other: Scalar) -> Scalar {
        self.map2(other, |a, b| a - b)
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Mul for Scalar {
    type Output = Scalar;
    #[inline(always)]
    fn mul(self, other: Scalar) -> Scalar {
        self.map2(other, |a, b| a * b)
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl AddAssign for Scalar {
    #[inline(always)]
    fn add_assign(&mut self, other: Scalar) {
        *self = *self + other;
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Vector for Scalar {
    #[inline(always)]
    fn splat(value: f32) -> Scalar {
        Scalar([value; LANES])
    }

    #[inline(always)]
    unsafe fn load(data: *const f32) -> Scalar {
        // SAFETY: the caller's contract.
        Scalar(unsafe { data.cast::<[f32; LANES]>().read_unaligned() })
    }

    #[inline(always)]
    unsafe fn load_kept(data: *const f32, keep: u16) -> Scalar {
        // SAFETY: the caller's contract.
        let loaded = unsafe { Scalar::load(data) };
        Scalar(std::array::from_fn(|l| match keep >> l & 1 {
            1 => loaded.0[l],
            _ => 0.0,
        }))
    }

    #[inline(always)]
    unsafe fn store(self, data: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { data.cast::<[f32; LANES]>().write_unaligned(self.0) }
    }

    const STREAM_ALIGN: usize = std::mem::align_of::<f32>();

    /// Plain stores: no streaming stores without a written-out implementation.
    #[inline(always)]
    unsafe fn stream(self, chunk: &mut [f32; LANES]) {
        self.write(chunk);
    }

    #[inline(always)]
    fn relu_gate(self, g: Scalar) -> Scalar {
        self.map2(g, crate::kernels::relu::relu_gate)
    }

    #[inline(always)]
    fn mul_add(self, a: Scalar, b: Scalar) -> Scalar {
        Scalar(std::array::from_fn(|l| self.0[l] + a.0[l] * b.0[l]))
    }

    #[inline(always)]
    unsafe fn compiled<K: Kernel>(kernel: K) -> K::Output {
        #[inline(never)]
        unsafe fn run<K: Kernel>(kernel: K) -> K::Output {
            // SAFETY: the caller's contract.
            unsafe { kernel.run() }
        }
        // SAFETY: the caller's contract.
        unsafe { run(kernel) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::{each_level, Level, Scalar};

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// Values whose magnitudes span enough that any other order of additions, or a fused
    /// multiply-add, rounds differently.
    fn spread(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let t = (seed * len + i) as f32;
                (t * 0.731).sin() * 10f32.powi(((t * 1.37).sin() * 6.0) as i32)
            })
            .collect()
    }

    /// `Σ (a ⊙ b - c) + a` over 64 values, through `V`, storing and reloading on the way.
    fn mixed<V: Vector>(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
        let mut acc = V::zero();
        let mut out = [0.0; LANES];
        for ((a, b), c) in a
            .chunks_exact(LANES)
            .zip(b.chunks_exact(LANES))
            .zip(c.chunks_exact(LANES))
        {
            let (a, b, c) = (V::read(a), V::read(b), V::read(c));
            acc += a * b - c;
            (acc + a).write(&mut out);
            acc = V::read(&out);
        }
        acc.sum()
    }

    #[test]
    fn operators_and_sums_give_the_same_bits_on_every_level() {
        let (a, b, c) = (spread(64, 0), spread(64, 1), spread(64, 2));
        let want = mixed::<Scalar>(&a, &b, &c);
        let exact: f64 = (0..64)
            .map(|i| a[i] as f64 * b[i] as f64 - c[i] as f64 + a[i] as f64)
            .sum();
        let scale: f64 = (0..64).map(|i| (a[i] as f64 * b[i] as f64).abs()).sum();
        assert!(
            (want as f64 - exact).abs() < 1e-5 * scale,
            "{want} vs {exact}"
        );
        each_level!(|V, level| {
            assert_eq!(mixed::<V>(&a, &b, &c).to_bits(), want.to_bits(), "{level}");
            for seed in 0..200 {
                let lanes = spread(LANES, seed);
                let pairwise = Scalar::read(&lanes).sum();
                assert_eq!(
                    V::read(&lanes).sum().to_bits(),
                    pairwise.to_bits(),
                    "{level}"
                );
            }
        });
    }

    /// The gate keeps `g` where the input is positive or NaN, like the element-wise kernels'
    /// scalar `relu_gate`.
    #[test]
    fn relu_gate_matches_the_scalar_gate_on_every_level() {
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
        let want: Vec<f32> = x
            .iter()
            .zip(&g)
            .map(|(&x, &g)| crate::kernels::relu::relu_gate(x, g))
            .collect();
        each_level!(|V, level| {
            let mut out = [0.0; LANES];
            V::read(&x).relu_gate(V::read(&g)).write(&mut out);
            assert_eq!(bits(&out), bits(&want), "{level}");
        });
    }

    /// `mul_add` rounds once on the levels with FMA and twice on `Scalar`.
    #[test]
    fn mul_add_is_fused_on_avx2_and_avx512_only() {
        let (acc, a, b) = (spread(LANES, 3), spread(LANES, 4), spread(LANES, 5));
        let fused: Vec<f32> = (0..LANES).map(|l| a[l].mul_add(b[l], acc[l])).collect();
        let unfused: Vec<f32> = (0..LANES).map(|l| acc[l] + a[l] * b[l]).collect();
        assert_ne!(
            bits(&fused),
            bits(&unfused),
            "the values tell the two apart"
        );
        each_level!(|V, level| {
            let mut out = [0.0; LANES];
            V::read(&acc)
                .mul_add(V::read(&a), V::read(&b))
                .write(&mut out);
            let want = if level == Level::Scalar {
                &unfused
            } else {
                &fused
            };
            assert_eq!(bits(&out), bits(want), "{level}");
        });
    }

    #[test]
    fn load_kept_zeroes_the_lanes_whose_bit_is_clear() {
        let data: Vec<f32> = (0..LANES).map(|i| i as f32 + 1.0).collect();
        for keep in [0u16, 1, 0x8000, 0x00ff, 0xff00, 0xa5c3, u16::MAX] {
            let want: Vec<f32> = (0..LANES)
                .map(|l| if keep >> l & 1 == 1 { data[l] } else { 0.0 })
                .collect();
            each_level!(|V, level| {
                let mut out = [f32::NAN; LANES];
                // SAFETY: `data` holds LANES values and `out` LANES places.
                unsafe { V::load_kept(data.as_ptr(), keep).store(out.as_mut_ptr()) };
                assert_eq!(bits(&out), bits(&want), "{level}, keep {keep:#x}");
            });
        }
    }

    #[test]
    fn streaming_stores_write_what_plain_ones_do() {
        #[repr(align(64))]
        struct Line([f32; LANES]);
        let values = spread(LANES, 6);
        each_level!(|V, level| {
            let mut line = Line([0.0; LANES]);
            // SAFETY: `line` starts on a 64-byte boundary, a multiple of any STREAM_ALIGN.
            unsafe { V::read(&values).stream(&mut line.0) };
            crate::kernels::simd::streaming_fence();
            assert_eq!(bits(&line.0), bits(&values), "{level}");
        });
    }
}
