//! torchvision's `BasicBlock`: two 3x3 convolutions with BatchNorm, and a shortcut.
//!
//! ```text
//! h   = relu(bn1(conv1(x)))                 conv1: 3x3, stride s
//! f   = bn2(conv2(h))                       conv2: 3x3, stride 1
//! out = relu(f + shortcut(x))
//! shortcut(x) = x                            when s = 1 and the channels are kept
//!             = bn(conv1x1_s(x))             otherwise ("downsample.0", "downsample.1")
//!             = 0                            in a plain network (no shortcut at all)
//! ```
//!
//! Backward, with `g = ∂L/∂out` and `d = g ⊙ [out > 0]` (the gradient at the sum):
//!
//! ```text
//! dh = conv2'(bn2'(d)) ⊙ [h > 0]     dx = conv1'(bn1'(dh)) + shortcut'(d)
//! ```
//!
//! where `shortcut'(d) = d` for the identity: the residual add passes the gradient through
//! unchanged, which is why deep residual networks keep training. Each ReLU (and the add)
//! runs inside the BatchNorm pass before it, and `[h > 0]` inside bn1's backward (see
//! [`ConvBn`]), so the block makes no element-wise pass of its own but `d`. `zero_init_residual` sets
//! `bn2`'s weight to 0 so that every block starts as the identity (or its projection).

use super::conv_bn::ConvBn;
use crate::kernels::batch_norm::Activation;
use crate::kernels::relu_backward;
use crate::nn::{ImageShape, Param};
use crate::rng::Rng;
use crate::{Error, Result};

/// What a block adds to its residual branch.
#[derive(Clone, Debug)]
pub enum Shortcut {
    /// `x` itself.
    Identity,
    /// `bn(conv1x1(x))`, when the stride or the channel count changes.
    Projection(Box<ConvBn>),
    /// Nothing: the block of a plain network.
    Absent,
}

/// One residual (or, without shortcut, plain) block with its activations.
#[derive(Clone, Debug)]
pub struct BasicBlock {
    /// `conv1` and `bn1`.
    pub branch1: ConvBn,
    /// `conv2` and `bn2`.
    pub branch2: ConvBn,
    /// The shortcut.
    pub shortcut: Shortcut,
    dsum: Vec<f32>,
    dhidden: Vec<f32>,
    dinput: Vec<f32>,
}

impl BasicBlock {
    /// The block named `name` (e.g. `layer2.0`) from `in_channels` to `out_channels` with
    /// the first convolution's `stride`; `shortcuts: false` builds a plain block.
    pub fn new(
        name: &str,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        shortcuts: bool,
    ) -> Result<Self> {
        let shortcut = if !shortcuts {
            Shortcut::Absent
        } else if stride == 1 && in_channels == out_channels {
            Shortcut::Identity
        } else {
            Shortcut::Projection(Box::new(ConvBn::new(
                &format!("{name}.downsample.0"),
                &format!("{name}.downsample.1"),
                (in_channels, out_channels),
                1,
                stride,
            )?))
        };
        Ok(BasicBlock {
            branch1: ConvBn::new(
                &format!("{name}.conv1"),
                &format!("{name}.bn1"),
                (in_channels, out_channels),
                3,
                stride,
            )?,
            branch2: ConvBn::new(
                &format!("{name}.conv2"),
                &format!("{name}.bn2"),
                (out_channels, out_channels),
                3,
                1,
            )?,
            shortcut,
            dsum: Vec::new(),
            dhidden: Vec::new(),
            dinput: Vec::new(),
        })
    }

    /// torchvision's initialization; with `zero_init_residual`, `bn2.weight = 0`.
    pub fn init(&mut self, rng: &mut Rng, zero_init_residual: bool) {
        self.branch1.init(rng);
        self.branch2.init(rng);
        if let Shortcut::Projection(projection) = &mut self.shortcut {
            projection.init(rng);
        }
        if zero_init_residual {
            self.branch2.bn.weight.value.fill(0.0);
        }
    }

    /// The output shape for an input of shape `input`.
    pub fn output_shape(&self, input: ImageShape) -> Result<ImageShape> {
        self.branch1.output_shape(input)
    }

    /// Computes the block's output (read it with [`BasicBlock::output`]) and returns its
    /// shape. Each ReLU, and the add before the last one, runs in its BatchNorm's pass.
    pub fn forward(&mut self, input: &[f32], shape: ImageShape) -> Result<ImageShape> {
        let hidden_shape = self.branch1.forward(input, shape, Activation::Relu)?;
        let activation = match &mut self.shortcut {
            Shortcut::Identity => Activation::AddRelu(input),
            Shortcut::Projection(projection) => {
                projection.forward(input, shape, Activation::Identity)?;
                Activation::AddRelu(projection.output())
            }
            Shortcut::Absent => Activation::Relu,
        };
        self.branch2
            .forward(self.branch1.output(), hidden_shape, activation)
    }

