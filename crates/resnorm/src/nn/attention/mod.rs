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
//! backward; the softmax is fused with the causal mask and max-subtracted. Backward, from
//! `dO` (`dout`, `[B, T, C]`), `P` and `qkv`, with a caller-provided `[B, H, T, T]` scratch
//! `dscores` for `dP` and then `dS`:
//!
//! ```text
//! dP = dO Vᵀ
//! dS[t, s] = P[t,s] · (dP[t,s] - Σ_{s'} P[t,s'] dP[t,s']) / √d
//! dQ = dS K        dK = dSᵀ Q        dV = Pᵀ dO        (dqkv overwritten)
//! ```
//!
//! Threading: the `[T, T]` work (scores, softmax, `dP`, `dS`) runs one task per `(b, h)`; the
//! products that write `out` / `dqkv` run one task per `(b, block of rows)`, so every task
//! owns a contiguous output slice; the tasks are shared out by
//! [`crate::threads::for_each_chunk_spinning`]. Every product is computed by blocks of rows
//! and stops at the block's last key (or starts at its first query), so causality halves the
//! work. Every product goes through [`crate::kernels::matmul_strided`]; no element is summed
//! by more than one task, so results are deterministic.
//!
//! ```
//! use resnorm::nn::CausalSelfAttention;
//! let attn = CausalSelfAttention::new(4, 2).unwrap(); // C = 4, two heads of size 2
//! let (batch, seq) = (1, 3);
//! let qkv: Vec<f32> = (0..batch * seq * 12).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut out = vec![0.0; batch * seq * 4];
//! let mut att = vec![0.0; batch * 2 * seq * seq];
//! attn.forward(&mut out, &mut att, &qkv, batch, seq).unwrap();
//! assert_eq!(&att[..3], &[1.0, 0.0, 0.0]); // the first token sees only itself
//! assert_eq!(&out[..2], &qkv[8..10]); // so head 0's output is its own value
//! let mut dqkv = vec![0.0; qkv.len()];
//! let mut dscores = vec![0.0; att.len()];
//! attn.backward(&mut dqkv, &mut dscores, &vec![1.0; out.len()], &att, &qkv, batch, seq).unwrap();
//! assert!(attn.forward(&mut out, &mut att, &qkv[1..], batch, seq).is_err());
//! ```

use crate::kernels::exp::{exp, wide};
use crate::kernels::{matmul_strided, MatDims, MatMut, MatRef};
use crate::nn::Param;
use crate::threads::for_each_chunk_spinning;
use crate::{Error, Result};

