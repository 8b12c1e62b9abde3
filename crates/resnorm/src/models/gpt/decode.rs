//! Incremental decoding with a key/value cache, and sampling.
//!
//! A [`Decoder`] feeds a [`Gpt`] one token at a time. Every attention unit keeps the keys and
//! values of the tokens seen so far (`[context, C]` each, heads side by side), so token `t`
//! costs one row through every layer plus attention over `t + 1` cached rows, instead of a
//! forward pass over the whole prefix:
//!
//! ```text
//! x = wte[token] + wpe[t]
//! every unit k, wired by its Placement exactly as in training (ResidualUnit::forward_with):
//!     attention:  [q | k | v] = h·W_attn + b;  K[t] = k;  V[t] = v
//!                 per head: p = softmax(q·K[0..=t]ᵀ / √d);  y = p·V[0..=t];  F = y·W_proj + b
//!     MLP:        F = GELU(h·W_fc + b)·W_proj + b
//!     (resi-dual also advances its dual stream: d' = d + F)
//! logits = z · wteᵀ,  z = the final norm of the last stream, as in training (head.rs)
//! ```
//! The logits equal row `t` of a full forward pass over the same tokens, up to rounding
//! (tested for every placement).
//!
//! **A full context.** Positions are learned absolute embeddings, so a model never sees more
//! than `context` tokens. [`generate`] therefore slides like nanoGPT's crop: once the cache
//! holds `context` tokens, the next token is preceded by a recomputation of the last
//! `context - 1` tokens at positions `0..context - 1`, so every sampled token sees exactly the
//! last `context` tokens, as a full forward over that window would. Past that point each
//! token costs a refill of the cache; sampling stays exact rather than approximating with
//! shifted positions.
//!
//! **Sampling.** Each token is drawn by [`crate::models::sampling::sample`] (temperature,
//! top-k, one `uniform_f64` of the [`Rng`]), the rule shared with the Llama family.
//!
//! ```
//! use resnorm::models::gpt::{generate, Decoder, Gpt, GptConfig, Sampling};
//! use resnorm::rng::Rng;
//! let config = GptConfig { layers: 1, heads: 2, width: 8, context: 4, vocab: 7, ..GptConfig::default() };
//! let mut model = Gpt::new(config, 3).unwrap();
//! let mut decoder = Decoder::new(&model);
//! let cached = decoder.push(5).unwrap().to_vec();
//! model.forward(&[5], 1, None).unwrap();
//! assert!(cached.iter().zip(model.logits()).all(|(a, b)| (a - b).abs() < 1e-5));
//!
//! let sampling = Sampling { temperature: 1.0, top_k: 3 };
//! let tokens = generate(&model, &[1, 2], 10, sampling, &mut Rng::new(0)).unwrap();
//! assert_eq!(tokens.len(), 10); // more than the context: the window slides
//! assert!(tokens.iter().all(|&t| t < 7));
//! ```

use super::head::HeadActs;
use super::unit::{UnitActs, UnitShared};
use super::{Gpt, Sublayer};
use crate::kernels::attention::{attention_decode, AttentionShape, Rows};
use crate::models::sampling::sample;
pub use crate::models::sampling::Sampling;
use crate::rng::Rng;
use crate::{Error, Result};

/// A model and the cached keys and values of the tokens fed so far.
#[derive(Debug)]
pub struct Decoder<'m> {
    model: &'m Gpt,
    len: usize,
    /// Per attention unit: keys and values, `[context, C]` each.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// The residual stream (and resi-dual's dual stream) before and after a unit: one row.
    streams: [Vec<f32>; 2],
    duals: [Vec<f32>; 2],
    acts: Vec<UnitActs>,
    shared: UnitShared,
    qkv: Vec<f32>,
    attended: Vec<f32>,
    scores: Vec<f32>,
    head: HeadActs,
    logits: Vec<f32>,
}

