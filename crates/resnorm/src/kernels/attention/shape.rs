//! What an attention call computes on ([`AttentionShape`]), where its operands lie
//! ([`Rows`]), where its gradients go ([`Grads`]), and the checks that every read and write of
//! a call stays inside its buffers, made before any element is touched.

use crate::kernels::dropout::DropoutMask;
use crate::{Error, Result};

/// The sizes and options of one attention call.
///
/// Query head `h` reads key/value head `h / (heads / kv_heads)` (grouped-query attention;
/// `kv_heads == heads` is ordinary multi-head attention). With `causal`, query `i` sees keys
/// `0..=i + kv_len - q_len`: the queries are the *last* `q_len` positions of the `kv_len`
/// keys (bottom-right alignment), which is what a key/value cache needs and, for
/// `q_len == kv_len`, the usual causal mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    /// Sequences `B`.
    pub batch: usize,
    /// Query heads `H`.
    pub heads: usize,
    /// Key/value heads; divides `heads`.
    pub kv_heads: usize,
    /// Queries per sequence `Tq`.
    pub q_len: usize,
    /// Keys (and values) per sequence `Tk`.
    pub kv_len: usize,
    /// Features per head `d`.
    pub head_dim: usize,
    /// Whether query `i` sees only keys up to `i + Tk - Tq` (needs `Tq <= Tk`).
    pub causal: bool,
    /// Multiplies the scores `q·k` before the softmax; finite and positive.
    pub scale: f32,
    /// Attention dropout on the probabilities, in training: `P` is multiplied by the mask's
    /// factors before `P·V`, element `(b, h, i, j)` at index `((b·H + h)·Tq + i)·Tk + j`.
    /// `None` (never an identity mask, see [`AttentionShape::dropped`]) drops nothing.
    pub dropout: Option<DropoutMask>,
}

impl AttentionShape {
    /// Bidirectional multi-head attention with the usual scale `1/√d`.
    pub fn new(batch: usize, heads: usize, q_len: usize, kv_len: usize, head_dim: usize) -> Self {
        AttentionShape {
            batch,
            heads,
            kv_heads: heads,
            q_len,
            kv_len,
            head_dim,
            causal: false,
            scale: 1.0 / (head_dim as f32).sqrt(),
            dropout: None,
        }
    }

    /// The same, causal.
    pub fn causal(self) -> Self {
        AttentionShape {
            causal: true,
            ..self
        }
    }

    /// The same with `kv_heads` key/value heads (grouped-query attention).
    pub fn grouped(self, kv_heads: usize) -> Self {
        AttentionShape { kv_heads, ..self }
    }

    /// The same with another scale.
    pub fn scaled(self, scale: f32) -> Self {
        AttentionShape { scale, ..self }
    }

    /// The same with the probabilities dropped out by `mask` (training only: decoding
    /// refuses it). A rate of 0 keeps `dropout` `None`, so the kernels take the path
    /// without dropout, bit for bit.
    pub fn dropped(self, mask: DropoutMask) -> Self {
        AttentionShape {
            dropout: (!mask.is_identity()).then_some(mask),
            ..self
        }
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Keys that query `i` of a sequence with `len` valid keys sees: `0..visible(i, len)`.
    pub fn visible(&self, i: usize, len: usize) -> usize {
        match self.causal {
            true => len.min((i + self.kv_len + 1).saturating_sub(self.q_len)),
            false => len,
        }
    }

    /// The first query that sees key `j` of a sequence with `len` valid keys (`q_len` if
    /// none does).
    pub fn first_query(&self, j: usize, len: usize) -> usize {
        match (j < len, self.causal) {
            (false, _) => self.q_len,
            (true, true) => (j + self.q_len).saturating_sub(self.kv_len),
            (true, false) => 0,
        }
    }

    /// Valid keys of sequence `b`.
    pub(super) fn key_length(&self, key_lengths: Option<&[usize]>, b: usize) -> usize {
        key_lengths.map_or(self.kv_len, |lengths| lengths[b])
    }

    /// Elements of the probabilities, `[B, H, Tq, Tk]`.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.q_len * self.kv_len
    }

