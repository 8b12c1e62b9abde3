//! Attention of a few new queries against cached keys and values: the decoding step of a
//! key/value cache, for self-attention (the cache grows by the new positions, which are the
//! last `Tq` of `Tk`, causal) and cross-attention (the source's keys and values computed
//! once, with their valid lengths, bidirectional).
//!
//! The same function as [`super::attention_forward`], computed another way: per query, the
//! scores are dot products with the cached key rows where they lie and the output a sum of
//! the cached value rows, with no copies into padded tiles (which would cost as much as the
//! products when there is one query) and no block of four queries (there is often one).
//!
//! ```
//! use resnorm::kernels::attention::{attention_decode, attention_forward, AttentionShape, Rows};
//! // A cache of 8 positions holding 5 keys and values of two heads of 4 features (C = 8);
//! // the newest position's query attends to all five.
//! let (c, capacity, seen) = (8, 8, 5);
//! let keys: Vec<f32> = (0..capacity * c).map(|i| (i as f32 * 0.3).sin()).collect();
//! let values: Vec<f32> = (0..capacity * c).map(|i| (i as f32 * 0.7).cos()).collect();
//! let query: Vec<f32> = (0..c).map(|i| i as f32 * 0.1).collect();
//! let shape = AttentionShape::new(1, 2, 1, seen, 4).causal();
//! let (q, k, v) = (
//!     Rows::new(&query, c, 0, 1),
//!     Rows::new(&keys, c, 0, capacity),
//!     Rows::new(&values, c, 0, capacity),
//! );
//! let (mut out, mut probs) = (vec![0.0; c], vec![0.0; 2 * seen]);
//! attention_decode(&mut out, &mut probs, (q, k, v), &shape, None).unwrap();
//! let (mut tiled, mut tiled_probs) = (vec![0.0; c], vec![0.0; 2 * seen]);
//! attention_forward(&mut tiled, &mut tiled_probs, (q, k, v), &shape, None).unwrap();
//! assert!(out.iter().zip(&tiled).all(|(a, b)| (a - b).abs() < 1e-6));
//! ```

use super::columns::SharedColumns;
use super::head::head_rows;
use super::softmax::{dot, softmax};
use super::{start_forward, with_head_scratch, AttentionShape, Rows};
use crate::kernels::simd::{self, prefetch_lines};
use crate::threads::for_each_chunk_spinning;
use crate::{Error, Result};

/// Writes `out` (`[B, Tq, H·d]`) and `probs` (`[B, H, Tq, Tk]`, every element: zeros for the
/// keys a query does not see) as [`super::attention_forward`] does. The operands carry no
/// bias: a cache holds finished rows; and the shape no dropout: decoding never drops.
pub fn attention_decode(
    out: &mut [f32],
    probs: &mut [f32],
    (q, k, v): (Rows<'_>, Rows<'_>, Rows<'_>),
    shape: &AttentionShape,
    key_lengths: Option<&[usize]>,
) -> Result<()> {
    const OP: &str = "attention_decode";
    if [q.bias, k.bias, v.bias].iter().any(Option::is_some) {
        return Err(Error::invalid(
            OP,
            "decoding reads finished rows: add the biases before caching",
        ));
    }
    if shape.dropout.is_some() {
        return Err(Error::invalid(OP, "decoding never drops attention"));
    }
    if !start_forward(OP, (out, probs.len()), (&q, &k, &v), shape, key_lengths)? {
        return Ok(());
    }
    let (heads, d) = (shape.heads, shape.head_dim);
    let out = SharedColumns::new(out, heads * d);
    for_each_chunk_spinning(probs, shape.q_len * shape.kv_len, &|bh, probs| {
        let (b, h) = (bh / heads, bh % heads);
        let len = shape.key_length(key_lengths, b);
        let g = h / shape.group();
        let operands = (
            head_rows(&q, b, h, d),
            head_rows(&k, b, g, d),
            head_rows(&v, b, g, d),
        );
        with_head_scratch(|scratch| {
            scratch.resize(scratch.len().max(d), 0.0);
            let y = &mut scratch[..d];
            for (i, row) in probs.chunks_exact_mut(shape.kv_len).enumerate() {
                let seen = shape.visible(i, len);
                query_row(row, y, operands, (i, seen, d), shape.scale);
                // SAFETY: task `bh` alone writes head `h`'s columns of sequence `b`'s rows.
                unsafe { out.write((b * shape.q_len + i, h * d), Some((y, d)), (1, d)) };
            }
        });
        Ok(())
    })
}

type HeadRows<'a> = (&'a [f32], usize, usize);

simd::dispatch! {
    /// Query `i`'s probabilities over its `seen` keys (zeros after) into `probs`, and its
    /// output into `y`.
    fn query_row(
        probs: &mut [f32],
        y: &mut [f32],
        operands: (HeadRows<'_>, HeadRows<'_>, HeadRows<'_>),
        at: (usize, usize, usize),
        scale: f32,
    ) => auto query_row_body
}

/// Keys ahead of the one being scored whose rows are asked for.
const PREFETCH_KEYS: usize = 8;

/// [`query_row`]'s body: one dot product per key, in sixteen partial sums so that it
/// vectorizes, then the softmax and a sum of value rows. A head's rows are a row stride
/// apart, beyond what the hardware prefetcher follows, and the cache rarely holds them while
/// decoding (every token streams all the weights through it): so the key rows are asked for
/// [`PREFETCH_KEYS`] ahead, and each value row as its key is scored, to arrive during the
/// softmax.
#[inline(always)]
fn query_row_body(
    probs: &mut [f32],
    y: &mut [f32],
    ((q, qs, qc), (k, ks, kc), (v, vs, vc)): (HeadRows<'_>, HeadRows<'_>, HeadRows<'_>),
    (i, seen, d): (usize, usize, usize),
    scale: f32,
) {
    let query = &q[i * qs + qc..][..d];
    for (j, p) in probs[..seen].iter_mut().enumerate() {
        prefetch_lines(k.as_ptr().wrapping_add((j + PREFETCH_KEYS) * ks + kc), d);
        prefetch_lines(v.as_ptr().wrapping_add(j * vs + vc), d);
        *p = dot(query, &k[j * ks + kc..][..d]);
    }
    probs[seen..].fill(0.0);
    y.fill(0.0);
    if seen == 0 {
        return;
    }
    softmax(&mut probs[..seen], scale);
    for (j, &p) in probs[..seen].iter().enumerate() {
        let value = &v[j * vs + vc..][..d];
        y.iter_mut().zip(value).for_each(|(y, v)| *y += p * v);
    }
}
