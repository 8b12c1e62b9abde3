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
//! ```
//! use resnorm::AlignedVec;
//! let mut v = AlignedVec::zeros(100);
//! assert_eq!(v.as_ptr() as usize % AlignedVec::ALIGN, 0);
//! v[3] = 1.5;
//! assert_eq!(v.iter().sum::<f32>(), 1.5);
//! let w = AlignedVec::from(&[1.0, 2.0][..]);
//! assert_eq!(&w[..], &[1.0, 2.0]);
//! ```

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// A fixed-length run of `f32` whose first element starts a cache line.
pub struct AlignedVec {
    data: NonNull<f32>,
    len: usize,
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
            };
        };
        // SAFETY: the layout has a non-zero size (`layout` returns None for none).
        let data = unsafe { alloc_zeroed(layout) }.cast::<f32>();
        match NonNull::new(data) {
            Some(data) => AlignedVec { data, len },
            None => handle_alloc_error(layout),
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
        if let Some(layout) = Self::layout(self.len) {
            // SAFETY: `data` was allocated by `zeros` with this same layout.
            unsafe { dealloc(self.data.as_ptr().cast(), layout) }
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
