//! `f32` storage that starts on a cache line.
//!
//! A `Vec<f32>` is aligned to 4 bytes by its type and to 16 by glibc's allocator, so a 64-byte
//! vector load or store at the start of a row usually straddles two cache lines, and the
//! streaming stores of the row kernels (`kernels/stores.rs`), which must fill whole lines,
//! start each row with elements written one by one. [`AlignedVec`] allocates on a
//! [`AlignedVec::ALIGN`]-byte boundary, as PyTorch does for its CPU tensors: rows whose byte
//! length is a multiple of 64 then all start on a line (what it gained: docs/benchmarks.md).
//!
//! It derefs to `[f32]`, so every kernel takes it as a slice.
//!
//! Models whose batches change shape (the encoder-decoder's token batches) rebuild their
//! buffers inside [`AlignedVec::recycle`]: the old buffers' allocations are kept and handed
//! to the new ones instead of going back to the allocator, whose heap would otherwise
//! fragment on blocks of ever-changing sizes (what that cost: docs/benchmarks.md).
//!
//! ```
//! use resnorm::AlignedVec;
//! let mut v = AlignedVec::zeros(100);
//! assert_eq!(v.as_ptr() as usize % AlignedVec::ALIGN, 0);
//! v[3] = 1.5;
//! assert_eq!(v.iter().sum::<f32>(), 1.5);
//! let w = AlignedVec::from(&[1.0, 2.0][..]);
//! assert_eq!(&w[..], &[1.0, 2.0]);
//! // A rebuild reuses the dropped buffer's allocation, zeroed.
//! let address = v.as_ptr();
//! let u = AlignedVec::recycle(v, || AlignedVec::zeros(90));
//! assert_eq!((u.as_ptr(), u.iter().sum::<f32>()), (address, 0.0));
//! ```

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// A fixed-length run of `f32` whose first element starts a cache line.
pub struct AlignedVec {
    data: NonNull<f32>,
    len: usize,
    /// Elements allocated, at least `len` (more when recycled from a larger buffer).
    capacity: usize,
}

/// An allocation on offer inside [`AlignedVec::recycle`]: its pointer and capacity.
struct Spare(NonNull<f32>, usize);

thread_local! {
    /// The spare allocations of the innermost [`AlignedVec::recycle`] running on this
    /// thread; `None` outside one.
    static SPARES: RefCell<Option<Vec<Spare>>> = const { RefCell::new(None) };
}

// SAFETY: AlignedVec owns its elements like a Vec<f32>: no shared state, plain f32 data.
unsafe impl Send for AlignedVec {}
unsafe impl Sync for AlignedVec {}

impl AlignedVec {
    /// Alignment of the first element, in bytes: one cache line.
    pub const ALIGN: usize = 64;

    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let Some(layout) = Self::layout(len) else {
            return AlignedVec {
                data: NonNull::dangling(),
                len: 0,
                capacity: 0,
            };
        };
        if let Some(Spare(data, capacity)) = Self::take_spare(len) {
            let mut v = AlignedVec {
                data,
                len,
                capacity,
            };
            v.fill(0.0);
            return v;
        }
        // SAFETY: the layout has a non-zero size (`layout` returns None for none).
        let data = unsafe { alloc_zeroed(layout) }.cast::<f32>();
        match NonNull::new(data) {
            Some(data) => AlignedVec {
                data,
                len,
                capacity: len,
            },
            None => handle_alloc_error(layout),
        }
    }

    /// Drops `old` and runs `build`, whose new buffers take the allocations `old` held
    /// instead of fresh ones, each the smallest that fits; allocations left over are freed
    /// at the end. A model rebuilding its buffers for another batch shape calls it so that
    /// the heap stays as it was: when every new buffer is no larger than its counterpart
    /// in `old`, smallest-fit in any order finds an allocation for each, and nothing is
    /// allocated or freed.
    pub fn recycle<T, R>(old: T, build: impl FnOnce() -> R) -> R {
        let _scope = RecycleScope(SPARES.with(|s| s.borrow_mut().replace(Vec::new())));
        drop(old);
        build()
    }

    /// The best-fitting spare allocation for `len` elements, if a recycle is running.
    fn take_spare(len: usize) -> Option<Spare> {
        SPARES.with(|s| {
            let mut spares = s.borrow_mut();
            let spares = spares.as_mut()?;
            let (best, _) = spares
                .iter()
                .enumerate()
                .filter(|(_, spare)| spare.1 >= len)
                .min_by_key(|(_, spare)| spare.1)?;
            Some(spares.swap_remove(best))
        })
    }

    /// Frees an allocation of `capacity` elements made by [`AlignedVec::zeros`].
    fn free(data: NonNull<f32>, capacity: usize) {
        if let Some(layout) = Self::layout(capacity) {
            // SAFETY: `data` was allocated by `zeros` with this same layout.
            unsafe { dealloc(data.as_ptr().cast(), layout) }
        }
    }

    /// The layout of `len` elements, `None` when that is no bytes. Panics, as `Vec` does, if
    /// the size overflows.
    fn layout(len: usize) -> Option<Layout> {
        let layout = Layout::array::<f32>(len)
            .and_then(|layout| layout.align_to(Self::ALIGN))
            .expect("AlignedVec: capacity overflow");
        (layout.size() > 0).then_some(layout)
    }
}

