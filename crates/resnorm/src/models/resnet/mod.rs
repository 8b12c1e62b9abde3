//! Residual networks for images (He et al., 2015) and their plain twins, laid out and named
//! as torchvision's `resnet18`/`resnet34` (`conv1`, `bn1`, `layer{s}.{b}.conv1`, ...,
//! `fc`), with explicit forward and backward passes.
//!
//! ```text
//! x ─ stem (conv1, bn1, relu[, maxpool]) ─ layer1 … layerS (BasicBlocks) ─ avgpool ─ fc ─ logits
//! ```
//!
//! Backward runs the same path in reverse: `fc`, the average pool (`dx = dy / HW`), every
//! block (see [`block`]), the max pool, ReLU and the stem. Parameters are handed out in
//! torchvision's `state_dict` order; the BatchNorm running statistics are buffers
//! ([`ResNet::visit_buffers`]), saved with the parameters but not trained. `fc.weight` is
//! `[classes, 512]` as in torchvision (see [`classifier`]).
//!
//! Activations live in the layers and are resized to the batch on each forward pass, so a
//! training loop allocates only while the batch size grows.
//!
//! ```
//! use resnorm::models::resnet::{ResNet, ResNetConfig};
//! use resnorm::nn::ImageShape;
//! use resnorm::rng::Rng;
//! let config = ResNetConfig::named("resnet20", 1, 10).unwrap();
//! let mut net = ResNet::new(&config, &mut Rng::new(0)).unwrap();
//! let shape = ImageShape::new(2, 1, 8, 8);
//! let images = vec![0.5; shape.len()];
//! let logits = net.forward(&images, shape).unwrap().to_vec();
//! assert_eq!(logits.len(), 2 * 10);
//! net.backward(&images, &vec![0.1; 20]).unwrap();
//! let mut names = Vec::new();
//! net.visit_params(&mut |p| names.push(p.name.clone()));
//! assert_eq!(names[..3], ["conv1.weight", "bn1.weight", "bn1.bias"]);
//! assert_eq!(names.last().unwrap(), "fc.bias");
//! ```

pub mod block;
pub mod classifier;
pub mod config;
pub mod conv_bn;

pub use block::{BasicBlock, Shortcut};
pub use classifier::Classifier;
pub use config::{ResNetConfig, Stem, ARCHITECTURES};
pub use conv_bn::ConvBn;

use crate::kernels::batch_norm::Activation;
use crate::nn::{BatchNorm2d, GlobalAvgPool, ImageShape, MaxPool2d, Param};
use crate::rng::Rng;
use crate::{Error, Result};

/// A ResNet (or plain network) with its activations.
#[derive(Clone, Debug)]
pub struct ResNet {
    config: ResNetConfig,
    /// `conv1` and `bn1`; ReLU is applied to its output in place.
    pub stem: ConvBn,
    stem_pool: Option<MaxPool2d>,
    /// The blocks of every stage, in order (`layer1.0`, `layer1.1`, …).
    pub blocks: Vec<BasicBlock>,
    /// The classifier.
    pub fc: Classifier,
    input_shape: Option<ImageShape>,
    stem_shape: ImageShape,
    pooled: Vec<f32>,
    pooled_shape: ImageShape,
    features: Vec<f32>,
    logits: Vec<f32>,
    dfeatures: Vec<f32>,
    dlast: Vec<f32>,
    dstem: Vec<f32>,
    dimages: Vec<f32>,
}

