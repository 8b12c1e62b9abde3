//! One residual unit: a sublayer `F` wired to the residual stream as a [`Placement`] says.
//! This file is the one place where a placement becomes code, forward and backward side by
//! side.
//!
//! ```text
//! placement     forward                              backward (dy = ∂L/∂x_out)
//! pre-ln        x' = x + F(N(x))                     dx = dy + N'ᵀ F'ᵀ dy
//! post-ln       s = x + F(x);  x' = N(s)             ds = N'ᵀ dy;  dx = ds + F'ᵀ ds
//! sandwich      x' = x + N₂(F(N₁(x)))                dx = dy + N₁'ᵀ F'ᵀ N₂'ᵀ dy
//! deep-norm     s = α·x + F(x);  x' = N(s)           ds = N'ᵀ dy;  dx = α·ds + F'ᵀ ds
//! re-zero       x' = x + a·F(x)                      dx = dy + F'ᵀ (a·dy);  da += Σ dy ⊙ F(x)
//! resi-dual     s = x + F(x);  x' = N(s);            ds = N'ᵀ dy;  dF = ds + dd;
//!               d' = d + F(x)                        dx = ds + F'ᵀ dF;  dd passes through
//! no-norm       x' = x + F(x)                        dx = dy + F'ᵀ dy
//! no-residual   x' = F(N(x))                         dx = N'ᵀ F'ᵀ dy
//! ```
//! Every backward has the shape `dx = (skip path) + (path through F)`: the residual
//! connection is the identity (or `α`) on the skip path, which is why gradients reach the
//! first layers undiminished.
//!
//! A unit keeps per layer only what its backward reads ([`UnitActs`]): `N(x)` is computed
//! again in backward from the stream `x`, which the model keeps anyway (the same kernel on
//! the same input gives the same bits), and `F(h)` goes to buffers shared by every unit
//! ([`UnitShared`]) except where the backward reads it (sandwich's `N₂`, re-zero's gate).
//!
//! The unit is generic over its transform `F` ([`Transform`]): the GPT's [`Sublayer`]
//! (causal self-attention, MLP) by default, the encoder-decoder's sublayers (bidirectional
//! and cross-attention too) in `models/seq2seq`, both wired by this one file.

use super::sublayer::{Sublayer, SublayerActs, SublayerScratch};
use super::Placement;
use crate::kernels::add_norm::UpstreamGrads;
use crate::kernels::norm::NormKind;
use crate::kernels::residual::{
    gated_residual_add, gated_residual_add_backward, residual_add, residual_add_assign,
    scaled_residual_add, scaled_residual_add_backward,
};
use crate::nn::norm::{Norm, NormSaved};
use crate::nn::{Param, ParamKind};
use crate::AlignedVec;
use crate::Result;

/// What a [`ResidualUnit`] needs of its transform `F` besides computing it (which the
/// caller does, in [`ResidualUnit::forward_with`] and [`ResidualUnit::backward_with`]).
pub trait Transform {
    /// Hands every parameter to `f`, input side first.
    fn visit_params(&self, f: &mut dyn FnMut(&Param));
    /// Appends every parameter to `out`, in [`Transform::visit_params`] order.
    fn params_mut<'a>(&'a mut self, out: &mut Vec<&'a mut Param>);
}

/// A sublayer with its norms (and ReZero gate) as its placement wires them.
#[derive(Clone, Debug)]
pub struct ResidualUnit<F = Sublayer> {
    placement: Placement,
    /// DeepNorm's `α` (1 for the other placements).
    alpha: f32,
    /// The transform `F`.
    pub sublayer: F,
    /// Norm applied to `F`'s input (pre-ln, sandwich, no-residual).
    pub pre_norm: Option<Norm>,
    /// Norm applied after the add (post-ln, deep-norm, resi-dual) or to `F`'s output (sandwich).
    pub post_norm: Option<Norm>,
    /// ReZero's learned scalar `a`, initialized to 0.
    pub gate: Option<Param>,
}

/// What a [`ResidualUnit`] saves for backward, for `rows` tokens; `A` is what its
/// transform saves.
#[derive(Clone, Debug)]
pub struct UnitActs<A = SublayerActs> {
    pre_saved: NormSaved,
    sublayer: A,
    /// `F(h)`, kept only where the backward reads it (sandwich, re-zero); empty otherwise.
    f_out: AlignedVec,
    /// The tensor `post_norm` reads: `x + F` (post-ln, resi-dual), `α·x + F` (deep-norm), or
    /// for sandwich its output `N₂(F)`.
    post: AlignedVec,
    post_saved: NormSaved,
}

