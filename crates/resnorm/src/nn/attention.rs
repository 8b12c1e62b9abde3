//! Multi-head causal self-attention, the core between GPT-2's `c_attn` and `c_proj`: the
//! layer's sizes and buffer checks around [`crate::kernels::attention`], which computes.
//!
//! Input `qkv` is `[B, T, 3C]`, the output of `c_attn`: each row is `[q | k | v]`, and head
//! `h` of `H` owns columns `h·d .. (h+1)·d` of each part, `d = C / H` (nanoGPT's
//! `split(C, dim=2)` then `view(B, T, H, d)`). Output is `[B, T, C]`, heads side by side in
//! the same column order, ready for `c_proj`. Per sequence and head,
//! `O = softmax(Q Kᵀ/√d + causal mask) V`; the probabilities (`att`, `[B, H, T, T]`) are
//! saved for backward, only on and below each diagonal (the rest of `att` is left as it
//! was: zero in a zeroed buffer), which halves the bytes saved and read back.
//!
//! [`CausalSelfAttention::forward_adding_bias`] and its backward take `qkv` without
//! `c_attn`'s bias and add it as each head reads its columns, the bias's gradient summed from
//! the columns each head writes to `dqkv`: the model's attention then reads `qkv` once
//! instead of adding the bias in a pass of its own first (and reads `dqkv` once less).
//! Their `_dropped` forms add attention dropout on the probabilities (training; `att` keeps
//! them undropped, and the backward regenerates the mask from its seed).
//!
//! ```
//! use resnorm::nn::CausalSelfAttention;
//! let attn = CausalSelfAttention::new(4, 2).unwrap(); // C = 4, two heads of size 2
//! let (batch, seq) = (1, 3);
//! let qkv: Vec<f32> = (0..batch * seq * 12).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut out = vec![0.0; batch * seq * 4];
//! let mut att = vec![0.0; batch * 2 * seq * seq];
//! attn.forward(&mut out, &mut att, &qkv, batch, seq).unwrap();
//! assert_eq!(&att[..3], &[1.0, 0.0, 0.0]); // the first token sees only itself (att was zeroed)
//! assert_eq!(&out[..2], &qkv[8..10]); // so head 0's output is its own value
//! let mut dqkv = vec![0.0; qkv.len()];
//! attn.backward(&mut dqkv, &vec![1.0; out.len()], &att, &qkv, batch, seq).unwrap();
//! assert!(attn.forward(&mut out, &mut att, &qkv[1..], batch, seq).is_err());
//! ```

use crate::kernels::attention::{
    attention_backward, attention_forward, AttentionShape, GradTarget, Grads, Rows,
};
use crate::kernels::dropout::DropoutMask;
use crate::nn::Param;
use crate::{Error, Result};

/// Causal self-attention over `heads` heads of a `channels`-wide stream. It has no parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CausalSelfAttention {
    channels: usize,
    heads: usize,
}

impl CausalSelfAttention {
    /// Attention over `channels` split into `heads` heads; `heads` must divide `channels`.
    pub fn new(channels: usize, heads: usize) -> Result<Self> {
        if heads == 0 || channels == 0 || !channels.is_multiple_of(heads) {
            return Err(Error::invalid(
                "CausalSelfAttention::new",
                format!("{heads} heads must be at least 1 and divide {channels} channels (> 0)"),
            ));
        }
        Ok(CausalSelfAttention { channels, heads })
    }

    /// Width `C` of the stream.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Number of heads `H`.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Hands every parameter to `f`: there are none.
    pub fn visit_params(&self, _f: &mut dyn FnMut(&Param)) {}

    /// Hands every parameter to `f` for writing: there are none.
    pub fn visit_params_mut(&mut self, _f: &mut dyn FnMut(&mut Param)) {}