impl<'m> Decoder<'m> {
    /// An empty cache for `model`.
    pub fn new(model: &'m Gpt) -> Self {
        let config = model.config();
        let (width, context) = (config.width, config.context);
        let attention_units = model.units.len() / 2;
        let row = || vec![0.0; width];
        Decoder {
            model,
            len: 0,
            keys: vec![vec![0.0; context * width]; attention_units],
            values: vec![vec![0.0; context * width]; attention_units],
            streams: [row(), row()],
            duals: [row(), row()],
            acts: model
                .units
                .iter()
                .map(|u| u.new_acts(1, 1, width))
                .collect(),
            shared: UnitShared::new(1, width),
            qkv: vec![0.0; 3 * width],
            attended: row(),
            scores: vec![0.0; config.heads * context],
            head: HeadActs::new(config, 1),
            logits: vec![0.0; config.vocab],
        }
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every cached token.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// The logits after the last [`Decoder::push`] (zeros before the first).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Feeds `token` at the next position and returns the logits `[V]` for the token after
    /// it. A full cache (`context` tokens) or an id outside the vocabulary is an error.
    pub fn push(&mut self, token: u32) -> Result<&[f32]> {
        const OP: &str = "Decoder::push";
        let config = self.model.config();
        let (width, context, vocab) = (config.width, config.context, config.vocab);
        if self.len == context {
            return Err(Error::invalid(
                OP,
                format!("the cache is full ({context} tokens); reset it and refill a window"),
            ));
        }
        if token as usize >= vocab {
            return Err(Error::invalid(
                OP,
                format!("token {token} is outside the vocabulary of {vocab}"),
            ));
        }
        let position = self.len;
        let Decoder {
            model,
            keys,
            values,
            streams,
            duals,
            acts,
            shared,
            qkv,
            attended,
            scores,
            ..
        } = self;
        let wte = &model.embedding.wte.value[token as usize * width..][..width];
        let wpe = &model.embedding.wpe.value[position * width..][..width];
        for ((x, &t), &p) in streams[0].iter_mut().zip(wte).zip(wpe) {
            *x = t + p;
        }
        let resi_dual = model.config().placement.has_dual_stream();
        if resi_dual {
            duals[0].copy_from_slice(&streams[0]);
        }
        for (k, unit) in model.units.iter().enumerate() {
            let (first, second) = streams.split_at_mut(1);
            let (x_in, x_out) = if k % 2 == 0 {
                (&first[0], &mut second[0])
            } else {
                (&second[0], &mut first[0])
            };
            let (d_first, d_second) = duals.split_at_mut(1);
            let dual = resi_dual.then(|| {
                if k % 2 == 0 {
                    (&d_first[0][..], &mut d_second[0][..])
                } else {
                    (&d_second[0][..], &mut d_first[0][..])
                }
            });
            let layer = k / 2;
            let cache = (&mut keys[layer][..], &mut values[layer][..]);
            let buffers = (&mut qkv[..], &mut attended[..], &mut scores[..]);
            unit.forward_with(
                x_in,
                x_out,
                dual,
                &mut acts[k],
                shared,
                |h, sublayer_acts, f_out| match &unit.sublayer {
                    Sublayer::Attention {
                        c_attn,
                        core,
                        c_proj,
                    } => {
                        let (qkv, attended, scores) = buffers;
                        c_attn.forward(qkv, h)?;
                        cached_attention(qkv, cache, position, core.heads(), attended, scores)?;
                        c_proj.forward(f_out, attended)
                    }
                    Sublayer::Mlp { .. } => unit.sublayer.forward(h, sublayer_acts, f_out, 1, 1),
                },
            )?;
        }
        self.len += 1;
        let last = model.units.len() % 2;
        let dual = resi_dual.then_some(&duals[last][..]);
        model.head_forward(&streams[last], dual, &mut self.head, &mut self.logits)?;
        Ok(&self.logits)
    }
}

/// Stores this token's key and value at `position`, then attends its query to the cached
/// rows `0..=position` ([`attention_decode`]), writing the heads' outputs side by side.
fn cached_attention(
    qkv: &[f32],
    (keys, values): (&mut [f32], &mut [f32]),
    position: usize,
    heads: usize,
    out: &mut [f32],
    scores: &mut [f32],
) -> Result<()> {
    let width = out.len();
    let context = keys.len() / width;
    keys[position * width..][..width].copy_from_slice(&qkv[width..2 * width]);
    values[position * width..][..width].copy_from_slice(&qkv[2 * width..]);
    let seen = position + 1;
    let shape = AttentionShape::new(1, heads, 1, seen, width / heads).causal();
    let (q, k, v) = (
        Rows::new(qkv, 3 * width, 0, 1),
        Rows::new(keys, width, 0, context),
        Rows::new(values, width, 0, context),
    );
    attention_decode(out, &mut scores[..heads * seen], (q, k, v), &shape, None)
}

/// Samples `count` tokens after `prompt` (nonempty; only its last `context` tokens are
/// used), sliding the window as described in the module documentation.
pub fn generate(
    model: &Gpt,
    prompt: &[u32],
    count: usize,
    sampling: Sampling,
    rng: &mut Rng,
) -> Result<Vec<u32>> {
    const OP: &str = "generate";
    sampling.check(OP, prompt)?;
    crate::threads::busy(|| {
        let context = model.config().context;
        let mut tokens = prompt[prompt.len().saturating_sub(context)..].to_vec();
        let mut decoder = Decoder::new(model);
        for &token in &tokens {
            decoder.push(token)?;
        }
        let mut weights = Vec::with_capacity(model.config().vocab);
        // `count` comes from a flag: a size no allocator can serve is an error, not an abort.
        let mut sampled = Vec::new();
        sampled
            .try_reserve_exact(count)
            .and_then(|()| tokens.try_reserve_exact(count))
            .map_err(|e| Error::invalid(OP, format!("cannot hold {count} tokens: {e}")))?;
        for i in 0..count {
            let next = sample(decoder.logits(), sampling, rng, &mut weights);
            sampled.push(next);
            tokens.push(next);
            if i + 1 == count {
                break;
            }
            if decoder.len() == context {
                decoder.reset();
                for &token in &tokens[tokens.len() - context..tokens.len() - 1] {
                    decoder.push(token)?;
                }
            }
            decoder.push(next)?;
        }
        Ok(sampled)
    })
}
