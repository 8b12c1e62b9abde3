//! One head of one sequence, forward and backward, start to finish in the cache.
//!
//! A task copies its head's `Q`, `K`, `V` (and `dO`) out of the strided `qkv` rows into
//! buffers of its own, padded with zeros to whole vectors (`seq` and `dim` rounded up to
//! [`LANES`]), some transposed so that every product reads its right operand by rows:
//!
//! ```text
//! forward   S = Q·(Kᵀ)  →  P = causal softmax(S/√d)  →  O = P·V
//! backward  dP = dO·(Vᵀ)  →  dS  →  dQ = dS·K,  dK = dSᵀ·Q,  dV = Pᵀ·dO
//! ```
//!
//! Each product runs by blocks of [`ROWS`] rows (see [`crate::kernels::tile`]) that stop at
//! the diagonal: the scores of rows `i..i+4` end at column `i+3` (rounded up to a vector),
//! the sums of `P·V` and `dS·K` at `i+3`, those of `dSᵀ·Q` and `Pᵀ·dO` start at `i`. The
//! scores (`[seq, seq]`, 256 KB at 256 positions) never leave the cache between their
//! product, their softmax and the next product; the probabilities are copied to the saved
//! `att` on the way, only those on or below the diagonal (the others are zero and never
//! read: half the bytes). Past the diagonal a block reads `ROWS - 1` positions of a row,
//! which are zeroed ([`clear_block_reach`]); rows and columns past `seq` (zero padding, or
//! values left from an earlier head) only ever reach rows of the results past `seq`, which
//! are not copied out.

use super::softmax;
use crate::kernels::column_sums::add_rows;
use crate::kernels::exp::wide_fn;
use crate::kernels::lanes::{prefetch, prefetch_lines};
use crate::kernels::tile::{product, Block, Strided, TileVector, ROWS};
use crate::kernels::vector::LANES;
use std::marker::PhantomData;

/// Rows ahead that the gathers and writes ask the cache for: a head's rows of `qkv` are
/// `3C` floats apart, a page or more, and the hardware prefetcher stays within a page.
const PREFETCH_ROWS: usize = 8;

/// The sizes of one head's work.
#[derive(Clone, Copy, Debug)]
pub(super) struct HeadShape {
    /// Positions `T`.
    pub seq: usize,
    /// Features per head `d`.
    pub dim: usize,
    /// Channels `C` of the stream (`H·d`).
    pub channels: usize,
}

impl HeadShape {
    fn seq_pad(&self) -> usize {
        self.seq.next_multiple_of(LANES)
    }

    fn dim_pad(&self) -> usize {
        self.dim.next_multiple_of(LANES)
    }

    /// Row stride of the buffers indexed by position (`Kᵀ`, `Vᵀ`, scores): one vector more
    /// than `seq_pad`, so that walking down a column does not keep to a few cache sets (at a
    /// stride of 1 KB every line falls into 4 of the 64 sets of the L1 cache).
    fn position_stride(&self) -> usize {
        self.seq_pad() + LANES
    }

    fn scale(&self) -> f32 {
        1.0 / (self.dim as f32).sqrt()
    }

    /// Row blocks `0, ROWS, ..` below `seq`, each with its columns and sum range.
    fn blocks(&self, block: impl Fn(usize) -> Block) -> impl Iterator<Item = Block> {
        (0..self.seq).step_by(ROWS).map(block)
    }

    /// The block of score rows `row..row+ROWS`: columns up to the last row's diagonal.
    fn score_block(&self, row: usize) -> Block {
        let seen = (row + ROWS).min(self.seq);
        Block {
            row,
            width: seen.next_multiple_of(LANES),
            span: 0..self.dim_pad(),
        }
    }

    /// A block of `P·V` or `dS·K`: whole head rows, summed up to the last row's diagonal.
    fn causal_sum_block(&self, row: usize) -> Block {
        Block {
            row,
            width: self.dim_pad(),
            span: 0..(row + ROWS).min(self.seq),
        }
    }

    /// A block of `dSᵀ·Q` or `Pᵀ·dO`: whole head rows, summed over the queries from `row`.
    fn late_sum_block(&self, row: usize) -> Block {
        Block {
            row,
            width: self.dim_pad(),
            span: row..self.seq,
        }
    }
}

/// A `[rows, ·]` buffer whose column blocks several tasks write at once, each task its own
/// head's columns (so that no element is written by two).
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
    /// `first_row..` at column `column`. Panics if that reaches past either buffer.
    ///
    /// # Safety
    /// No other thread reads or writes these elements while this runs.
    unsafe fn write(
        &self,
        (first_row, column): (usize, usize),
        src: &[f32],
        src_stride: usize,
        (rows, width): (usize, usize),
    ) {
        if rows == 0 {
            return;
        }
        let last = (first_row + rows - 1) * self.row_stride + column + width;
        assert!(last <= self.len && column + width <= self.row_stride);
        for r in 0..rows {
            let src = &src[r * src_stride..][..width];
            let at = (first_row + r) * self.row_stride + column;
            prefetch_lines(
                self.data.wrapping_add(at + PREFETCH_ROWS * self.row_stride),
                width,
            );
            // SAFETY: `at + width <= last <= len` (asserted); the caller owns these elements.
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(at), width);
        }
    }
}

