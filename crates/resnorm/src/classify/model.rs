//! A sentence classifier: a body's hidden states, pooled, then a linear head.
//!
//! ```text
//! h = body(tokens)                 [B, P+T, C] right-padded rows (ClassifierBody; P = 1
//!                                              with an encoder's [CLS] token, else 0;
//!                                              an encoder drops out inside at rate r)
//! p = pool(h, P + lengths)         [B, C]      [CLS], last real token or mean (pooling.rs)
//! p' = p ⊙ m / (1 − q)             [B, C]      dropout while training: m_i ~ Bernoulli(1 − q)
//! y = p' · W + b                   [B, K]      W [C, K] "head.weight", b "head.bias"
//! classes:     loss = mean_b cross-entropy(y_b, label_b)
//! regression:  loss = mean_b (y_b − score_b)²          (K = 1)
//! backward: dy -> dW, db, dp' = dy Wᵀ -> dp = dp' ⊙ m / (1 − q) -> dh = pool'ᵀ dp -> body
//! ```
//! The body is a GPT (causal) or a Transformer encoder (bidirectional, padded keys masked);
//! with `freeze_body` only the head trains, and the body's backward is not run at all.
//! The head's dropout draws its mask from the caller's RNG (the trainer's data RNG), the
//! encoder's masks come from a seed the caller gives, so a resumed run draws the same masks;
//! evaluation runs without either.
//!
//! ```
//! use resnorm::classify::{Classifier, ClassifierBody, Pooling, Task};
//! use resnorm::models::gpt::{Gpt, GptConfig};
//! let gpt = Gpt::new(GptConfig { layers: 1, heads: 2, width: 8, context: 4, vocab: 10, ..GptConfig::default() }, 1).unwrap();
//! let task = Task::Classes(vec!["neg".into(), "pos".into()]);
//! let mut model = Classifier::new(ClassifierBody::Gpt(gpt), &task, Pooling::Mean, false, 2).unwrap();
//! let tokens = [1, 2, 3, 0, 4, 5, 0, 0]; // two rows of 4: lengths 3 and 2, then pads
//! model.forward(&tokens, &[3, 2]).unwrap();
//! let loss = model.loss(&[1, 0], &[0.0, 0.0]).unwrap();
//! assert!((loss - 2f32.ln()).abs() < 0.1);
//! model.zero_grad();
//! model.backward().unwrap();
//! ```

use crate::kernels::{cross_entropy_backward, cross_entropy_forward};
use crate::models::gpt::Gpt;
use crate::models::seq2seq::Dropout;
use crate::nn::{Linear, Param};
use crate::rng::Rng;
use crate::{Error, Result};

use super::data::Task;
use super::encoder::EncoderBody;
use super::pooling::Pooling;

/// The network under the head.
#[derive(Clone, Debug)]
pub enum ClassifierBody {
    /// A decoder-only GPT, to its final norm (causal attention).
    Gpt(Gpt),
    /// A Transformer encoder (bidirectional attention over the real tokens).
    Encoder(EncoderBody),
}

impl ClassifierBody {
    /// Width `C` of the hidden states.
    pub fn width(&self) -> usize {
        match self {
            ClassifierBody::Gpt(gpt) => gpt.config().width,
            ClassifierBody::Encoder(body) => body.config().width,
        }
    }

    /// Positions the body puts in front of each sentence (its [CLS] token).
    pub fn prefix(&self) -> usize {
        match self {
            ClassifierBody::Gpt(_) => 0,
            ClassifierBody::Encoder(body) => body.config().prefix(),
        }
    }

    /// Longest row in tokens.
    pub fn context(&self) -> usize {
        match self {
            ClassifierBody::Gpt(gpt) => gpt.config().context,
            ClassifierBody::Encoder(body) => body.config().context,
        }
    }

    /// The hidden states; `dropout` only reaches an encoder ([`Classifier::with_body_dropout`]
    /// refuses it for a GPT).
    fn forward(
        &mut self,
        tokens: &[u32],
        lengths: &[usize],
        dropout: Option<Dropout>,
    ) -> Result<&[f32]> {
        match self {
            ClassifierBody::Gpt(gpt) => gpt.forward_hidden(tokens, lengths.len()),
            ClassifierBody::Encoder(body) => {
                body.forward_dropped(tokens, lengths, lengths.len(), dropout)
            }
        }
    }

    fn backward(&mut self, d_hidden: &[f32]) -> Result<()> {
        match self {
            ClassifierBody::Gpt(gpt) => gpt.backward_hidden(d_hidden),
            ClassifierBody::Encoder(body) => body.backward(d_hidden),
        }
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            ClassifierBody::Gpt(gpt) => gpt.params_mut(),
            ClassifierBody::Encoder(body) => body.params_mut(),
        }
    }

    fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        match self {
            ClassifierBody::Gpt(gpt) => gpt.visit_params(f),
            ClassifierBody::Encoder(body) => body.visit_params(f),
        }
    }
}