impl Drop for AlignedVec {
    fn drop(&mut self) {
        if self.capacity == 0 {
            return;
        }
        let spare = Spare(self.data, self.capacity);
        // Outside a recycle (or while the thread's locals are torn down) it is freed.
        let kept = SPARES
            .try_with(|s| match s.borrow_mut().as_mut() {
                Some(spares) => {
                    spares.push(spare);
                    None
                }
                None => Some(spare),
            })
            .unwrap_or(Some(Spare(self.data, self.capacity)));
        if let Some(Spare(data, capacity)) = kept {
            Self::free(data, capacity);
        }
    }
}

/// The open [`AlignedVec::recycle`]: when it ends, even by a panic, the enclosing one's
/// spares (or none) come back and the allocations left over are freed.
struct RecycleScope(Option<Vec<Spare>>);

impl Drop for RecycleScope {
    fn drop(&mut self) {
        let outer = self.0.take();
        let left = SPARES.with(|s| std::mem::replace(&mut *s.borrow_mut(), outer));
        for Spare(data, capacity) in left.unwrap_or_default() {
            AlignedVec::free(data, capacity);
        }
    }
}

impl Deref for AlignedVec {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        // SAFETY: `data` points at `len` initialized elements (or dangles with `len` 0).
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedVec {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.len) }
    }
}

impl<'a> IntoIterator for &'a AlignedVec {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut AlignedVec {
    type Item = &'a mut f32;
    type IntoIter = std::slice::IterMut<'a, f32>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl From<&[f32]> for AlignedVec {
    fn from(values: &[f32]) -> Self {
        let mut v = AlignedVec::zeros(values.len());
        v.copy_from_slice(values);
        v
    }
}

impl From<Vec<f32>> for AlignedVec {
    fn from(values: Vec<f32>) -> Self {
        AlignedVec::from(&values[..])
    }
}

impl Clone for AlignedVec {
    fn clone(&self) -> Self {
        AlignedVec::from(&self[..])
    }
}

impl Default for AlignedVec {
    fn default() -> Self {
        AlignedVec::zeros(0)
    }
}

impl PartialEq for AlignedVec {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl fmt::Debug for AlignedVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_starts_on_a_line_and_holds_its_values() {
        for len in [1, 3, 16, 17, 1000, 1 << 20] {
            let mut v = AlignedVec::zeros(len);
            assert_eq!(v.as_ptr() as usize % AlignedVec::ALIGN, 0, "len {len}");
            assert!(v.iter().all(|&x| x == 0.0));
            v[len - 1] = 2.0;
            let copy = v.clone();
            assert_eq!(copy, v);
            assert_eq!(copy[len - 1], 2.0);
        }
    }

    #[test]
    fn a_rebuild_takes_the_closest_allocation_and_frees_the_rest() {
        let mut old = [
            AlignedVec::zeros(100),
            AlignedVec::zeros(1000),
            AlignedVec::zeros(40),
        ];
        old[1][5] = 3.0;
        let addresses: Vec<_> = old.iter().map(|v| v.as_ptr()).collect();
        let new = AlignedVec::recycle(old, || {
            // Smaller than their counterparts, in another order: no fresh allocation.
            (
                AlignedVec::zeros(30),
                AlignedVec::zeros(900),
                AlignedVec::zeros(50),
            )
        });
        assert_eq!(
            new.0.as_ptr(),
            addresses[2],
            "40 is the smallest fit for 30"
        );
        assert_eq!(new.1.as_ptr(), addresses[1]);
        assert_eq!(new.2.as_ptr(), addresses[0]);
        assert_eq!(
            (new.1.len(), new.1[5]),
            (900, 0.0),
            "zeroed to the new length"
        );
        // A larger buffer than any spare is fresh, and the spare left over is freed.
        let grown = AlignedVec::recycle(new, || (AlignedVec::zeros(2000), AlignedVec::zeros(10)));
        assert!(grown.0.iter().chain(grown.1.iter()).all(|&x| x == 0.0));
        // Outside a recycle, drops free again and new buffers are fresh.
        drop(grown);
        assert!(AlignedVec::zeros(5).iter().all(|&x| x == 0.0));
    }

    #[test]
    fn a_rebuild_that_panics_closes_its_recycle() {
        let old = AlignedVec::zeros(64);
        let result = std::panic::catch_unwind(|| {
            AlignedVec::recycle(old, || -> AlignedVec { panic!("a bug in a constructor") })
        });
        assert!(result.is_err());
        assert!(SPARES.with(|s| s.borrow().is_none()), "drops free again");
    }

    #[test]
    fn empty_allocates_nothing() {
        let v = AlignedVec::zeros(0);
        assert!(v.is_empty());
        assert_eq!(v, AlignedVec::default());
        assert_eq!(
            format!("{:?}", AlignedVec::from(vec![1.0, 2.0])),
            "[1.0, 2.0]"
        );
    }
}
