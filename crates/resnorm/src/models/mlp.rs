//! The feed-forward example: a deep stack of `Linear → Norm → ReLU` blocks, each with an
//! optional skip connection, over flattened images.
//!
//! ```text
//! h₀ = relu(input(flatten(x)))                      input: [pixels, width]
//! a_l = relu(norm_l(linear_l(h_{l-1})))              l = 1 … depth
//! h_l = h_{l-1} + a_l   (residual on)    or   a_l   (residual off)
//! logits = head(h_depth)                             head: [width, classes]
//! ```
//!
//! Backward, with `g_l = ∂L/∂h_l`: `∂L/∂a_l = g_l`, then ReLU, norm and linear backward give
//! the branch's input gradient `b_l`, and `g_{l-1} = b_l + g_l` with the skip (the identity
//! path carries `g_l` down unchanged) or `b_l` without. `norm` is LayerNorm, RMSNorm,
//! BatchNorm over the batch (`[rows, width]` as `[N, C, 1, 1]`) or nothing. Linear weights
//! are stored `[in, out]` ([`crate::nn::Linear`]) and drawn from He et al.'s
//! `N(0, 2/fan_in)`; the head from `N(0, 1/width)`; biases start at 0.
//!
//! ```
//! use resnorm::models::mlp::{Mlp, MlpConfig, MlpNorm};
//! use resnorm::nn::ImageShape;
//! use resnorm::rng::Rng;
//! let config = MlpConfig { in_features: 4, depth: 3, width: 8, num_classes: 2,
//!                          norm: MlpNorm::Layer, residual: true };
//! let mut mlp = Mlp::new(&config, &mut Rng::new(0)).unwrap();
//! let shape = ImageShape::new(2, 1, 2, 2);
//! let images = [0.1, 0.5, -0.3, 0.2, 0.9, -0.4, 0.0, 0.7];
//! let logits = mlp.forward(&images, shape).unwrap();
//! assert_eq!(logits.len(), 4);
//! mlp.backward(&images, &[0.5, -0.5, -0.5, 0.5]).unwrap();
//! assert!(mlp.blocks[0].linear.weight.grad.iter().any(|&g| g != 0.0));
//! ```

use std::str::FromStr;

use crate::kernels::norm::{NormKind, DEFAULT_EPS};
use crate::kernels::residual::residual_add_assign;
use crate::kernels::{relu_backward_in_place, relu_forward, relu_forward_in_place};
use crate::nn::norm::{Norm, NormSaved};
use crate::nn::{BatchNorm2d, ImageShape, Linear, Param};
use crate::rng::Rng;
use crate::{Error, Result};

/// The normalization inside every block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpNorm {
    /// LayerNorm over the features of each row.
    Layer,
    /// RMSNorm over the features of each row.
    Rms,
    /// BatchNorm over the rows of the batch, per feature.
    Batch,
    /// No normalization.
    None,
}

impl FromStr for MlpNorm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "layer" => Ok(MlpNorm::Layer),
            "rms" => Ok(MlpNorm::Rms),
            "batch" => Ok(MlpNorm::Batch),
            "none" => Ok(MlpNorm::None),
            _ => Err(Error::Config(format!(
                "unknown norm `{s}`; known: layer, rms, batch, none"
            ))),
        }
    }
}

impl MlpNorm {
    /// The spelling [`MlpNorm::from_str`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            MlpNorm::Layer => "layer",
            MlpNorm::Rms => "rms",
            MlpNorm::Batch => "batch",
            MlpNorm::None => "none",
        }
    }
}

/// The sizes and wiring of an [`Mlp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpConfig {
    /// Values per image (`C·H·W`).
    pub in_features: usize,
    /// Number of `Linear → Norm → ReLU` blocks.
    pub depth: usize,
    /// Width of every hidden layer.
    pub width: usize,
    /// Outputs of the head.
    pub num_classes: usize,
    /// The normalization in each block.
    pub norm: MlpNorm,
    /// Whether each block has a skip connection.
    pub residual: bool,
}

