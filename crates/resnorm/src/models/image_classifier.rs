//! What a training loop needs from an image classifier: logits from images, gradients from
//! the logits' gradient, train/eval switching, and its tensors by name.
//!
//! Implemented by [`super::resnet::ResNet`] and [`super::mlp::Mlp`].

use crate::nn::{ImageShape, Param};
use crate::Result;

/// A network from NCHW images to `[N, classes]` logits with explicit backward.
pub trait ImageClassifier: Send {
    /// Computes the logits of `images` (shape `shape`) and keeps what backward needs.
    fn forward(&mut self, images: &[f32], shape: ImageShape) -> Result<&[f32]>;

    /// Adds every parameter's gradient, given the last forward's `images` and
    /// `dlogits = ∂L/∂logits`.
    fn backward(&mut self, images: &[f32], dlogits: &[f32]) -> Result<()>;

    /// Switches normalization between batch statistics (`true`) and running ones.
    fn set_training(&mut self, training: bool);

    /// Number of classes (the width of the logits).
    fn num_classes(&self) -> usize;

    /// Hands every trainable parameter to `f`, in a fixed order.
    fn visit_params(&self, f: &mut dyn FnMut(&Param));

    /// The parameters of `visit_params`, in the same order, for an optimizer.
    fn params_mut(&mut self) -> Vec<&mut Param>;

    /// Hands every buffer (BatchNorm running statistics) to `f`: saved, never trained.
    fn visit_buffers(&self, f: &mut dyn FnMut(&Param));

    /// As `visit_buffers`, for loading.
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&mut Param));

    /// The outputs of the layers whose spread He et al. plot in Figure 7 (each residual
    /// branch's BatchNorm, before the add and ReLU) from the last forward pass, by name;
    /// empty for networks without such layers.
    fn responses(&self) -> Result<Vec<(&str, Vec<f32>)>> {
        Ok(Vec::new())
    }

    /// Clears every parameter's gradient.
    fn zero_grad(&mut self) {
        self.params_mut().into_iter().for_each(|p| p.zero_grad());
    }
}

impl ImageClassifier for super::resnet::ResNet {
    fn forward(&mut self, images: &[f32], shape: ImageShape) -> Result<&[f32]> {
        super::resnet::ResNet::forward(self, images, shape)
    }

    fn backward(&mut self, images: &[f32], dlogits: &[f32]) -> Result<()> {
        super::resnet::ResNet::backward(self, images, dlogits)
    }

    fn set_training(&mut self, training: bool) {
        super::resnet::ResNet::set_training(self, training);
    }

    fn num_classes(&self) -> usize {
        self.config().num_classes
    }

    fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        super::resnet::ResNet::visit_params(self, f);
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        super::resnet::ResNet::params_mut(self)
    }

    fn visit_buffers(&self, f: &mut dyn FnMut(&Param)) {
        super::resnet::ResNet::visit_buffers(self, f);
    }

    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        super::resnet::ResNet::visit_buffers_mut(self, f);
    }

    fn responses(&self) -> Result<Vec<(&str, Vec<f32>)>> {
        super::resnet::ResNet::responses(self)
    }
}

impl ImageClassifier for super::mlp::Mlp {
    fn forward(&mut self, images: &[f32], shape: ImageShape) -> Result<&[f32]> {
        super::mlp::Mlp::forward(self, images, shape)
    }

    fn backward(&mut self, images: &[f32], dlogits: &[f32]) -> Result<()> {
        super::mlp::Mlp::backward(self, images, dlogits)
    }

    fn set_training(&mut self, training: bool) {
        super::mlp::Mlp::set_training(self, training);
    }

    fn num_classes(&self) -> usize {
        self.config().num_classes
    }

    fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        super::mlp::Mlp::visit_params(self, f);
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        super::mlp::Mlp::params_mut(self)
    }

    fn visit_buffers(&self, f: &mut dyn FnMut(&Param)) {
        super::mlp::Mlp::visit_buffers(self, f);
    }

    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        super::mlp::Mlp::visit_buffers_mut(self, f);
    }
}