/// Copies the `[seq, dim]` block at `column` of `rows` (`row_stride` apart) into `dst`,
/// zero-padded: `[seq_pad, dim_pad]`, or `[dim_pad, position_stride]` when `transposed`;
/// with `bias`, a row as wide as those of `rows`, added to each (its same `dim` columns).
/// Only the padding is cleared (none at 256 positions of 64 features but the transposed
/// buffers' extra vector).
fn gather(
    dst: &mut [f32],
    shape: &HeadShape,
    (rows, row_stride, column): (&[f32], usize, usize),
    bias: Option<&[f32]>,
    transposed: bool,
) {
    let (t, d, ls, dp) = (
        shape.seq,
        shape.dim,
        shape.position_stride(),
        shape.dim_pad(),
    );
    match transposed {
        false => zero_padding(dst, (t, d), dp),
        true => zero_padding(dst, (d, t), ls),
    }
    let bias = bias.map(|bias| &bias[column..][..d]);
    for i in 0..t {
        if let Some(ahead) = rows.get((i + PREFETCH_ROWS) * row_stride + column..) {
            prefetch(&ahead[..d.min(ahead.len())]);
        }
        let row = &rows[i * row_stride + column..][..d];
        match (transposed, bias) {
            (false, None) => dst[i * dp..][..d].copy_from_slice(row),
            (false, Some(bias)) => {
                let dst = dst[i * dp..][..d].iter_mut();
                dst.zip(row.iter().zip(bias))
                    .for_each(|(o, (v, b))| *o = v + b);
            }
            (true, None) => row
                .iter()
                .enumerate()
                .for_each(|(j, &v)| dst[j * ls + i] = v),
            (true, Some(bias)) => (row.iter().zip(bias))
                .enumerate()
                .for_each(|(j, (v, b))| dst[j * ls + i] = v + b),
        }
    }
}

/// Zeroes what lies outside the first `rows` rows and `cols` columns of `dst`, whose rows
/// are `stride` apart.
fn zero_padding(dst: &mut [f32], (rows, cols): (usize, usize), stride: usize) {
    for (r, row) in dst.chunks_exact_mut(stride).enumerate() {
        row[if r < rows { cols } else { 0 }..].fill(0.0);
    }
}

/// Zeroes the first `ROWS - 1` positions of `future`, a row's part past the diagonal: a block
/// of `ROWS` rows sums (or, transposed, reads) each row up to the block's last diagonal.
fn clear_block_reach(future: &mut [f32]) {
    let reach = future.len().min(ROWS - 1);
    future[..reach].fill(0.0);
}

