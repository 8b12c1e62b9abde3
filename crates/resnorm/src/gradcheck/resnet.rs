//! Gradient checks of the ResNet pieces: the [`BatchNorm2d`] layer (training mode) and the
//! [`BasicBlock`] with an identity shortcut, with a projection (stride 2, more channels) and
//! without a shortcut (the plain block).
//!
//! The block's reference forward composes the `f64` references of convolution
//! ([`super::vision`]), BatchNorm ([`super::batch_norm`]) and ReLU over one vector holding
//! the input and every parameter, so one finite-difference sweep checks `dx` and all
//! parameter gradients. The inputs are seeded; with these seeds no difference step moves a
//! ReLU input across 0 (a crossing would show as a failed check, not a silent pass).

use super::batch_norm::batch_norm_train_reference;
use super::vision::conv2d_reference;
use super::{compare, numeric_gradient, CheckResult};
use crate::kernels::batch_norm::BatchNormShape;
use crate::models::resnet::{BasicBlock, Shortcut};
use crate::nn::{BatchNorm2d, Conv2dConfig, ImageShape};
use crate::rng::Rng;

/// Relative error bound (see [`compare`]); measured errors are below 2e-5.
const TOLERANCE: f64 = 1e-4;
/// Central-difference step.
const STEP: f64 = 1e-4;

/// The checks of this module, in a fixed order.
pub fn checks() -> Vec<CheckResult> {
    let mut results = batch_norm2d_checks();
    for (name, in_channels, out_channels, stride, shortcuts) in [
        ("basic_block identity", 3, 3, 1, true),
        ("basic_block projection s2", 2, 4, 2, true),
        ("basic_block plain s2", 2, 4, 2, false),
    ] {
        results.extend(basic_block_checks(
            name,
            in_channels,
            out_channels,
            stride,
            shortcuts,
        ));
    }
    results
}

fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn bn_shape(shape: ImageShape) -> BatchNormShape {
    BatchNormShape {
        batch: shape.batch,
        channels: shape.channels,
        spatial: shape.plane_len(),
    }
}

fn batch_norm2d_checks() -> Vec<CheckResult> {
    let mut rng = Rng::new(0xB2D);
    let shape = ImageShape::new(3, 2, 2, 3);
    let mut bn = BatchNorm2d::new("bn", 2).expect("two channels");
    rng.fill_normal(&mut bn.weight.value, 1.0, 0.3);
    rng.fill_normal(&mut bn.bias.value, 0.0, 0.3);
    let mut x = vec![0.0; shape.len()];
    rng.fill_normal(&mut x, 0.5, 2.0);
    let mut g = vec![0.0; shape.len()];
    rng.fill_normal(&mut g, 0.0, 1.0);
    let mut y = vec![0.0; shape.len()];
    bn.forward(&x, shape, &mut y).expect("sizes match");
    let mut dx = vec![0.0; shape.len()];
    bn.backward(&x, shape, &g, &mut dx)
        .expect("after a forward");
    let (x64, g64, w64, b64) = (
        to_f64(&x),
        to_f64(&g),
        to_f64(&bn.weight.value),
        to_f64(&bn.bias.value),
    );
    let eps = bn.eps as f64;
    let loss = |x: &[f64], w: &[f64], b: &[f64]| {
        dot(
            &g64,
            &batch_norm_train_reference(x, bn_shape(shape), w, b, eps),
        )
    };
    vec![
        compare(
            "batch_norm2d layer dx",
            &dx,
            &numeric_gradient(|v| loss(v, &w64, &b64), &x64, STEP),
            TOLERANCE,
        ),
        compare(
            "batch_norm2d layer dweight",
            &bn.weight.grad,
            &numeric_gradient(|v| loss(&x64, v, &b64), &w64, STEP),
            TOLERANCE,
        ),
        compare(
            "batch_norm2d layer dbias",
            &bn.bias.grad,
            &numeric_gradient(|v| loss(&x64, &w64, v), &b64, STEP),
            TOLERANCE,
        ),
    ]
}

/// The block's parameters in `visit_params` order, as slices of one flat `f64` vector.
struct Layout {
    ranges: Vec<(String, std::ops::Range<usize>)>,
}

impl Layout {
    fn get<'a>(&self, theta: &'a [f64], name: &str) -> &'a [f64] {
        let (_, range) = self
            .ranges
            .iter()
            .find(|(n, _)| n.ends_with(name))
            .expect("a parameter of the block");
        &theta[range.clone()]
    }
}

