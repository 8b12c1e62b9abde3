//! 2-D convolution over NCHW images, as `torch.nn.Conv2d` with square kernels, zero padding,
//! no dilation and no groups.
//!
//! With input `x` `[N, C, H, W]`, weight `w` `[O, C, k, k]`, optional bias `b` `[O]`, stride
//! `s` and padding `p`, the output `y` is `[N, O, OH, OW]` with `OH = (H + 2p - k) / s + 1`
//! (floor, likewise `OW`) and
//!
//! ```text
//! y[n, o, u, v] = b[o] + Σ_{c,i,j} w[o, c, i, j] · x[n, c, u·s + i - p, v·s + j - p]
//! ```
//!
//! (terms outside the image are 0). Two ways compute it:
//! - kernel 3, stride 1, padding 1 (every ResNet block): the direct kernels of
//!   [`crate::kernels::conv3x3`] on groups of images laid out between zero rows, no patch
//!   matrix;
//! - every other shape: per image one matrix product over the patch matrix
//!   `cols = im2col(x[n])` of shape `[C·k·k, OH·OW]` (see [`crate::kernels::im2col()`]):
//!   `y[n] = w · cols + b`. Backward, with `dy = ∂L/∂y`:
//!
//! ```text
//! ∂L/∂w += Σ_n dy[n] · cols(x[n])ᵀ        ∂L/∂b[o] += Σ_{n,u,v} dy[n, o, u, v]
//! ∂L/∂x[n] = col2im(wᵀ · dy[n])
//! ```
//!
//! [`Conv2d::backward`] overwrites `∂L/∂x`; [`Conv2d::backward_add`] adds it to what the
//! buffer holds (a residual block's shortcut gradient), in the same pass.
//!
//! Images are split into one contiguous block per thread of [`crate::threads::pool`]; each
//! block owns its scratch (`cols`, or laid-out images) and a partial weight gradient in the
//! layer's workspace (sized once, reused), and the partials are added in block order, so
//! gradients depend only on the thread count. The parameters are named as torchvision names
//! them: `{name}.weight`, `{name}.bias`.
//!
//! ```
//! use resnorm::nn::{Conv2d, Conv2dConfig, ImageShape};
//! let config = Conv2dConfig { in_channels: 1, out_channels: 1, kernel_size: 3, stride: 1, padding: 1, bias: true };
//! let mut conv = Conv2d::new("conv1", config).unwrap();
//! conv.weight.value.fill(1.0); // a 3x3 box filter
//! conv.bias.as_mut().unwrap().value[0] = 0.5;
//! let shape = ImageShape::new(1, 1, 2, 2);
//! let x = [1.0, 2.0, 3.0, 4.0];
//! let mut y = [0.0; 4];
//! conv.forward(&x, shape, &mut y).unwrap();
//! assert_eq!(y, [10.5; 4]); // every output sees the whole 2x2 image
//!
//! let mut dx = [0.0; 4];
//! conv.backward(&x, shape, &[1.0; 4], &mut dx).unwrap();
//! assert_eq!(dx, [4.0; 4]);
//! assert_eq!(conv.bias.as_ref().unwrap().grad[..], [4.0]);
//! assert_eq!(conv.weight.grad[4], 10.0); // the centre tap saw every pixel once
//! ```

use rayon::prelude::*;

use crate::kernels::simd::{rows_per_block, ONE_BLOCK_PER_THREAD};
use crate::kernels::{
    col2im, col2im_add, conv3x3_forward, conv3x3_weight_grad, im2col, matmul, Conv3x3Layout,
    Conv3x3Weights, MatDims, PatchGeometry, Trans,
};
use crate::nn::{ImageShape, Param, ParamKind};
use crate::rng::Rng;
use crate::threads;
use crate::{Error, Result};

/// The sizes of a [`Conv2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Channels of the input.
    pub in_channels: usize,
    /// Channels of the output (number of filters).
    pub out_channels: usize,
    /// Side of the square kernel.
    pub kernel_size: usize,
    /// Step between neighbouring patches, in both directions.
    pub stride: usize,
    /// Zero rows and columns added on every side.
    pub padding: usize,
    /// Whether the layer has a bias (ResNet convolutions have none).
    pub bias: bool,
}