impl MlpConfig {
    /// Exactly the number of parameters [`Mlp::new`] allocates, or an error when it overflows
    /// 64 bits.
    pub fn num_params(&self) -> crate::Result<u64> {
        use crate::memory::{product, sum};
        let what = "mlp's parameters";
        let [i, d, w, k] =
            [self.in_features, self.depth, self.width, self.num_classes].map(|x| x as u64);
        let norm = match self.norm {
            MlpNorm::Layer | MlpNorm::Batch => product(what, &[2, w])?,
            MlpNorm::Rms => w,
            MlpNorm::None => 0,
        };
        let block = sum(what, &[product(what, &[w, w])?, w, norm])?;
        sum(
            what,
            &[
                product(what, &[sum(what, &[i, 1])?, w])?,
                product(what, &[d, block])?,
                product(what, &[sum(what, &[w, 1])?, k])?,
            ],
        )
    }
}

/// One block's normalization with its saved statistics.
#[derive(Clone, Debug)]
enum BlockNorm {
    Row(Box<Norm>, NormSaved),
    Batch(Box<BatchNorm2d>),
    Identity,
}

/// One `Linear → Norm → ReLU` block and its activations.
#[derive(Clone, Debug)]
pub struct MlpBlock {
    /// `blocks.{l}.linear`.
    pub linear: Linear,
    norm: BlockNorm,
    linear_out: Vec<f32>,
    norm_out: Vec<f32>,
    activation: Vec<f32>,
    output: Vec<f32>,
    dactivation: Vec<f32>,
    dlinear_out: Vec<f32>,
    dinput: Vec<f32>,
}

/// The deep feed-forward network.
#[derive(Clone, Debug)]
pub struct Mlp {
    config: MlpConfig,
    /// `input`: pixels to the first hidden layer.
    pub input: Linear,
    /// The blocks, in order.
    pub blocks: Vec<MlpBlock>,
    /// `head`: last hidden layer to logits.
    pub head: Linear,
    rows: usize,
    stem: Vec<f32>,
    logits: Vec<f32>,
    dlast: Vec<f32>,
    dstem: Vec<f32>,
    dimages: Vec<f32>,
}

impl MlpBlock {
    fn new(index: usize, config: &MlpConfig) -> Result<Self> {
        let name = format!("blocks.{index}");
        let norm_name = format!("{name}.norm");
        let width = config.width;
        let norm = match config.norm {
            MlpNorm::Layer => BlockNorm::Row(
                Box::new(Norm::new(&norm_name, NormKind::Layer, width, DEFAULT_EPS)),
                NormSaved::new(NormKind::Layer, 0),
            ),
            MlpNorm::Rms => BlockNorm::Row(
                Box::new(Norm::new(&norm_name, NormKind::Rms, width, DEFAULT_EPS)),
                NormSaved::new(NormKind::Rms, 0),
            ),
            MlpNorm::Batch => BlockNorm::Batch(Box::new(BatchNorm2d::new(&norm_name, width)?)),
            MlpNorm::None => BlockNorm::Identity,
        };
        Ok(MlpBlock {
            linear: Linear::new(&format!("{name}.linear"), width, width, true)?,
            norm,
            linear_out: Vec::new(),
            norm_out: Vec::new(),
            activation: Vec::new(),
            output: Vec::new(),
            dactivation: Vec::new(),
            dlinear_out: Vec::new(),
            dinput: Vec::new(),
        })
    }

    fn forward(&mut self, input: &[f32], rows: usize, residual: bool) -> Result<()> {
        let len = input.len();
        for buffer in [
            &mut self.linear_out,
            &mut self.norm_out,
            &mut self.activation,
        ] {
            buffer.resize(len, 0.0);
        }
        self.linear.forward(&mut self.linear_out, input)?;
        let width = self.linear.out_features();
        match &mut self.norm {
            BlockNorm::Row(norm, saved) => {
                if saved.rstd.len() != rows {
                    *saved = NormSaved::new(norm.kind, rows);
                }
                norm.forward(&self.linear_out, &mut self.norm_out, saved)?;
            }
            BlockNorm::Batch(bn) => {
                let shape = ImageShape::new(rows, width, 1, 1);
                bn.forward(&self.linear_out, shape, &mut self.norm_out)?;
            }
            BlockNorm::Identity => self.norm_out.copy_from_slice(&self.linear_out),
        }
        relu_forward(&self.norm_out, &mut self.activation)?;
        self.output.clear();
        self.output.extend_from_slice(&self.activation);
        if residual {
            residual_add_assign(&mut self.output, input)?;
        }
        Ok(())
    }

