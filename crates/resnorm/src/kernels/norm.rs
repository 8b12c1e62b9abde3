//! Types shared by the normalization kernels: which normalization ([`NormKind`]), its
//! parameters ([`NormWeights`]), their gradients ([`NormGrads`]), the per-row statistics saved
//! for backward ([`NormStats`], [`NormStatsMut`]), and the size checks every kernel runs before
//! it touches an element.
//!
//! A normalized row is `y = xhat ⊙ weight (+ bias)` with `xhat = (x - mean) · rstd`. For
//! LayerNorm `mean` is the row mean and `rstd = 1 / sqrt(var + eps)` with the biased variance;
//! RMSNorm is the same with the mean fixed at zero, `rstd = 1 / sqrt(mean(x²) + eps)`, and no
//! bias.
//!
//! ```
//! use resnorm::kernels::norm::{NormKind, NormWeights, DEFAULT_EPS};
//! let kind: NormKind = "rms".parse().unwrap();
//! assert_eq!(kind, NormKind::Rms);
//! assert_eq!(NormKind::Layer.to_string(), "layer");
//! assert!("batch".parse::<NormKind>().is_err());
//! let weight = [1.0f32; 4];
//! let params = NormWeights { weight: &weight, bias: None, eps: DEFAULT_EPS };
//! assert_eq!(params.cols(), 4);
//! ```

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The `eps` PyTorch's `nn.LayerNorm` and GPT-2 use.
pub const DEFAULT_EPS: f32 = 1e-5;

/// Which normalization a layer applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormKind {
    /// LayerNorm: subtract the row mean, divide by the row standard deviation.
    Layer,
    /// RMSNorm: divide by the row's root mean square, no centering and no bias.
    Rms,
}

impl NormKind {
    /// The spelling used by [`fmt::Display`], [`FromStr`] and serde.
    pub fn as_str(self) -> &'static str {
        match self {
            NormKind::Layer => "layer",
            NormKind::Rms => "rms",
        }
    }
}

impl fmt::Display for NormKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NormKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "layer" => Ok(NormKind::Layer),
            "rms" => Ok(NormKind::Rms),
            other => Err(Error::invalid(
                "NormKind",
                format!("unknown normalization {other:?}, expected \"layer\" or \"rms\""),
            )),
        }
    }
}

/// The parameters of a normalization: a per-column scale, an optional per-column shift and
/// the `eps` added to the variance. The row width `cols` is `weight.len()`.
#[derive(Clone, Copy, Debug)]
pub struct NormWeights<'a> {
    /// Scale, one per column (`cols` entries, at least one).
    pub weight: &'a [f32],
    /// Shift, one per column; must be `None` for RMSNorm.
    pub bias: Option<&'a [f32]>,
    /// Added to the variance (or mean square) before the square root; finite and `> 0`.
    pub eps: f32,
}

impl<'a> NormWeights<'a> {
    /// The normalized width, `weight.len()`.
    pub fn cols(&self) -> usize {
        self.weight.len()
    }

    /// The first `n` entries of the weight and bias (panics if they are shorter).
    ///
    /// A row kernel cuts every slice it reads to its output row's length, already checked
    /// equal: the loops over the row's chunks then see one length and read every slice
    /// without a bounds check of its own.
    pub(crate) fn cut(&self, n: usize) -> NormWeights<'a> {
        NormWeights {
            weight: &self.weight[..n],
            bias: self.bias.map(|b| &b[..n]),
            eps: self.eps,
        }
    }
}

/// Where a backward pass adds the parameter gradients; `dbias` is present exactly when the
/// forward had a bias.
#[derive(Debug)]
pub struct NormGrads<'a> {
    /// Receives `Σ_rows dy ⊙ xhat` (added, not overwritten).
    pub dweight: &'a mut [f32],
    /// Receives `Σ_rows dy` (added, not overwritten).
    pub dbias: Option<&'a mut [f32]>,
}

/// Per-row statistics written by a forward pass: `rows` entries each. For RMSNorm `mean` may
/// be empty; when it has `rows` entries they are set to zero, the centre RMSNorm uses.
#[derive(Debug)]
pub struct NormStatsMut<'a> {
    /// Row means.
    pub mean: &'a mut [f32],
    /// Row reciprocal standard deviations `1 / sqrt(var + eps)`.
    pub rstd: &'a mut [f32],
}

/// Per-row statistics read by a backward pass, as a forward wrote them. For RMSNorm `mean`
/// may be empty and is ignored otherwise.
#[derive(Clone, Copy, Debug)]
pub struct NormStats<'a> {
    /// Row means.
    pub mean: &'a [f32],
    /// Row reciprocal standard deviations.
    pub rstd: &'a [f32],
}

/// The inputs of one row's backward: upstream gradient, normalized input, and the gradient
/// reaching `x` directly (the skip path of a fused residual add), if any.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackwardRow<'a> {
    /// `∂L/∂y` of the row.
    pub dy: &'a [f32],
    /// The row's input (LayerNorm's `x`, the fused kernels' sum).
    pub x: &'a [f32],
    /// Added to `dx` as it is written.
    pub dsum: Option<&'a [f32]>,
}