/// A convolution layer: weight `[out, in, k, k]`, optional bias `[out]`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// `{name}.weight`, shape `[out_channels, in_channels, k, k]`.
    pub weight: Param,
    /// `{name}.bias`, shape `[out_channels]`, when configured.
    pub bias: Option<Param>,
    config: Conv2dConfig,
    /// The weight rearranged for the direct 3x3 kernels, refreshed every pass.
    packed: Conv3x3Weights,
    workspace: Vec<f32>,
}

impl Conv2d {
    /// A layer with zero weights and bias; see [`Conv2d::init_kaiming_normal`].
    pub fn new(name: &str, config: Conv2dConfig) -> Result<Self> {
        let c = config;
        if c.in_channels == 0 || c.out_channels == 0 || c.kernel_size == 0 || c.stride == 0 {
            return Err(Error::invalid(
                "Conv2d::new",
                format!("{name}: channels, kernel size and stride must be at least 1, got {c:?}"),
            ));
        }
        let k = c.kernel_size;
        Ok(Conv2d {
            weight: Param::zeros(
                format!("{name}.weight"),
                vec![c.out_channels, c.in_channels, k, k],
                ParamKind::Weight,
            ),
            bias: c.bias.then(|| {
                Param::zeros(
                    format!("{name}.bias"),
                    vec![c.out_channels],
                    ParamKind::Bias,
                )
            }),
            config,
            packed: Conv3x3Weights::default(),
            workspace: Vec::new(),
        })
    }

    /// The layer's sizes.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// torchvision ResNet's initialization (`kaiming_normal_(mode="fan_out",
    /// nonlinearity="relu")`): weights from `N(0, 2 / (out_channels · k · k))`; the bias, if
    /// any, is set to zero.
    pub fn init_kaiming_normal(&mut self, rng: &mut Rng) {
        let k = self.config.kernel_size;
        let fan_out = (self.config.out_channels * k * k) as f32;
        rng.fill_normal(&mut self.weight.value, 0.0, (2.0 / fan_out).sqrt());
        if let Some(bias) = &mut self.bias {
            bias.value.fill(0.0);
        }
    }

    fn geometry(&self, op: &'static str, input: ImageShape) -> Result<PatchGeometry> {
        let c = &self.config;
        if input.channels != c.in_channels {
            return Err(Error::shape(
                op,
                format!(
                    "{}: input {input} has {} channels, the layer takes {}",
                    self.weight.name, input.channels, c.in_channels
                ),
            ));
        }
        PatchGeometry::new(
            input.channels,
            input.height,
            input.width,
            c.kernel_size,
            c.stride,
            c.padding,
        )
    }

    /// The shape of the output for an input of shape `input`.
    pub fn output_shape(&self, input: ImageShape) -> Result<ImageShape> {
        let geometry = self.geometry("Conv2d::output_shape", input)?;
        Ok(ImageShape::new(
            input.batch,
            self.config.out_channels,
            geometry.out_height(),
            geometry.out_width(),
        ))
    }

    /// Images per block and number of blocks: one block of whole images per thread.
    fn blocking(batch: usize) -> (usize, usize) {
        let per_block = rows_per_block(batch, ONE_BLOCK_PER_THREAD);
        (per_block, batch.div_ceil(per_block))
    }

    /// Whether the direct 3x3 kernels ([`crate::kernels::conv3x3`]) apply: kernel 3, stride 1,
    /// padding 1. Every other shape goes through im2col and a matrix product.
    fn is_direct(&self) -> bool {
        let c = &self.config;
        (c.kernel_size, c.stride, c.padding) == (3, 1, 1)
    }

    /// How the direct kernels split a batch of shape `shape`.
    fn direct_plan(&self, shape: ImageShape) -> Result<DirectPlan> {
        let (per_block, blocks) = Self::blocking(shape.batch);
        let (height, width) = (shape.height, shape.width);
        let group = Conv3x3Layout::group_size(height, width, per_block);
        Ok(DirectPlan {
            per_block,
            blocks,
            group,
            largest: Conv3x3Layout::new(height, width, group)?,
            height,
            width,
            in_image: self.config.in_channels * height * width,
            out_image: self.config.out_channels * height * width,
        })
    }

