//! Batch normalization as a layer, `torch.nn.BatchNorm2d` (and `BatchNorm1d` over `(N, C)`
//! inputs, the shape `[N, C, 1, 1]`), on top of [`crate::kernels::batch_norm`].
//!
//! Per channel `c`, over the `N·H·W` values of the batch:
//!
//! ```text
//! training:    y = w_c·(x - μ_c)/√(σ²_c + ε) + b_c      (batch mean μ, biased variance σ²)
//!              running_mean ← (1 - m)·running_mean + m·μ
//!              running_var  ← (1 - m)·running_var  + m·σ²·n/(n - 1)
//! evaluation:  y = w_c·(x - running_mean_c)/√(running_var_c + ε) + b_c
//! backward:    dx = w_c·rstd_c·(ȳ - mean(ȳ) - x̂·mean(ȳ·x̂)),  dw += Σ ȳ·x̂,  db += Σ ȳ
//! ```
//!
//! (`m = momentum = 0.1`, `ε = 1e-5`, PyTorch's defaults). The weight and bias are trainable
//! [`Param`]s of kind [`ParamKind::Norm`] (so SGD's default weight decay skips them). The
//! running statistics are *buffers*: saved in checkpoints under torchvision's names
//! (`{name}.running_mean`, `{name}.running_var`) but never handed to an optimizer; they are
//! held in [`Param`]s only to reuse the name/shape/value bookkeeping of checkpoints, and their
//! `grad` stays zero. torchvision's `num_batches_tracked` counter is not kept: it only matters
//! when `momentum=None`.
//!
//! Backward is defined for training mode (the batch statistics saved by the last forward);
//! after an evaluation-mode forward it is an error.
//!
//! ```
//! use resnorm::nn::{BatchNorm2d, ImageShape};
//! let mut bn = BatchNorm2d::new("bn1", 1).unwrap();
//! let shape = ImageShape::new(2, 1, 1, 2);
//! let x = [1.0, 3.0, 5.0, 7.0];
//! let mut y = [0.0; 4];
//! bn.forward(&x, shape, &mut y).unwrap(); // training mode: batch statistics
//! assert!(y.iter().sum::<f32>().abs() < 1e-5);
//! assert!((bn.running_mean.value[0] - 0.4).abs() < 1e-6); // 0.9·0 + 0.1·4
//! let mut dx = [0.0; 4];
//! bn.backward(&x, shape, &[1.0; 4], &mut dx).unwrap();
//! assert_eq!(bn.bias.grad[..], [4.0]);
//! bn.set_training(false);
//! bn.forward(&x, shape, &mut y).unwrap(); // evaluation: running statistics
//! assert!(bn.backward(&x, shape, &[1.0; 4], &mut dx).is_err());
//! ```

use crate::kernels::batch_norm::{
    batch_norm_backward, batch_norm_forward_eval, batch_norm_forward_train, batch_norm_normalized,
    batch_norm_relu_backward, Activation, BatchNormGrads, BatchNormParams, BatchNormShape,
    RunningStats, SavedStats, SavedStatsMut,
};
use crate::nn::{ImageShape, Param, ParamKind};
use crate::{Error, Result};

/// PyTorch's default `eps`.
pub const BATCH_NORM_EPS: f32 = 1e-5;
/// PyTorch's default `momentum` for the running statistics.
pub const BATCH_NORM_MOMENTUM: f32 = 0.1;

/// A batch-normalization layer over the channels of NCHW inputs.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    /// `{name}.weight`, `[C]`, initialized to 1.
    pub weight: Param,
    /// `{name}.bias`, `[C]`, initialized to 0.
    pub bias: Param,
    /// `{name}.running_mean`, `[C]`, a buffer (starts at 0).
    pub running_mean: Param,
    /// `{name}.running_var`, `[C]`, a buffer (starts at 1).
    pub running_var: Param,
    /// Added to the variance, `> 0`.
    pub eps: f32,
    /// Weight of a new batch statistic in the running statistics, in `[0, 1]`.
    pub momentum: f32,
    training: bool,
    saved: Saved,
}

/// The batch statistics of the last training-mode forward pass, and its input shape (none
/// after an evaluation-mode or a failed pass).
#[derive(Clone, Debug)]
struct Saved {
    mean: Vec<f32>,
    rstd: Vec<f32>,
    shift: Vec<f32>,
    from: Option<ImageShape>,
}

