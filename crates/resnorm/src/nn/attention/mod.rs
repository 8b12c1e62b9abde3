//! Multi-head causal self-attention, the core between GPT-2's `c_attn` and `c_proj`.
//!
//! Input `qkv` is `[B, T, 3C]`, the output of `c_attn`: each row is `[q | k | v]`, and head
//! `h` of `H` owns columns `h·d .. (h+1)·d` of each part, `d = C / H` (nanoGPT's
//! `split(C, dim=2)` then `view(B, T, H, d)`). Output is `[B, T, C]`, heads side by side in
//! the same column order, ready for `c_proj`. For each batch row `b` and head `h`:
//!
//! ```text
//! S = Q Kᵀ / √d                                  [T, T]
//! P[t, s] = exp(S[t,s] - max_{s'≤t} S[t,s']) / Σ_{s'≤t} exp(...)   for s ≤ t, 0 for s > t
//! O = P V                                        [T, d]
//! ```
//!
//! The probabilities `P` (`att`, `[B, H, T, T]`, passed in by the caller) are saved for
//! backward; the softmax is fused with the causal mask and max-subtracted. Only `P[t, s]`
//! for `s ≤ t` is written: the entries above the diagonal are zero in `P`, backward never
//! reads them, and the forward leaves them as they were (zero in a zeroed buffer), which
//! halves the bytes saved and read back. Backward, from
//! `dO` (`dout`, `[B, T, C]`), `P` and `qkv`:
//!
//! ```text
//! dP = dO Vᵀ
//! dS[t, s] = P[t,s] · (dP[t,s] - Σ_{s'} P[t,s'] dP[t,s']) / √d
//! dQ = dS K        dK = dSᵀ Q        dV = Pᵀ dO        (dqkv overwritten)
//! ```
//!
//! [`CausalSelfAttention::forward_adding_bias`] and its backward take `qkv` without
//! `c_attn`'s bias and add it as each head reads its columns, the bias's gradient summed from
//! the columns each head writes to `dqkv`: the model's attention then reads `qkv` once
//! instead of adding the bias in a pass of its own first (and reads `dqkv` once less).
//!
//! Both run one task per `(b, h)`, shared out by
//! [`crate::threads::for_each_chunk_spinning`]: a task does all of its head's work while its
//! `[T, T]` scores stay in the cache (`attention/head.rs`), with products that stop at the
//! diagonal, so causality halves the work. Tasks write disjoint columns of `out` / `dqkv`, and every
//! element is computed by one task in a fixed order, so results are deterministic.
//!
//! ```
//! use resnorm::nn::CausalSelfAttention;
//! let attn = CausalSelfAttention::new(4, 2).unwrap(); // C = 4, two heads of size 2
//! let (batch, seq) = (1, 3);
//! let qkv: Vec<f32> = (0..batch * seq * 12).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut out = vec![0.0; batch * seq * 4];
//! let mut att = vec![0.0; batch * 2 * seq * seq];
//! attn.forward(&mut out, &mut att, &qkv, batch, seq).unwrap();
//! assert_eq!(&att[..3], &[1.0, 0.0, 0.0]); // the first token sees only itself (att was zeroed)
//! assert_eq!(&out[..2], &qkv[8..10]); // so head 0's output is its own value
//! let mut dqkv = vec![0.0; qkv.len()];
//! attn.backward(&mut dqkv, &vec![1.0; out.len()], &att, &qkv, batch, seq).unwrap();
//! assert!(attn.forward(&mut out, &mut att, &qkv[1..], batch, seq).is_err());
//! ```

mod head;

use crate::kernels::exp::{exp, row_max, wide, wide_fn};
use crate::nn::Param;
use crate::threads::for_each_chunk_spinning;
use crate::{Error, Result};
use head::{HeadShape, SharedColumns};
use std::cell::Cell;

