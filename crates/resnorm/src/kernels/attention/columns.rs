//! A buffer whose column blocks several threads write at once, each its own heads' columns
//! of its own sequences' rows, so that no element is written by two.

use crate::kernels::simd::prefetch_lines;
use std::marker::PhantomData;

/// Rows ahead that the writes ask the cache for: a head's rows are a whole row stride apart,
/// often a page or more, and the hardware prefetcher stays within a page.
pub(super) const PREFETCH_ROWS: usize = 8;

/// A `[rows, row_stride]` buffer shared between the tasks of one call.
pub(super) struct SharedColumns<'a> {
    data: *mut f32,
    len: usize,
    row_stride: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: the buffer is borrowed mutably for 'a; tasks write disjoint elements (the
// contract of `SharedColumns::write`), so sharing the pointer between threads is sound.
unsafe impl Send for SharedColumns<'_> {}
unsafe impl Sync for SharedColumns<'_> {}

impl<'a> SharedColumns<'a> {
    pub(super) fn new(data: &'a mut [f32], row_stride: usize) -> Self {
        SharedColumns {
            data: data.as_mut_ptr(),
            len: data.len(),
            row_stride,
            _buffer: PhantomData,
        }
    }

    /// Copies `rows` rows of `src` (`src_stride` apart, the first `width` of each) to rows
    /// `first_row..` at column `column`; `src` `None` writes zeros. Panics if that reaches
    /// past either buffer.
    ///
    /// # Safety
    /// No other thread reads or writes these elements while this runs.
    pub(super) unsafe fn write(
        &self,
        (first_row, column): (usize, usize),
        src: Option<(&[f32], usize)>,
        (rows, width): (usize, usize),
    ) {
        if rows == 0 {
            return;
        }
        let last = (first_row + rows - 1) * self.row_stride + column + width;
        assert!(last <= self.len && column + width <= self.row_stride);
        for r in 0..rows {
            let at = (first_row + r) * self.row_stride + column;
            prefetch_lines(
                self.data.wrapping_add(at + PREFETCH_ROWS * self.row_stride),
                width,
            );
            // SAFETY: `at + width <= last <= len` (asserted); the caller owns these elements.
            match src {
                Some((src, stride)) => {
                    let src = &src[r * stride..][..width];
                    std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(at), width);
                }
                None => std::ptr::write_bytes(self.data.add(at), 0, width),
            }
        }
    }
}
