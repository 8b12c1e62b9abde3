//! Where the residual connection and the normalization sit around each sublayer.
//!
//! For a sublayer `F` (attention or MLP) and the residual stream `x`:
//!
//! | placement | one sublayer | final norm |
//! |---|---|---|
//! | `post-ln` | `x = Norm(x + F(x))` (Vaswani et al. 2017) | no |
//! | `pre-ln` | `x = x + F(Norm(x))` (GPT-2) | yes |
//! | `sandwich` | `x = x + Norm₂(F(Norm₁(x)))` (CogView) | yes |
//! | `deep-norm` | `x = Norm(α·x + F(x))`, `α = (2L)^¼` (DeepNet) | no |
//! | `re-zero` | `x = x + a·F(x)`, learned `a` starting at 0 | no |
//! | `resi-dual` | `x_post = Norm(x_post + F(x_post))`, `x_dual = x_dual + F(x_post)` | output `x_post + Norm(x_dual)` |
//! | `no-norm` | `x = x + F(x)` (ablation) | no |
//! | `no-residual` | `x = F(Norm(x))` (ablation) | yes |
//!
//! `L` is the number of layers (blocks); each block has two sublayers.
//!
//! ```
//! use resnorm::models::gpt::Placement;
//! let p: Placement = "deep-norm".parse().unwrap();
//! assert_eq!(p, Placement::DeepNorm);
//! assert_eq!(p.to_string(), "deep-norm");
//! assert!((p.residual_scale(12) - 24f32.powf(0.25)).abs() < 1e-6);
//! assert!("pre_ln".parse::<Placement>().is_err());
//! ```

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One residual/normalization wiring of a Transformer block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// `x = Norm(x + F(x))`.
    PostLn,
    /// `x = x + F(Norm(x))`, final norm.
    PreLn,
    /// `x = x + Norm₂(F(Norm₁(x)))`, final norm.
    Sandwich,
    /// `x = Norm(α·x + F(x))` with DeepNet's `α` and `β` initialization.
    DeepNorm,
    /// `x = x + a·F(x)`, `a` learned, initialized to 0; no norms.
    ReZero,
    /// Post-LN stream plus an un-normalized dual stream, joined at the output.
    ResiDual,
    /// `x = x + F(x)`: residual only.
    NoNorm,
    /// `x = F(Norm(x))`: normalization only.
    NoResidual,
}

impl Placement {
    /// Every placement, in the order reports list them.
    pub const ALL: [Placement; 8] = [
        Placement::PreLn,
        Placement::PostLn,
        Placement::Sandwich,
        Placement::DeepNorm,
        Placement::ReZero,
        Placement::ResiDual,
        Placement::NoNorm,
        Placement::NoResidual,
    ];

    /// The spelling used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Placement::PostLn => "post-ln",
            Placement::PreLn => "pre-ln",
            Placement::Sandwich => "sandwich",
            Placement::DeepNorm => "deep-norm",
            Placement::ReZero => "re-zero",
            Placement::ResiDual => "resi-dual",
            Placement::NoNorm => "no-norm",
            Placement::NoResidual => "no-residual",
        }
    }

    /// True when the output of the last block passes through `ln_f`.
    pub fn has_final_norm(self) -> bool {
        matches!(
            self,
            Placement::PreLn | Placement::Sandwich | Placement::NoResidual | Placement::ResiDual
        )
    }

    /// True when a second, un-normalized residual stream runs beside the first and joins it
    /// at the output (resi-dual): the one place that decides it, for training and decoding.
    pub fn has_dual_stream(self) -> bool {
        self == Placement::ResiDual
    }

    /// True when any norm layer exists (so the norm kind matters).
    pub fn normalizes(self) -> bool {
        !matches!(self, Placement::ReZero | Placement::NoNorm)
    }

    /// DeepNorm's `α = (2L)^¼` multiplying the residual stream; 1 for every other placement.
    pub fn residual_scale(self, layers: usize) -> f32 {
        match self {
            Placement::DeepNorm => (2.0 * layers as f32).powf(0.25),
            _ => 1.0,
        }
    }

    /// DeepNorm's `β = (8L)^(-¼)` gain for the value, attention-output and MLP weights at
    /// initialization; `None` for every other placement.
    pub fn deep_norm_beta(self, layers: usize) -> Option<f32> {
        match self {
            Placement::DeepNorm => Some((8.0 * layers as f32).powf(-0.25)),
            _ => None,
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Placement {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Placement::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Placement::ALL.iter().map(|p| p.name()).collect();
                Error::Config(format!(
                    "unknown placement '{s}'; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}