    fn backward(
        &mut self,
        input: &[f32],
        doutput: &[f32],
        rows: usize,
        residual: bool,
    ) -> Result<()> {
        let width = self.linear.out_features();
        self.dactivation.clear();
        self.dactivation.extend_from_slice(doutput);
        relu_backward_in_place(&self.activation, &mut self.dactivation)?;
        self.dlinear_out.resize(doutput.len(), 0.0);
        match &mut self.norm {
            BlockNorm::Row(norm, saved) => norm.backward(
                &self.dactivation,
                &self.linear_out,
                saved,
                &mut self.dlinear_out,
            )?,
            BlockNorm::Batch(bn) => {
                let shape = ImageShape::new(rows, width, 1, 1);
                bn.backward(
                    &self.linear_out,
                    shape,
                    &self.dactivation,
                    &mut self.dlinear_out,
                )?
            }
            BlockNorm::Identity => self.dlinear_out.copy_from_slice(&self.dactivation),
        }
        self.dinput.resize(input.len(), 0.0);
        self.linear
            .backward(&mut self.dinput, input, &self.dlinear_out)?;
        if residual {
            residual_add_assign(&mut self.dinput, doutput)?;
        }
        Ok(())
    }

    fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        self.linear.visit_params(f);
        match &self.norm {
            BlockNorm::Row(norm, _) => norm.visit_params(f),
            BlockNorm::Batch(bn) => bn.visit_params(f),
            BlockNorm::Identity => {}
        }
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut params = linear_params_mut(&mut self.linear);
        match &mut self.norm {
            BlockNorm::Row(norm, _) => {
                params.push(&mut norm.weight);
                params.extend(norm.bias.as_mut());
            }
            BlockNorm::Batch(bn) => params.extend([&mut bn.weight, &mut bn.bias]),
            BlockNorm::Identity => {}
        }
        params
    }

    /// The block's output in the last forward pass.
    pub fn output(&self) -> &[f32] {
        &self.output
    }
}

