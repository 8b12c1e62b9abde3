//! Scaled dot-product attention, forward and backward, fused per (sequence, head): causal
//! or bidirectional, self- or cross-attention, grouped key/value heads, a key-padding mask
//! per sequence, and key/value-cache decoding.
//!
//! For sequence `b`, query head `h` and its key/value head `g = h / (H / H_kv)`, with
//! `Q` `[Tq, d]`, `K`, `V` `[Tk, d]` read from strided [`Rows`] and `len_b` valid keys:
//!
//! ```text
//! S = scale · Q Kᵀ                                                   [Tq, Tk]
//! P[i, j] = exp(S[i,j] - max_j' S[i,j']) / Σ_j' exp(...)  over j, j' < visible(i), else 0
//! O = P V                                                            [Tq, d]
//! visible(i) = len_b                             bidirectional
//!            = min(len_b, i + Tk - Tq + 1)       causal (the queries are the last Tq keys)
//! ```
//!
//! Backward, from `dO`, the saved `P` and the operands:
//!
//! ```text
//! dP = dO Vᵀ     dS[i, j] = scale · P[i,j] · (dP[i,j] - Σ_j' P[i,j'] dP[i,j'])
//! dQ = dS K      dK = Σ_{h in g} dSᵀ Q      dV = Σ_{h in g} Pᵀ dO
//! ```
//!
//! Attention dropout (training; [`AttentionShape::dropped`]) multiplies the probabilities by
//! an inverted-dropout mask `M` ([`crate::kernels::dropout`]) before they meet `V`; the mask
//! is a pure function of the seed and the index `((b·H + h)·Tq + i)·Tk + j`, so the backward
//! regenerates it and the saved `P` stays the softmax's:
//!
//! ```text
//! P̃ = M ⊙ P / (1 - p)        O = P̃ V
//! dP̃ = dO Vᵀ     dP = M ⊙ dP̃ / (1 - p)     dS = scale · P ⊙ (dP - Σ_j' P dP)
//! dV = Σ_{h in g} P̃ᵀ dO
//! ```
//!
//! The softmax's backward sums `P ⊙ dP` over the row, never `dO ⊙ O` (the two agree only
//! without dropout). A rate of 0 leaves no mask in the shape and runs the path above
//! unchanged.
//!
//! Keys at or past `len_b` are neither attended nor given gradient (their `dK`, `dV` rows
//! are zero). A query that sees no key (`len_b = 0`) outputs zeros and passes no gradient,
//! as recent PyTorch's `scaled_dot_product_attention` does (older versions gave NaN, which a
//! padded batch spreads into every gradient). Causal alignment is bottom-right: the same as PyTorch's
//! `is_causal` for `Tq = Tk`, and what decoding with a cache needs for `Tq < Tk` (new queries
//! are the last positions).
//!
//! [`attention_forward`] runs one task per `(b, h)` and [`attention_backward`] one per
//! `(b, g)`, shared out by [`crate::threads::for_each_chunk_spinning`]; each keeps its
//! head's scores in the cache (`head.rs`). Every element is computed by one task in a fixed
//! order, so results do not depend on the threads. [`attention_decode`] is the forward for a
//! few queries against long cached keys, without the copies the tiled forward makes.
//!
//! ```
//! use resnorm::kernels::attention::{
//!     attention_backward, attention_forward, AttentionShape, GradTarget, Grads, Rows,
//! };
//! use resnorm::kernels::dropout::DropoutMask;
//! // Causal self-attention on a fused [B, T, 3C] qkv: two heads of 2 features, C = 4.
//! let (batch, seq, c) = (1, 3, 4);
//! let shape = AttentionShape::new(batch, 2, seq, seq, 2).causal();
//! let qkv: Vec<f32> = (0..batch * seq * 3 * c).map(|i| (i as f32 * 0.37).sin()).collect();
//! let view = |column| Rows::new(&qkv, 3 * c, column, seq);
//! let (q, k, v) = (view(0), view(c), view(2 * c));
//! let mut out = vec![0.0; shape.out_len()];
//! let mut probs = vec![0.0; shape.probs_len()];
//! attention_forward(&mut out, &mut probs, (q, k, v), &shape, None).unwrap();
//! assert_eq!(&probs[..3], &[1.0, 0.0, 0.0]); // the first token sees only itself
//! assert_eq!(&out[..2], &qkv[8..10]); // so head 0's output is its own value
//!
//! // With attention dropout at 0.5 the saved probabilities are the same; the first token's
//! // one probability is dropped (output 0) or doubled (output twice its value).
//! let dropped = shape.dropped(DropoutMask::new(0.5, 3).unwrap());
//! let (mut out_d, mut probs_d) = (vec![0.0; shape.out_len()], vec![0.0; shape.probs_len()]);
//! attention_forward(&mut out_d, &mut probs_d, (q, k, v), &dropped, None).unwrap();
//! assert_eq!(probs_d, probs);
//! let doubled: Vec<f32> = qkv[8..10].iter().map(|v| 2.0 * v).collect();
//! assert!(out_d[..2] == [0.0, 0.0] || out_d[..2] == doubled[..]);
//!
//! // The same with the third key padded away: the last query sees two keys (and the
//! // probability of the third is not written: it stays as the zeroed buffer has it).
//! probs.fill(0.0);
//! attention_forward(&mut out, &mut probs, (q, k, v), &shape, Some(&[2])).unwrap();
//! assert!((probs[6] + probs[7] - 1.0).abs() < 1e-6 && probs[8] == 0.0);
//!
//! let mut dqkv = vec![0.0; qkv.len()];
//! let grads = Grads::Packed(GradTarget::new(&mut dqkv));
//! attention_backward(grads, &vec![1.0; out.len()], &probs, (q, k, v), &shape, Some(&[2]))
//!     .unwrap();
//! assert!(dqkv[2 * 12 + 4..2 * 12 + 12].iter().all(|&g| g == 0.0)); // the padded key's dk, dv
//! ```

