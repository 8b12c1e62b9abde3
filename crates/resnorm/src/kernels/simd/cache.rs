//! Hints to the cache, the same on every level: prefetches, and the fence that ends a block
//! of streaming stores. Neither changes any result.

/// Bytes per cache line, the unit [`prefetch`] requests.
pub(crate) const LINE_BYTES: usize = 64;

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

/// Asks the CPU to bring `data` into the cache.
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
