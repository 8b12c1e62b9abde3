//! Initialization of the encoder-decoder.
//!
//! - `embed.weight`: normal(0, C^(-½)), so that `√C·E[token]` has unit scale (fairseq).
//! - Linear weights: Xavier-normal, `std = gain·√(2/(fan_in+fan_out))`, the fused
//!   projections (`c_attn [C, 3C]`, `c_kv [C, 2C]`) as separate `[C, C]` ones; biases 0.
//!   Gain 1, except under `deep-norm`, where the values' columns, `c_proj` of attention and
//!   MLP and `mlp.c_fc` get DeepNet's `β` (the encoder's in the encoder, the decoder's in
//!   the decoder) and the queries and keys keep gain 1.
//! - Norm gains 1, shifts 0; ReZero gates 0 (by construction).
//!
//! Parameters are drawn in [`Seq2Seq::visit_params`](super::Seq2Seq::visit_params) order
//! from one [`Rng`] seeded once: the same seed gives bit-identical weights.

use super::stack::Stack;
use super::sublayer::Sublayer;
use super::Seq2Seq;
use crate::models::gpt::{Placement, Sublayer as GptSublayer};
use crate::nn::Linear;
use crate::rng::Rng;

pub(super) fn initialize(model: &mut Seq2Seq, seed: u64) {
    let mut rng = Rng::new(seed);
    let config = model.config.clone();
    let width = config.width as f32;
    rng.fill_normal(&mut model.embed.weight.value, 0.0, width.powf(-0.5));
    let deep = config.placement == Placement::DeepNorm;
    let (encoder_beta, decoder_beta) = match deep {
        true => (config.encoder_beta(), config.decoder_beta()),
        false => (1.0, 1.0),
    };
    init_stack(&mut model.encoder.stack, &mut rng, encoder_beta);
    init_stack(&mut model.decoder, &mut rng, decoder_beta);
}

/// Draws every linear weight of `stack` (Xavier-normal, DeepNet's `beta` where it applies).
pub(crate) fn init_stack(stack: &mut Stack, rng: &mut Rng, beta: f32) {
    for unit in &mut stack.units {
        match &mut unit.sublayer {
            Sublayer::Gpt(GptSublayer::Attention { c_attn, c_proj, .. })
            | Sublayer::Bidirectional { c_attn, c_proj, .. } => {
                fused(c_attn, rng, 3, beta);
                xavier(c_proj, rng, beta);
            }
            Sublayer::Gpt(GptSublayer::Mlp { c_fc, c_proj }) => {
                xavier(c_fc, rng, beta);
                xavier(c_proj, rng, beta);
            }
            Sublayer::Cross {
                c_q, c_kv, c_proj, ..
            } => {
                xavier(c_q, rng, 1.0);
                fused(c_kv, rng, 2, beta);
                xavier(c_proj, rng, beta);
            }
        }
    }
}

/// Xavier-normal with `gain` for a `[fan_in, fan_out]` weight; bias 0.
fn xavier(linear: &mut Linear, rng: &mut Rng, gain: f32) {
    let (fan_in, fan_out) = (linear.in_features(), linear.out_features());
    linear.init(rng, gain * (2.0 / (fan_in + fan_out) as f32).sqrt());
}

/// `[C, parts·C]` as `parts` Xavier-normal `[C, C]` projections, the last (the values) with
/// gain `beta`, the others 1; bias 0.
fn fused(linear: &mut Linear, rng: &mut Rng, parts: usize, beta: f32) {
    let width = linear.in_features();
    linear.init(rng, (1.0 / width as f32).sqrt());
    for row in linear.weight.value.chunks_exact_mut(parts * width) {
        row[(parts - 1) * width..]
            .iter_mut()
            .for_each(|v| *v *= beta);
    }
}