/// Forward buffers shared by all units (used one unit at a time): `N(x)`, which the
/// backward computes again, and `F(h)` where the backward does not read it.
#[derive(Clone, Debug)]
pub struct UnitShared {
    normed: AlignedVec,
    /// The statistics of the backward's recomputation of `N(x)` (sized for LayerNorm,
    /// which also fits RMSNorm: it writes only `rstd`).
    saved: NormSaved,
    f_out: AlignedVec,
}

impl UnitShared {
    /// Buffers for `rows` tokens of width `width`.
    pub fn new(rows: usize, width: usize) -> Self {
        UnitShared {
            normed: AlignedVec::zeros(rows * width),
            saved: NormSaved::new(NormKind::Layer, rows),
            f_out: AlignedVec::zeros(rows * width),
        }
    }
}

/// Gradient buffers shared by all units (used one unit at a time), and the [`UnitShared`]
/// forward buffers; `S` is the transforms' scratch.
#[derive(Clone, Debug)]
pub struct UnitScratch<S = SublayerScratch> {
    shared: UnitShared,
    sublayer: S,
    d_f: AlignedVec,
    d_h: AlignedVec,
    d_tmp: AlignedVec,
}

impl<S> UnitScratch<S> {
    /// Buffers for `rows` tokens of width `width`, around the transforms' `sublayer` scratch.
    pub fn new(rows: usize, width: usize, sublayer: S) -> Self {
        let n = rows * width;
        UnitScratch {
            shared: UnitShared::new(rows, width),
            sublayer,
            d_f: AlignedVec::zeros(n),
            d_h: AlignedVec::zeros(n),
            d_tmp: AlignedVec::zeros(n),
        }
    }

    /// The forward buffers, for [`ResidualUnit::forward_with`].
    pub fn shared(&mut self) -> &mut UnitShared {
        &mut self.shared
    }
}

/// Where a unit's backward finds the skip path's share of `∂L/∂x_in`.
#[derive(Clone, Copy, Debug)]
enum Skip {
    /// The skip path is the identity: its gradient is `∂L/∂x_out` itself.
    Identity,
    /// Computed into `d_in` before the sublayer's backward runs.
    Written,
    /// No skip path (no-residual).
    Absent,
}

impl<F: Transform> ResidualUnit<F> {
    /// Wraps `sublayer` as `placement` says. `norm_name` is `h.{i}.ln_1` or `h.{i}.ln_2`;
    /// `gate_name` is `h.{i}.rezero_attn` or `h.{i}.rezero_mlp`; `layers` is `L`.
    pub fn new(
        placement: Placement,
        sublayer: F,
        (norm_name, gate_name): (&str, &str),
        (kind, width, eps): (NormKind, usize, f32),
        layers: usize,
    ) -> Self {
        use Placement::*;
        let norm = |name: &str| Some(Norm::new(name, kind, width, eps));
        let (pre_norm, post_norm) = match placement {
            PreLn | NoResidual => (norm(norm_name), None),
            Sandwich => (norm(norm_name), norm(&format!("{norm_name}_post"))),
            PostLn | DeepNorm | ResiDual => (None, norm(norm_name)),
            ReZero | NoNorm => (None, None),
        };
        let gate =
            (placement == ReZero).then(|| Param::zeros(gate_name, vec![1], ParamKind::Scalar));
        ResidualUnit {
            placement,
            alpha: placement.residual_scale(layers),
            sublayer,
            pre_norm,
            post_norm,
            gate,
        }
    }

    /// The same unit with DeepNorm's `α` set to `alpha` (the encoder-decoder's constants
    /// differ from the GPT's `(2L)^¼`); other placements keep 1.
    pub fn with_residual_scale(self, alpha: f32) -> Self {
        let alpha = if self.placement == Placement::DeepNorm {
            alpha
        } else {
            1.0
        };
        ResidualUnit { alpha, ..self }
    }

    /// Activation buffers for `rows` tokens of width `width` around the transform's
    /// `sublayer` activations.
    pub fn new_acts_with<A>(&self, rows: usize, width: usize, sublayer: A) -> UnitActs<A> {
        let saved = |norm: &Option<Norm>| match norm {
            Some(n) => NormSaved::new(n.kind, rows),
            None => NormSaved::new(NormKind::Rms, 0),
        };
        let sized = |present: bool| AlignedVec::zeros(if present { rows * width } else { 0 });
        UnitActs {
            pre_saved: saved(&self.pre_norm),
            sublayer,
            f_out: sized(self.keeps_f_out()),
            post: sized(self.post_norm.is_some()),
            post_saved: saved(&self.post_norm),
        }
    }

    /// Whether the backward reads `F(h)`: sandwich's output norm and re-zero's gate do.
    fn keeps_f_out(&self) -> bool {
        matches!(self.placement, Placement::Sandwich | Placement::ReZero)
    }