impl ResNet {
    /// A network of shape `config`, initialized as torchvision does from `rng`.
    pub fn new(config: &ResNetConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let first = config.stage_channels[0];
        let (stem, stem_pool) = match config.stem {
            config::Stem::ImageNet => (
                ConvBn::new("conv1", "bn1", (config.in_channels, first), 7, 2)?,
                Some(MaxPool2d::new(3, 2, 1)?),
            ),
            config::Stem::Small => (
                ConvBn::new("conv1", "bn1", (config.in_channels, first), 3, 1)?,
                None,
            ),
        };
        let mut blocks = Vec::new();
        let mut in_channels = first;
        for (stage, (&count, &channels)) in config
            .stage_blocks
            .iter()
            .zip(&config.stage_channels)
            .enumerate()
        {
            for index in 0..count {
                let stride = if stage > 0 && index == 0 { 2 } else { 1 };
                let name = format!("layer{}.{index}", stage + 1);
                blocks.push(BasicBlock::new(
                    &name,
                    in_channels,
                    channels,
                    stride,
                    config.shortcuts,
                )?);
                in_channels = channels;
            }
        }
        let empty = ImageShape::new(0, 0, 0, 0);
        let mut net = ResNet {
            config: config.clone(),
            stem,
            stem_pool,
            blocks,
            fc: Classifier::new("fc", in_channels, config.num_classes)?,
            input_shape: None,
            stem_shape: empty,
            pooled: Vec::new(),
            pooled_shape: empty,
            features: Vec::new(),
            logits: Vec::new(),
            dfeatures: Vec::new(),
            dlast: Vec::new(),
            dstem: Vec::new(),
            dimages: Vec::new(),
        };
        net.init(rng);
        Ok(net)
    }