/// Body, pooling and head, with the buffers of the last batch.
#[derive(Clone, Debug)]
pub struct Classifier {
    /// The body.
    pub body: ClassifierBody,
    /// `head.weight [C, K]`, `head.bias [K]`.
    pub head: Linear,
    pooling: Pooling,
    freeze_body: bool,
    regression: bool,
    dropout: f32,
    /// The encoder's residual, activation and attention dropout rate `r` while training.
    body_dropout: f32,
    /// `m / (1 − q)` of the last forward with dropout; empty when it ran without.
    mask: Vec<f32>,
    lengths: Vec<usize>,
    pool_lengths: Vec<usize>,
    seq: usize,
    hidden_len: usize,
    pooled: Vec<f32>,
    logits: Vec<f32>,
    d_logits: Vec<f32>,
    d_pooled: Vec<f32>,
    d_hidden: Vec<f32>,
    losses: Vec<f32>,
    logsumexp: Vec<f32>,
}

impl Classifier {
    /// `body` with a fresh head for `task` (weights normal(0, 0.02) from `seed`, bias 0);
    /// [CLS] pooling needs a body that prepends the token.
    pub fn new(
        body: ClassifierBody,
        task: &Task,
        pooling: Pooling,
        freeze_body: bool,
        seed: u64,
    ) -> Result<Self> {
        if (pooling == Pooling::Cls) != (body.prefix() == 1) {
            return Err(Error::Config(format!(
                "{pooling} pooling with a body that {} a [CLS] token; cls pooling and an encoder's [CLS] token go together",
                if body.prefix() == 1 { "prepends" } else { "has no" }
            )));
        }
        let mut head = Linear::new("head", body.width(), task.outputs(), true)?;
        head.init(&mut Rng::new(seed), 0.02);
        Ok(Classifier {
            body,
            head,
            pooling,
            freeze_body,
            regression: matches!(task, Task::Regression),
            dropout: 0.0,
            body_dropout: 0.0,
            mask: Vec::new(),
            lengths: Vec::new(),
            pool_lengths: Vec::new(),
            seq: 0,
            hidden_len: 0,
            pooled: Vec::new(),
            logits: Vec::new(),
            d_logits: Vec::new(),
            d_pooled: Vec::new(),
            d_hidden: Vec::new(),
            losses: Vec::new(),
            logsumexp: Vec::new(),
        })
    }