    /// `x_out` from `x_in` (for resi-dual also `dual_out = dual_in + F`), with `F` computed
    /// by `sublayer_fn(h, acts, f_out)`: the wiring is the same whatever computes `F(h)`
    /// (the transform's forward, or attention against cached keys and values in decoding).
    /// `shared` holds `h` and, unless `acts` keeps it, `F(h)`.
    pub fn forward_with<A>(
        &self,
        x_in: &[f32],
        x_out: &mut [f32],
        dual: Option<(&[f32], &mut [f32])>,
        acts: &mut UnitActs<A>,
        shared: &mut UnitShared,
        sublayer_fn: impl FnOnce(&[f32], &mut A, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let UnitActs {
            pre_saved,
            sublayer,
            f_out,
            post,
            post_saved,
        } = acts;
        let f_out: &mut [f32] = if self.keeps_f_out() {
            f_out
        } else {
            &mut shared.f_out
        };
        let h: &[f32] = match &self.pre_norm {
            Some(norm) => {
                norm.forward(x_in, &mut shared.normed, pre_saved)?;
                &shared.normed
            }
            None => x_in,
        };
        sublayer_fn(h, sublayer, f_out)?;
        let post_norm = || self.post_norm.as_ref().expect("placement has a post norm");
        match self.placement {
            Placement::PreLn | Placement::NoNorm => residual_add(x_in, f_out, x_out),
            Placement::NoResidual => {
                x_out.copy_from_slice(f_out);
                Ok(())
            }
            Placement::Sandwich => {
                post_norm().forward(f_out, post, post_saved)?;
                residual_add(x_in, post, x_out)
            }
            Placement::ReZero => {
                let a = self.gate.as_ref().expect("re-zero has a gate").value[0];
                gated_residual_add(x_in, a, f_out, x_out)
            }
            Placement::PostLn => post_norm().add_forward(x_in, f_out, post, x_out, post_saved),
            Placement::DeepNorm => {
                scaled_residual_add(self.alpha, x_in, f_out, post)?;
                post_norm().forward(post, x_out, post_saved)
            }
            Placement::ResiDual => {
                post_norm().add_forward(x_in, f_out, post, x_out, post_saved)?;
                let (dual_in, dual_out) = dual.expect("resi-dual carries a dual stream");
                residual_add(dual_in, f_out, dual_out)
            }
        }
    }

    /// Backward of [`ResidualUnit::forward_with`]: `d_in = ∂L/∂x_in` (overwritten) from
    /// `d_out = ∂L/∂x_out` and, for resi-dual, `d_dual = ∂L/∂dual_out` (which is also
    /// `∂L/∂dual_in`: the dual stream's add passes it through). Adds into every parameter
    /// gradient of the unit; `F`'s backward is `sublayer_fn(F, dF, h, acts, scratch, dh)`,
    /// which writes `dh = F'(h)ᵀ dF`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_with<A, S>(
        &mut self,
        d_out: &[f32],
        d_dual: Option<&[f32]>,
        x_in: &[f32],
        d_in: &mut [f32],
        acts: &UnitActs<A>,
        scratch: &mut UnitScratch<S>,
        sublayer_fn: impl FnOnce(&mut F, &[f32], &[f32], &A, &mut S, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let UnitScratch {
            shared,
            sublayer: sub_scratch,
            d_f,
            d_h,
            d_tmp,
        } = scratch;
        // 1. F's output gradient, and the skip path's: `dy` itself where the skip path is the
        //    identity (nothing is copied), written into d_in where it is not.
        let (d_f, skip): (&[f32], Skip) = match self.placement {
            Placement::PreLn | Placement::NoNorm => (d_out, Skip::Identity),
            Placement::NoResidual => (d_out, Skip::Absent),
            Placement::Sandwich => {
                self.post_norm_mut()
                    .backward(d_out, &acts.f_out, &acts.post_saved, d_f)?;
                (d_f, Skip::Identity)
            }
            Placement::ReZero => {
                let gate = self.gate.as_mut().expect("re-zero has a gate");
                let a = gate.value[0];
                gated_residual_add_backward(d_out, &acts.f_out, a, d_in, d_f, &mut gate.grad[0])?;
                (d_f, Skip::Written)
            }
            Placement::PostLn => {
                let upstream = UpstreamGrads {
                    dout: d_out,
                    dsum: None,
                };
                self.post_norm_mut()
                    .add_backward(upstream, &acts.post, &acts.post_saved, d_f)?;
                d_in.copy_from_slice(d_f);
                (d_f, Skip::Written)
            }
            Placement::DeepNorm => {
                self.post_norm_mut()
                    .backward(d_out, &acts.post, &acts.post_saved, d_tmp)?;
                scaled_residual_add_backward(self.alpha, d_tmp, d_in, d_f)?;
                (d_f, Skip::Written)
            }
            Placement::ResiDual => {
                let upstream = UpstreamGrads {
                    dout: d_out,
                    dsum: None,
                };
                self.post_norm_mut()
                    .add_backward(upstream, &acts.post, &acts.post_saved, d_in)?;
                residual_add(
                    d_in,
                    d_dual.expect("resi-dual carries a dual gradient"),
                    d_f,
                )?;
                (d_f, Skip::Written)
            }
        };
        // 2. Through F, then its input norm; add onto the skip path: dx = skip + F'ᵀ d_f. An
        //    identity skip path is added in the norm's backward pass itself (its `dsum`).
        let h: &[f32] = match &self.pre_norm {
            Some(norm) => {
                norm.forward(x_in, &mut shared.normed, &mut shared.saved)?;
                &shared.normed
            }
            None => x_in,
        };
        sublayer_fn(&mut self.sublayer, d_f, h, &acts.sublayer, sub_scratch, d_h)?;
        let saved = &acts.pre_saved;
        match (&mut self.pre_norm, skip) {
            (Some(norm), Skip::Identity) => {
                let upstream = UpstreamGrads {
                    dout: d_h,
                    dsum: Some(d_out),
                };
                norm.add_backward(upstream, x_in, saved, d_in)
            }
            (Some(norm), Skip::Written) => {
                norm.backward(d_h, x_in, saved, d_tmp)?;
                residual_add_assign(d_in, d_tmp)
            }
            (Some(norm), Skip::Absent) => norm.backward(d_h, x_in, saved, d_in),
            (None, Skip::Identity) => residual_add(d_out, d_h, d_in),
            (None, Skip::Written) => residual_add_assign(d_in, d_h),
            (None, Skip::Absent) => {
                d_in.copy_from_slice(d_h);
                Ok(())
            }
        }
    }

    fn post_norm_mut(&mut self) -> &mut Norm {
        self.post_norm.as_mut().expect("placement has a post norm")
    }

    /// Hands every parameter to `f`: input norm, sublayer, output norm, gate.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        if let Some(norm) = &self.pre_norm {
            norm.visit_params(f);
        }
        self.sublayer.visit_params(f);
        if let Some(norm) = &self.post_norm {
            norm.visit_params(f);
        }
        if let Some(gate) = &self.gate {
            f(gate);
        }
    }

    /// Appends every parameter to `out`, in [`ResidualUnit::visit_params`] order.
    pub fn params_mut<'a>(&'a mut self, out: &mut Vec<&'a mut Param>) {
        let norm_params = |norm: &'a mut Option<Norm>, out: &mut Vec<&'a mut Param>| {
            if let Some(norm) = norm {
                out.push(&mut norm.weight);
                out.extend(norm.bias.as_mut());
            }
        };
        norm_params(&mut self.pre_norm, out);
        self.sublayer.params_mut(out);
        norm_params(&mut self.post_norm, out);
        out.extend(self.gate.as_mut());
    }
}