    /// torchvision's initialization, drawn from `rng` in parameter order.
    pub fn init(&mut self, rng: &mut Rng) {
        self.stem.init(rng);
        let zero = self.config.zero_init_residual;
        for block in &mut self.blocks {
            block.init(rng, zero);
        }
        self.fc.init(rng);
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// Switches every BatchNorm between batch statistics (training) and running statistics.
    pub fn set_training(&mut self, training: bool) {
        self.stem.set_training(training);
        for block in &mut self.blocks {
            block.set_training(training);
        }
    }

    /// Computes the logits `[N, classes]` of `images` (shape `shape`).
    pub fn forward(&mut self, images: &[f32], shape: ImageShape) -> Result<&[f32]> {
        const OP: &str = "ResNet::forward";
        shape.check_len(OP, "images", images)?;
        if shape.channels != self.config.in_channels {
            return Err(Error::shape(
                OP,
                format!(
                    "images {shape} have {} channels, the network takes {}",
                    shape.channels, self.config.in_channels
                ),
            ));
        }
        self.input_shape = None;
        self.stem_shape = self.stem.forward(images, shape, Activation::Relu)?;
        let mut current = self.stem_shape;
        if let Some(pool) = &mut self.stem_pool {
            current = pool.output_shape(current)?;
            self.pooled.resize(current.len(), 0.0);
            pool.forward(self.stem.output(), self.stem_shape, &mut self.pooled)?;
        }
        self.pooled_shape = current;
        for i in 0..self.blocks.len() {
            let (done, rest) = self.blocks.split_at_mut(i);
            let input = output_before(done, &self.stem, self.stem_pool.is_some(), &self.pooled);
            current = rest[0].forward(input, current)?;
        }
        let last = output_before(
            &self.blocks,
            &self.stem,
            self.stem_pool.is_some(),
            &self.pooled,
        );
        self.features.resize(current.batch * current.channels, 0.0);
        GlobalAvgPool.forward(last, current, &mut self.features)?;
        self.logits
            .resize(current.batch * self.config.num_classes, 0.0);
        self.fc.forward(&self.features, &mut self.logits)?;
        self.input_shape = Some(shape);
        Ok(&self.logits)
    }

    /// Adds every parameter's gradient of the loss given `dlogits = ∂L/∂logits`, for the
    /// last forward pass over `images`.
    pub fn backward(&mut self, images: &[f32], dlogits: &[f32]) -> Result<()> {
        const OP: &str = "ResNet::backward";
        let Some(shape) = self.input_shape else {
            return Err(Error::invalid(OP, "no forward pass to go back through"));
        };
        shape.check_len(OP, "images", images)?;
        if dlogits.len() != self.logits.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "dlogits has {} elements, the logits {}",
                    dlogits.len(),
                    self.logits.len()
                ),
            ));
        }
        self.dfeatures.resize(self.features.len(), 0.0);
        self.fc
            .backward(&self.features, dlogits, &mut self.dfeatures)?;
        let block_shapes = self.block_input_shapes()?;
        let last_shape = match self.blocks.last() {
            Some(block) => block.output_shape(*block_shapes.last().expect("one per block"))?,
            None => self.pooled_shape,
        };
        self.dlast.resize(last_shape.len(), 0.0);
        GlobalAvgPool.backward(&self.dfeatures, last_shape, &mut self.dlast)?;
        for i in (0..self.blocks.len()).rev() {
            let (done, rest) = self.blocks.split_at_mut(i);
            let (block, later) = rest.split_first_mut().expect("block i exists");
            let input = output_before(done, &self.stem, self.stem_pool.is_some(), &self.pooled);
            let doutput = later.first().map_or(&self.dlast[..], |next| next.dinput());
            block.backward(input, block_shapes[i], doutput)?;
        }
        let dstem_out = self.blocks.first().map_or(&self.dlast[..], |b| b.dinput());
        let dstem = match &self.stem_pool {
            Some(pool) => {
                self.dstem.resize(self.stem_shape.len(), 0.0);
                pool.backward(dstem_out, self.stem_shape, &mut self.dstem)?;
                &self.dstem
            }
            None => dstem_out,
        };
        self.dimages.resize(images.len(), 0.0);
        // The stem's ReLU is undone inside its BatchNorm's backward.
        self.stem.backward(images, shape, dstem, &mut self.dimages)
    }

    /// The input shape of every block in the last forward pass.
    fn block_input_shapes(&self) -> Result<Vec<ImageShape>> {
        let mut shapes = Vec::with_capacity(self.blocks.len());
        let mut current = self.pooled_shape;
        for block in &self.blocks {
            shapes.push(current);
            current = block.output_shape(current)?;
        }
        Ok(shapes)
    }

    /// The gradient with respect to the images, from the last backward pass.
    pub fn dimages(&self) -> &[f32] {
        &self.dimages
    }

    /// The output of every BatchNorm of the blocks' residual branches in the last forward
    /// pass (before ReLU), by name (`layer1.0.bn1.weight`, ...): He et al.'s "layer
    /// responses".
    pub fn responses(&self) -> Result<Vec<(&str, Vec<f32>)>> {
        let mut responses = Vec::with_capacity(2 * self.blocks.len());
        for block in &self.blocks {
            responses.extend(block.responses()?);
        }
        Ok(responses)
    }

    /// Every BatchNorm, in torchvision's order.
    pub fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        let mut norms = vec![&self.stem.bn];
        norms.extend(self.blocks.iter().flat_map(|b| b.batch_norms()));
        norms
    }

    /// Every BatchNorm, mutable.
    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm2d> {
        let mut norms = vec![&mut self.stem.bn];
        norms.extend(self.blocks.iter_mut().flat_map(|b| b.batch_norms_mut()));
        norms
    }

    /// Hands every trainable parameter to `f`, in torchvision's `state_dict` order.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        self.stem.visit_params(f);
        for block in &self.blocks {
            block.visit_params(f);
        }
        self.fc.visit_params(f);
    }

    /// The parameters of [`ResNet::visit_params`], in the same order, for updating.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut params = self.stem.params_mut();
        for block in &mut self.blocks {
            params.extend(block.params_mut());
        }
        params.extend([&mut self.fc.weight, &mut self.fc.bias]);
        params
    }

    /// Hands every BatchNorm running statistic (a buffer) to `f`.
    pub fn visit_buffers(&self, f: &mut dyn FnMut(&Param)) {
        for bn in self.batch_norms() {
            bn.visit_buffers(f);
        }
    }

    /// As [`ResNet::visit_buffers`], for loading.
    pub fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for bn in self.batch_norms_mut() {
            bn.visit_buffers_mut(f);
        }
    }
}

/// The activation that follows `blocks`: the last one's output, or the stem's (after ReLU
/// and, when `pooled_stem`, max pooling) when there are none.
fn output_before<'a>(
    blocks: &'a [BasicBlock],
    stem: &'a ConvBn,
    pooled_stem: bool,
    pooled: &'a [f32],
) -> &'a [f32] {
    match blocks.last() {
        Some(block) => block.output(),
        None if pooled_stem => pooled,
        None => stem.output(),
    }
}