    /// `out [B,T,C]` from `qkv [B,T,3C]`, saving probabilities in `att [B,H,T,T]` (on and
    /// below each diagonal; the rest of `att` is left as it was).
    pub fn forward(
        &self,
        out: &mut [f32],
        att: &mut [f32],
        qkv: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        const OP: &str = "CausalSelfAttention::forward";
        self.check(OP, batch, seq, qkv, out, att)?;
        let shape = self.shape(batch, seq);
        attention_forward(out, att, self.views(qkv, None, seq), &shape, None)
    }

    /// [`CausalSelfAttention::forward`] of `qkv + 1·biasᵀ`, `bias` (`3C`) added to the rows
    /// as each head reads its columns: `c_attn`'s bias, the layer run without it
    /// ([`crate::nn::Linear::forward_without_bias`]), so that its `[B,T,3C]` output is not
    /// read and written once more for the bias alone.
    pub fn forward_adding_bias(
        &self,
        out: &mut [f32],
        att: &mut [f32],
        qkv: &[f32],
        bias: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        const OP: &str = "CausalSelfAttention::forward_adding_bias";
        self.forward_biased(OP, (out, att), (qkv, bias), (batch, seq), None)
    }

    /// [`CausalSelfAttention::forward_adding_bias`] with the probabilities dropped out by
    /// `mask` before they meet the values (`att` saves them undropped).
    pub fn forward_adding_bias_dropped(
        &self,
        (out, att): (&mut [f32], &mut [f32]),
        (qkv, bias): (&[f32], &[f32]),
        mask: &DropoutMask,
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        const OP: &str = "CausalSelfAttention::forward_adding_bias_dropped";
        self.forward_biased(OP, (out, att), (qkv, bias), (batch, seq), Some(mask))
    }

    fn forward_biased(
        &self,
        op: &'static str,
        (out, att): (&mut [f32], &mut [f32]),
        (qkv, bias): (&[f32], &[f32]),
        (batch, seq): (usize, usize),
        dropout: Option<&DropoutMask>,
    ) -> Result<()> {
        self.check_bias(op, bias.len())?;
        self.check(op, batch, seq, qkv, out, att)?;
        let shape = self.dropped_shape(batch, seq, dropout);
        attention_forward(out, att, self.views(qkv, Some(bias), seq), &shape, None)
    }

    /// Writes `dqkv [B,T,3C]` from `dout [B,T,C]`, the forward's `att` and `qkv`.
    pub fn backward(
        &self,
        dqkv: &mut [f32],
        dout: &[f32],
        att: &[f32],
        qkv: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        const OP: &str = "CausalSelfAttention::backward";
        self.check_backward(OP, batch, seq, (qkv, dqkv.len()), dout, att)?;
        let (shape, views) = (self.shape(batch, seq), self.views(qkv, None, seq));
        let grads = Grads::Packed(GradTarget::new(dqkv));
        attention_backward(grads, dout, att, views, &shape, None)
    }

