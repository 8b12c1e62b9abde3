//! From a body's hidden states to one vector per sentence, forward and backward.
//!
//! Rows are right-padded to `seq` tokens; row `b` has `n_b ≥ 1` real tokens. With hidden
//! states `h [B, seq, C]`:
//!
//! ```text
//! cls:   p_b = h[b, 0]                          dh[b, 0] = dp_b
//! last:  p_b = h[b, n_b − 1]                    dh[b, n_b − 1] = dp_b
//! mean:  p_b = (1/n_b) Σ_{t<n_b} h[b, t]         dh[b, t] = dp_b / n_b   (t < n_b)
//! every other position (the pads) gets dh = 0, so pads add nothing to any gradient
//! ```
//! Under causal attention the last real token has read the whole sentence and no pad; under
//! bidirectional attention so has the first, the [CLS] token an encoder body prepends; mean
//! pooling skips the pads explicitly.
//!
//! ```
//! use resnorm::classify::Pooling;
//! let h = [1.0, 2.0, 3.0, 4.0, 9.0, 9.0]; // B = 1, seq = 3, C = 2; one pad
//! let mut p = [0.0; 2];
//! Pooling::Mean.forward(&h, &[2], 3, &mut p).unwrap();
//! assert_eq!(p, [2.0, 3.0]);
//! Pooling::Last.forward(&h, &[2], 3, &mut p).unwrap();
//! assert_eq!(p, [3.0, 4.0]);
//! Pooling::Cls.forward(&h, &[2], 3, &mut p).unwrap();
//! assert_eq!(p, [1.0, 2.0]);
//! let mut dh = [7.0; 6];
//! Pooling::Mean.backward(&[1.0, 2.0], &[2], 3, &mut dh).unwrap();
//! assert_eq!(dh, [0.5, 1.0, 0.5, 1.0, 0.0, 0.0]);
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How a sentence's hidden states become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first position's state: the [CLS] token of an encoder body.
    Cls,
    /// The last real token's state.
    Last,
    /// The mean over the real tokens.
    Mean,
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooling::Cls => "cls",
            Pooling::Last => "last",
            Pooling::Mean => "mean",
        })
    }
}

impl FromStr for Pooling {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cls" => Ok(Pooling::Cls),
            "last" => Ok(Pooling::Last),
            "mean" => Ok(Pooling::Mean),
            _ => Err(Error::Config(format!(
                "unknown pooling '{s}'; expected cls, last or mean"
            ))),
        }
    }
}

/// `C`, after checking the sizes: `hidden` is `[lengths.len(), seq, C]`, `pooled`
/// `[lengths.len(), C]`, and every length in `1..=seq`.
fn check(
    op: &'static str,
    hidden: usize,
    lengths: &[usize],
    seq: usize,
    pooled: usize,
) -> Result<usize> {
    let batch = lengths.len();
    if batch == 0
        || seq == 0
        || !pooled.is_multiple_of(batch)
        || hidden != batch * seq * (pooled / batch)
    {
        return Err(Error::shape(
            op,
            format!("{hidden} hidden and {pooled} pooled values for {batch} rows of {seq}"),
        ));
    }
    if let Some(n) = lengths.iter().find(|&&n| n == 0 || n > seq) {
        return Err(Error::invalid(
            op,
            format!("a row of {n} tokens in {seq} positions"),
        ));
    }
    Ok(pooled / batch)
}

impl Pooling {
    /// `pooled [B, C]` from `hidden [B, seq, C]` and the rows' real lengths.
    pub fn forward(
        self,
        hidden: &[f32],
        lengths: &[usize],
        seq: usize,
        pooled: &mut [f32],
    ) -> Result<()> {
        let width = check("Pooling::forward", hidden.len(), lengths, seq, pooled.len())?;
        for (b, (out, &n)) in pooled.chunks_exact_mut(width).zip(lengths).enumerate() {
            let row = |t: usize| &hidden[(b * seq + t) * width..][..width];
            match self {
                Pooling::Cls => out.copy_from_slice(row(0)),
                Pooling::Last => out.copy_from_slice(row(n - 1)),
                Pooling::Mean => {
                    out.fill(0.0);
                    for t in 0..n {
                        out.iter_mut().zip(row(t)).for_each(|(o, h)| *o += h);
                    }
                    let scale = 1.0 / n as f32;
                    out.iter_mut().for_each(|o| *o *= scale);
                }
            }
        }
        Ok(())
    }

    /// Writes `d_hidden [B, seq, C]` from `d_pooled [B, C]` (zero at the pads).
    pub fn backward(
        self,
        d_pooled: &[f32],
        lengths: &[usize],
        seq: usize,
        d_hidden: &mut [f32],
    ) -> Result<()> {
        let width = check(
            "Pooling::backward",
            d_hidden.len(),
            lengths,
            seq,
            d_pooled.len(),
        )?;
        d_hidden.fill(0.0);
        for (b, (dp, &n)) in d_pooled.chunks_exact(width).zip(lengths).enumerate() {
            let rows = &mut d_hidden[b * seq * width..][..seq * width];
            match self {
                Pooling::Cls => rows[..width].copy_from_slice(dp),
                Pooling::Last => rows[(n - 1) * width..][..width].copy_from_slice(dp),
                Pooling::Mean => {
                    let scale = 1.0 / n as f32;
                    for row in rows.chunks_exact_mut(width).take(n) {
                        row.iter_mut().zip(dp).for_each(|(d, g)| *d = g * scale);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_outside_the_row_are_refused() {
        let mut p = [0.0; 2];
        assert!(Pooling::Last.forward(&[0.0; 6], &[0], 3, &mut p).is_err());
        assert!(Pooling::Last.forward(&[0.0; 6], &[4], 3, &mut p).is_err());
        assert!(Pooling::Last.forward(&[0.0; 5], &[1], 3, &mut p).is_err());
        assert!("first".parse::<Pooling>().is_err());
    }
}
