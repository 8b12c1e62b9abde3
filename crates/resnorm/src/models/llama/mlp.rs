//! The gated MLP of the Llama family: SwiGLU (`act = SiLU`) or GeGLU (`act = GELU_tanh`,
//! Gemma), forward and backward side by side.
//!
//! ```text
//! forward   g = x·W_gate + b     u = x·W_up + b     a = act(g) ⊙ u     F = a·W_down + b
//! backward  da = dF·W_downᵀ      du = da ⊙ act(g)   dg = da ⊙ u ⊙ act'(g)
//!           dx = dg·W_gateᵀ + du·W_upᵀ
//! SiLU:     act(g) = g·σ(g)      act'(g) = σ(g)·(1 + g·(1 - σ(g)))
//! ```
//! The forward keeps `act(g)`, `u` and, in place of `g`, the slope `act'(g)`; `a`, `down`'s
//! input, goes to the scratch shared by every MLP and is recomputed as `act(g) ⊙ u` in
//! backward (one product per element, `[rows, M]` less memory per layer).
//!
//! ```
//! use resnorm::models::llama::{Activation, GatedMlp, MlpActs, MlpScratch};
//! let mut mlp = GatedMlp::new(0, 2, 3, false, Activation::Silu).unwrap();
//! mlp.down.weight.value.fill(1.0);
//! mlp.gate.weight.value.fill(1.0);
//! mlp.up.weight.value.fill(1.0);
//! let (mut acts, mut scratch) = (MlpActs::new(1, 3), MlpScratch::new(1, 3));
//! let mut out = [0.0; 2];
//! mlp.forward(&[1.0, 0.0], &mut out, &mut acts, &mut scratch).unwrap();
//! let silu1 = 1.0 / (1.0 + (-1.0f32).exp());
//! assert!((out[0] - 3.0 * silu1).abs() < 1e-6);
//! ```

use super::config::Activation;
use super::linear::linear_backward;
use crate::kernels::gelu::gelu_forward_keeping_slope;
use crate::nn::{Linear, Param};
use crate::AlignedVec;
use crate::Result;

/// `down(act(gate(x)) ⊙ up(x))`, parameters `layers.{i}.mlp.{gate,up,down}_proj`.
#[derive(Clone, Debug)]
pub struct GatedMlp {
    /// `[C, M]`.
    pub gate: Linear,
    /// `[C, M]`.
    pub up: Linear,
    /// `[M, C]`.
    pub down: Linear,
    activation: Activation,
}

/// What the MLP's backward reads, for `rows` rows.
#[derive(Clone, Debug)]
pub struct MlpActs {
    /// `act'(g)`.
    slope: AlignedVec,
    /// `act(g)`.
    gated: AlignedVec,
    /// `u`.
    up: AlignedVec,
}

impl MlpActs {
    /// Buffers for `rows` rows of an MLP of hidden width `mlp_width`.
    pub fn new(rows: usize, mlp_width: usize) -> Self {
        let n = rows * mlp_width;
        MlpActs {
            slope: AlignedVec::zeros(n),
            gated: AlignedVec::zeros(n),
            up: AlignedVec::zeros(n),
        }
    }
}

/// The scratch shared by every MLP, `[rows, M]` each: `a = act(g) ⊙ u` (forward, and
/// backward until `da` is known, then `du`), `da`, `dg`.
#[derive(Clone, Debug)]
pub struct MlpScratch {
    hidden: AlignedVec,
    da: AlignedVec,
    dg: AlignedVec,
}

impl MlpScratch {
    /// Scratch for `rows` rows.
    pub fn new(rows: usize, mlp_width: usize) -> Self {
        let n = rows * mlp_width;
        MlpScratch {
            hidden: AlignedVec::zeros(n),
            da: AlignedVec::zeros(n),
            dg: AlignedVec::zeros(n),
        }
    }
}