thread_local! {
    /// Each thread's buffers for the head it works on (see [`head`]), kept between calls.
    static HEAD_SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Each head's column sums of its `dQ`, `dK`, `dV` ([`CausalSelfAttention::backward_adding_bias`]).
    static HEAD_BIAS_SUMS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `$body` with `$v` the widest vector this CPU runs: AVX-512 where detected, else
/// plain arrays inside [`wide`].
macro_rules! on_widest_vector {
    ($v:ident, $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        let done = std::arch::is_x86_feature_detected!("avx512f") && {
            type $v = crate::kernels::vector::Avx512;
            $body;
            true
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = false;
        if !done {
            type $v = crate::kernels::vector::Portable;
            wide(|| $body);
        }
    }};
}

/// Causal self-attention over `heads` heads of a `channels`-wide stream. It has no parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CausalSelfAttention {
    channels: usize,
    heads: usize,
}

impl CausalSelfAttention {
    /// Attention over `channels` split into `heads` heads; `heads` must divide `channels`.
    pub fn new(channels: usize, heads: usize) -> Result<Self> {
        if heads == 0 || channels == 0 || !channels.is_multiple_of(heads) {
            return Err(Error::invalid(
                "CausalSelfAttention::new",
                format!("{heads} heads must be at least 1 and divide {channels} channels (> 0)"),
            ));
        }
        Ok(CausalSelfAttention { channels, heads })
    }

    /// Width `C` of the stream.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Number of heads `H`.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Hands every parameter to `f`: there are none.
    pub fn visit_params(&self, _f: &mut dyn FnMut(&Param)) {}

    /// Hands every parameter to `f` for writing: there are none.
    pub fn visit_params_mut(&mut self, _f: &mut dyn FnMut(&mut Param)) {}

    /// `out [B,T,C]` from `qkv [B,T,3C]`, saving probabilities in `att [B,H,T,T]` (on and
    /// below each diagonal; the rest of `att` is left as it was).
    pub fn forward(
        &self,
        out: &mut [f32],
        att: &mut [f32],
        qkv: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        self.forward_from(
            "CausalSelfAttention::forward",
            out,
            att,
            (qkv, None),
            batch,
            seq,
        )
    }

    /// [`CausalSelfAttention::forward`] of `qkv + 1·biasᵀ`, `bias` (`3C`) added to the rows
    /// as each head reads its columns: `c_attn`'s bias, the layer run without it
    /// ([`crate::nn::Linear::forward_without_bias`]), so that its `[B,T,3C]` output is not
    /// read and written once more for the bias alone.
    pub fn forward_adding_bias(
        &self,
        out: &mut [f32],
        att: &mut [f32],
        qkv: &[f32],
        bias: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        const OP: &str = "CausalSelfAttention::forward_adding_bias";
        self.check_bias(OP, bias.len())?;
        self.forward_from(OP, out, att, (qkv, Some(bias)), batch, seq)
    }

    fn forward_from(
        &self,
        op: &'static str,
        out: &mut [f32],
        att: &mut [f32],
        (qkv, bias): (&[f32], Option<&[f32]>),
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        self.check(op, batch, seq, qkv, out, att)?;
        if batch * seq == 0 {
            return Ok(());
        }
        let (shape, heads) = (self.head_shape(seq), self.heads);
        let out = SharedColumns::new(out, self.channels);
        let sequence = seq * 3 * self.channels;
        for_each_chunk_spinning(att, seq * seq, &|bh, att| {
            let (b, h) = (bh / heads, bh % heads);
            let qkv = &qkv[b * sequence..][..sequence];
            with_head_scratch(|scratch| {
                // SAFETY: the vector runs on this CPU (on_widest_vector); task `bh` alone
                // writes head `h`'s columns of sequence `b`'s rows.
                on_widest_vector!(V, unsafe {
                    head::forward::<V>(&shape, (h, b * seq), (qkv, bias), att, &out, scratch)
                })
            });
            Ok(())
        })
    }