    /// The last forward pass's output.
    pub fn output(&self) -> &[f32] {
        self.branch2.output()
    }

    /// The outputs of `bn1` and `bn2` in the last forward pass (before ReLU and the add):
    /// the "responses" of He et al.'s Figure 7, recomputed.
    pub fn responses(&self) -> Result<[(&str, Vec<f32>); 2]> {
        Ok([
            (&self.branch1.bn.weight.name, self.branch1.normalized()?),
            (&self.branch2.bn.weight.name, self.branch2.normalized()?),
        ])
    }

    /// Computes `∂L/∂input` (read it with [`BasicBlock::dinput`]) from the forward's
    /// `input` and `doutput`, adding every parameter's gradient.
    pub fn backward(&mut self, input: &[f32], shape: ImageShape, doutput: &[f32]) -> Result<()> {
        const OP: &str = "BasicBlock::backward";
        if doutput.len() != self.output().len() || input.len() != shape.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "doutput has {} elements and input {}, the last forward had {} and {}",
                    doutput.len(),
                    input.len(),
                    self.output().len(),
                    shape.len()
                ),
            ));
        }
        let hidden_shape = self.branch1.output_shape(shape)?;
        self.dhidden.resize(hidden_shape.len(), 0.0);
        let hidden = self.branch1.output();
        // The gradient at bn2's output: at the sum, `d = g ⊙ [out > 0]`, which the shortcut
        // shares; in a plain block the last ReLU is bn2's own, and its backward gates `g`.
        let d = if let Shortcut::Absent = self.shortcut {
            doutput
        } else {
            self.dsum.resize(doutput.len(), 0.0);
            relu_backward(self.branch2.output(), doutput, &mut self.dsum)?;
            &self.dsum
        };
        self.branch2
            .backward(hidden, hidden_shape, d, &mut self.dhidden)?;
        // dx = shortcut'(d) + conv1'(bn1'(dh)): the shortcut's share first, the branch's
        // added onto it by its own backward pass (bn1's through its ReLU).
        match &mut self.shortcut {
            Shortcut::Identity => {
                // `d` is the identity's share; its buffer becomes `dinput` (no copy).
                std::mem::swap(&mut self.dinput, &mut self.dsum);
                self.branch1
                    .backward_add(input, shape, &self.dhidden, &mut self.dinput)
            }
            Shortcut::Projection(projection) => {
                self.dinput.resize(input.len(), 0.0);
                projection.backward(input, shape, &self.dsum, &mut self.dinput)?;
                self.branch1
                    .backward_add(input, shape, &self.dhidden, &mut self.dinput)
            }
            Shortcut::Absent => {
                self.dinput.resize(input.len(), 0.0);
                self.branch1
                    .backward(input, shape, &self.dhidden, &mut self.dinput)
            }
        }
    }

    /// The gradient with respect to the input, from the last backward pass.
    pub fn dinput(&self) -> &[f32] {
        &self.dinput
    }

    /// Switches every BatchNorm between batch and running statistics.
    pub fn set_training(&mut self, training: bool) {
        self.branch1.set_training(training);
        self.branch2.set_training(training);
        if let Shortcut::Projection(projection) = &mut self.shortcut {
            projection.set_training(training);
        }
    }

    /// Every BatchNorm of the block, in torchvision's order.
    pub fn batch_norms(&self) -> Vec<&crate::nn::BatchNorm2d> {
        let mut norms = vec![&self.branch1.bn, &self.branch2.bn];
        if let Shortcut::Projection(projection) = &self.shortcut {
            norms.push(&projection.bn);
        }
        norms
    }

    /// Every BatchNorm of the block, for loading running statistics.
    pub fn batch_norms_mut(&mut self) -> Vec<&mut crate::nn::BatchNorm2d> {
        let mut norms = vec![&mut self.branch1.bn, &mut self.branch2.bn];
        if let Shortcut::Projection(projection) = &mut self.shortcut {
            norms.push(&mut projection.bn);
        }
        norms
    }

    /// Hands every parameter to `f`, in torchvision's `state_dict` order.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        self.branch1.visit_params(f);
        self.branch2.visit_params(f);
        if let Shortcut::Projection(projection) = &self.shortcut {
            projection.visit_params(f);
        }
    }

    /// The parameters of [`BasicBlock::visit_params`], in the same order, for updating.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut params = self.branch1.params_mut();
        params.extend(self.branch2.params_mut());
        if let Shortcut::Projection(projection) = &mut self.shortcut {
            params.extend(projection.params_mut());
        }
        params
    }
}