mod columns;
mod decode;
mod head;
mod shape;
mod softmax;
#[cfg(test)]
mod tests;

pub use decode::attention_decode;
pub use shape::{AttentionShape, GradTarget, Grads, Rows};

use crate::threads::for_each_chunk_spinning;
use crate::{Error, Result};
use columns::SharedColumns;
use head::{GradSinks, HeadShape};
use shape::{check_shared, check_target};
use std::cell::Cell;

thread_local! {
    /// Each thread's buffers for the head it works on (see [`head`]), kept between calls.
    static HEAD_SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Each backward task's column sums of its `dQ`, `dK`, `dV`, for the bias gradients.
    static BIAS_SUMS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Writes `out` (`[B, Tq, H·d]`, heads side by side) and the probabilities `probs`
/// (`[B, H, Tq, Tk]`; only those of the keys each query sees are written, the others are
/// left as they were) from `q` (`H` heads) and `k`, `v` (`H_kv` heads each), with
/// `key_lengths` valid keys per sequence (all `Tk` without).
pub fn attention_forward(
    out: &mut [f32],
    probs: &mut [f32],
    (q, k, v): (Rows<'_>, Rows<'_>, Rows<'_>),
    shape: &AttentionShape,
    key_lengths: Option<&[usize]>,
) -> Result<()> {
    if !start_forward(
        "attention_forward",
        (out, probs.len()),
        (&q, &k, &v),
        shape,
        key_lengths,
    )? {
        return Ok(());
    }
    let heads = shape.heads;
    let out = SharedColumns::new(out, heads * shape.head_dim);
    for_each_chunk_spinning(probs, shape.q_len * shape.kv_len, &|bh, probs| {
        let (b, h) = (bh / heads, bh % heads);
        let head_shape = HeadShape {
            attn: *shape,
            len: shape.key_length(key_lengths, b),
        };
        with_head_scratch(|scratch| {
            // SAFETY: task `bh` alone writes head `h`'s columns of sequence `b`'s rows.
            unsafe {
                head::forward_in_force(&head_shape, (b, h), (&q, &k, &v), probs, &out, scratch)
            }
        });
        Ok(())
    })
}

/// Writes `dQ`, `dK`, `dV` into `grads` (every position of every sequence, zeros where no
/// gradient flows) from `dout` (`[B, Tq, H·d]`), the forward's `probs` and operands, and adds
/// the gradients' column sums into the targets' bias gradients, if any (in sequence order:
/// the same bits for any thread count).
pub fn attention_backward(
    grads: Grads<'_>,
    dout: &[f32],
    probs: &[f32],
    (q, k, v): (Rows<'_>, Rows<'_>, Rows<'_>),
    shape: &AttentionShape,
    key_lengths: Option<&[usize]>,
) -> Result<()> {
    const OP: &str = "attention_backward";
    check(OP, shape, (&q, &k, &v), key_lengths)?;
    check_len(OP, "dout", dout.len(), shape.out_len())?;
    check_len(OP, "probs", probs.len(), shape.probs_len())?;
    let (d, heads, kv_heads) = (shape.head_dim, shape.heads, shape.kv_heads);
    let ends = [
        q.columns(heads, d).end,
        k.columns(kv_heads, d).end,
        v.columns(kv_heads, d).end,
    ];
    check_shared(OP, (&k, kv_heads), (&v, kv_heads), d)?;
    // With one target its bias serves q, k and v; with two, the second serves k and v.
    let (first, second, mut biases) = match grads {
        Grads::Packed(target) => {
            check_shared(OP, (&q, heads), (&k, kv_heads), d)?;
            check_shared(OP, (&q, heads), (&v, kv_heads), d)?;
            check_target(OP, "dqkv", &target, &q, ends.into_iter().max().unwrap_or(0))?;
            let shared = SharedColumns::new(target.data, q.row_stride);
            (shared, None, [target.bias, None])
        }
        Grads::Split { dq, dkv } => {
            check_target(OP, "dq", &dq, &q, ends[0])?;
            check_target(OP, "dkv", &dkv, &k, ends[1].max(ends[2]))?;
            let dkv_shared = SharedColumns::new(dkv.data, k.row_stride);
            let dq_shared = SharedColumns::new(dq.data, q.row_stride);
            (dq_shared, Some(dkv_shared), [dq.bias, dkv.bias])
        }
    };
    if shape.batch == 0 {
        return Ok(());
    }
    let second = second.as_ref().unwrap_or(&first);
    let targets = [&first, second, second];
    let with_bias = biases.iter().any(Option::is_some);
    let group = shape.group();
    let part = (group + 2) * d;
    let mut sums = BIAS_SUMS.take();
    sums.clear();
    sums.resize(shape.batch * kv_heads * part, 0.0);
    let Ok(()) = for_each_chunk_spinning(&mut sums, part, &|bg, sums| {
        let (b, g) = (bg / kv_heads, bg % kv_heads);
        let head_shape = HeadShape {
            attn: *shape,
            len: shape.key_length(key_lengths, b),
        };
        let probs = &probs[b * heads * shape.q_len * shape.kv_len..];
        let sums = with_bias.then_some(sums);
        with_head_scratch(|scratch| {
            let sinks = GradSinks {
                targets,
                bias_sums: sums,
            };
            let operands = (&q, &k, &v);
            // SAFETY: as in `attention_forward`, for the group's columns of the targets.
            unsafe {
                head::backward_in_force(&head_shape, (b, g), operands, dout, probs, sinks, scratch)
            }
        });
        Ok::<(), std::convert::Infallible>(())
    });
    let single = biases[1].is_none();
    for (which, rows) in [&q, &k, &v].into_iter().enumerate() {
        let bias = match (which, single) {
            (0, _) | (_, true) => biases[0].as_deref_mut(),
            _ => biases[1].as_deref_mut(),
        };
        let Some(bias) = bias else { continue };
        for (bg, task) in sums.chunks_exact(part).enumerate() {
            let g = bg % kv_heads;
            // (columns' first head, sums) of this part of the task's sums.
            let (first_head, sums) = match which {
                0 => (g * group, &task[..group * d]),
                _ => (g, &task[(group + which - 1) * d..][..d]),
            };
            let at = &mut bias[rows.column + first_head * d..][..sums.len()];
            at.iter_mut().zip(sums).for_each(|(b, s)| *b += s);
        }
    }
    BIAS_SUMS.set(sums);
    Ok(())
}

/// The checks of a forward, and its trivial cases: `Ok(false)` when there is nothing left to
/// compute (no query; or no key, and `out` zeroed).
fn start_forward(
    op: &'static str,
    (out, probs_len): (&mut [f32], usize),
    operands: (&Rows<'_>, &Rows<'_>, &Rows<'_>),
    shape: &AttentionShape,
    key_lengths: Option<&[usize]>,
) -> Result<bool> {
    check(op, shape, operands, key_lengths)?;
    check_len(op, "out", out.len(), shape.out_len())?;
    check_len(op, "probs", probs_len, shape.probs_len())?;
    if shape.kv_len == 0 {
        out.fill(0.0);
    }
    Ok(shape.batch * shape.q_len * shape.kv_len > 0)
}

/// Checks the shape and the operands: `q` holds `H` heads at `Tq` positions, `k` and `v`
/// `H_kv` heads at `Tk` positions, of every sequence.
fn check(
    op: &'static str,
    shape: &AttentionShape,
    (q, k, v): (&Rows<'_>, &Rows<'_>, &Rows<'_>),
    key_lengths: Option<&[usize]>,
) -> Result<()> {
    shape.check(op, key_lengths)?;
    let (batch, d) = (shape.batch, shape.head_dim);
    q.check(op, "q", (batch, shape.q_len), (shape.heads, d))?;
    k.check(op, "k", (batch, shape.kv_len), (shape.kv_heads, d))?;
    v.check(op, "v", (batch, shape.kv_len), (shape.kv_heads, d))
}

fn check_len(op: &'static str, what: &str, len: usize, want: usize) -> Result<()> {
    match len == want {
        true => Ok(()),
        false => Err(Error::shape(
            op,
            format!("{what} has {len} elements, {want} needed"),
        )),
    }
}

/// Runs `f` on this thread's head buffers, grown as needed and kept for the next call.
fn with_head_scratch(f: impl FnOnce(&mut Vec<f32>)) {
    let mut scratch = HEAD_SCRATCH.take();
    f(&mut scratch);
    HEAD_SCRATCH.set(scratch);
}
