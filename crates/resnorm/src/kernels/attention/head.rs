//! One head of one sequence, forward, and one key/value head with its group of query heads,
//! backward, start to finish in the cache.
//!
//! A task copies its head's `Q`, `K`, `V` (and `dO`) out of the strided rows into buffers of
//! its own, padded with zeros to whole vectors, some transposed so that every product reads
//! its right operand by rows:
//!
//! ```text
//! forward   S = Q·(Kᵀ)  →  P = masked softmax(scale·S)  →  O = P·V
//! backward  dP = dO·(Vᵀ)  →  dS  →  dQ = dS·K,  dK = dSᵀ·Q,  dV = Pᵀ·dO
//! ```
//!
//! With attention dropout each row of `P` is multiplied by its mask once saved (forward),
//! and in backward each row of `dP` by the regenerated mask before the softmax's backward,
//! then the row of `P` after it, so that `dV` reads the dropped `P`.
//!
//! Only the `len` valid keys of the sequence are copied (the rest are zeros here, whatever
//! the caller's buffer holds there). Each product runs by blocks of [`ROWS`] rows (see
//! [`crate::kernels::tile`]) that stop where the block's keys stop: a block of queries
//! `i..i+4` computes scores up to the keys its last row sees (rounded up to a vector) and
//! sums `P·V`, `dS·K` over them; a block of keys `j..j+4` sums `dSᵀ·Q`, `Pᵀ·dO` from the
//! first query that sees key `j`. Causally that halves the work. The scores never leave the
//! cache between their product, their softmax and the next product; the probabilities are
//! copied to the caller's buffer on the way, only those a query sees. A block reads up to
//! `ROWS - 1` positions of a row past those it sees, which are zeroed
//! ([`clear_block_reach`]); rows past the end (zero padding, or values left from an earlier
//! head) only ever reach rows of the results that are not copied out.

use super::columns::{SharedColumns, PREFETCH_ROWS};
use super::softmax::{softmax, softmax_backward};
use super::{AttentionShape, Rows};
use crate::kernels::column_sums::add_rows;
use crate::kernels::simd::{self, prefetch, LANES};
use crate::kernels::tile::{product, Block, Strided, TileVector, ROWS};

/// The sizes of one sequence's work: the call's shape and the sequence's valid keys.
#[derive(Clone, Copy, Debug)]
pub(super) struct HeadShape {
    pub attn: AttentionShape,
    /// Valid keys `len <= kv_len`.
    pub len: usize,
}

impl HeadShape {
    fn q_pad(&self) -> usize {
        self.attn.q_len.next_multiple_of(LANES)
    }

    fn k_pad(&self) -> usize {
        self.len.next_multiple_of(LANES)
    }

    fn dim_pad(&self) -> usize {
        self.attn.head_dim.next_multiple_of(LANES)
    }

    /// Row stride of the buffers indexed by key (`Kᵀ`, `Vᵀ`, scores): one vector more than
    /// needed, so that walking down a column does not keep to a few cache sets (at a stride
    /// of 1 KB every line falls into 4 of the 64 sets of the L1 cache).
    fn key_stride(&self) -> usize {
        self.k_pad() + LANES
    }

    fn visible(&self, i: usize) -> usize {
        self.attn.visible(i, self.len)
    }

    /// The dropout mask's index of the probability of query `i` of head `h` of sequence `b`
    /// for key 0: its place in the `[B, H, Tq, Tk]` probabilities.
    fn mask_index(&self, b: usize, h: usize, i: usize) -> u64 {
        (((b * self.attn.heads + h) * self.attn.q_len + i) * self.attn.kv_len) as u64
    }

    /// The keys that the block of queries from `row` sees: those of its last row.
    fn reach(&self, row: usize) -> usize {
        self.visible((row + ROWS).min(self.attn.q_len) - 1)
    }

    fn query_blocks(&self, block: impl Fn(usize) -> Block) -> impl Iterator<Item = Block> {
        (0..self.attn.q_len).step_by(ROWS).map(block)
    }

    fn key_blocks(&self, block: impl Fn(usize) -> Block) -> impl Iterator<Item = Block> {
        (0..self.len).step_by(ROWS).map(block)
    }

