//! A stack of residual units, the encoder's or the decoder's, and its final norm: the
//! residual streams between the units, forward and backward side by side.
//!
//! ```text
//! x_{k+1} = Unit_k(x_k)                   (resi-dual also d_{k+1} = d_k + F_k, d₀ = x₀)
//! out = ln_f(x_K)                         pre-ln, sandwich, no-residual
//!     = x_K + ln_f(d_K)                   resi-dual
//!     = x_K                               post-ln, deep-norm, re-zero, no-norm
//! ```
//! The final norm follows the GPT's (`models/gpt/head.rs`), and `torch.nn.Transformer`'s
//! `norm_first` for post-ln and pre-ln. In training ([`Stack::forward_dropped`]) the input
//! `x₀` and every unit's `F` are dropped out (dropout.rs); the backward regenerates the
//! masks the forward drew.

use super::dropout::{Dropout, Site};
use super::sublayer::{Context, Scratch, Sublayer, SublayerActs};
use crate::kernels::dropout::{dropout_backward, dropout_forward};
use crate::kernels::residual::{residual_add, residual_add_assign};
use crate::models::gpt::{Placement, ResidualUnit, UnitActs, UnitScratch};
use crate::nn::norm::{Norm, NormSaved};
use crate::nn::Param;
use crate::AlignedVec;
use crate::Result;

/// Residual units and the final norm the placement gives them.
#[derive(Clone, Debug)]
pub struct Stack {
    placement: Placement,
    width: usize,
    /// The units in order: per layer self-attention, (cross-attention,) MLP.
    pub units: Vec<ResidualUnit<Sublayer>>,
    /// `{prefix}.ln_f`, when the placement has a final norm.
    pub ln_f: Option<Norm>,
}

/// A stack's buffers for one shape: the streams, what the units save, the gradients.
#[derive(Clone, Debug)]
pub struct StackActs {
    /// Residual stream before each unit and after the last, `[rows, C]` each.
    streams: Vec<AlignedVec>,
    /// resi-dual's un-normalized stream, likewise (empty otherwise).
    duals: Vec<AlignedVec>,
    units: Vec<UnitActs<SublayerActs>>,
    /// The output when it differs from the last stream (there is a final norm).
    out: AlignedVec,
    normed_dual: AlignedVec,
    ln_f_saved: NormSaved,
    scratch: UnitScratch<Scratch>,
    d_stream: [AlignedVec; 2],
    d_dual: AlignedVec,
    /// The last forward's dropout and the stack's index in its masks' sites.
    dropout: Option<(Dropout, u64)>,
}

impl StackActs {
    /// The stack's input `x₀`, to be written before [`Stack::forward`].
    pub fn input_mut(&mut self) -> &mut [f32] {
        &mut self.streams[0]
    }

    /// The stack's output after [`Stack::forward`].
    pub fn output(&self) -> &[f32] {
        if self.out.is_empty() {
            self.streams.last().expect("units + 1 streams")
        } else {
            &self.out
        }
    }
}

impl Stack {
    /// A stack of `units` under `placement`, with a final norm `{prefix}.ln_f` where the
    /// placement has one.
    pub fn new(
        placement: Placement,
        units: Vec<ResidualUnit<Sublayer>>,
        prefix: &str,
        (norm, width, eps): (crate::kernels::NormKind, usize, f32),
    ) -> Self {
        let ln_f = placement
            .has_final_norm()
            .then(|| Norm::new(&format!("{prefix}.ln_f"), norm, width, eps));
        Stack {
            placement,
            width,
            units,
            ln_f,
        }
    }

    /// Width `C` of the stream.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Buffers for `batch` sequences of `seq` positions (`memory_seq` encoder positions
    /// for a decoder, 0 for an encoder).
    pub fn new_acts(&self, batch: usize, seq: usize, memory_seq: usize) -> StackActs {
        let (rows, width) = (batch * seq, self.width);
        let n = rows * width;
        let streams = || (0..=self.units.len()).map(|_| AlignedVec::zeros(n));
        let dual = self.placement.has_dual_stream();
        let kind = self
            .ln_f
            .as_ref()
            .map_or(crate::kernels::NormKind::Rms, |n| n.kind);
        StackActs {
            streams: streams().collect(),
            duals: if dual {
                streams().collect()
            } else {
                Vec::new()
            },
            units: self
                .units
                .iter()
                .map(|u| u.new_acts_with(rows, width, u.sublayer.new_acts(batch, seq, memory_seq)))
                .collect(),
            out: AlignedVec::zeros(if self.ln_f.is_some() { n } else { 0 }),
            normed_dual: AlignedVec::zeros(if dual { n } else { 0 }),
            ln_f_saved: NormSaved::new(kind, if self.ln_f.is_some() { rows } else { 0 }),
            scratch: UnitScratch::new(rows, width, Scratch::new(rows, width, batch * memory_seq)),
            d_stream: [AlignedVec::zeros(n), AlignedVec::zeros(n)],
            d_dual: AlignedVec::zeros(if dual { n } else { 0 }),
            dropout: None,
        }
    }

    /// Runs every unit on the input in `acts` ([`StackActs::input_mut`]), then the final
    /// norm; the result is [`StackActs::output`].
    pub fn forward(&self, acts: &mut StackActs, ctx: &Context<'_>) -> Result<()> {
        self.forward_dropped(acts, ctx, None)
    }

