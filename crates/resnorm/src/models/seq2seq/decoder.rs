//! The decoder stack: `M` layers of causal self-attention, cross-attention to the
//! encoder's output, and MLP.
//!
//! ```text
//! per layer i:  y = Unit(decoder.{i}.self_attn)(y)     queries see target positions <= own
//!               y = Unit(decoder.{i}.cross_attn)(y)    keys, values: the encoder's output m
//!               y = Unit(decoder.{i}.mlp)(y)
//! out = the stack's final norm (see stack.rs)
//! ```
//! With right padding, the causal mask alone keeps valid target positions from seeing
//! padded ones; cross-attention sees each sentence's valid source positions.

use super::stack::Stack;
use super::sublayer::Sublayer;
use super::Seq2SeqConfig;
use crate::models::gpt::{ResidualUnit, Sublayer as GptSublayer};
use crate::Result;

/// The decoder stack of `config` (its `decoder_layers`), zero-initialized.
pub fn decoder_stack(config: &Seq2SeqConfig) -> Result<Stack> {
    config.validate()?;
    let (width, heads, layers) = (config.width, config.heads, config.decoder_layers);
    let shape = (config.norm, width, config.eps);
    let alpha = config.decoder_alpha();
    let mut units = Vec::with_capacity(3 * layers);
    for i in 0..layers {
        let p = format!("decoder.{i}");
        let sublayers = [
            (
                Sublayer::Gpt(GptSublayer::attention_named(
                    &format!("{p}.self_attn"),
                    width,
                    heads,
                )?),
                "ln_1",
                "rezero_self",
            ),
            (
                Sublayer::cross(&format!("{p}.cross_attn"), width, heads)?,
                "ln_2",
                "rezero_cross",
            ),
            (
                Sublayer::Gpt(GptSublayer::mlp_named(&format!("{p}.mlp"), width)?),
                "ln_3",
                "rezero_mlp",
            ),
        ];
        for (sublayer, norm, gate) in sublayers {
            let names = (format!("{p}.{norm}"), format!("{p}.{gate}"));
            let unit = ResidualUnit::new(
                config.placement,
                sublayer,
                (&names.0, &names.1),
                shape,
                layers,
            );
            units.push(unit.with_residual_scale(alpha));
        }
    }
    Ok(Stack::new(config.placement, units, "decoder", shape))
}
