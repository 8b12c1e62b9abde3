//! Incremental decoding for translation: encode the sources once, then run the decoder one
//! target position at a time for a batch of sentences, with a key/value cache for
//! self-attention and cross-attention's keys and values computed once per sentence.
//!
//! ```text
//! m = Encoder(√C·E[src] + P)                 once
//! [K_i | V_i]_cross = m·W_kv,i + b_kv,i       once per decoder layer i
//! step t:  y₀ = √C·E[token_t] + P[t]  (one row per sentence)
//!          self-attention: append k_t, v_t to layer i's cache; attend over positions ≤ t
//!          cross-attention: attend to the cached source keys (each sentence's valid ones)
//!          logits_t = final_norm(y)·Eᵀ
//! ```
//! Each unit is wired by the same `ResidualUnit::forward_with` as in training, so a step's
//! logits equal the full forward's at that position (the tests check it).
//!
//! For beam search ([`StepDecoder::with_beams`]) each sentence has `K` rows (its beams): the
//! source is encoded once per sentence and its cross-attention keys and values are shared by
//! its beams (the `K` rows are `K` queries of one attention sequence), while each row has its
//! own self-attention cache, which [`StepDecoder::reorder`] gathers by the chosen parents.
//!
//! ```
//! use resnorm::models::seq2seq::decode::{greedy, StepDecoder};
//! use resnorm::models::seq2seq::{Seq2Seq, Seq2SeqConfig};
//! let config = Seq2SeqConfig { vocab: 11, width: 8, heads: 2, encoder_layers: 1, decoder_layers: 1, max_len: 6, ..Seq2SeqConfig::default() };
//! let model = Seq2Seq::new(config, 1).unwrap();
//! let (src, lengths) = ([4, 5, 6, 7, 8, 0], [3, 2]); // two sentences, padded to 3
//! let mut decoder = StepDecoder::new(&model, &src, &lengths, 6).unwrap();
//! let logits = decoder.step(&[1, 1]).unwrap(); // the start token for both
//! assert_eq!(logits.len(), 2 * 11);
//! let out = greedy(&model, &src, &lengths, (1, 2), 5).unwrap();
//! assert!(out.iter().all(|s| s.len() <= 5 && !s.contains(&2)));
//! ```

use super::sublayer::{Context, Sublayer, SublayerActs};
use super::Seq2Seq;
use crate::kernels::attention::{attention_decode, AttentionShape, Rows};
use crate::kernels::{matmul, MatDims, Trans};
use crate::models::gpt::{Sublayer as GptSublayer, UnitActs, UnitShared};
use crate::nn::norm::NormSaved;
use crate::AlignedVec;
use crate::{Error, Result};

/// The decoder of `model` run one position at a time for a batch of encoded sentences.
#[derive(Debug)]
pub struct StepDecoder<'m> {
    model: &'m Seq2Seq,
    batch: usize,
    beams: usize,
    src_seq: usize,
    capacity: usize,
    len: usize,
    src_lengths: Vec<usize>,
    /// Per decoder layer, the source's `[B·S, 2C]` keys and values (biases added).
    cross: Vec<AlignedVec>,
    /// Per decoder layer, the target's keys and values so far, `[B·K·capacity, C]` each.
    keys: Vec<AlignedVec>,
    values: Vec<AlignedVec>,
    /// Where [`StepDecoder::reorder`] gathers a cache before swapping it in.
    spare: AlignedVec,
    streams: [AlignedVec; 2],
    duals: [AlignedVec; 2],
    acts: Vec<UnitActs<SublayerActs>>,
    shared: UnitShared,
    qkv: AlignedVec,
    attended: AlignedVec,
    probs: AlignedVec,
    out: AlignedVec,
    normed_dual: AlignedVec,
    saved: NormSaved,
    logits: AlignedVec,
}

impl<'m> StepDecoder<'m> {
    /// Encodes `src` (`[B, S]`, right padded, `src_lengths[b]` valid tokens each) and makes
    /// room for `capacity` target positions (at most the model's `max_len`).
    pub fn new(
        model: &'m Seq2Seq,
        src: &[u32],
        src_lengths: &[usize],
        capacity: usize,
    ) -> Result<Self> {
        Self::with_beams(model, src, src_lengths, 1, capacity)
    }