    /// Elements of the output, `[B, Tq, H·d]`.
    pub fn out_len(&self) -> usize {
        self.batch * self.q_len * self.heads * self.head_dim
    }

    /// Checks the sizes, the options and the key lengths.
    pub(super) fn check(&self, op: &'static str, key_lengths: Option<&[usize]>) -> Result<()> {
        let invalid = |detail: String| Err(Error::invalid(op, detail));
        if self.heads == 0
            || self.kv_heads == 0
            || self.head_dim == 0
            || !self.heads.is_multiple_of(self.kv_heads)
        {
            return invalid(format!(
                "{} heads, {} key/value heads of {} features: all at least 1, and the \
                 key/value heads must divide the heads",
                self.heads, self.kv_heads, self.head_dim
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return invalid(format!("scale {} must be finite and positive", self.scale));
        }
        if self.causal && self.q_len > self.kv_len {
            return invalid(format!(
                "causal attention of {} queries over {} keys: the queries are the last keys' \
                 positions, so there cannot be more of them",
                self.q_len, self.kv_len
            ));
        }
        let elements = [
            self.batch,
            self.heads,
            self.q_len,
            self.kv_len,
            self.head_dim,
        ];
        if elements
            .iter()
            .try_fold(1usize, |n, &m| n.checked_mul(m))
            .is_none()
        {
            return invalid(format!("{self:?} is too large"));
        }
        if let Some(lengths) = key_lengths {
            if lengths.len() != self.batch {
                return Err(Error::shape(
                    op,
                    format!("{} key lengths for {} sequences", lengths.len(), self.batch),
                ));
            }
            if let Some((b, len)) = lengths.iter().enumerate().find(|(_, &l)| l > self.kv_len) {
                return invalid(format!(
                    "sequence {b} has {len} valid keys, more than its {} keys",
                    self.kv_len
                ));
            }
        }
        Ok(())
    }
}

/// Heads stored side by side in strided rows: head `h` of position `t` of sequence `b` is
/// `data[(b·sequence_rows + t)·row_stride + column + h·d ..][..d]`. So the GPT's fused
/// `[B, T, 3C]` qkv is three views of one buffer (columns `0`, `C`, `2C`), and a
/// key/value cache of `capacity` positions per sequence has `sequence_rows = capacity`.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    /// The buffer.
    pub data: &'a [f32],
    /// Elements from one position to the next.
    pub row_stride: usize,
    /// Where head 0 starts in a row.
    pub column: usize,
    /// Rows from one sequence to the next.
    pub sequence_rows: usize,
    /// A row added to every row as it is read (same indexing as a row: `bias[column + ..]`),
    /// so that a projection's bias need not be added in a pass of its own.
    pub bias: Option<&'a [f32]>,
}

impl<'a> Rows<'a> {
    /// Heads at `column` of rows `row_stride` apart, `sequence_rows` rows per sequence.
    pub fn new(data: &'a [f32], row_stride: usize, column: usize, sequence_rows: usize) -> Self {
        Rows {
            data,
            row_stride,
            column,
            sequence_rows,
            bias: None,
        }
    }

    /// The same rows with `bias` added as they are read.
    pub fn with_bias(self, bias: &'a [f32]) -> Self {
        Rows {
            bias: Some(bias),
            ..self
        }
    }

    /// The offset of sequence `b`'s first row.
    pub(super) fn sequence(&self, b: usize) -> usize {
        b * self.sequence_rows * self.row_stride
    }

