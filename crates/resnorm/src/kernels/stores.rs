//! How the row kernels write their outputs: through the cache, or with streaming stores when
//! one call moves more memory than the caches hold.
//!
//! A plain store first reads its cache line from memory (to own it), so writing `n` bytes
//! that are not cached moves `2n`. Streaming (non-temporal) stores write whole lines straight
//! to memory: a forward that reads `x` and writes `y` moves two tensors instead of three.
//! They are a loss when the output would have fitted in the cache, since whoever reads it
//! next must then fetch it from memory; [`Stores::for_call`] chooses by the size of the call.
//! Rows that do not start on a cache line always get plain stores (see [`write_row`]).
//!
//! The threshold and the gains are measured in docs/benchmarks.md ("Norm kernels: streaming
//! stores").
//!
//! Which elements take the streaming path depends only on addresses, and every element is
//! computed by the same operations either way, so both choices give the same bits.

use super::simd::{streaming_fence, Vector, LANES, LINE_BYTES};

const _: () = assert!(LANES * std::mem::size_of::<f32>() == LINE_BYTES);

/// Calls that read and write at least this many bytes in all use streaming stores.
pub(crate) const STREAMING_MIN_BYTES: usize = 32 << 20;

/// The way a kernel writes its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stores {
    /// Plain stores: the outputs stay in the cache for whoever reads them next.
    Cached,
    /// Streaming stores for every aligned chunk, plain ones for the rest.
    Streaming,
}

impl Stores {
    /// The choice for a call that moves `bytes` bytes of tensors.
    pub(crate) fn for_call(bytes: usize) -> Self {
        if bytes >= STREAMING_MIN_BYTES {
            Stores::Streaming
        } else {
            Stores::Cached
        }
    }

    /// Ends a block of rows: makes its streaming stores visible before the block reports
    /// itself done to the thread that waits for it.
    pub(crate) fn finish_block(self) {
        if self == Stores::Streaming {
            streaming_fence();
        }
    }
}

/// Where a backward row asks for the lines of its output `dx` ahead of writing them (see
/// [`prefetch_ahead_of`](super::rows::prefetch_ahead_of)): the start of `dx` when it goes
/// through the cache, none when it is streamed (a streamed line is never read). A backward
/// chunk stores `dx` and the parameter-gradient partials, and stores retire in order, so one
/// waiting for its line holds up those behind it; the forwards, one store per chunk, were
/// slower asking ahead and do not (docs/benchmarks.md, "Norm kernels: reading ahead").
pub(crate) fn output_ahead(dx: &[f32], stores: Stores) -> Option<*const f32> {
    (stores == Stores::Cached).then_some(dx.as_ptr())
}

/// Writes every element of `out`: `vector(state, k)` gives the lanes of chunk `k` (elements
/// `k * LANES..(k + 1) * LANES`, see [`rows::chunk`](super::rows::chunk)), `scalar(state, i)`
/// the value of `out[i]` past the last whole chunk, and both must compute an element the same
/// way; `state` is what both may update on the way (a row's parameter-gradient partials).
/// With [`Stores::Streaming`] the chunks of a row that starts on a cache line are streamed,
/// each filling one whole line; a row that does not start on one gets plain stores, as do
/// the elements past its last chunk (a line of their own): a line written partly by
/// streaming and partly by plain stores is flushed piecemeal, 4x slower at 128 columns.
#[inline(always)]
pub(crate) fn write_row<V: Vector, S>(
    out: &mut [f32],
    stores: Stores,
    state: &mut S,
    vector: impl Fn(&mut S, usize) -> V,
    scalar: impl Fn(&mut S, usize) -> f32,
) {
    let stores = match out.as_ptr().align_offset(LINE_BYTES) {
        0 => stores,
        _ => Stores::Cached,
    };
    const { assert!(LINE_BYTES.is_multiple_of(V::STREAM_ALIGN)) };
    let (body, tail) = out.as_chunks_mut::<LANES>();
    let done = body.len() * LANES;
    for (k, chunk) in body.iter_mut().enumerate() {
        let lanes = vector(state, k);
        match stores {
            Stores::Cached => lanes.write(chunk),
            // SAFETY: streaming only when `out` starts on a cache line (above), so chunk `k`
            // starts `k` lines further on, a multiple of STREAM_ALIGN bytes (asserted above).
            Stores::Streaming => unsafe { lanes.stream(chunk) },
        }
    }
    for (i, o) in tail.iter_mut().enumerate() {
        *o = scalar(state, done + i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::norm::{BackwardRow, NormGrads, TestRow};
    use crate::kernels::{layer_norm, rms_norm};

    /// `len` values starting `offset` floats past a 64-byte boundary, so that every way a
    /// row can sit against the cache lines is tried.
    fn misaligned(storage: &mut Vec<f32>, offset: usize, len: usize) -> &mut [f32] {
        storage.clear();
        storage.resize(len + 2 * LANES, f32::NAN);
        let start = storage.as_ptr().align_offset(LINE_BYTES) + offset;
        &mut storage[start..start + len]
    }

    #[test]
    fn streaming_and_cached_stores_give_the_same_bits() {
        let (mut cached_storage, mut streamed_storage) = (Vec::new(), Vec::new());
        for cols in [1, 7, 16, 37, 64, 130] {
            let row = TestRow::new(cols);
            let (x, residual, dy, dsum) = (&row.x, &row.residual, &row.dy, &row.dsum);
            let (weight, weights) = (&row.weight, row.weights());
            for offset in 0..LANES {
                let [through_cache, streamed] = [Stores::Cached, Stores::Streaming].map(|stores| {
                    let storage = match stores {
                        Stores::Cached => &mut cached_storage,
                        Stores::Streaming => &mut streamed_storage,
                    };
                    let out = misaligned(storage, offset, cols);
                    let mut results = Vec::new();
                    let stats = layer_norm::forward_row(x, Some(residual), &weights, out, stores);
                    results.extend_from_slice(out);
                    let rstd = rms_norm::forward_row(x, None, weight, 1e-5, out, stores);
                    results.extend_from_slice(out);
                    let (mut dweight, mut dbias) = (vec![0.5; cols], vec![0.25; cols]);
                    let mut grads = NormGrads {
                        dweight: &mut dweight,
                        dbias: Some(&mut dbias),
                    };
                    let row = BackwardRow {
                        dy,
                        x,
                        dsum: Some(dsum),
                    };
                    layer_norm::backward_row(row, &weights, stats, out, &mut grads, stores);
                    results.extend_from_slice(out);
                    let row = BackwardRow { dy, x, dsum: None };
                    rms_norm::backward_row(row, weight, rstd, out, &mut dweight, stores);
                    results.extend_from_slice(out);
                    stores.finish_block();
                    results.extend_from_slice(&dweight);
                    results.extend_from_slice(&dbias);
                    results.extend([stats.0, stats.1, rstd]);
                    results.into_iter().map(f32::to_bits).collect::<Vec<_>>()
                });
                assert_eq!(through_cache, streamed, "cols {cols}, offset {offset}");
            }
        }
    }

    #[test]
    fn large_calls_stream() {
        assert_eq!(Stores::for_call(STREAMING_MIN_BYTES - 1), Stores::Cached);
        assert_eq!(Stores::for_call(STREAMING_MIN_BYTES), Stores::Streaming);
    }
}