    /// As [`StepDecoder::new`], with `beams` rows per sentence (row `b·K + j` is beam `j` of
    /// sentence `b`), all of them fed the same tokens until [`StepDecoder::reorder`] says
    /// otherwise.
    pub fn with_beams(
        model: &'m Seq2Seq,
        src: &[u32],
        src_lengths: &[usize],
        beams: usize,
        capacity: usize,
    ) -> Result<Self> {
        const OP: &str = "StepDecoder::new";
        let config = model.config();
        let (c, batch) = (config.width, src_lengths.len());
        if batch == 0 || src.is_empty() || !src.len().is_multiple_of(batch) {
            return Err(Error::shape(
                OP,
                format!("{} source tokens for {batch} sentences", src.len()),
            ));
        }
        if beams == 0 {
            return Err(Error::invalid(OP, "beams must be at least 1"));
        }
        if capacity == 0 || capacity > config.max_len {
            return Err(Error::invalid(
                OP,
                format!("capacity {capacity} must be in 1..={}", config.max_len),
            ));
        }
        let src_seq = src.len() / batch;
        super::encoder::check_lengths(OP, src_lengths, batch, src_seq)?;
        let stack = &model.encoder.stack;
        let mut encoded = stack.new_acts(batch, src_seq, 0);
        model.embed.forward(encoded.input_mut(), src, src_seq)?;
        let ctx = Context {
            batch,
            seq: src_seq,
            lengths: Some(src_lengths),
            memory: None,
        };
        stack.forward(&mut encoded, &ctx)?;
        let memory = encoded.output();
        let mut cross = Vec::new();
        for unit in &model.decoder.units {
            if let Sublayer::Cross { c_kv, .. } = &unit.sublayer {
                let mut kv = AlignedVec::zeros(batch * src_seq * 2 * c);
                c_kv.forward(&mut kv, memory)?;
                cross.push(kv);
            }
        }
        let (layers, n) = (cross.len(), batch * beams);
        let cache = || {
            (0..layers)
                .map(|_| AlignedVec::zeros(n * capacity * c))
                .collect()
        };
        let rows = || AlignedVec::zeros(n * c);
        let dual = model.placement().has_dual_stream();
        let kind = model.decoder.ln_f.as_ref().map_or(config.norm, |n| n.kind);
        Ok(StepDecoder {
            model,
            batch,
            beams,
            src_seq,
            capacity,
            len: 0,
            src_lengths: src_lengths.to_vec(),
            cross,
            keys: cache(),
            values: cache(),
            spare: AlignedVec::zeros(if beams > 1 { n * capacity * c } else { 0 }),
            streams: [rows(), rows()],
            duals: [rows(), rows()],
            acts: model.decoder.unit_acts(n, src_seq),
            shared: UnitShared::new(n, c),
            qkv: AlignedVec::zeros(n * 3 * c),
            attended: rows(),
            probs: AlignedVec::zeros(n * config.heads * capacity.max(src_seq)),
            out: AlignedVec::zeros(if model.decoder.ln_f.is_some() {
                n * c
            } else {
                0
            }),
            normed_dual: AlignedVec::zeros(if dual { n * c } else { 0 }),
            saved: NormSaved::new(kind, n),
            logits: AlignedVec::zeros(n * config.vocab),
        })
    }

    /// Rows fed per step: sentences × beams.
    pub fn rows(&self) -> usize {
        self.batch * self.beams
    }

    /// Makes row `r` continue from row `parents[r]`'s history (a beam of the same sentence):
    /// each self-attention cache is gathered into a spare buffer, which is then swapped in,
    /// so nothing is allocated.
    pub fn reorder(&mut self, parents: &[usize]) -> Result<()> {
        const OP: &str = "StepDecoder::reorder";
        let (rows, beams) = (self.rows(), self.beams);
        if parents.len() != rows {
            return Err(Error::shape(
                OP,
                format!("{} parents for {rows} rows", parents.len()),
            ));
        }
        if let Some(r) = (0..rows).find(|&r| parents[r] / beams != r / beams) {
            return Err(Error::invalid(
                OP,
                format!("row {r}'s parent {} is another sentence's", parents[r]),
            ));
        }
        if parents.iter().enumerate().all(|(r, &p)| r == p) {
            return Ok(());
        }
        let (span, used) = (self.capacity * self.model.config().width, self.len);
        let used = used * self.model.config().width;
        for cache in self.keys.iter_mut().chain(self.values.iter_mut()) {
            for (row, &parent) in self.spare.chunks_exact_mut(span).zip(parents) {
                row[..used].copy_from_slice(&cache[parent * span..][..used]);
            }
            std::mem::swap(cache, &mut self.spare);
        }
        Ok(())
    }