    /// Computes `output` (`[N, out, OH, OW]`) from `input` (`[N, in, H, W]`, shape `shape`).
    pub fn forward(&mut self, input: &[f32], shape: ImageShape, output: &mut [f32]) -> Result<()> {
        const OP: &str = "Conv2d::forward";
        let geometry = self.geometry(OP, shape)?;
        shape.check_len(OP, "input", input)?;
        self.output_shape(shape)?.check_len(OP, "output", output)?;
        if self.is_direct() {
            self.forward_direct(input, shape, output)?;
        } else {
            self.forward_im2col(input, &geometry, shape.batch, output)?;
        }
        if let Some(bias) = &self.bias {
            let planes = output.chunks_mut(geometry.positions());
            for (plane, &b) in planes.zip(bias.value.iter().cycle()) {
                plane.iter_mut().for_each(|v| *v += b);
            }
        }
        Ok(())
    }

    fn forward_direct(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        output: &mut [f32],
    ) -> Result<()> {
        let plan = self.direct_plan(shape)?;
        let (c_in, c_out) = (self.config.in_channels, self.config.out_channels);
        let padded_len = plan.largest.padded_len(c_in);
        let scratch_len = padded_len + plan.largest.span_len(c_out);
        self.packed.repack(&self.weight.value, c_out, c_in, false)?;
        self.workspace.resize(plan.blocks * scratch_len, 0.0);
        let packed = &self.packed;
        threads::pool().install(|| {
            input
                .par_chunks(plan.per_block * plan.in_image)
                .zip(output.par_chunks_mut(plan.per_block * plan.out_image))
                .zip(self.workspace.par_chunks_mut(scratch_len))
                .try_for_each(|((x_block, y_block), scratch)| {
                    let (padded, span) = scratch.split_at_mut(padded_len);
                    let groups = x_block.chunks(plan.group * plan.in_image);
                    for (x, y) in groups.zip(y_block.chunks_mut(plan.group * plan.out_image)) {
                        let layout = plan.layout(x)?;
                        let padded = &mut padded[..layout.padded_len(c_in)];
                        let span = &mut span[..layout.span_len(c_out)];
                        layout.pad(x, c_in, padded)?;
                        conv3x3_forward(&layout, packed, padded, span)?;
                        layout.extract(span, c_out, y)?;
                    }
                    Ok(())
                })
        })
    }

    fn forward_im2col(
        &mut self,
        input: &[f32],
        geometry: &PatchGeometry,
        batch: usize,
        output: &mut [f32],
    ) -> Result<()> {
        let (per_block, blocks) = Self::blocking(batch);
        let (out_channels, patch_len, positions) = (
            self.config.out_channels,
            geometry.patch_len(),
            geometry.positions(),
        );
        let cols_len = geometry.cols_len();
        let out_image = out_channels * positions;
        self.workspace.resize(blocks * cols_len, 0.0);
        let weight = &self.weight.value;
        threads::pool().install(|| {
            input
                .par_chunks(per_block * geometry.image_len())
                .zip(output.par_chunks_mut(per_block * out_image))
                .zip(self.workspace.par_chunks_mut(cols_len))
                .try_for_each(|((x_block, y_block), cols)| {
                    let images = x_block.chunks(geometry.image_len());
                    for (x, y) in images.zip(y_block.chunks_mut(out_image)) {
                        im2col(geometry, x, cols)?;
                        // y[O, P] = W[O, K] · cols[K, P]
                        let dims = MatDims {
                            m: out_channels,
                            k: patch_len,
                            n: positions,
                        };
                        matmul(y, weight, cols, dims, Trans::NONE, false)?;
                    }
                    Ok(())
                })
        })
    }

    /// Overwrites `dinput` with `∂L/∂input` and adds `∂L/∂weight`, `∂L/∂bias` into the
    /// parameters' gradients, given the forward pass's `input` and `doutput = ∂L/∂output`.
    pub fn backward(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        doutput: &[f32],
        dinput: &mut [f32],
    ) -> Result<()> {
        self.backward_into(input, shape, doutput, dinput, InputGrad::Overwrite)
    }

