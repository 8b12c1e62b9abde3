//! Inverted dropout with a counter-based mask: the mask is a pure function of
//! `(seed, index)`, so the backward regenerates it instead of storing it, and the result
//! does not depend on the thread count or on how the work is split.
//!
//! ```text
//! forward   y_i  = x_i · m_i / (1 - p)        m_i = [u(seed, i) ≥ p],  u uniform in [0, 1)
//! backward  dx_i = dy_i · m_i / (1 - p)        the same m_i, regenerated
//! ```
//! `u(seed, i)` is a 32-bit counter hash (Wellons' `lowbias32` finalizer of
//! `i·γ ⊕ key`, `key` drawn from the seed by SplitMix64), the stateless generator that
//! Philox is in FlashAttention's CUDA kernels: every element draws its own number from its
//! index alone (indices taken modulo 2³²), with 32-bit operations that vectorize on every
//! SIMD level. A mask's seed names one tensor of one step; callers derive a different
//! seed for every site ([`DropoutMask::site`]). `p = 0` is the identity and reads no hash.
//!
//! ```
//! use resnorm::kernels::dropout::{dropout_backward, dropout_forward, DropoutMask};
//! let mask = DropoutMask::new(0.5, 7).unwrap();
//! let mut y = vec![1.0f32; 1000];
//! dropout_forward(&mut y, &mask, 0);
//! let kept = y.iter().filter(|&&v| v == 2.0).count();
//! assert!(y.iter().all(|&v| v == 0.0 || v == 2.0) && (400..600).contains(&kept));
//! let mut dx = vec![1.0f32; 1000];
//! dropout_backward(&mut dx, &mask, 0); // the same mask, regenerated
//! assert_eq!(dx, y);
//! assert!(DropoutMask::new(1.0, 7).is_err());
//! ```

use rayon::prelude::*;

use crate::kernels::simd::{dispatch, rows_per_block, ONE_BLOCK_PER_THREAD};
use crate::threads;
use crate::{Error, Result};

/// Below this many elements the kernels run on the calling thread.
const PARALLEL_MIN_LEN: usize = 1 << 16;

/// SplitMix64's increment, the golden ratio in 64 bits.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output at counter `index` of the stream `seed`: seeds of steps and sites.
#[inline(always)]
pub fn hash(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 32-bit draw of element `index` of the stream `key`: `lowbias32(index·γ ⊕ key)`.
#[inline(always)]
pub fn draw(key: u32, index: u32) -> u32 {
    let mut x = index.wrapping_mul(0x9E37_79B9) ^ key;
    x ^= x >> 16;
    x = x.wrapping_mul(0x21F0_AAAD);
    x ^= x >> 15;
    x = x.wrapping_mul(0x735A_2D97);
    x ^ (x >> 15)
}

/// One dropout mask: a rate and the seed of the tensor it drops from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutMask {
    seed: u64,
    /// The key of [`draw`], from the seed.
    key: u32,
    /// An element is dropped when its draw is below this (`p·2³²`, rounded).
    threshold: u32,
    /// `1 / (1 - p)`.
    scale: f32,
}

impl DropoutMask {
    /// Drops with probability `p` in `[0, 1)` (a rate of 1 would divide by zero).
    pub fn new(p: f32, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "DropoutMask::new",
                format!("dropout rate {p} must be in [0, 1)"),
            ));
        }
        let threshold = (p as f64 * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
        Ok(DropoutMask {
            seed,
            key: (hash(seed, 0) >> 32) as u32,
            threshold,
            scale: 1.0 / (1.0 - p),
        })
    }

    /// The mask of site `site` of the same rate: its seed hashed with the site, so the
    /// sites of one step draw independent masks.
    pub fn site(&self, site: u64) -> Self {
        let seed = hash(self.seed, site);
        DropoutMask {
            seed,
            key: (hash(seed, 0) >> 32) as u32,
            ..*self
        }
    }

    /// Whether the mask drops nothing (`p = 0`).
    pub fn is_identity(&self) -> bool {
        self.threshold == 0
    }

    /// Element `index`'s draw, uniform on 32 bits.
    pub fn draw(&self, index: u64) -> u32 {
        draw(self.key, index as u32)
    }

    /// `m_i / (1 - p)`: the factor element `index` is multiplied by.
    #[inline(always)]
    pub fn factor(&self, index: u64) -> f32 {
        factor(self.key, self.threshold, self.scale, index as u32)
    }

    /// `row[j] ← row[j] · factor(first + j)` on the calling thread, inlined: for kernels
    /// already compiled for the level in force (attention's rows of probabilities), into
    /// which it vectorizes without a second dispatch.
    #[inline(always)]
    pub(crate) fn scale_row(&self, row: &mut [f32], first: u64) {
        scale_block_with(row, (self.key, self.threshold), self.scale, first as u32);
    }
}

#[inline(always)]
fn factor(key: u32, threshold: u32, scale: f32, index: u32) -> f32 {
    if draw(key, index) >= threshold {
        scale
    } else {
        0.0
    }
}

/// `y ← y · m / (1 - p)` in place, element `i` of `y` at index `offset + i` of the mask.
pub fn dropout_forward(y: &mut [f32], mask: &DropoutMask, offset: u64) {
    apply(y, mask, offset);
}