impl BackwardRow<'_> {
    /// Every slice of the row cut to its first `n` entries, as [`NormWeights::cut`].
    pub(crate) fn cut(self, n: usize) -> Self {
        BackwardRow {
            dy: &self.dy[..n],
            x: &self.x[..n],
            dsum: self.dsum.map(|s| &s[..n]),
        }
    }
}

impl NormGrads<'_> {
    /// Both gradients cut to their first `n` entries, as [`NormWeights::cut`].
    pub(crate) fn cut(&mut self, n: usize) -> NormGrads<'_> {
        NormGrads {
            dweight: &mut self.dweight[..n],
            dbias: self.dbias.as_deref_mut().map(|b| &mut b[..n]),
        }
    }
}

/// Checks `weights` for a `kind` normalization and returns `cols`.
pub(crate) fn check_weights(
    op: &'static str,
    kind: NormKind,
    weights: &NormWeights<'_>,
) -> Result<usize> {
    let cols = weights.cols();
    if cols == 0 {
        return Err(Error::invalid(
            op,
            "weight is empty: rows need at least one column",
        ));
    }
    if !(weights.eps.is_finite() && weights.eps > 0.0) {
        return Err(Error::invalid(
            op,
            format!("eps must be finite and > 0, got {}", weights.eps),
        ));
    }
    match (kind, weights.bias) {
        (NormKind::Rms, Some(_)) => Err(Error::invalid(op, "RMSNorm takes no bias")),
        (NormKind::Layer, Some(bias)) => {
            check_len(op, "bias", bias.len(), cols)?;
            Ok(cols)
        }
        (_, None) => Ok(cols),
    }
}

/// Checks that `dweight` has `cols` entries and that `dbias` is given exactly when `bias` is.
pub(crate) fn check_grads(
    op: &'static str,
    weights: &NormWeights<'_>,
    grads: &NormGrads<'_>,
) -> Result<()> {
    let cols = weights.cols();
    check_len(op, "dweight", grads.dweight.len(), cols)?;
    match (&weights.bias, &grads.dbias) {
        (Some(_), Some(dbias)) => check_len(op, "dbias", dbias.len(), cols),
        (None, None) => Ok(()),
        (Some(_), None) => Err(Error::invalid(
            op,
            "the forward had a bias but no dbias is given",
        )),
        (None, Some(_)) => Err(Error::invalid(
            op,
            "dbias is given but the forward had no bias",
        )),
    }
}

/// Checks that a `[rows, cols]` buffer called `name` has a whole number of rows; returns rows.
pub(crate) fn rows_of(op: &'static str, name: &str, len: usize, cols: usize) -> Result<usize> {
    if !len.is_multiple_of(cols) {
        return Err(Error::shape(
            op,
            format!("{name} has {len} elements, not a multiple of cols = {cols}"),
        ));
    }
    Ok(len / cols)
}

/// Checks that buffer `name` has exactly `expected` elements.
pub(crate) fn check_len(op: &'static str, name: &str, len: usize, expected: usize) -> Result<()> {
    if len != expected {
        return Err(Error::shape(
            op,
            format!("{name} has {len} elements, expected {expected}"),
        ));
    }
    Ok(())
}

/// Checks a RMSNorm `mean` buffer: empty, or one entry per row.
pub(crate) fn check_optional_mean(op: &'static str, len: usize, rows: usize) -> Result<()> {
    if len != 0 && len != rows {
        return Err(Error::shape(
            op,
            format!("mean has {len} elements, expected 0 (RMSNorm) or rows = {rows}"),
        ));
    }
    Ok(())
}

/// The rows the norm kernels' unit tests share: smooth values of both signs, a different
/// phase for each operand.
#[cfg(test)]
pub(crate) struct TestRow {
    pub(crate) x: Vec<f32>,
    pub(crate) residual: Vec<f32>,
    pub(crate) dy: Vec<f32>,
    pub(crate) dsum: Vec<f32>,
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

#[cfg(test)]
impl TestRow {
    pub(crate) fn new(cols: usize) -> Self {
        let values = |k: f32| {
            (0..cols)
                .map(|i| ((i as f32 + k) * 0.731).sin() * 3.0 + 0.5)
                .collect()
        };
        TestRow {
            x: values(0.0),
            residual: values(1.0),
            dy: values(2.0),
            dsum: values(3.0),
            weight: values(4.0),
            bias: values(5.0),
        }
    }

    /// The weight and bias, with eps 1e-5.
    pub(crate) fn weights(&self) -> NormWeights<'_> {
        NormWeights {
            weight: &self.weight,
            bias: Some(&self.bias),
            eps: 1e-5,
        }
    }

    /// `x + residual`.
    pub(crate) fn sum(&self) -> Vec<f32> {
        self.x
            .iter()
            .zip(&self.residual)
            .map(|(a, b)| a + b)
            .collect()
    }
}

/// Asserts `|got - want| < tol · (1 + |want|)`.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_near(what: &str, got: f32, want: f64, tol: f64) {
    assert!(
        (got as f64 - want).abs() < tol * (1.0 + want.abs()),
        "{what}: {got} against {want}"
    );
}