impl GatedMlp {
    /// Block `layer`'s MLP from width `width` through `mlp_width`.
    pub fn new(
        layer: usize,
        width: usize,
        mlp_width: usize,
        bias: bool,
        activation: Activation,
    ) -> Result<Self> {
        let name = |p: &str| format!("layers.{layer}.mlp.{p}_proj");
        Ok(GatedMlp {
            gate: Linear::new(&name("gate"), width, mlp_width, bias)?,
            up: Linear::new(&name("up"), width, mlp_width, bias)?,
            down: Linear::new(&name("down"), mlp_width, width, bias)?,
            activation,
        })
    }

    /// `out [rows, C]` from `x [rows, C]`, keeping what backward needs in `acts`.
    pub fn forward(
        &self,
        x: &[f32],
        out: &mut [f32],
        acts: &mut MlpActs,
        scratch: &mut MlpScratch,
    ) -> Result<()> {
        let rows = x.len() / self.gate.in_features();
        let n = rows * self.gate.out_features();
        let (slope, gated) = (&mut acts.slope[..n], &mut acts.gated[..n]);
        let (up, hidden) = (&mut acts.up[..n], &mut scratch.hidden[..n]);
        self.gate.forward(slope, x)?;
        self.up.forward(up, x)?;
        match self.activation {
            Activation::Silu => {
                for (s, a) in slope.iter_mut().zip(gated.iter_mut()) {
                    let g = *s;
                    let sigma = 1.0 / (1.0 + (-g).exp());
                    *a = g * sigma;
                    *s = sigma * (1.0 + g * (1.0 - sigma));
                }
            }
            Activation::GeluTanh => gelu_forward_keeping_slope(gated, slope)?,
        }
        gate_product(hidden, gated, up);
        self.down.forward(out, hidden)
    }

    /// Writes `dx` from `dout`; `x` is the forward's input. Adds into the gradients.
    pub fn backward(
        &mut self,
        dout: &[f32],
        x: &[f32],
        acts: &MlpActs,
        scratch: &mut MlpScratch,
        dx: &mut [f32],
    ) -> Result<()> {
        let rows = x.len() / self.gate.in_features();
        let n = rows * self.gate.out_features();
        let (hidden, da, dg) = (
            &mut scratch.hidden[..n],
            &mut scratch.da[..n],
            &mut scratch.dg[..n],
        );
        let (slope, gated, up) = (&acts.slope[..n], &acts.gated[..n], &acts.up[..n]);
        gate_product(hidden, gated, up);
        linear_backward(&mut self.down, da, hidden, dout, false)?;
        let du = hidden;
        let saved = slope.iter().zip(gated).zip(up);
        for ((((s, a), u), da), (dg, du)) in
            saved.zip(da.iter()).zip(dg.iter_mut().zip(du.iter_mut()))
        {
            *du = da * a;
            *dg = da * u * s;
        }
        linear_backward(&mut self.gate, dx, x, dg, false)?;
        linear_backward(&mut self.up, dx, x, du, true)
    }

    /// Hands `gate`, `up`, `down` to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        self.gate.visit_params(f);
        self.up.visit_params(f);
        self.down.visit_params(f);
    }

    /// Every parameter, in [`GatedMlp::visit_params`] order, for writing.
    pub fn params_mut<'a>(&'a mut self, out: &mut Vec<&'a mut Param>) {
        for layer in [&mut self.gate, &mut self.up, &mut self.down] {
            out.push(&mut layer.weight);
            out.extend(layer.bias.as_mut());
        }
    }
}

/// `a = act(g) ⊙ u`, the input of `down`: the forward's, and the backward's recomputation
/// of it (the same products, so the same bits).
fn gate_product(hidden: &mut [f32], gated: &[f32], up: &[f32]) {
    for ((h, a), u) in hidden.iter_mut().zip(gated).zip(up) {
        *h = a * u;
    }
}