fn conv(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    stride: usize,
) -> Conv2dConfig {
    Conv2dConfig {
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding: kernel_size / 2,
        bias: false,
    }
}

/// The block's forward in `f64`: the definition in [`crate::models::resnet::block`].
fn block_reference(
    theta: &[f64],
    layout: &Layout,
    x: &[f64],
    shape: ImageShape,
    channels: (usize, usize, usize),
    shortcut: &Shortcut,
) -> Vec<f64> {
    let (in_channels, out_channels, stride) = channels;
    let eps = 1e-5;
    let conv1 = conv(in_channels, out_channels, 3, stride);
    let z1 = conv2d_reference(&conv1, shape, x, layout.get(theta, "conv1.weight"), &[]);
    let out_h = (shape.height + 2 - 3) / stride + 1;
    let out_w = (shape.width + 2 - 3) / stride + 1;
    let hidden_shape = ImageShape::new(shape.batch, out_channels, out_h, out_w);
    let bn = |z: &[f64], name: &str| {
        let (w, b) = (
            layout.get(theta, &format!("{name}.weight")),
            layout.get(theta, &format!("{name}.bias")),
        );
        batch_norm_train_reference(z, bn_shape(hidden_shape), w, b, eps)
    };
    let h: Vec<f64> = bn(&z1, "bn1").iter().map(|v| v.max(0.0)).collect();
    let conv2 = conv(out_channels, out_channels, 3, 1);
    let z2 = conv2d_reference(
        &conv2,
        hidden_shape,
        &h,
        layout.get(theta, "conv2.weight"),
        &[],
    );
    let mut sum = bn(&z2, "bn2");
    let skip = match shortcut {
        Shortcut::Identity => x.to_vec(),
        Shortcut::Projection(_) => {
            let projection = conv(in_channels, out_channels, 1, stride);
            let w = layout.get(theta, "downsample.0.weight");
            bn(
                &conv2d_reference(&projection, shape, x, w, &[]),
                "downsample.1",
            )
        }
        Shortcut::Absent => vec![0.0; sum.len()],
    };
    sum.iter_mut().zip(&skip).for_each(|(s, k)| *s += k);
    sum.iter().map(|v| v.max(0.0)).collect()
}

fn basic_block_checks(
    name: &str,
    in_channels: usize,
    out_channels: usize,
    stride: usize,
    shortcuts: bool,
) -> Vec<CheckResult> {
    let mut rng = Rng::new(0xB10C + stride as u64);
    let shape = ImageShape::new(2, in_channels, 4, 5);
    let mut block = BasicBlock::new("layer1.0", in_channels, out_channels, stride, shortcuts)
        .expect("valid block");
    block.init(&mut rng, false);
    for p in block.params_mut() {
        if p.kind == crate::nn::ParamKind::Norm {
            let base = if p.name.ends_with("weight") { 1.0 } else { 0.0 };
            rng.fill_normal(&mut p.value, base, 0.3);
        }
    }
    let mut x = vec![0.0; shape.len()];
    rng.fill_normal(&mut x, 0.0, 1.0);
    let out_shape = block.forward(&x, shape).expect("sizes match");
    let mut g = vec![0.0; out_shape.len()];
    rng.fill_normal(&mut g, 0.0, 1.0);
    block.backward(&x, shape, &g).expect("after a forward");

    let mut theta = Vec::new();
    let mut ranges = Vec::new();
    let mut analytic = Vec::new();
    block.visit_params(&mut |p| {
        ranges.push((p.name.clone(), theta.len()..theta.len() + p.len()));
        theta.extend(to_f64(&p.value));
        analytic.push(p.grad.clone());
    });
    let layout = Layout { ranges };
    let g64 = to_f64(&g);
    let x64 = to_f64(&x);
    let channels = (in_channels, out_channels, stride);
    let loss = |theta: &[f64], x: &[f64]| {
        dot(
            &g64,
            &block_reference(theta, &layout, x, shape, channels, &block.shortcut),
        )
    };
    let mut results = vec![compare(
        &format!("{name} dx"),
        block.dinput(),
        &numeric_gradient(|v| loss(&theta, v), &x64, STEP),
        TOLERANCE,
    )];
    let numeric = numeric_gradient(|v| loss(v, &x64), &theta, STEP);
    for ((param, range), grad) in layout.ranges.iter().zip(&analytic) {
        let short = param.trim_start_matches("layer1.0.");
        results.push(compare(
            &format!("{name} d{short}"),
            grad,
            &numeric[range.clone()],
            TOLERANCE,
        ));
    }
    results
}