    /// Like [`Conv2d::backward`], but adds `∂L/∂input` to `dinput`'s contents: the branch's
    /// share of a residual block's `dx = dy + dF(dy)`, with no separate pass for the sum.
    pub fn backward_add(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        doutput: &[f32],
        dinput: &mut [f32],
    ) -> Result<()> {
        self.backward_into(input, shape, doutput, dinput, InputGrad::Add)
    }

    fn backward_into(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        doutput: &[f32],
        dinput: &mut [f32],
        mode: InputGrad,
    ) -> Result<()> {
        const OP: &str = "Conv2d::backward";
        let geometry = self.geometry(OP, shape)?;
        shape.check_len(OP, "input", input)?;
        shape.check_len(OP, "dinput", dinput)?;
        self.output_shape(shape)?
            .check_len(OP, "doutput", doutput)?;
        // Each block's scratch starts with its partial weight gradient.
        let block_len = if self.is_direct() {
            self.backward_direct(input, shape, doutput, dinput, mode)?
        } else {
            self.backward_im2col(input, &geometry, shape.batch, doutput, dinput, mode)?
        };
        // The batch's gradients are summed completely (blocks in order) before they are
        // added, so accumulating over micro-batches rounds once per batch.
        let weight_len = self.weight.len();
        let (first, rest) = self.workspace.split_at_mut(block_len);
        let dweight = &mut first[..weight_len];
        for scratch in rest.chunks(block_len) {
            for (total, &d) in dweight.iter_mut().zip(&scratch[..weight_len]) {
                *total += d;
            }
        }
        for (g, &d) in self.weight.grad.iter_mut().zip(dweight.iter()) {
            *g += d;
        }
        if let Some(bias) = &mut self.bias {
            let (out_channels, positions) = (self.config.out_channels, geometry.positions());
            for (o, g) in bias.grad.iter_mut().enumerate() {
                let planes = doutput.chunks(positions).skip(o).step_by(out_channels);
                *g += planes.map(|plane| plane.iter().sum::<f32>()).sum::<f32>();
            }
        }
        Ok(())
    }

    /// The backward pass through the direct kernels; returns the length of each block's scratch.
    fn backward_direct(
        &mut self,
        input: &[f32],
        shape: ImageShape,
        doutput: &[f32],
        dinput: &mut [f32],
        mode: InputGrad,
    ) -> Result<usize> {
        let plan = self.direct_plan(shape)?;
        let (c_in, c_out) = (self.config.in_channels, self.config.out_channels);
        let weight_len = self.weight.len();
        let (x_len, dy_len) = (
            plan.largest.padded_len(c_in),
            plan.largest.padded_len(c_out),
        );
        let block_len = weight_len + x_len + dy_len + plan.largest.span_len(c_in);
        self.packed.repack(&self.weight.value, c_out, c_in, true)?;
        self.workspace.resize(plan.blocks * block_len, 0.0);
        let packed = &self.packed;
        let (in_image, out_image) = (plan.in_image, plan.out_image);
        threads::pool().install(|| {
            input
                .par_chunks(plan.per_block * in_image)
                .zip(doutput.par_chunks(plan.per_block * out_image))
                .zip(dinput.par_chunks_mut(plan.per_block * in_image))
                .zip(self.workspace.par_chunks_mut(block_len))
                .try_for_each(|(((x_block, dy_block), dx_block), scratch)| {
                    let (dweight, rest) = scratch.split_at_mut(weight_len);
                    let (padded_x, rest) = rest.split_at_mut(x_len);
                    let (padded_dy, span) = rest.split_at_mut(dy_len);
                    dweight.fill(0.0);
                    let groups = x_block
                        .chunks(plan.group * in_image)
                        .zip(dy_block.chunks(plan.group * out_image))
                        .zip(dx_block.chunks_mut(plan.group * in_image));
                    for ((x, dy), dx) in groups {
                        let layout = plan.layout(x)?;
                        let padded_x = &mut padded_x[..layout.padded_len(c_in)];
                        let padded_dy = &mut padded_dy[..layout.padded_len(c_out)];
                        let span = &mut span[..layout.span_len(c_in)];
                        layout.pad(x, c_in, padded_x)?;
                        layout.pad(dy, c_out, padded_dy)?;
                        conv3x3_weight_grad(&layout, padded_x, padded_dy, dweight)?;
                        conv3x3_forward(&layout, packed, padded_dy, span)?;
                        match mode {
                            InputGrad::Overwrite => layout.extract(span, c_in, dx)?,
                            InputGrad::Add => layout.extract_add(span, c_in, dx)?,
                        }
                    }
                    Ok::<(), Error>(())
                })
        })?;
        Ok(block_len)
    }