    /// The backward of [`CausalSelfAttention::forward_adding_bias`]: writes `dqkv` as
    /// [`CausalSelfAttention::backward`] does and adds its column sums into `dbias` (`3C`),
    /// each head summing its own columns as it writes them, the heads' sums then added in
    /// sequence order (the same bits for any thread count).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_adding_bias(
        &self,
        dqkv: &mut [f32],
        dbias: &mut [f32],
        dout: &[f32],
        att: &[f32],
        (qkv, bias): (&[f32], &[f32]),
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        const OP: &str = "CausalSelfAttention::backward_adding_bias";
        let (grads, inputs) = ((dqkv, dbias), (dout, att));
        self.backward_biased(OP, grads, inputs, (qkv, bias), (batch, seq), None)
    }

    /// The backward of [`CausalSelfAttention::forward_adding_bias_dropped`], given the same
    /// `mask`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_adding_bias_dropped(
        &self,
        (dqkv, dbias): (&mut [f32], &mut [f32]),
        dout: &[f32],
        att: &[f32],
        (qkv, bias): (&[f32], &[f32]),
        mask: &DropoutMask,
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        const OP: &str = "CausalSelfAttention::backward_adding_bias_dropped";
        let (grads, inputs) = ((dqkv, dbias), (dout, att));
        self.backward_biased(OP, grads, inputs, (qkv, bias), (batch, seq), Some(mask))
    }

    fn backward_biased(
        &self,
        op: &'static str,
        (dqkv, dbias): (&mut [f32], &mut [f32]),
        (dout, att): (&[f32], &[f32]),
        (qkv, bias): (&[f32], &[f32]),
        (batch, seq): (usize, usize),
        dropout: Option<&DropoutMask>,
    ) -> Result<()> {
        self.check_bias(op, bias.len())?;
        self.check_bias(op, dbias.len())?;
        self.check_backward(op, batch, seq, (qkv, dqkv.len()), dout, att)?;
        let shape = self.dropped_shape(batch, seq, dropout);
        let views = self.views(qkv, Some(bias), seq);
        let grads = Grads::Packed(GradTarget::with_bias(dqkv, dbias));
        attention_backward(grads, dout, att, views, &shape, None)
    }

    fn shape(&self, batch: usize, seq: usize) -> AttentionShape {
        AttentionShape::new(batch, self.heads, seq, seq, self.channels / self.heads).causal()
    }

    /// [`Self::shape`], its probabilities dropped out by `dropout` if given.
    fn dropped_shape(
        &self,
        batch: usize,
        seq: usize,
        dropout: Option<&DropoutMask>,
    ) -> AttentionShape {
        let shape = self.shape(batch, seq);
        dropout.map_or(shape, |mask| shape.dropped(*mask))
    }

    /// The query, key and value views of `qkv`'s `[q | k | v]` rows.
    fn views<'a>(
        &self,
        qkv: &'a [f32],
        bias: Option<&'a [f32]>,
        seq: usize,
    ) -> (Rows<'a>, Rows<'a>, Rows<'a>) {
        let c = self.channels;
        let view = |column| Rows {
            bias,
            ..Rows::new(qkv, 3 * c, column, seq)
        };
        (view(0), view(c), view(2 * c))
    }

    /// Checks that a bias (or its gradient) has `3C` elements.
    fn check_bias(&self, op: &'static str, len: usize) -> Result<()> {
        if len != 3 * self.channels {
            return Err(Error::shape(
                op,
                format!(
                    "the bias has {len} elements, 3 x {} channels needed",
                    self.channels
                ),
            ));
        }
        Ok(())
    }

    /// [`Self::check`], and that `dqkv` is as long as `qkv`.
    fn check_backward(
        &self,
        op: &'static str,
        batch: usize,
        seq: usize,
        (qkv, dqkv_len): (&[f32], usize),
        dout: &[f32],
        att: &[f32],
    ) -> Result<()> {
        self.check(op, batch, seq, qkv, dout, att)?;
        if dqkv_len != qkv.len() {
            return Err(Error::shape(
                op,
                format!("dqkv needs {} elements, got {dqkv_len}", qkv.len()),
            ));
        }
        Ok(())
    }

    /// Validates every buffer length before any element is touched (in the layer's terms;
    /// the kernel checks again in its own).
    fn check(
        &self,
        op: &'static str,
        batch: usize,
        seq: usize,
        qkv: &[f32],
        out: &[f32],
        att: &[f32],
    ) -> Result<()> {
        let c = self.channels;
        let rows = batch.checked_mul(seq);
        let want = |width: usize| rows.and_then(|r| r.checked_mul(width));
        let want_att = rows
            .and_then(|r| r.checked_mul(self.heads))
            .and_then(|r| r.checked_mul(seq));
        for (what, len, want) in [
            ("qkv", qkv.len(), want(3 * c)),
            ("out/dout", out.len(), want(c)),
            ("att", att.len(), want_att),
        ] {
            if Some(len) != want {
                return Err(Error::shape(
                    op,
                    format!(
                        "{what} has {len} elements, batch {batch} x seq {seq} with {c} channels \
                         and {} heads needs {want:?}",
                        self.heads
                    ),
                ));
            }
        }
        Ok(())
    }
}
