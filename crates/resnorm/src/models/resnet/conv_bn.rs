//! Convolution followed by batch normalization and an activation, the unit every ResNet is
//! made of, with the activations its backward needs.
//!
//! ```text
//! forward   z = conv(x)        y = act(bn(z))       act: identity, relu, or relu(· + skip)
//! backward  dz = bn'(dy; z)    dx = conv'(dz; x)    (weights' gradients added)
//! ```
//!
//! The activation runs in BatchNorm's output pass, and a ReLU's backward in BatchNorm's
//! backward (its mask recomputed from `z`), so neither costs a pass over memory of its own.
//! The unit owns `z` (the convolution's output, which BatchNorm's backward needs), `y` and
//! `dz`; buffers are resized to the batch on each forward and reused. The caller keeps `x`.

use crate::kernels::batch_norm::Activation;
use crate::nn::{BatchNorm2d, Conv2d, Conv2dConfig, ImageShape, Param};
use crate::rng::Rng;
use crate::{Error, Result};

/// `bn(conv(x))` with its saved activations.
#[derive(Clone, Debug)]
pub struct ConvBn {
    /// The convolution (no bias).
    pub conv: Conv2d,
    /// The normalization of its output.
    pub bn: BatchNorm2d,
    conv_out: Vec<f32>,
    output: Vec<f32>,
    dconv_out: Vec<f32>,
    output_shape: Option<ImageShape>,
    relu: bool,
}

impl ConvBn {
    /// A `kernel x kernel` convolution from `in_channels` to `out_channels` with `stride`
    /// and padding `kernel / 2`, named `conv_name`, and a BatchNorm named `bn_name`.
    pub fn new(
        conv_name: &str,
        bn_name: &str,
        channels: (usize, usize),
        kernel_size: usize,
        stride: usize,
    ) -> Result<Self> {
        let config = Conv2dConfig {
            in_channels: channels.0,
            out_channels: channels.1,
            kernel_size,
            stride,
            padding: kernel_size / 2,
            bias: false,
        };
        Ok(ConvBn {
            conv: Conv2d::new(conv_name, config)?,
            bn: BatchNorm2d::new(bn_name, channels.1)?,
            conv_out: Vec::new(),
            output: Vec::new(),
            dconv_out: Vec::new(),
            output_shape: None,
            relu: false,
        })
    }

    /// torchvision's initialization: Kaiming-normal (fan-out) convolution, BN weight 1 and
    /// bias 0.
    pub fn init(&mut self, rng: &mut Rng) {
        self.conv.init_kaiming_normal(rng);
        self.bn.weight.value.fill(1.0);
        self.bn.bias.value.fill(0.0);
    }

    /// The output shape for an input of shape `input`.
    pub fn output_shape(&self, input: ImageShape) -> Result<ImageShape> {
        self.conv.output_shape(input)
    }

    /// Computes `activation(bn(conv(input)))`; read it with [`ConvBn::output`].
    pub fn forward(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        activation: Activation,
    ) -> Result<ImageShape> {
        let out_shape = self.conv.output_shape(shape)?;
        self.output_shape = None;
        self.conv_out.resize(out_shape.len(), 0.0);
        self.output.resize(out_shape.len(), 0.0);
        self.conv.forward(input, shape, &mut self.conv_out)?;
        self.bn
            .forward_with(&self.conv_out, out_shape, activation, &mut self.output)?;
        self.relu = matches!(activation, Activation::Relu);
        self.output_shape = Some(out_shape);
        Ok(out_shape)
    }

    /// The last forward pass's output (after the activation).
    pub fn output(&self) -> &[f32] {
        &self.output
    }

    /// BatchNorm's output in the last forward pass, before the activation (recomputed).
    pub fn normalized(&self) -> Result<Vec<f32>> {
        let shape = self.output_shape.ok_or_else(|| {
            Error::invalid(
                "ConvBn::normalized",
                "no forward pass to take the output of",
            )
        })?;
        let mut normalized = vec![0.0; shape.len()];
        self.bn.normalized(&self.conv_out, shape, &mut normalized)?;
        Ok(normalized)
    }

    /// Overwrites `dinput` with `∂L/∂input` given the forward's `input` (shape `shape`) and
    /// `doutput`, the gradient at the unit's output (after an add-and-ReLU activation: at
    /// the sum); adds the convolution's and BatchNorm's parameter gradients.
    pub fn backward(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        doutput: &[f32],
        dinput: &mut [f32],
    ) -> Result<()> {
        self.bn_backward(shape, doutput)?;
        self.conv.backward(input, shape, &self.dconv_out, dinput)
    }

    /// Like [`ConvBn::backward`], but adds `∂L/∂input` to `dinput`'s contents (see
    /// [`Conv2d::backward_add`]).
    pub fn backward_add(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        doutput: &[f32],
        dinput: &mut [f32],
    ) -> Result<()> {
        self.bn_backward(shape, doutput)?;
        self.conv
            .backward_add(input, shape, &self.dconv_out, dinput)
    }

    /// `dz = bn'(doutput; z)` into `dconv_out`, through the forward's ReLU if it had one.
    fn bn_backward(&mut self, shape: ImageShape, doutput: &[f32]) -> Result<()> {
        let out_shape = self.conv.output_shape(shape)?;
        self.dconv_out.resize(out_shape.len(), 0.0);
        let (z, dz) = (&self.conv_out, &mut self.dconv_out);
        if self.relu {
            self.bn.backward_relu(z, out_shape, doutput, dz)
        } else {
            self.bn.backward(z, out_shape, doutput, dz)
        }
    }

    /// Switches BatchNorm between batch and running statistics.
    pub fn set_training(&mut self, training: bool) {
        self.bn.set_training(training);
    }

    /// Hands the convolution's weight, then BatchNorm's weight and bias, to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        self.conv.visit_params(f);
        self.bn.visit_params(f);
    }

    /// The parameters of [`ConvBn::visit_params`], in the same order, for updating.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut params = vec![&mut self.conv.weight];
        params.extend(self.conv.bias.as_mut());
        params.extend([&mut self.bn.weight, &mut self.bn.bias]);
        params
    }
}