/// Rows of `out` / `dqkv` per task in the products that write them.
const ROW_BLOCK: usize = 32;

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

    /// `out [B,T,C]` from `qkv [B,T,3C]`, saving probabilities in `att [B,H,T,T]`.
    pub fn forward(
        &self,
        out: &mut [f32],
        att: &mut [f32],
        qkv: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        self.check("CausalSelfAttention::forward", batch, seq, qkv, out, att)?;
        if batch * seq == 0 {
            return Ok(());
        }
        let (c, heads) = (self.channels, self.heads);
        let d = c / heads;
        let scale = 1.0 / (d as f32).sqrt();
        for_each_chunk_spinning(att, seq * seq, &|bh, p| {
            let qkv = &qkv[(bh / heads) * seq * 3 * c..][..seq * 3 * c];
            let h = bh % heads;
            let q = &qkv[h * d..];
            let k = &qkv[c + h * d..];
            causal_products(p, seq, d, (q, 3 * c), (k, 3 * c))?;
            p.chunks_exact_mut(seq)
                .enumerate()
                .for_each(|(t, row)| causal_softmax(row, t, scale));
            Ok(())
        })?;
        for_row_blocks(out, seq, c, |b, t0, t1, out| {
            let qkv = &qkv[b * seq * 3 * c..][..seq * 3 * c];
            for h in 0..heads {
                let p = &att[(b * heads + h) * seq * seq..][..seq * seq];
                let p_rows = MatRef {
                    data: &p[t0 * seq..],
                    row_stride: seq,
                    transposed: false,
                };
                let v = head(qkv, 3 * c, 2 * c + h * d, false);
                let dims = MatDims {
                    m: t1 - t0,
                    k: t1,
                    n: d,
                };
                matmul_strided(mat_mut(&mut out[h * d..], c), p_rows, v, dims, false)?;
            }
            Ok(())
        })
    }

    /// Writes `dqkv [B,T,3C]` from `dout [B,T,C]`, the forward's `att` and `qkv`. `dscores`
    /// (`[B,H,T,T]`) is scratch, overwritten; one buffer can serve every layer of a model.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        dqkv: &mut [f32],
        dscores: &mut [f32],
        dout: &[f32],
        att: &[f32],
        qkv: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        const OP: &str = "CausalSelfAttention::backward";
        self.check(OP, batch, seq, qkv, dout, att)?;
        if dqkv.len() != qkv.len() || dscores.len() != att.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "dqkv needs {} elements and dscores {}, got {} and {}",
                    qkv.len(),
                    att.len(),
                    dqkv.len(),
                    dscores.len()
                ),
            ));
        }
        if batch * seq == 0 {
            return Ok(());
        }
        let (c, heads) = (self.channels, self.heads);
        let d = c / heads;
        let scale = 1.0 / (d as f32).sqrt();
        for_each_chunk_spinning(dscores, seq * seq, &|bh, ds| {
            let p = &att[bh * seq * seq..][..seq * seq];
            let (b, h) = (bh / heads, bh % heads);
            let qkv = &qkv[b * seq * 3 * c..][..seq * 3 * c];
            let dout = &dout[b * seq * c..][..seq * c];
            let d_o = &dout[h * d..];
            let v = &qkv[2 * c + h * d..];
            causal_products(ds, seq, d, (d_o, c), (v, 3 * c))?;
            for (t, (ds, p)) in ds
                .chunks_exact_mut(seq)
                .zip(p.chunks_exact(seq))
                .enumerate()
            {
                softmax_backward_row(ds, p, t, scale);
            }
            Ok(())
        })?;
        let dscores = &*dscores;
        for_row_blocks(dqkv, seq, 3 * c, |b, t0, t1, dqkv| {
            let qkv = &qkv[b * seq * 3 * c..][..seq * 3 * c];
            let dout = &dout[b * seq * c..][..seq * c];
            for h in 0..heads {
                let bh = (b * heads + h) * seq * seq;
                let ds = &dscores[bh..][..seq * seq];
                let p = &att[bh..][..seq * seq];
                // dQ rows t0..t1 = dS[t0..t1, ..t1] K[..t1]
                let dims = MatDims {
                    m: t1 - t0,
                    k: t1,
                    n: d,
                };
                let ds_rows = MatRef {
                    data: &ds[t0 * seq..],
                    row_stride: seq,
                    transposed: false,
                };
                let k = head(qkv, 3 * c, c + h * d, false);
                matmul_strided(mat_mut(&mut dqkv[h * d..], 3 * c), ds_rows, k, dims, false)?;
                // dK, dV rows t0..t1 use only queries t >= t0 (later rows of dS, P).
                let dims = MatDims {
                    m: t1 - t0,
                    k: seq - t0,
                    n: d,
                };
                let q_late = head(&qkv[t0 * 3 * c..], 3 * c, h * d, false);
                let dk = mat_mut(&mut dqkv[c + h * d..], 3 * c);
                matmul_strided(dk, late_block_transposed(ds, seq, t0), q_late, dims, false)?;
                let dout_late = head(&dout[t0 * c..], c, h * d, false);
                let dv = mat_mut(&mut dqkv[2 * c + h * d..], 3 * c);
                matmul_strided(
                    dv,
                    late_block_transposed(p, seq, t0),
                    dout_late,
                    dims,
                    false,
                )?;
            }
            Ok(())
        })
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