/// `dx ← dy · m / (1 - p)` in place: the forward's mask at the same offset, regenerated.
pub fn dropout_backward(d: &mut [f32], mask: &DropoutMask, offset: u64) {
    apply(d, mask, offset);
}

/// Multiplies each element by its mask factor; blocks of the thread pool for large slices.
fn apply(values: &mut [f32], mask: &DropoutMask, offset: u64) {
    if mask.is_identity() {
        return;
    }
    let (key, threshold, scale) = (mask.key, mask.threshold, mask.scale);
    let body = |start: usize, block: &mut [f32]| {
        let first = offset.wrapping_add(start as u64) as u32;
        scale_block(block, (key, threshold), scale, first);
    };
    if values.len() < PARALLEL_MIN_LEN {
        body(0, values);
        return;
    }
    let block = rows_per_block(values.len(), ONE_BLOCK_PER_THREAD);
    threads::pool().install(|| {
        values
            .par_chunks_mut(block)
            .enumerate()
            .for_each(|(b, chunk)| body(b * block, chunk));
    });
}

dispatch! {
    /// `v_i ← v_i · factor(first + i)` over one block, vectorized by the compiler.
    fn scale_block(block: &mut [f32], mask: (u32, u32), scale: f32, first: u32) => auto scale_block_with
}

#[inline(always)]
fn scale_block_with(block: &mut [f32], (key, threshold): (u32, u32), scale: f32, first: u32) {
    for (i, v) in block.iter_mut().enumerate() {
        *v *= factor(key, threshold, scale, first.wrapping_add(i as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive reference: each element's draw as a fraction of 2³², compared with `p`.
    fn reference(x: &[f32], p: f32, seed: u64, offset: u64) -> Vec<f32> {
        let mask = DropoutMask::new(p, seed).unwrap();
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let u = mask.draw(offset + i as u64) as f64 / 4_294_967_296.0;
                if u >= p as f64 {
                    v / (1.0 - p)
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn input(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37).sin() + 0.1).collect()
    }

    #[test]
    fn matches_the_reference_small_and_threaded() {
        for (n, p, offset) in [(37, 0.1, 0), (1000, 0.3, 5), (3 << 16, 0.5, 11)] {
            let x = input(n);
            let mut y = x.clone();
            dropout_forward(&mut y, &DropoutMask::new(p, 42).unwrap(), offset);
            let want = reference(&x, p, 42, offset);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-6 * b.abs(), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn keeps_one_minus_p_of_the_elements() {
        let n = 1 << 18;
        for p in [0.1f32, 0.3, 0.5, 0.9] {
            for seed in [0u64, 1, 2] {
                let mut y = vec![1.0f32; n];
                dropout_forward(&mut y, &DropoutMask::new(p, seed).unwrap(), 0);
                let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
                // Five standard deviations of a binomial proportion.
                let sd = ((p as f64) * (1.0 - p as f64) / n as f64).sqrt();
                assert!(
                    (kept - (1.0 - p as f64)).abs() < 5.0 * sd,
                    "p {p}: kept {kept}"
                );
                let mean = y.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                assert!(
                    (mean - 1.0).abs() < 6.0 * sd / (1.0 - p as f64),
                    "mean {mean}"
                );
            }
        }
        // Neighbouring indices and neighbouring seeds are not correlated.
        let mask = DropoutMask::new(0.5, 3).unwrap();
        let drops: Vec<bool> = (0..n as u64).map(|i| mask.factor(i) == 0.0).collect();
        let same = drops.windows(2).filter(|w| w[0] == w[1]).count() as f64 / n as f64;
        assert!((same - 0.5).abs() < 0.01, "adjacent agreement {same}");
        let other = mask.site(1);
        let agree = (0..n as u64)
            .filter(|&i| (other.factor(i) == 0.0) == drops[i as usize])
            .count() as f64
            / n as f64;
        assert!((agree - 0.5).abs() < 0.01, "site agreement {agree}");
    }

    #[test]
    fn backward_uses_the_forwards_mask() {
        let mask = DropoutMask::new(0.3, 9).unwrap();
        let n = 5000;
        let mut y = vec![1.0f32; n];
        dropout_forward(&mut y, &mask, 123);
        let mut d = input(n);
        let dy = d.clone();
        dropout_backward(&mut d, &mask, 123);
        for ((d, dy), y) in d.iter().zip(&dy).zip(&y) {
            assert_eq!(*d, dy * y);
        }
    }

    #[test]
    fn rate_zero_is_the_identity_and_rates_are_checked() {
        let x = input(999);
        let mut y = x.clone();
        dropout_forward(&mut y, &DropoutMask::new(0.0, 5).unwrap(), 0);
        assert_eq!(x, y);
        for p in [-0.1, 1.0, f32::NAN] {
            assert!(DropoutMask::new(p, 0).is_err(), "{p}");
        }
    }

    #[test]
    fn does_not_depend_on_threads_or_split() {
        let mask = DropoutMask::new(0.2, 77).unwrap();
        let x = input(5 << 16);
        let mut whole = x.clone();
        dropout_forward(&mut whole, &mask, 0);
        // Chunks below the parallel size run on this thread alone, at their offsets.
        let mut serial = x.clone();
        for (k, chunk) in serial.chunks_mut(1000).enumerate() {
            dropout_forward(chunk, &mask, k as u64 * 1000);
        }
        assert_eq!(whole, serial);
    }
}