impl Mlp {
    /// A network of shape `config`, initialized from `rng`.
    pub fn new(config: &MlpConfig, rng: &mut Rng) -> Result<Self> {
        if config.in_features == 0 || config.width == 0 || config.num_classes == 0 {
            return Err(Error::Config(format!(
                "mlp needs positive input, width and classes, got {config:?}"
            )));
        }
        let mut input = Linear::new("input", config.in_features, config.width, true)?;
        input.init(rng, (2.0 / config.in_features as f32).sqrt());
        let blocks = (0..config.depth)
            .map(|l| {
                let mut block = MlpBlock::new(l, config)?;
                block.linear.init(rng, (2.0 / config.width as f32).sqrt());
                Ok(block)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut head = Linear::new("head", config.width, config.num_classes, true)?;
        head.init(rng, (1.0 / config.width as f32).sqrt());
        Ok(Mlp {
            config: *config,
            input,
            blocks,
            head,
            rows: 0,
            stem: Vec::new(),
            logits: Vec::new(),
            dlast: Vec::new(),
            dstem: Vec::new(),
            dimages: Vec::new(),
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// Computes the logits `[N, classes]` of `images` (shape `shape`, `C·H·W` =
    /// `in_features`).
    pub fn forward(&mut self, images: &[f32], shape: ImageShape) -> Result<&[f32]> {
        const OP: &str = "Mlp::forward";
        shape.check_len(OP, "images", images)?;
        if shape.image_len() != self.config.in_features {
            return Err(Error::shape(
                OP,
                format!(
                    "images {shape} have {} values each, the network takes {}",
                    shape.image_len(),
                    self.config.in_features
                ),
            ));
        }
        self.rows = 0;
        let rows = shape.batch;
        self.stem.resize(rows * self.config.width, 0.0);
        self.input.forward(&mut self.stem, images)?;
        relu_forward_in_place(&mut self.stem);
        let residual = self.config.residual;
        for i in 0..self.blocks.len() {
            let (done, rest) = self.blocks.split_at_mut(i);
            let input = done.last().map_or(&self.stem[..], |b| b.output());
            rest[0].forward(input, rows, residual)?;
        }
        let last = self.blocks.last().map_or(&self.stem[..], |b| b.output());
        self.logits.resize(rows * self.config.num_classes, 0.0);
        self.head.forward(&mut self.logits, last)?;
        self.rows = rows;
        Ok(&self.logits)
    }

    /// Adds every parameter's gradient given `dlogits`, for the last forward over `images`.
    pub fn backward(&mut self, images: &[f32], dlogits: &[f32]) -> Result<()> {
        const OP: &str = "Mlp::backward";
        if self.rows == 0 {
            return Err(Error::invalid(OP, "no forward pass to go back through"));
        }
        if dlogits.len() != self.logits.len() || images.len() != self.rows * self.config.in_features
        {
            return Err(Error::shape(
                OP,
                format!(
                    "dlogits has {} elements and images {}, the last forward had {} and {}",
                    dlogits.len(),
                    images.len(),
                    self.logits.len(),
                    self.rows * self.config.in_features
                ),
            ));
        }
        let (rows, residual) = (self.rows, self.config.residual);
        let last = self.blocks.last().map_or(&self.stem[..], |b| b.output());
        self.dlast.resize(last.len(), 0.0);
        self.head.backward(&mut self.dlast, last, dlogits)?;
        for i in (0..self.blocks.len()).rev() {
            let (done, rest) = self.blocks.split_at_mut(i);
            let (block, later) = rest.split_first_mut().expect("block i exists");
            let input = done.last().map_or(&self.stem[..], |b| b.output());
            let doutput = later
                .first()
                .map_or(&self.dlast[..], |next| &next.dinput[..]);
            block.backward(input, doutput, rows, residual)?;
        }
        let dstem = self
            .blocks
            .first()
            .map_or(&self.dlast[..], |b| &b.dinput[..]);
        self.dstem.clear();
        self.dstem.extend_from_slice(dstem);
        relu_backward_in_place(&self.stem, &mut self.dstem)?;
        self.dimages.resize(images.len(), 0.0);
        self.input.backward(&mut self.dimages, images, &self.dstem)
    }

    /// Switches BatchNorm blocks between batch and running statistics.
    pub fn set_training(&mut self, training: bool) {
        for block in &mut self.blocks {
            if let BlockNorm::Batch(bn) = &mut block.norm {
                bn.set_training(training);
            }
        }
    }

    /// Hands every parameter to `f`: `input`, each block (linear, norm), `head`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        self.input.visit_params(f);
        for block in &self.blocks {
            block.visit_params(f);
        }
        self.head.visit_params(f);
    }

    /// The parameters of [`Mlp::visit_params`], in the same order, for updating.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut params = linear_params_mut(&mut self.input);
        for block in &mut self.blocks {
            params.extend(block.params_mut());
        }
        params.extend(linear_params_mut(&mut self.head));
        params
    }

    /// Hands the running statistics of BatchNorm blocks to `f`.
    pub fn visit_buffers(&self, f: &mut dyn FnMut(&Param)) {
        for block in &self.blocks {
            if let BlockNorm::Batch(bn) = &block.norm {
                bn.visit_buffers(f);
            }
        }
    }

    /// As [`Mlp::visit_buffers`], for loading.
    pub fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for block in &mut self.blocks {
            if let BlockNorm::Batch(bn) = &mut block.norm {
                bn.visit_buffers_mut(f);
            }
        }
    }
}

/// A linear layer's weight, then bias.
fn linear_params_mut(linear: &mut Linear) -> Vec<&mut Param> {
    let mut params = vec![&mut linear.weight];
    params.extend(linear.bias.as_mut());
    params
}