    /// The backward pass through im2col; returns the length of each block's scratch.
    fn backward_im2col(
        &mut self,
        input: &[f32],
        geometry: &PatchGeometry,
        batch: usize,
        doutput: &[f32],
        dinput: &mut [f32],
        mode: InputGrad,
    ) -> Result<usize> {
        let (per_block, blocks) = Self::blocking(batch);
        let (out_channels, patch_len, positions) = (
            self.config.out_channels,
            geometry.patch_len(),
            geometry.positions(),
        );
        let weight_len = self.weight.len();
        let block_len = weight_len + geometry.cols_len();
        self.workspace.resize(blocks * block_len, 0.0);
        let weight = &self.weight.value;
        threads::pool().install(|| {
            input
                .par_chunks(per_block * geometry.image_len())
                .zip(doutput.par_chunks(per_block * out_channels * positions))
                .zip(dinput.par_chunks_mut(per_block * geometry.image_len()))
                .zip(self.workspace.par_chunks_mut(block_len))
                .try_for_each(|(((x_block, dy_block), dx_block), scratch)| {
                    let (dweight, cols) = scratch.split_at_mut(weight_len);
                    dweight.fill(0.0);
                    let images = x_block
                        .chunks(geometry.image_len())
                        .zip(dy_block.chunks(out_channels * positions))
                        .zip(dx_block.chunks_mut(geometry.image_len()));
                    for ((x, dy), dx) in images {
                        im2col(geometry, x, cols)?;
                        // dW[O, K] += dy[O, P] · cols[K, P]ᵀ
                        let dims = MatDims {
                            m: out_channels,
                            k: positions,
                            n: patch_len,
                        };
                        matmul(dweight, dy, cols, dims, Trans { a: false, b: true }, true)?;
                        // dcols[K, P] = W[O, K]ᵀ · dy[O, P]
                        let dims = MatDims {
                            m: patch_len,
                            k: out_channels,
                            n: positions,
                        };
                        matmul(cols, weight, dy, dims, Trans { a: true, b: false }, false)?;
                        match mode {
                            InputGrad::Overwrite => col2im(geometry, cols, dx)?,
                            InputGrad::Add => col2im_add(geometry, cols, dx)?,
                        }
                    }
                    Ok::<(), Error>(())
                })
        })?;
        Ok(block_len)
    }

    /// Clears the parameters' gradients.
    pub fn zero_grad(&mut self) {
        self.visit_params_mut(&mut |p| p.zero_grad());
    }

    /// Hands the weight, then the bias, to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.weight);
        if let Some(bias) = &self.bias {
            f(bias);
        }
    }

    /// Hands the weight, then the bias, to `f` for updating.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        if let Some(bias) = &mut self.bias {
            f(bias);
        }
    }
}

/// Whether a backward pass overwrites the input gradient or adds to it.
#[derive(Clone, Copy)]
enum InputGrad {
    Overwrite,
    Add,
}

/// How the direct kernels split a batch: one block of whole images per thread, each block
/// in groups of `group` images laid out together (the last group may be smaller).
struct DirectPlan {
    per_block: usize,
    blocks: usize,
    group: usize,
    /// The layout of a full group, which sizes the scratch.
    largest: Conv3x3Layout,
    height: usize,
    width: usize,
    in_image: usize,
    out_image: usize,
}

impl DirectPlan {
    /// The layout of the group whose input images are `images`.
    fn layout(&self, images: &[f32]) -> Result<Conv3x3Layout> {
        Conv3x3Layout::new(self.height, self.width, images.len() / self.in_image)
    }
}