    /// Checks that `heads` heads of `dim` features at `rows` positions of each of `batch`
    /// sequences lie inside the buffer (and the bias).
    pub(super) fn check(
        &self,
        op: &'static str,
        what: &str,
        (batch, rows): (usize, usize),
        (heads, dim): (usize, usize),
    ) -> Result<()> {
        let width = heads * dim;
        let fail = |detail: String| Err(Error::shape(op, format!("{what}: {detail}")));
        if self.column + width > self.row_stride {
            return fail(format!(
                "columns {}..{} reach past the row stride {}",
                self.column,
                self.column + width,
                self.row_stride
            ));
        }
        if rows > self.sequence_rows {
            return fail(format!(
                "{rows} positions in sequences of {} rows",
                self.sequence_rows
            ));
        }
        if batch > 0 && rows > 0 {
            let last = ((batch - 1) * self.sequence_rows + rows - 1) * self.row_stride;
            if last + self.column + width > self.data.len() {
                return fail(format!(
                    "{batch} sequences of {rows} rows of {} need {} elements, got {}",
                    self.row_stride,
                    last + self.column + width,
                    self.data.len()
                ));
            }
        }
        match self.bias {
            Some(bias) if bias.len() < self.column + width => fail(format!(
                "the bias has {} elements, {} needed",
                bias.len(),
                self.column + width
            )),
            _ => Ok(()),
        }
    }

    /// The columns this view's heads occupy.
    pub(super) fn columns(&self, heads: usize, dim: usize) -> std::ops::Range<usize> {
        self.column..self.column + heads * dim
    }
}

/// Where a gradient goes: a buffer laid out as the operand it is the gradient of (same row
/// stride, columns and sequence rows), and optionally the gradient of that operand's bias,
/// into which the columns' sums are added.
#[derive(Debug)]
pub struct GradTarget<'a> {
    /// Overwritten at the operand's heads' columns, every position of every sequence.
    pub data: &'a mut [f32],
    /// Added into at the same columns as a row.
    pub bias: Option<&'a mut [f32]>,
}

impl<'a> GradTarget<'a> {
    /// The gradient into `data`, no bias.
    pub fn new(data: &'a mut [f32]) -> Self {
        GradTarget { data, bias: None }
    }

    /// The gradient into `data`, its column sums added into `bias`.
    pub fn with_bias(data: &'a mut [f32], bias: &'a mut [f32]) -> Self {
        GradTarget {
            data,
            bias: Some(bias),
        }
    }
}

/// Where [`super::attention_backward`] writes `dQ`, `dK` and `dV`.
#[derive(Debug)]
pub enum Grads<'a> {
    /// All three into one buffer laid out as the one buffer `q`, `k` and `v` are views of
    /// (self-attention on a fused qkv projection).
    Packed(GradTarget<'a>),
    /// `dQ` into one buffer, `dK` and `dV` into another, laid out as `q` and as `k`/`v`
    /// (cross-attention: queries from the decoder, keys and values from the encoder).
    Split {
        /// The queries' gradient.
        dq: GradTarget<'a>,
        /// The keys' and values' gradient.
        dkv: GradTarget<'a>,
    },
}

/// Checks that two views written into the same buffer have the same layout and disjoint
/// columns, so that no element is written twice.
pub(super) fn check_shared(
    op: &'static str,
    (a, a_heads): (&Rows<'_>, usize),
    (b, b_heads): (&Rows<'_>, usize),
    dim: usize,
) -> Result<()> {
    let (ca, cb) = (a.columns(a_heads, dim), b.columns(b_heads, dim));
    if a.row_stride != b.row_stride
        || a.sequence_rows != b.sequence_rows
        || a.data.len() != b.data.len()
        || (ca.start < cb.end && cb.start < ca.end)
    {
        return Err(Error::invalid(
            op,
            format!(
                "operands sharing one gradient buffer need the same layout and disjoint \
                 columns, got columns {ca:?} and {cb:?}"
            ),
        ));
    }
    Ok(())
}

/// Checks that a gradient buffer is as long as its operand's buffer, and its bias gradient
/// holds the columns `..columns_end` that the views it serves write.
pub(super) fn check_target(
    op: &'static str,
    what: &str,
    target: &GradTarget<'_>,
    rows: &Rows<'_>,
    columns_end: usize,
) -> Result<()> {
    if target.data.len() != rows.data.len() {
        return Err(Error::shape(
            op,
            format!(
                "{what} has {} elements, its operand {}",
                target.data.len(),
                rows.data.len()
            ),
        ));
    }
    match &target.bias {
        Some(dbias) if dbias.len() < columns_end => Err(Error::shape(
            op,
            format!(
                "{what}'s bias gradient has {} elements, {columns_end} needed",
                dbias.len()
            ),
        )),
        _ => Ok(()),
    }
}