    /// Positions fed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first step.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feeds one token per row at the next position and returns the logits `[B·K, V]` for
    /// the token after it.
    pub fn step(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        const OP: &str = "StepDecoder::step";
        if tokens.len() != self.rows() {
            return Err(Error::shape(
                OP,
                format!("{} tokens for {} rows", tokens.len(), self.rows()),
            ));
        }
        if self.len == self.capacity {
            return Err(Error::invalid(
                OP,
                format!("all {} target positions are used", self.capacity),
            ));
        }
        let model = self.model;
        let config = model.config();
        let (c, heads, position) = (config.width, config.heads, self.len);
        let (batch, beams, rows) = (self.batch, self.beams, self.rows());
        let d = c / heads;
        let StepDecoder {
            src_seq,
            capacity,
            src_lengths,
            cross,
            keys,
            values,
            streams,
            duals,
            acts,
            shared,
            qkv,
            attended,
            probs,
            ..
        } = self;
        let (src_seq, capacity) = (*src_seq, *capacity);
        model.embed.forward_at(&mut streams[0], tokens, position)?;
        let dual = model.placement().has_dual_stream();
        if dual {
            duals[0].copy_from_slice(&streams[0]);
        }
        let (mut self_layer, mut cross_layer) = (0, 0);
        for (k, unit) in model.decoder.units.iter().enumerate() {
            let [a, b] = &mut *streams;
            let (x_in, x_out) = if k % 2 == 0 { (&*a, b) } else { (&*b, a) };
            let [da, db] = &mut *duals;
            let dual = dual.then(|| {
                if k % 2 == 0 {
                    (&da[..], &mut db[..])
                } else {
                    (&db[..], &mut da[..])
                }
            });
            let scratch = (&mut qkv[..], &mut attended[..], &mut probs[..]);
            let (keys, values, cross, lengths) =
                (&mut keys[..], &mut values[..], &cross[..], &src_lengths[..]);
            let (li, ci) = (self_layer, cross_layer);
            unit.forward_with(
                x_in,
                x_out,
                dual,
                &mut acts[k],
                shared,
                |h, sub_acts, f_out| {
                    let (qkv, attended, probs) = scratch;
                    match &unit.sublayer {
                        Sublayer::Gpt(GptSublayer::Attention { c_attn, c_proj, .. }) => {
                            c_attn.forward(qkv, h)?;
                            for (b, row) in qkv.chunks_exact(3 * c).enumerate() {
                                let at = (b * capacity + position) * c;
                                keys[li][at..at + c].copy_from_slice(&row[c..2 * c]);
                                values[li][at..at + c].copy_from_slice(&row[2 * c..]);
                            }
                            let shape =
                                AttentionShape::new(rows, heads, 1, position + 1, d).causal();
                            let operands = (
                                Rows::new(qkv, 3 * c, 0, 1),
                                Rows::new(&keys[li], c, 0, capacity),
                                Rows::new(&values[li], c, 0, capacity),
                            );
                            let probs = &mut probs[..shape.probs_len()];
                            attention_decode(attended, probs, operands, &shape, None)?;
                            c_proj.forward(f_out, attended)
                        }
                        Sublayer::Cross { c_q, c_proj, .. } => {
                            let q = &mut qkv[..rows * c];
                            c_q.forward(q, h)?;
                            let shape = AttentionShape::new(batch, heads, beams, src_seq, d);
                            let operands = (
                                Rows::new(q, c, 0, beams),
                                Rows::new(&cross[ci], 2 * c, 0, src_seq),
                                Rows::new(&cross[ci], 2 * c, c, src_seq),
                            );
                            let probs = &mut probs[..shape.probs_len()];
                            attention_decode(attended, probs, operands, &shape, Some(lengths))?;
                            c_proj.forward(f_out, attended)
                        }
                        sublayer => {
                            let ctx = Context {
                                batch: rows,
                                seq: 1,
                                lengths: None,
                                memory: None,
                            };
                            sublayer.forward(h, sub_acts, f_out, &ctx)
                        }
                    }
                },
            )?;
            match &unit.sublayer {
                Sublayer::Gpt(GptSublayer::Attention { .. }) => self_layer += 1,
                Sublayer::Cross { .. } => cross_layer += 1,
                _ => {}
            }
        }
        self.len += 1;
        let last = model.decoder.units.len() % 2;
        let dual = dual.then_some(&self.duals[last][..]);
        let x = &self.streams[last];
        let saved = (&mut self.normed_dual[..], &mut self.saved);
        model.decoder.final_norm(x, dual, saved, &mut self.out)?;
        let z = if self.out.is_empty() {
            &x[..]
        } else {
            &self.out[..]
        };
        let dims = MatDims {
            m: rows,
            k: c,
            n: config.vocab,
        };
        let trans = Trans { a: false, b: true };
        matmul(
            &mut self.logits,
            z,
            &model.embed.weight.value,
            dims,
            trans,
            false,
        )?;
        Ok(&self.logits)
    }
}

/// Greedy decoding of `src` (`[B, S]`, `src_lengths[b]` valid tokens each): from the start
/// token `bos`, the most likely next token until `eos` or `max_len` tokens; returns each
/// sentence's tokens without `bos` and `eos`.
pub fn greedy(
    model: &Seq2Seq,
    src: &[u32],
    src_lengths: &[usize],
    (bos, eos): (u32, u32),
    max_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let vocab = model.config().vocab;
    let batch = src_lengths.len();
    let mut decoder = StepDecoder::new(model, src, src_lengths, max_len)?;
    let mut tokens = vec![bos; batch];
    let mut out = vec![Vec::new(); batch];
    let mut done = vec![false; batch];
    for _ in 0..max_len {
        let logits = decoder.step(&tokens)?;
        for (b, row) in logits.chunks_exact(vocab).enumerate() {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |m, (i, &v)| if v > m.1 { (i, v) } else { m },
                );
            tokens[b] = best.0 as u32;
            if !done[b] {
                done[b] = tokens[b] == eos;
                if !done[b] {
                    out[b].push(tokens[b]);
                }
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    Ok(out)
}
