//! Key/value-cache decoding for [`Llama`]: each attention unit keeps the rotated keys and
//! the values of every position fed so far, so a new token costs one row through every
//! layer and attention over the cached rows.
//!
//! ```text
//! x = E[token] (· √C)
//! every unit, wired exactly as in training (Unit::forward_with):
//!     attention: q, k, v = the projections and QK-norms of h;  K[p] = RoPE(k, p);  V[p] = v
//!                y = softmax(scale · RoPE(q, p) K[0..=p]ᵀ) V[0..=p];  F = y·W_o
//!     MLP:       F = down(act(gate(h)) ⊙ up(h))
//! logits = the head of the last stream, as in training
//! ```
//! A prompt is fed in chunks of up to [`CHUNK`] positions, each one causal attention of the
//! chunk's queries over the cache (the queries are its last positions). The logits equal
//! the last row of a full forward over the same tokens, up to rounding.
//!
//! ```
//! use resnorm::models::llama::{greedy, Llama, LlamaConfig, LlamaDecoder, LlamaPlacement};
//! let mut model = Llama::new(LlamaConfig::tiny(LlamaPlacement::PreLn), 3).unwrap();
//! model.forward(&[5, 1, 2], 1, None).unwrap();
//! let full = model.logits()[2 * 11..].to_vec();
//! let mut decoder = LlamaDecoder::new(&mut model, 8).unwrap();
//! let cached = decoder.push(&[5, 1, 2]).unwrap();
//! assert!(cached.iter().zip(&full).all(|(a, b)| (a - b).abs() < 1e-5));
//! assert_eq!(greedy(&mut model, &[5, 1], 4).unwrap().len(), 4);
//! ```

use super::attention::{AttnActs, AttnScratch};
use super::generate;
use super::mlp::{MlpActs, MlpScratch};
use super::unit::{NormActs, NormScratch, Sublayer};
use super::{HeadActs, Llama};
use crate::kernels::attention::{attention_forward, Rows};
use crate::models::gpt::Sampling;
use crate::rng::Rng;
use crate::AlignedVec;
use crate::{Error, Result};

/// Most positions one step of the decoder runs through the layers at once.
pub const CHUNK: usize = 64;

/// A model with a cache of up to `capacity` positions.
#[derive(Debug)]
pub struct LlamaDecoder<'m> {
    pub(super) model: &'m Llama,
    capacity: usize,
    len: usize,
    rope: super::RopeTable,
    /// Rotated keys and values per attention unit, `[capacity, H_kv·d]` each.
    caches: Vec<(AlignedVec, AlignedVec)>,
    streams: [AlignedVec; 2],
    /// Every unit's norm buffers, one after another (nothing runs backward here).
    norms: NormActs,
    norm_scratch: NormScratch,
    attn: AttnActs,
    attn_scratch: AttnScratch,
    mlp: MlpActs,
    mlp_scratch: MlpScratch,
    q: AlignedVec,
    y: AlignedVec,
    probs: AlignedVec,
    head: HeadActs,
}

impl<'m> LlamaDecoder<'m> {
    /// A decoder of `model` for up to `capacity` positions (at most the model's context).
    pub fn new(model: &'m mut Llama, capacity: usize) -> Result<Self> {
        let c = model.config();
        if capacity == 0 || capacity > c.context {
            return Err(Error::invalid(
                "LlamaDecoder::new",
                format!("capacity {capacity} must be in 1..={}", c.context),
            ));
        }
        model.sync();
        let model: &'m Llama = model;
        let c = model.config();
        let mut rope = super::RopeTable::new(c.head_dim, c.rope_theta, capacity);
        rope.fill(0);
        let kv = capacity * c.kv_width();
        Ok(LlamaDecoder {
            capacity,
            len: 0,
            rope,
            caches: (0..c.layers)
                .map(|_| (AlignedVec::zeros(kv), AlignedVec::zeros(kv)))
                .collect(),
            streams: [0, 1].map(|_| AlignedVec::zeros(CHUNK * c.width)),
            norms: NormActs::new(c, CHUNK),
            norm_scratch: NormScratch::new(c, CHUNK),
            attn: AttnActs::new(c, 1, CHUNK),
            attn_scratch: AttnScratch::new(c, CHUNK),
            mlp: MlpActs::new(CHUNK, c.mlp_width),
            mlp_scratch: MlpScratch::new(CHUNK, c.mlp_width),
            q: AlignedVec::zeros(CHUNK * c.q_width()),
            y: AlignedVec::zeros(CHUNK * c.q_width()),
            probs: AlignedVec::zeros(c.heads * CHUNK * capacity),
            head: HeadActs::new(c, 1),
            model,
        })
    }