/// Runs `f(b, t0, t1, rows)` in parallel over blocks of at most [`ROW_BLOCK`] rows `t0..t1`
/// of each batch row `b` of `data`, `[B, seq, width]`; `rows` is the block's slice.
fn for_row_blocks(
    data: &mut [f32],
    seq: usize,
    width: usize,
    f: impl Fn(usize, usize, usize, &mut [f32]) -> Result<()> + Sync,
) -> Result<()> {
    for_each_chunk_spinning(data, seq * width, &|b, rows| {
        for_each_chunk_spinning(rows, ROW_BLOCK * width, &|block, rows| {
            let t0 = block * ROW_BLOCK;
            f(b, t0, (t0 + ROW_BLOCK).min(seq), rows)
        })
    })
}

/// `out[t, s] = Σ_i left[t, i] · right[s, i]` (`left · rightᵀ`, both `[seq, d]` with the given
/// row strides) for every `s` up to the last row of `t`'s block of [`ROW_BLOCK`] rows: the
/// causal lower triangle and no more than a block beyond it. Later columns are left as they
/// are; the caller's row function overwrites them.
fn causal_products(
    out: &mut [f32],
    seq: usize,
    d: usize,
    (left, left_stride): (&[f32], usize),
    (right, right_stride): (&[f32], usize),
) -> Result<()> {
    for t0 in (0..seq).step_by(ROW_BLOCK) {
        let t1 = (t0 + ROW_BLOCK).min(seq);
        let dims = MatDims {
            m: t1 - t0,
            k: d,
            n: t1,
        };
        let rows = head(&left[t0 * left_stride..], left_stride, 0, false);
        let columns = head(right, right_stride, 0, true);
        matmul_strided(
            mat_mut(&mut out[t0 * seq..], seq),
            rows,
            columns,
            dims,
            false,
        )?;
    }
    Ok(())
}

/// A `[rows, d]` block starting at column `column` of rows `row_stride` apart.
pub(crate) fn head(rows: &[f32], row_stride: usize, column: usize, transposed: bool) -> MatRef<'_> {
    MatRef {
        data: &rows[column..],
        row_stride,
        transposed,
    }
}

/// Rows `t0..` and columns `t0..` of a `[seq, seq]` matrix, used transposed.
fn late_block_transposed(m: &[f32], seq: usize, t0: usize) -> MatRef<'_> {
    MatRef {
        data: &m[t0 * seq + t0..],
        row_stride: seq,
        transposed: true,
    }
}

pub(crate) fn mat_mut(data: &mut [f32], row_stride: usize) -> MatMut<'_> {
    MatMut { data, row_stride }
}

/// Row `t` of the scores becomes `softmax(scale · row[..=t])`, then zeros (the causal mask).
pub(crate) fn causal_softmax(row: &mut [f32], t: usize, scale: f32) {
    let (seen, future) = row.split_at_mut(t + 1);
    // scale > 0, so the largest scaled score is scale times the largest score.
    let max = seen.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    wide(|| seen.iter_mut().for_each(|v| *v = exp((*v - max) * scale)));
    let inv = 1.0 / seen.iter().sum::<f32>();
    seen.iter_mut().for_each(|v| *v *= inv);
    future.fill(0.0);
}

/// Row `t` of `dP` becomes `dS = scale · P ⊙ (dP - Σ P ⊙ dP)`, zero past `t`.
fn softmax_backward_row(ds: &mut [f32], p: &[f32], t: usize, scale: f32) {
    let (seen, future) = ds.split_at_mut(t + 1);
    let dot: f32 = seen.iter().zip(p).map(|(d, p)| d * p).sum();
    for (d, &p) in seen.iter_mut().zip(p) {
        *d = scale * p * (*d - dot);
    }
    future.fill(0.0);
}