    /// [`Stack::forward`] in training: `dropout` drops the input and every unit's output
    /// (and MLP activation) with masks of the stack numbered `stack` (0 encoder, 1 decoder).
    pub(crate) fn forward_dropped(
        &self,
        acts: &mut StackActs,
        ctx: &Context<'_>,
        dropout: Option<(Dropout, u64)>,
    ) -> Result<()> {
        acts.dropout = dropout;
        let StackActs {
            streams,
            duals,
            units,
            out,
            normed_dual,
            ln_f_saved,
            scratch,
            ..
        } = acts;
        if let Some((dropout, stack)) = dropout {
            dropout_forward(&mut streams[0], &dropout.mask(stack, Site::Input), 0);
        }
        let dual = self.placement.has_dual_stream();
        if dual {
            duals[0].copy_from_slice(&streams[0]);
        }
        for (k, unit) in self.units.iter().enumerate() {
            let (before, after) = streams.split_at_mut(k + 1);
            let dual = if dual {
                let (d_before, d_after) = duals.split_at_mut(k + 1);
                Some((&d_before[k][..], &mut d_after[0][..]))
            } else {
                None
            };
            let masks = dropout.map(|(d, stack)| d.unit(stack, k));
            let shared = scratch.shared();
            unit.forward_with(
                &before[k],
                &mut after[0],
                dual,
                &mut units[k],
                shared,
                |h, a, f| unit.sublayer.forward_masked(h, a, f, ctx, masks),
            )?;
        }
        let last = streams.last().expect("units + 1 streams");
        let dual = duals.last().map(|d| &d[..]);
        self.final_norm(last, dual, (normed_dual, ln_f_saved), out)
    }

    /// `out` from the last stream `x` (and resi-dual's `dual`) as the placement has it;
    /// nothing is written where the output is `x` itself. Training and decoding both call it.
    pub(super) fn final_norm(
        &self,
        x: &[f32],
        dual: Option<&[f32]>,
        (normed_dual, saved): (&mut [f32], &mut NormSaved),
        out: &mut [f32],
    ) -> Result<()> {
        match (&self.ln_f, dual) {
            (Some(ln_f), Some(dual)) => {
                ln_f.forward(dual, normed_dual, saved)?;
                residual_add(x, normed_dual, out)
            }
            (Some(ln_f), None) => ln_f.forward(x, out, saved),
            (None, _) => Ok(()),
        }
    }

    /// The units' buffers for `rows` positions of `batch` sentences decoded one position
    /// at a time against `memory_seq` encoder positions.
    pub(super) fn unit_acts(&self, batch: usize, memory_seq: usize) -> Vec<UnitActs<SublayerActs>> {
        self.units
            .iter()
            .map(|u| u.new_acts_with(batch, self.width, u.sublayer.new_acts(batch, 1, memory_seq)))
            .collect()
    }

    /// Backpropagates `d_output = ∂L/∂output` through the final norm and every unit,
    /// adding into every parameter gradient (and, in a decoder, `∂L/∂memory` into
    /// `d_memory`); returns `∂L/∂x₀`.
    pub fn backward<'a>(
        &mut self,
        acts: &'a mut StackActs,
        d_output: &[f32],
        ctx: &Context<'_>,
        mut d_memory: Option<&mut [f32]>,
    ) -> Result<&'a [f32]> {
        let StackActs {
            streams,
            duals,
            units,
            ln_f_saved,
            scratch,
            d_stream,
            d_dual,
            dropout,
            ..
        } = acts;
        let dropout = *dropout;
        let [d_a, d_b] = d_stream;
        let last = streams.last().expect("units + 1 streams");
        match (&mut self.ln_f, duals.last()) {
            (Some(ln_f), Some(dual)) => {
                d_a.copy_from_slice(d_output);
                ln_f.backward(d_output, dual, ln_f_saved, d_dual)?;
            }
            (Some(ln_f), None) => ln_f.backward(d_output, last, ln_f_saved, d_a)?,
            (None, _) => d_a.copy_from_slice(d_output),
        }
        let dual = self.placement.has_dual_stream();
        let (mut d_out, mut d_in) = (&mut d_a[..], &mut d_b[..]);
        for (k, unit) in self.units.iter_mut().enumerate().rev() {
            let d_dual = dual.then_some(&d_dual[..]);
            let d_memory = d_memory.as_deref_mut();
            let masks = dropout.map(|(d, stack)| d.unit(stack, k));
            unit.backward_with(
                d_out,
                d_dual,
                &streams[k],
                d_in,
                &units[k],
                scratch,
                |f, d_f, h, a, s, d_h| f.backward(d_f, h, a, s, d_h, (ctx, masks), d_memory),
            )?;
            std::mem::swap(&mut d_out, &mut d_in);
        }
        if dual {
            residual_add_assign(d_out, d_dual)?; // x₀ feeds both streams
        }
        if let Some((dropout, stack)) = dropout {
            dropout_backward(d_out, &dropout.mask(stack, Site::Input), 0);
        }
        Ok(d_out)
    }

    /// Hands every parameter to `f`: unit by unit, then `ln_f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        for unit in &self.units {
            unit.visit_params(f);
        }
        if let Some(ln_f) = &self.ln_f {
            ln_f.visit_params(f);
        }
    }

    /// Appends every parameter to `out`, in [`Stack::visit_params`] order.
    pub fn params_mut<'a>(&'a mut self, out: &mut Vec<&'a mut Param>) {
        for unit in &mut self.units {
            unit.params_mut(out);
        }
        if let Some(ln_f) = &mut self.ln_f {
            out.push(&mut ln_f.weight);
            out.extend(ln_f.bias.as_mut());
        }
    }
}
