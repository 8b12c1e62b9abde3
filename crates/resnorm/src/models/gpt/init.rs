//! Initialization, as GPT-2 except where a placement defines its own.
//!
//! - Embeddings `wte`, `wpe`: normal(0, 0.02). Norm gains 1, shifts 0, biases 0.
//! - Linear weights: normal(0, 0.02); the two projections that write into the residual stream
//!   (`attn.c_proj`, `mlp.c_proj`) normal(0, 0.02/√(2L)) (GPT-2's residual scaling), or
//!   normal(0, 0.02) like the rest when [`GptConfig::residual_scaling`](super::GptConfig::residual_scaling) is off.
//! - `deep-norm` (DeepNet, decoder-only): Xavier-normal, `std = gain·√(2/(fan_in+fan_out))`,
//!   gain 1 for the query and key columns of `c_attn`, gain `β = (8L)^(-¼)` for its value
//!   columns, `attn.c_proj`, `mlp.c_fc` and `mlp.c_proj`.
//! - `re-zero`: the gates `a` start at 0, so every block starts as the identity.
//!
//! Parameters are drawn in [`Gpt::visit_params`] order from one [`Rng`] seeded once, so the
//! same seed gives bit-identical weights.

use super::{Gpt, Sublayer};
use crate::nn::linear::Linear;
use crate::rng::Rng;

/// GPT-2's standard deviation for weights and embeddings.
pub const GPT2_STD: f32 = 0.02;

pub(super) fn initialize(model: &mut Gpt, seed: u64) {
    let mut rng = Rng::new(seed);
    let layers = model.config.layers;
    model.embedding.init(&mut rng, GPT2_STD);
    let beta = model.config.placement.deep_norm_beta(layers);
    let residual_std = if model.config.residual_scaling {
        GPT2_STD / (2.0 * layers as f32).sqrt()
    } else {
        GPT2_STD
    };
    for unit in &mut model.units {
        let is_attention = matches!(unit.sublayer, Sublayer::Attention { .. });
        let [input, output] = unit.sublayer.linears_mut();
        match beta {
            Some(beta) => {
                if is_attention {
                    xavier_attention(input, &mut rng, beta);
                } else {
                    xavier(input, &mut rng, beta);
                }
                xavier(output, &mut rng, beta);
            }
            None => {
                input.init(&mut rng, GPT2_STD);
                output.init(&mut rng, residual_std);
            }
        }
        // Norm gains/shifts start at 1/0 and ReZero gates at 0 by construction.
    }
}

/// Xavier-normal with `gain` for a `[fan_in, fan_out]` weight; bias 0.
fn xavier(linear: &mut Linear, rng: &mut Rng, gain: f32) {
    let (fan_in, fan_out) = (linear.in_features(), linear.out_features());
    linear.init(rng, gain * (2.0 / (fan_in + fan_out) as f32).sqrt());
}

/// `c_attn [C, 3C]` as three `[C, C]` projections: queries and keys with gain 1, values with
/// gain `beta`; bias 0.
fn xavier_attention(c_attn: &mut Linear, rng: &mut Rng, beta: f32) {
    let width = c_attn.in_features();
    let std = (1.0 / width as f32).sqrt(); // √(2 / (C + C))
    c_attn.init(rng, std);
    for row in c_attn.weight.value.chunks_exact_mut(3 * width) {
        for v in &mut row[2 * width..] {
            *v *= beta;
        }
    }
}