impl Saved {
    /// The statistics, if the last forward pass was in training mode with shape `shape`.
    fn stats(&self, op: &'static str, name: &str, shape: ImageShape) -> Result<SavedStats<'_>> {
        if self.from != Some(shape) {
            return Err(Error::invalid(
                op,
                format!("{name}: no training-mode forward pass of shape {shape} to use"),
            ));
        }
        Ok(SavedStats {
            mean: &self.mean,
            rstd: &self.rstd,
            shift: &self.shift,
        })
    }
}

impl BatchNorm2d {
    /// A layer over `channels` channels in training mode, PyTorch's initialization and
    /// defaults.
    pub fn new(name: &str, channels: usize) -> Result<Self> {
        if channels == 0 {
            return Err(Error::invalid(
                "BatchNorm2d::new",
                format!("{name}: needs at least one channel"),
            ));
        }
        let shape = vec![channels];
        Ok(BatchNorm2d {
            weight: Param::filled(
                format!("{name}.weight"),
                shape.clone(),
                ParamKind::Norm,
                1.0,
            ),
            bias: Param::zeros(format!("{name}.bias"), shape.clone(), ParamKind::Norm),
            running_mean: Param::zeros(
                format!("{name}.running_mean"),
                shape.clone(),
                ParamKind::Norm,
            ),
            running_var: Param::filled(format!("{name}.running_var"), shape, ParamKind::Norm, 1.0),
            eps: BATCH_NORM_EPS,
            momentum: BATCH_NORM_MOMENTUM,
            training: true,
            saved: Saved {
                mean: vec![0.0; channels],
                rstd: vec![0.0; channels],
                shift: vec![0.0; channels],
                from: None,
            },
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.weight.len()
    }

    /// Chooses batch statistics (`true`, the default) or running statistics (`false`).
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// Whether the layer normalizes with batch statistics.
    pub fn is_training(&self) -> bool {
        self.training
    }

    fn kernel_shape(&self, op: &'static str, shape: ImageShape) -> Result<BatchNormShape> {
        if shape.channels != self.channels() {
            return Err(Error::shape(
                op,
                format!(
                    "{}: input {shape} has {} channels, the layer has {}",
                    self.weight.name,
                    shape.channels,
                    self.channels()
                ),
            ));
        }
        Ok(BatchNormShape {
            batch: shape.batch,
            channels: shape.channels,
            spatial: shape.plane_len(),
        })
    }

    /// Normalizes `input` (shape `shape`) into `output`; in training mode also saves the
    /// batch statistics for [`BatchNorm2d::backward`] and updates the running statistics.
    pub fn forward(&mut self, input: &[f32], shape: ImageShape, output: &mut [f32]) -> Result<()> {
        self.forward_with(input, shape, Activation::Identity, output)
    }

    /// [`BatchNorm2d::forward`] with `activation` applied to the normalized values in the
    /// same pass (a ReLU, or a residual block's add and ReLU).
    pub fn forward_with(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        activation: Activation,
        output: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "BatchNorm2d::forward";
        let kernel_shape = self.kernel_shape(OP, shape)?;
        let params = BatchNormParams {
            weight: &self.weight.value,
            bias: &self.bias.value,
            eps: self.eps,
        };
        if self.training {
            let running = RunningStats {
                mean: &mut self.running_mean.value,
                var: &mut self.running_var.value,
                momentum: self.momentum,
            };
            self.saved.from = None;
            let saved = SavedStatsMut {
                mean: &mut self.saved.mean,
                rstd: &mut self.saved.rstd,
                shift: &mut self.saved.shift,
            };
            batch_norm_forward_train(
                input,
                kernel_shape,
                params,
                running,
                activation,
                output,
                saved,
            )?;
            self.saved.from = Some(shape);
            Ok(())
        } else {
            self.saved.from = None;
            let (mean, var) = (&self.running_mean.value, &self.running_var.value);
            batch_norm_forward_eval(input, kernel_shape, params, mean, var, activation, output)
        }
    }

    /// Overwrites `dinput` with `∂L/∂input` and adds into the weight and bias gradients,
    /// given the last (training-mode) forward pass's `input` and `doutput`, the gradient at
    /// the normalized values (after an add-and-ReLU forward: at the sum).
    pub fn backward(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        doutput: &[f32],
        dinput: &mut [f32],
    ) -> Result<()> {
        self.backward_through(false, input, shape, doutput, dinput)
    }

    /// The backward pass of `relu(bn(input))`: like [`BatchNorm2d::backward`], with
    /// `doutput` the gradient at the ReLU's output (its mask is recomputed, not read).
    pub fn backward_relu(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        doutput: &[f32],
        dinput: &mut [f32],
    ) -> Result<()> {
        self.backward_through(true, input, shape, doutput, dinput)
    }

    fn backward_through(
        &mut self,
        relu: bool,
        input: &[f32],
        shape: ImageShape,
        doutput: &[f32],
        dinput: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "BatchNorm2d::backward";
        let kernel_shape = self.kernel_shape(OP, shape)?;
        let saved = self.saved.stats(OP, &self.weight.name, shape)?;
        let grads = BatchNormGrads {
            dweight: &mut self.weight.grad,
            dbias: &mut self.bias.grad,
        };
        let backward = if relu {
            batch_norm_relu_backward
        } else {
            batch_norm_backward
        };
        let weight = &self.weight.value;
        backward(doutput, input, kernel_shape, weight, saved, dinput, grads)
    }

    /// The normalized values `bn(input)` before any activation: in training mode those of
    /// the last forward pass (whose `input` this must be), in evaluation mode from the
    /// running statistics. For looking at a layer's response after a fused forward.
    pub fn normalized(&self, input: &[f32], shape: ImageShape, out: &mut [f32]) -> Result<()> {
        const OP: &str = "BatchNorm2d::normalized";
        let kernel_shape = self.kernel_shape(OP, shape)?;
        let weight = &self.weight.value;
        if self.training {
            let saved = self.saved.stats(OP, &self.weight.name, shape)?;
            batch_norm_normalized(input, kernel_shape, weight, saved, out)
        } else {
            let params = BatchNormParams {
                weight,
                bias: &self.bias.value,
                eps: self.eps,
            };
            let (mean, var) = (&self.running_mean.value, &self.running_var.value);
            let identity = Activation::Identity;
            batch_norm_forward_eval(input, kernel_shape, params, mean, var, identity, out)
        }
    }

    /// Hands the weight, then the bias, to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.weight);
        f(&self.bias);
    }

    /// Hands the weight, then the bias, to `f` for updating.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }

    /// Hands the running mean, then the running variance, to `f`.
    pub fn visit_buffers(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.running_mean);
        f(&self.running_var);
    }

    /// Hands the running mean, then the running variance, to `f` for loading.
    pub fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.running_mean);
        f(&mut self.running_var);
    }
}