impl ResidualUnit<Sublayer> {
    /// Activation buffers for `batch · seq` tokens of width `width`.
    pub fn new_acts(&self, batch: usize, seq: usize, width: usize) -> UnitActs {
        self.new_acts_with(batch * seq, width, self.sublayer.new_acts(batch, seq))
    }

    /// `x_out` from `x_in`; for resi-dual also `dual_out = dual_in + F`.
    pub fn forward(
        &self,
        x_in: &[f32],
        x_out: &mut [f32],
        dual: Option<(&[f32], &mut [f32])>,
        acts: &mut UnitActs,
        shared: &mut UnitShared,
        (batch, seq): (usize, usize),
    ) -> Result<()> {
        self.forward_with(
            x_in,
            x_out,
            dual,
            acts,
            shared,
            |h, sublayer_acts, f_out| self.sublayer.forward(h, sublayer_acts, f_out, batch, seq),
        )
    }

    /// Backward of [`ResidualUnit::forward`] (see [`ResidualUnit::backward_with`]).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        d_out: &[f32],
        d_dual: Option<&[f32]>,
        x_in: &[f32],
        d_in: &mut [f32],
        acts: &UnitActs,
        scratch: &mut UnitScratch,
        (batch, seq): (usize, usize),
    ) -> Result<()> {
        self.backward_with(
            d_out,
            d_dual,
            x_in,
            d_in,
            acts,
            scratch,
            |f, d_f, h, a, s, d_h| f.backward(d_f, h, a, s, d_h, batch, seq),
        )
    }
}