/// Splits `scratch` (grown as needed) into buffers of the given lengths.
fn carve<const N: usize>(scratch: &mut Vec<f32>, lens: [usize; N]) -> [&mut [f32]; N] {
    scratch.resize(scratch.len().max(lens.iter().sum()), 0.0);
    let mut rest = scratch.as_mut_slice();
    lens.map(|len| {
        let (buffer, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        buffer
    })
}

/// Head `head` of one sequence: `qkv` is its `[seq, 3C]` rows, to which `bias` (`3C`), if
/// any, is added as they are read; `att` its `[seq, seq]` probabilities (written), `out`
/// the `[B·seq, C]` output, of which rows `first_row..` and this head's columns are written.
///
/// # Safety
/// `V`'s instructions run on this CPU, and no other thread touches this head's columns of
/// those rows of `out`.
pub(super) unsafe fn forward<V: TileVector>(
    shape: &HeadShape,
    (head, first_row): (usize, usize),
    (qkv, bias): (&[f32], Option<&[f32]>),
    att: &mut [f32],
    out: &SharedColumns<'_>,
    scratch: &mut Vec<f32>,
) {
    let (t, c, d) = (shape.seq, shape.channels, shape.dim);
    let (tp, ls, dp) = (shape.seq_pad(), shape.position_stride(), shape.dim_pad());
    let [q, kt, v, s, o] = carve(scratch, [tp * dp, dp * ls, tp * dp, tp * ls, tp * dp]);
    gather(q, shape, (qkv, 3 * c, head * d), bias, false);
    gather(kt, shape, (qkv, 3 * c, c + head * d), bias, true);
    gather(v, shape, (qkv, 3 * c, 2 * c + head * d), bias, false);
    let q = Strided {
        data: q,
        row_stride: dp,
        col_stride: 1,
    };
    product::<V>((s, ls), q, (kt, ls), shape.blocks(|r| shape.score_block(r)));
    for (i, (row, p)) in s
        .chunks_exact_mut(ls)
        .zip(att.chunks_exact_mut(t))
        .enumerate()
    {
        let (seen, future) = row[..t].split_at_mut(i + 1);
        softmax(seen, shape.scale());
        p[..=i].copy_from_slice(seen);
        clear_block_reach(future);
    }
    let p = Strided {
        data: s,
        row_stride: ls,
        col_stride: 1,
    };
    product::<V>(
        (o, dp),
        p,
        (v, dp),
        shape.blocks(|r| shape.causal_sum_block(r)),
    );
    out.write((first_row, head * d), o, dp, (t, d));
}

/// The backward of [`forward`] for one head: `dout` is the sequence's `[seq, C]` output
/// gradient, `att` its saved `[seq, seq]` probabilities; writes this head's columns of
/// `dqkv` (`[B·seq, 3C]`) from row `first_row`. With `dbias`, adds the column sums of the
/// head's `dQ`, `dK` and `dV` into its three parts of `dim` elements.
///
/// # Safety
/// As for [`forward`], for this head's three column blocks of `dqkv`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn backward<V: TileVector>(
    shape: &HeadShape,
    (head, first_row): (usize, usize),
    (qkv, bias): (&[f32], Option<&[f32]>),
    dout: &[f32],
    att: &[f32],
    (dqkv, mut dbias): (&SharedColumns<'_>, Option<&mut [f32]>),
    scratch: &mut Vec<f32>,
) {
    let (t, c, d) = (shape.seq, shape.channels, shape.dim);
    let (tp, ls, dp) = (shape.seq_pad(), shape.position_stride(), shape.dim_pad());
    let (head_len, scores_len) = (tp * dp, tp * ls);
    let [q, k, vt, d_o, p, ds, dq, dk, dv] = carve(
        scratch,
        [
            head_len,
            head_len,
            dp * ls,
            head_len,
            scores_len,
            scores_len,
            head_len,
            head_len,
            head_len,
        ],
    );
    gather(q, shape, (qkv, 3 * c, head * d), bias, false);
    gather(k, shape, (qkv, 3 * c, c + head * d), bias, false);
    gather(vt, shape, (qkv, 3 * c, 2 * c + head * d), bias, true);
    gather(d_o, shape, (dout, c, head * d), None, false);
    for (i, (p, att)) in p.chunks_exact_mut(ls).zip(att.chunks_exact(t)).enumerate() {
        p[..=i].copy_from_slice(&att[..=i]);
        clear_block_reach(&mut p[i + 1..t]);
    }
    let rows = |data| Strided {
        data,
        row_stride: dp,
        col_stride: 1,
    };
    product::<V>(
        (ds, ls),
        rows(d_o),
        (vt, ls),
        shape.blocks(|r| shape.score_block(r)),
    );
    for (i, (ds, p)) in ds
        .chunks_exact_mut(ls)
        .zip(p.chunks_exact(ls))
        .take(t)
        .enumerate()
    {
        let (seen, future) = ds[..t].split_at_mut(i + 1);
        softmax_backward_row(seen, &p[..=i], shape.scale());
        clear_block_reach(future);
    }
    let by_rows = |data| Strided {
        data,
        row_stride: ls,
        col_stride: 1,
    };
    let by_columns = |data| Strided {
        data,
        row_stride: 1,
        col_stride: ls,
    };
    product::<V>(
        (dq, dp),
        by_rows(ds),
        (k, dp),
        shape.blocks(|r| shape.causal_sum_block(r)),
    );
    product::<V>(
        (dk, dp),
        by_columns(ds),
        (q, dp),
        shape.blocks(|r| shape.late_sum_block(r)),
    );
    product::<V>(
        (dv, dp),
        by_columns(p),
        (d_o, dp),
        shape.blocks(|r| shape.late_sum_block(r)),
    );
    for (part, grad) in [dq, dk, dv].into_iter().enumerate() {
        dqkv.write((first_row, part * c + head * d), grad, dp, (t, d));
        if let Some(dbias) = dbias.as_deref_mut() {
            add_rows(&mut dbias[part * d..][..d], &grad[..t * dp], dp);
        }
    }
}

wide_fn! {
    /// A row of `dP` becomes `dS = scale · P ⊙ (dP - Σ P ⊙ dP)` (`p` as long as `ds`).
    fn softmax_backward_row(ds: &mut [f32], p: &[f32], scale: f32) => softmax_backward
}

/// [`softmax_backward_row`]'s body, the dot product in sixteen partial sums (as the
/// forward's sum, [`super::softmax`]).
#[inline(always)]
fn softmax_backward(seen: &mut [f32], p: &[f32], scale: f32) {
    let mut partial = [0.0f32; 16];
    let (mut d_chunks, mut p_chunks) = (seen.chunks_exact(16), p.chunks_exact(16));
    for (d, p) in (&mut d_chunks).zip(&mut p_chunks) {
        for ((sum, d), p) in partial.iter_mut().zip(d).zip(p) {
            *sum += d * p;
        }
    }
    let tail: f32 = (d_chunks.remainder().iter())
        .zip(p_chunks.remainder())
        .map(|(d, p)| d * p)
        .sum();
    let dot = partial.iter().sum::<f32>() + tail;
    for (d, &p) in seen.iter_mut().zip(p) {
        *d = scale * p * (*d - dot);
    }
}