    /// The same classifier with dropout of probability `q` before the head while training.
    pub fn with_dropout(self, q: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&q) {
            return Err(Error::Config(format!("dropout {q} must be in [0, 1)")));
        }
        Ok(Classifier { dropout: q, ..self })
    }

    /// The same classifier with the encoder's own dropout at rate `r` while training: on its
    /// embedding, every sublayer's output, every MLP activation and every attention's
    /// probabilities, as `torch.nn.TransformerEncoderLayer(dropout=r)` places it (and the
    /// embedding's as fairseq). A GPT body has no dropout: `r > 0` is refused for it.
    pub fn with_body_dropout(self, r: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&r) {
            return Err(Error::Config(format!(
                "encoder dropout {r} must be in [0, 1)"
            )));
        }
        if r > 0.0 && matches!(self.body, ClassifierBody::Gpt(_)) {
            return Err(Error::Config(
                "encoder dropout applies to an encoder body; a GPT body has none".into(),
            ));
        }
        Ok(Classifier {
            body_dropout: r,
            ..self
        })
    }

    /// The encoder's dropout rate while training (0 for a GPT body).
    pub fn body_dropout(&self) -> f32 {
        self.body_dropout
    }

    /// Outputs per sentence `K`.
    pub fn outputs(&self) -> usize {
        self.head.out_features()
    }

    /// True when only the head trains.
    pub fn freeze_body(&self) -> bool {
        self.freeze_body
    }

    /// The logits (regression: the scores) `[B, K]` of right-padded `tokens` (`B` rows of
    /// equal length) whose real lengths are `lengths`, without dropout.
    pub fn forward(&mut self, tokens: &[u32], lengths: &[usize]) -> Result<&[f32]> {
        self.forward_pooled(tokens, lengths, None)?;
        self.mask.clear();
        self.head_forward()
    }

    /// As [`Classifier::forward`], with dropout in the encoder (its masks drawn from
    /// `body_seed`) and before the head (its mask drawn from `rng`; nothing drawn at rate 0).
    pub fn forward_train(
        &mut self,
        tokens: &[u32],
        lengths: &[usize],
        body_seed: u64,
        rng: &mut Rng,
    ) -> Result<&[f32]> {
        let body_dropout = if self.body_dropout > 0.0 {
            let r = self.body_dropout;
            Some(Dropout::new(r, r, body_seed)?.with_attention(r)?)
        } else {
            None
        };
        self.forward_pooled(tokens, lengths, body_dropout)?;
        self.mask.clear();
        if self.dropout > 0.0 {
            let keep = 1.0 / (1.0 - self.dropout);
            let q = self.dropout;
            let draw = |_| if rng.uniform() < q { 0.0 } else { keep };
            self.mask.extend((0..self.pooled.len()).map(draw));
            self.pooled
                .iter_mut()
                .zip(&self.mask)
                .for_each(|(p, m)| *p *= m);
        }
        self.head_forward()
    }

    fn head_forward(&mut self) -> Result<&[f32]> {
        self.logits.resize(self.lengths.len() * self.outputs(), 0.0);
        self.head.forward(&mut self.logits, &self.pooled)?;
        Ok(&self.logits)
    }

    /// Body and pooling: fills `pooled`, `lengths`, `pool_lengths`, `seq`.
    fn forward_pooled(
        &mut self,
        tokens: &[u32],
        lengths: &[usize],
        dropout: Option<Dropout>,
    ) -> Result<()> {
        let batch = lengths.len();
        if batch == 0 || !tokens.len().is_multiple_of(batch) {
            return Err(Error::shape(
                "Classifier::forward",
                format!("{} tokens for {batch} rows", tokens.len()),
            ));
        }
        let (width, prefix) = (self.body.width(), self.body.prefix());
        let seq = tokens.len() / batch + prefix;
        self.pool_lengths.clear();
        self.pool_lengths
            .extend(lengths.iter().map(|&n| n + prefix));
        let hidden = self.body.forward(tokens, lengths, dropout)?;
        self.pooled.resize(batch * width, 0.0);
        self.pooling
            .forward(hidden, &self.pool_lengths, seq, &mut self.pooled)?;
        self.hidden_len = hidden.len();
        self.lengths.clear();
        self.lengths.extend_from_slice(lengths);
        self.seq = seq;
        Ok(())
    }

    /// The mean loss of the last forward against `labels` (classes) or `scores`
    /// (regression), and its gradient kept for [`Classifier::backward`].
    pub fn loss(&mut self, labels: &[u32], scores: &[f32]) -> Result<f32> {
        const OP: &str = "Classifier::loss";
        let batch = self.lengths.len();
        if labels.len() != batch || scores.len() != batch {
            return Err(Error::shape(
                OP,
                format!(
                    "{} labels and {} scores for {batch} rows",
                    labels.len(),
                    scores.len()
                ),
            ));
        }
        let k = self.outputs();
        self.d_logits.resize(batch * k, 0.0);
        if self.regression {
            let mut sum = 0.0f32;
            for ((d, &y), &t) in self.d_logits.iter_mut().zip(&self.logits).zip(scores) {
                let e = y - t;
                sum += e * e;
                *d = 2.0 * e / batch as f32;
            }
            return Ok(sum / batch as f32);
        }
        self.losses.resize(batch, 0.0);
        self.logsumexp.resize(batch, 0.0);
        let loss = cross_entropy_forward(
            &self.logits,
            labels,
            k,
            &mut self.losses,
            &mut self.logsumexp,
        )?;
        cross_entropy_backward(
            &mut self.d_logits,
            &self.logits,
            &self.logsumexp,
            labels,
            k,
            1.0,
        )?;
        Ok(loss)
    }

    /// Backpropagates the last [`Classifier::loss`], adding into the gradients of the head
    /// and, unless frozen, the body.
    pub fn backward(&mut self) -> Result<()> {
        let width = self.body.width();
        self.d_pooled.resize(self.lengths.len() * width, 0.0);
        self.head
            .backward(&mut self.d_pooled, &self.pooled, &self.d_logits)?;
        if self.freeze_body {
            return Ok(());
        }
        self.d_pooled
            .iter_mut()
            .zip(&self.mask)
            .for_each(|(d, m)| *d *= m);
        self.d_hidden.resize(self.hidden_len, 0.0);
        self.pooling.backward(
            &self.d_pooled,
            &self.pool_lengths,
            self.seq,
            &mut self.d_hidden,
        )?;
        self.body.backward(&self.d_hidden)
    }

    /// The gradient with respect to the body's hidden states `[B, T, C]` from the last
    /// [`Classifier::backward`] (empty when the body is frozen): what a gradient check of
    /// the pooling reads.
    pub fn hidden_grad(&self) -> &[f32] {
        &self.d_hidden
    }

    /// The parameters that train (the head's only, when the body is frozen): what the
    /// optimizer, clipping and gradient checks take.
    pub fn trainable_mut(&mut self) -> Vec<&mut Param> {
        let mut params = if self.freeze_body {
            Vec::new()
        } else {
            self.body.params_mut()
        };
        params.push(&mut self.head.weight);
        params.extend(self.head.bias.as_mut());
        params
    }

    /// Every parameter, body then head: what a checkpoint holds.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        self.body.visit_params(f);
        self.head.visit_params(f);
    }

    /// Every parameter, in [`Classifier::visit_params`] order.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut params = self.body.params_mut();
        params.push(&mut self.head.weight);
        params.extend(self.head.bias.as_mut());
        params
    }

    /// Clears the gradients of the trainable parameters.
    pub fn zero_grad(&mut self) {
        if !self.freeze_body {
            match &mut self.body {
                ClassifierBody::Gpt(gpt) => gpt.zero_grad(),
                ClassifierBody::Encoder(body) => {
                    body.params_mut().into_iter().for_each(|p| p.zero_grad())
                }
            }
        }
        self.head.visit_params_mut(&mut |p| p.zero_grad());
    }
}