    /// The block of score rows `row..row+ROWS`: the keys the block sees.
    fn score_block(&self, row: usize) -> Block {
        Block {
            row,
            width: self.reach(row).next_multiple_of(LANES),
            span: 0..self.dim_pad(),
        }
    }

    /// A block of `P·V` or `dS·K`: whole head rows, summed over the keys the block sees.
    fn query_sum_block(&self, row: usize) -> Block {
        Block {
            row,
            width: self.dim_pad(),
            span: 0..self.reach(row),
        }
    }

    /// A block of `dSᵀ·Q` or `Pᵀ·dO`: whole head rows, summed over the queries that see
    /// key `row`.
    fn key_sum_block(&self, row: usize) -> Block {
        Block {
            row,
            width: self.dim_pad(),
            span: self.attn.first_query(row, self.len)..self.attn.q_len,
        }
    }
}

/// Copies `count` positions of one head (`dim` features at `column` of rows `row_stride`
/// apart) into `dst`, zero-padded: row-major with rows `stride` apart, or transposed
/// (`[dim_pad, stride]`); with `bias`, a row indexed as `rows`' rows, added to each.
fn gather(
    dst: &mut [f32],
    (count, dim, stride): (usize, usize, usize),
    (rows, row_stride, column): (&[f32], usize, usize),
    bias: Option<&[f32]>,
    transposed: bool,
) {
    match transposed {
        false => zero_padding(dst, (count, dim), stride),
        true => zero_padding(dst, (dim, count), stride),
    }
    let bias = bias.map(|bias| &bias[column..][..dim]);
    for i in 0..count {
        if let Some(ahead) = rows.get((i + PREFETCH_ROWS) * row_stride + column..) {
            prefetch(&ahead[..dim.min(ahead.len())]);
        }
        let row = &rows[i * row_stride + column..][..dim];
        match (transposed, bias) {
            (false, None) => dst[i * stride..][..dim].copy_from_slice(row),
            (false, Some(bias)) => {
                let dst = dst[i * stride..][..dim].iter_mut();
                dst.zip(row.iter().zip(bias))
                    .for_each(|(o, (v, b))| *o = v + b);
            }
            (true, None) => row
                .iter()
                .enumerate()
                .for_each(|(j, &v)| dst[j * stride + i] = v),
            (true, Some(bias)) => (row.iter().zip(bias))
                .enumerate()
                .for_each(|(j, (v, b))| dst[j * stride + i] = v + b),
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

/// Zeroes the first `ROWS - 1` positions of `unseen`, a row's part past the keys it sees:
/// a block of `ROWS` rows sums (or, transposed, reads) each row up to what its last row sees.
fn clear_block_reach(unseen: &mut [f32]) {
    let reach = unseen.len().min(ROWS - 1);
    unseen[..reach].fill(0.0);
}

/// A row-major matrix with rows `row_stride` apart.
fn by_rows(data: &[f32], row_stride: usize) -> Strided<'_> {
    Strided {
        data,
        row_stride,
        col_stride: 1,
    }
}

/// The transpose of a row-major matrix with rows `row_stride` apart.
fn by_columns(data: &[f32], row_stride: usize) -> Strided<'_> {
    Strided {
        data,
        row_stride: 1,
        col_stride: row_stride,
    }
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

/// One head's rows of one sequence: the view, the sequence, the head.
pub(super) fn head_rows<'a>(
    rows: &Rows<'a>,
    b: usize,
    head: usize,
    dim: usize,
) -> (&'a [f32], usize, usize) {
    (
        &rows.data[rows.sequence(b)..],
        rows.row_stride,
        rows.column + head * dim,
    )
}

simd::dispatch! {
    /// [`forward`] at the level in force.
    ///
    /// # Safety
    /// No other thread touches this head's columns of sequence `b`'s rows of `out`.
    pub(super) unsafe fn forward_in_force(
        shape: &HeadShape,
        bh: (usize, usize),
        operands: (&Rows<'_>, &Rows<'_>, &Rows<'_>),
        probs: &mut [f32],
        out: &SharedColumns<'_>,
        scratch: &mut Vec<f32>,
    ) => forward
}

simd::dispatch! {
    /// [`backward`] at the level in force.
    ///
    /// # Safety
    /// As for [`forward_in_force`], for the group's columns of the three targets.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn backward_in_force(
        shape: &HeadShape,
        bg: (usize, usize),
        operands: (&Rows<'_>, &Rows<'_>, &Rows<'_>),
        dout: &[f32],
        probs: &[f32],
        sinks: GradSinks<'_, '_>,
        scratch: &mut Vec<f32>,
    ) => backward
}

/// Head `h` of sequence `b`: writes its `[Tq, Tk]` probabilities into `probs` (only those
/// each query sees) and its output into `out` (`[B·Tq, H·d]`, this head's columns).
///
/// # Safety
/// `V`'s instructions run on this CPU, and no other thread touches this head's columns of
/// sequence `b`'s rows of `out`.
#[inline(always)]
pub(super) unsafe fn forward<V: TileVector>(
    shape: &HeadShape,
    (b, h): (usize, usize),
    (q, k, v): (&Rows<'_>, &Rows<'_>, &Rows<'_>),
    probs: &mut [f32],
    out: &SharedColumns<'_>,
    scratch: &mut Vec<f32>,
) {
    let (tq, tk, d) = (shape.attn.q_len, shape.attn.kv_len, shape.attn.head_dim);
    let (qp, kp, ls, dp) = (
        shape.q_pad(),
        shape.k_pad(),
        shape.key_stride(),
        shape.dim_pad(),
    );
    let g = h / shape.attn.group();
    let [qb, kt, vb, s, o] = carve(scratch, [qp * dp, dp * ls, kp * dp, qp * ls, qp * dp]);
    gather(qb, (tq, d, dp), head_rows(q, b, h, d), q.bias, false);
    gather(kt, (shape.len, d, ls), head_rows(k, b, g, d), k.bias, true);
    gather(vb, (shape.len, d, dp), head_rows(v, b, g, d), v.bias, false);
    let scores = shape.query_blocks(|r| shape.score_block(r));
    product::<V>((s, ls), by_rows(qb, dp), (kt, ls), scores);
    for (i, (row, p)) in s
        .chunks_exact_mut(ls)
        .zip(probs.chunks_exact_mut(tk))
        .enumerate()
    {
        let seen = shape.visible(i);
        let (seen_scores, unseen) = row[..kp].split_at_mut(seen);
        if seen > 0 {
            softmax(seen_scores, shape.attn.scale);
            p[..seen].copy_from_slice(seen_scores);
            // The undropped `P` is saved (the softmax's backward needs it); `P·V` reads the
            // dropped one.
            if let Some(mask) = &shape.attn.dropout {
                mask.scale_row(seen_scores, shape.mask_index(b, h, i));
            }
        }
        clear_block_reach(unseen);
    }
    let sums = shape.query_blocks(|r| shape.query_sum_block(r));
    product::<V>((o, dp), by_rows(s, ls), (vb, dp), sums);
    out.write((b * tq, h * d), Some((o, dp)), (tq, d));
}

/// Where a backward task writes: the targets of `dQ`, `dK`, `dV` and this task's share of
/// the bias gradients' column sums (`[group·d | d | d]`), if any.
pub(super) struct GradSinks<'s, 'a> {
    pub targets: [&'s SharedColumns<'a>; 3],
    pub bias_sums: Option<&'s mut [f32]>,
}

/// The backward of [`forward`] for key/value head `g` of sequence `b` and its group of query
/// heads: `dout` is `[B·Tq, H·d]`, `probs` the sequence's saved `[H, Tq, Tk]`. Writes the
/// group's columns of `dQ` and head `g`'s of `dK` and `dV` (zeros for invalid keys).
///
/// # Safety
/// As for [`forward`], for these columns of the three targets.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn backward<V: TileVector>(
    shape: &HeadShape,
    (b, g): (usize, usize),
    (q, k, v): (&Rows<'_>, &Rows<'_>, &Rows<'_>),
    dout: &[f32],
    probs: &[f32],
    sinks: GradSinks<'_, '_>,
    scratch: &mut Vec<f32>,
) {
    let (tq, tk, d, group) = (
        shape.attn.q_len,
        shape.attn.kv_len,
        shape.attn.head_dim,
        shape.attn.group(),
    );
    let (qp, kp, ls, dp) = (
        shape.q_pad(),
        shape.k_pad(),
        shape.key_stride(),
        shape.dim_pad(),
    );
    let (len, width) = (shape.len, shape.attn.heads * d);
    let extra = if group > 1 { kp * dp } else { 0 };
    let [kb, vt, dk, dv, qb, d_o, p, ds, dq, dk_h, dv_h] = carve(
        scratch,
        [
            kp * dp,
            dp * ls,
            kp * dp,
            kp * dp,
            qp * dp,
            qp * dp,
            qp * ls,
            qp * ls,
            qp * dp,
            extra,
            extra,
        ],
    );
    gather(kb, (len, d, dp), head_rows(k, b, g, d), k.bias, false);
    gather(vt, (len, d, ls), head_rows(v, b, g, d), v.bias, true);
    let GradSinks {
        targets: [dq_out, dk_out, dv_out],
        mut bias_sums,
    } = sinks;
    for r in 0..group {
        let h = g * group + r;
        gather(qb, (tq, d, dp), head_rows(q, b, h, d), q.bias, false);
        let dout_rows = (&dout[b * tq * width..], width, h * d);
        gather(d_o, (tq, d, dp), dout_rows, None, false);
        let probs = &probs[h * tq * tk..][..tq * tk];
        for (i, p) in p.chunks_exact_mut(ls).take(tq).enumerate() {
            let seen = shape.visible(i);
            p[..seen].copy_from_slice(&probs[i * tk..][..seen]);
            clear_block_reach(&mut p[seen..kp]);
        }
        let scores = shape.query_blocks(|r| shape.score_block(r));
        product::<V>((ds, ls), by_rows(d_o, dp), (vt, ls), scores);
        for (i, (ds, p)) in ds
            .chunks_exact_mut(ls)
            .zip(p.chunks_exact_mut(ls))
            .take(tq)
            .enumerate()
        {
            let seen = shape.visible(i);
            let (seen_ds, unseen) = ds[..kp].split_at_mut(seen);
            match &shape.attn.dropout {
                None => softmax_backward(seen_ds, &p[..seen], shape.attn.scale),
                // `dP = M ⊙ (dO·Vᵀ) / (1 - p)` into the softmax's backward with the undropped
                // `P`; then `P` becomes the dropped one that `dV = Pᵀ·dO` reads.
                Some(mask) => {
                    let at = shape.mask_index(b, h, i);
                    mask.scale_row(seen_ds, at);
                    softmax_backward(seen_ds, &p[..seen], shape.attn.scale);
                    mask.scale_row(&mut p[..seen], at);
                }
            }
            clear_block_reach(unseen);
        }
        let sums = shape.query_blocks(|r| shape.query_sum_block(r));
        product::<V>((dq, dp), by_rows(ds, ls), (kb, dp), sums);
        let column = q.column + h * d;
        dq_out.write((b * q.sequence_rows, column), Some((dq, dp)), (tq, d));
        if let Some(sums) = bias_sums.as_deref_mut() {
            add_rows(&mut sums[r * d..][..d], &dq[..tq * dp], dp);
        }
        let (dk_head, dv_head) = match r {
            0 => (&mut *dk, &mut *dv),
            _ => (&mut *dk_h, &mut *dv_h),
        };
        let keys = || shape.key_blocks(|r| shape.key_sum_block(r));
        product::<V>((dk_head, dp), by_columns(ds, ls), (qb, dp), keys());
        product::<V>((dv_head, dp), by_columns(p, ls), (d_o, dp), keys());
        if r > 0 {
            let add = |acc: &mut [f32], head: &[f32]| {
                let n = len * dp;
                acc[..n]
                    .iter_mut()
                    .zip(&head[..n])
                    .for_each(|(a, h)| *a += h);
            };
            add(dk, dk_h);
            add(dv, dv_h);
        }
    }
    for (part, (grad, rows, target)) in [(&*dk, k, dk_out), (&*dv, v, dv_out)]
        .into_iter()
        .enumerate()
    {
        let (first, column) = (b * rows.sequence_rows, rows.column + g * d);
        target.write((first, column), Some((grad, dp)), (len, d));
        target.write((first + len, column), None, (tk - len, d));
        if let Some(sums) = bias_sums.as_deref_mut() {
            add_rows(&mut sums[(group + part) * d..][..d], &grad[..len * dp], dp);
        }
    }
}