    /// Writes `dqkv [B,T,3C]` from `dout [B,T,C]`, the forward's `att` and `qkv`.
    pub fn backward(
        &self,
        dqkv: &mut [f32],
        dout: &[f32],
        att: &[f32],
        qkv: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        const OP: &str = "CausalSelfAttention::backward";
        self.check_backward(OP, batch, seq, (qkv, dqkv.len()), dout, att)?;
        if batch * seq == 0 {
            return Ok(());
        }
        let (shape, heads, c) = (self.head_shape(seq), self.heads, self.channels);
        let dqkv = SharedColumns::new(dqkv, 3 * c);
        // One task per (b, h); the tasks' "chunks" are zero-sized placeholders.
        for_each_chunk_spinning(&mut vec![(); batch * heads], 1, &|bh, _| {
            self.backward_head(&shape, bh, (qkv, None), dout, att, (&dqkv, None));
            Ok(())
        })
    }

    /// The backward of [`CausalSelfAttention::forward_adding_bias`]: writes `dqkv` as
    /// [`CausalSelfAttention::backward`] does and adds its column sums into `dbias` (`3C`),
    /// each head summing its own columns as it writes them, the heads' sums then added in
    /// sequence order (the same bits for any thread count).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_adding_bias(
        &self,
        dqkv: &mut [f32],
        dbias: &mut [f32],
        dout: &[f32],
        att: &[f32],
        (qkv, bias): (&[f32], &[f32]),
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        const OP: &str = "CausalSelfAttention::backward_adding_bias";
        self.check_bias(OP, bias.len())?;
        self.check_bias(OP, dbias.len())?;
        self.check_backward(OP, batch, seq, (qkv, dqkv.len()), dout, att)?;
        if batch * seq == 0 {
            return Ok(());
        }
        let (shape, heads, c) = (self.head_shape(seq), self.heads, self.channels);
        let dqkv = SharedColumns::new(dqkv, 3 * c);
        // A head's share of the bias's columns; the sums are zeroed for each call and their
        // buffer kept between calls, so that no step allocates.
        let part = 3 * shape.dim;
        let mut sums = HEAD_BIAS_SUMS.take();
        sums.clear();
        sums.resize(batch * heads * part, 0.0);
        let Ok(()) = for_each_chunk_spinning(&mut sums, part, &|bh, sums| {
            let from = (qkv, Some(bias));
            self.backward_head(&shape, bh, from, dout, att, (&dqkv, Some(sums)));
            Ok::<(), std::convert::Infallible>(())
        });
        for sequence in sums.chunks_exact(heads * part) {
            for (h, head) in sequence.chunks_exact(part).enumerate() {
                for (which, sums) in head.chunks_exact(shape.dim).enumerate() {
                    let dbias = &mut dbias[which * c + h * shape.dim..][..shape.dim];
                    dbias.iter_mut().zip(sums).for_each(|(db, s)| *db += s);
                }
            }
        }
        HEAD_BIAS_SUMS.set(sums);
        Ok(())
    }

    /// The backward of head `bh % H` of sequence `bh / H`.
    // `on_widest_vector!` writes its body twice, so `dbias` is reborrowed, not moved, in it.
    #[allow(clippy::needless_option_as_deref)]
    fn backward_head(
        &self,
        shape: &HeadShape,
        bh: usize,
        (qkv, bias): (&[f32], Option<&[f32]>),
        dout: &[f32],
        att: &[f32],
        (dqkv, mut dbias): (&SharedColumns<'_>, Option<&mut [f32]>),
    ) {
        let (seq, c) = (shape.seq, self.channels);
        let (b, h) = (bh / self.heads, bh % self.heads);
        let qkv = &qkv[b * seq * 3 * c..][..seq * 3 * c];
        let dout = &dout[b * seq * c..][..seq * c];
        let att = &att[bh * seq * seq..][..seq * seq];
        with_head_scratch(|scratch| {
            // SAFETY: as in `forward_from`, for head `h`'s three column blocks of `dqkv`.
            on_widest_vector!(V, unsafe {
                head::backward::<V>(
                    shape,
                    (h, b * seq),
                    (qkv, bias),
                    dout,
                    att,
                    (dqkv, dbias.as_deref_mut()),
                    scratch,
                )
            })
        });
    }

    /// Checks that a bias (or its gradient) has `3C` elements.
    fn check_bias(&self, op: &'static str, len: usize) -> Result<()> {
        if len != 3 * self.channels {
            return Err(Error::shape(
                op,
                format!(
                    "the bias has {len} elements, 3 x {} channels needed",
                    self.channels
                ),
            ));
        }
        Ok(())
    }

    /// [`Self::check`], and that `dqkv` is as long as `qkv`.
    fn check_backward(
        &self,
        op: &'static str,
        batch: usize,
        seq: usize,
        (qkv, dqkv_len): (&[f32], usize),
        dout: &[f32],
        att: &[f32],
    ) -> Result<()> {
        self.check(op, batch, seq, qkv, dout, att)?;
        if dqkv_len != qkv.len() {
            return Err(Error::shape(
                op,
                format!("dqkv needs {} elements, got {dqkv_len}", qkv.len()),
            ));
        }
        Ok(())
    }

    fn head_shape(&self, seq: usize) -> HeadShape {
        HeadShape {
            seq,
            dim: self.channels / self.heads,
            channels: self.channels,
        }
    }

    /// Validates every buffer length before any element is touched.
    fn check(
        &self,
        op: &'static str,
        batch: usize,
        seq: usize,
        qkv: &[f32],
        out: &[f32],
        att: &[f32],
    ) -> Result<()> {
        let c = self.channels;
        let rows = batch.checked_mul(seq);
        let want = |width: usize| rows.and_then(|r| r.checked_mul(width));
        let want_att = rows
            .and_then(|r| r.checked_mul(self.heads))
            .and_then(|r| r.checked_mul(seq));
        for (what, len, want) in [
            ("qkv", qkv.len(), want(3 * c)),
            ("out/dout", out.len(), want(c)),
            ("att", att.len(), want_att),
        ] {
            if Some(len) != want {
                return Err(Error::shape(
                    op,
                    format!(
                        "{what} has {len} elements, batch {batch} x seq {seq} with {c} channels \
                         and {} heads needs {want:?}",
                        self.heads
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Runs `f` on this thread's head buffers, grown as needed and kept for the next call.
fn with_head_scratch(f: impl FnOnce(&mut Vec<f32>)) {
    let mut scratch = HEAD_SCRATCH.take();
    f(&mut scratch);
    HEAD_SCRATCH.set(scratch);
}

wide_fn! {
    /// `row` becomes `softmax(scale · row)`; `scale > 0`. Causal attention passes the
    /// scores a position sees: its own and the earlier ones.
    pub(crate) fn softmax(row: &mut [f32], scale: f32) => softmax_row
}

/// [`softmax`]'s body. The maximum and the sum run in sixteen partial results, so that they
/// vectorize (a plain fold is one chain of dependent operations: at 256 positions those two
/// folds took most of a head's forward). The values past the last whole vector are computed
/// first, as one vector: the row's last sixteen, the lanes before them left out of the sum
/// (element by element, their `exp`s took about a quarter of the softmax's time).
#[inline(always)]
fn softmax_row(row: &mut [f32], scale: f32) {
    // scale > 0, so the largest scaled score is scale times the largest score.
    let max = row_max(row);
    let rem = row.len() % 16;
    let mut partial = [0.0f32; 16];
    // A row shorter than a vector is padded with its maximum.
    let mut last = [max; 16];
    let n = row.len().min(16);
    last[16 - n..].copy_from_slice(&row[row.len() - n..]);
    for (j, (sum, v)) in partial.iter_mut().zip(&mut last).enumerate() {
        *v = exp((*v - max) * scale);
        *sum += if j >= 16 - rem { *v } else { 0.0 };
    }
    let (whole, tail) = row.split_at_mut(row.len() - rem);
    for chunk in whole.chunks_exact_mut(16) {
        for (sum, v) in partial.iter_mut().zip(chunk) {
            *v = exp((*v - max) * scale);
            *sum += *v;
        }
    }
    tail.copy_from_slice(&last[16 - rem..]);
    let inv = 1.0 / partial.iter().sum::<f32>();
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::vector::Portable;

    /// The plain-array path (CPUs without AVX-512), from head buffers left full of NaN,
    /// against the public one, which runs AVX-512 where this test runs: same results to
    /// rounding (fused multiply-adds or not), a bias added as the heads read `qkv`.
    #[test]
    fn the_portable_path_matches() {
        // Heads of 80 features (whole vectors) and of 12 (padded to 16).
        for (batch, seq, c, heads) in [(2, 37, 160, 2), (2, 21, 36, 3)] {
            portable_path_matches(batch, seq, c, heads);
        }
    }

    fn portable_path_matches(batch: usize, seq: usize, c: usize, heads: usize) {
        let attn = CausalSelfAttention::new(c, heads).unwrap();
        let qkv: Vec<f32> = (0..batch * seq * 3 * c)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let dout: Vec<f32> = (0..batch * seq * c)
            .map(|i| (i as f32 * 0.11).cos())
            .collect();
        let (mut out, mut att) = (
            vec![0.0; dout.len()],
            vec![f32::NAN; batch * heads * seq * seq],
        );
        let bias: Vec<f32> = (0..3 * c).map(|i| (i as f32 * 0.23).cos()).collect();
        attn.forward_adding_bias(&mut out, &mut att, &qkv, &bias, batch, seq)
            .unwrap();
        let (mut dqkv, mut dbias) = (vec![0.0; qkv.len()], vec![0.0; 3 * c]);
        let from = (&qkv[..], &bias[..]);
        attn.backward_adding_bias(&mut dqkv, &mut dbias, &dout, &att, from, batch, seq)
            .unwrap();

        let shape = attn.head_shape(seq);
        let fresh = |len: usize| vec![f32::NAN; len];
        let (mut out_p, mut att_p, mut dqkv_p) =
            (fresh(out.len()), fresh(att.len()), fresh(qkv.len()));
        // Head buffers full of NaN: padding and the diagonal blocks' reach must be cleared
        // by the head code, and nothing else in them read before it is written.
        let mut scratch = vec![f32::NAN; 1 << 16];
        let sequence = seq * 3 * c;
        {
            let shared = SharedColumns::new(&mut out_p, c);
            for (bh, att) in att_p.chunks_exact_mut(seq * seq).enumerate() {
                let (b, h) = (bh / heads, bh % heads);
                let qkv = &qkv[b * sequence..][..sequence];
                // SAFETY: plain arrays run anywhere; one head at a time.
                unsafe {
                    head::forward::<Portable>(
                        &shape,
                        (h, b * seq),
                        (qkv, Some(&bias)),
                        att,
                        &shared,
                        &mut scratch,
                    )
                };
            }
        }
        {
            let shared = SharedColumns::new(&mut dqkv_p, 3 * c);
            for bh in 0..batch * heads {
                let (b, h) = (bh / heads, bh % heads);
                let qkv = &qkv[b * sequence..][..sequence];
                let dout = &dout[b * seq * c..][..seq * c];
                let att = &att[bh * seq * seq..][..seq * seq];
                // SAFETY: as above.
                unsafe {
                    head::backward::<Portable>(
                        &shape,
                        (h, b * seq),
                        (qkv, Some(&bias)),
                        dout,
                        att,
                        (&shared, None),
                        &mut scratch,
                    )
                };
            }
        }
        for (name, got, want) in [
            ("out", &out_p, &out),
            ("att", &att_p, &att),
            ("dqkv", &dqkv_p, &dqkv),
        ] {
            // Both `att`s keep NaN above the diagonal (not written); elsewhere a NaN fails.
            let close = got
                .iter()
                .zip(want.iter())
                .all(|(a, b)| (a - b).abs() < 1e-5 || (a.is_nan() && b.is_nan()));
            assert!(
                close,
                "{name} differs at seq {seq}, {heads} heads of {c} channels"
            );
        }
    }
}