    /// Positions fed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Feeds `tokens` at the next positions; returns the logits after the last one.
    pub fn push(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        const OP: &str = "LlamaDecoder::push";
        if tokens.is_empty() {
            return Err(Error::invalid(OP, "no tokens to feed"));
        }
        if self.len + tokens.len() > self.capacity {
            return Err(Error::invalid(
                OP,
                format!(
                    "{} positions past the {} fed overflow the cache of {}",
                    tokens.len(),
                    self.len,
                    self.capacity
                ),
            ));
        }
        self.model.check_tokens(OP, tokens)?;
        for chunk in tokens.chunks(CHUNK) {
            self.feed(chunk)?;
        }
        Ok(self.head.logits())
    }

    fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        let model = self.model;
        let c = model.config();
        let (n, pos) = (tokens.len(), self.len);
        let (qw, kw, width) = (c.q_width(), c.kv_width(), c.width);
        let [x, out] = &mut self.streams;
        let (mut x, mut out) = (&mut x[..n * width], &mut out[..n * width]);
        model.embed_forward(tokens, x);
        let (rope, attn_acts, mlp_acts) = (&self.rope, &mut self.attn, &mut self.mlp);
        let (attn_scratch, mlp_scratch) = (&mut self.attn_scratch, &mut self.mlp_scratch);
        let (q_rot, y, probs) = (&mut self.q, &mut self.y, &mut self.probs);
        for (k, unit) in model.units.iter().enumerate() {
            let (k_cache, v_cache) = &mut self.caches[k / 2];
            unit.forward_with(
                x,
                out,
                &mut self.norms,
                &mut self.norm_scratch,
                |sublayer, h, f| match sublayer {
                    Sublayer::Attention(attn) => {
                        attn.project(h, attn_acts, attn_scratch)?;
                        let (q, k, v) = attn_scratch.unrotated(n);
                        for r in 0..n {
                            let p = pos + r;
                            rope.rotate(&q[r * qw..][..qw], &mut q_rot[r * qw..][..qw], p, c.heads);
                            let k_row = &mut k_cache[p * kw..][..kw];
                            rope.rotate(&k[r * kw..][..kw], k_row, p, c.kv_heads);
                            v_cache[p * kw..][..kw].copy_from_slice(&v[r * kw..][..kw]);
                        }
                        let shape = attn.shape(1, n, pos + n);
                        let views = (
                            Rows::new(q_rot, qw, 0, n),
                            Rows::new(k_cache, kw, 0, self.capacity),
                            Rows::new(v_cache, kw, 0, self.capacity),
                        );
                        let (y, probs) = (&mut y[..n * qw], &mut probs[..shape.probs_len()]);
                        attention_forward(y, probs, views, &shape, None)?;
                        attn.o.forward(f, y)
                    }
                    Sublayer::Mlp(mlp) => mlp.forward(h, f, mlp_acts, mlp_scratch),
                },
            )?;
            std::mem::swap(&mut x, &mut out);
        }
        self.len += n;
        model.head_forward(&x[(n - 1) * width..], &mut self.head)
    }
}

/// The `new` tokens that greedy decoding (the first largest logit) appends to `prompt`, as
/// Hugging Face's `generate(do_sample=False)` does.
pub fn greedy(model: &mut Llama, prompt: &[u32], new: usize) -> Result<Vec<u32>> {
    let greedy = Sampling {
        temperature: 0.0,
        top_k: 0,
    };
    generate(model, prompt, new, greedy, &mut Rng::new(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::llama::{randomize, variants};
    use crate::models::llama::LlamaConfig;
    use crate::rng::Rng;

    /// The cache's logits equal a full forward's, fed in one chunk, in chunks, and one token
    /// at a time, for every variant, past one [`CHUNK`].
    #[test]
    fn cached_logits_equal_the_full_forward() {
        let seq = CHUNK + 9;
        for (label, config) in variants() {
            let config = LlamaConfig {
                context: seq,
                ..config
            };
            let vocab = config.vocab;
            let mut model = Llama::new(config, 5).unwrap();
            let mut rng = Rng::new(2);
            randomize(&mut model, &mut rng);
            let tokens: Vec<u32> = (0..seq).map(|_| rng.below(vocab) as u32).collect();
            model.forward(&tokens, 1, None).unwrap();
            let full = model.logits().to_vec();
            let mut decoder = LlamaDecoder::new(&mut model, seq).unwrap();
            let last = decoder.push(&tokens).unwrap().to_vec();
            decoder.reset();
            decoder.push(&tokens[..3]).unwrap();
            for (t, &token) in tokens.iter().enumerate().skip(3) {
                let logits = decoder.push(&[token]).unwrap();
                let row = &full[t * vocab..][..vocab];
                let worst = logits
                    .iter()
                    .zip(row)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(worst < 1e-4, "{label}, position {t}: {worst}");
            }
            let row = &full[(seq - 1) * vocab..];
            let worst = last
                .iter()
                .zip(row)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-4, "{label}, one push: {worst}");
            assert!(decoder.push(&[0]).is_err(), "the cache is full");
        }
    }
}
