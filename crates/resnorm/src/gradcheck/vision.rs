//! Gradient checks of the image layers: [`Conv2d`] (1x1 and 3x3 kernels, stride 1 and 2,
//! padding 0 and 1, with and without bias), [`MaxPool2d`], [`GlobalAvgPool`] and ReLU.
//!
//! Each reference forward is a direct loop in `f64` (no im2col), so a check also tests the
//! patch layout. Max pooling and ReLU are only piecewise linear: their inputs are drawn so
//! that no difference step crosses a kink (distinct window values at least 0.01 apart,
//! ReLU inputs at least 0.1 away from 0).

use super::{compare, numeric_gradient, CheckResult};
use crate::kernels::{relu_backward, relu_forward};
use crate::nn::{Conv2d, Conv2dConfig, GlobalAvgPool, ImageShape, MaxPool2d};
use crate::rng::Rng;

/// Every gradient check must stay under this relative error (see [`compare`]); the
/// analytic gradients are `f32` sums of at most ~100 terms.
const TOLERANCE: f64 = 1e-4;
/// Central-difference step; the references are exact enough in `f64` for it.
const STEP: f64 = 1e-4;

/// The image layers' checks, in a fixed order.
pub fn checks() -> Vec<CheckResult> {
    let mut results = Vec::new();
    for (name, kernel_size, stride, padding, bias) in [
        ("conv2d 3x3 s1 p1", 3, 1, 1, true),
        ("conv2d 3x3 s2 p1", 3, 2, 1, false),
        ("conv2d 3x3 s2 p0", 3, 2, 0, true),
        ("conv2d 1x1 s1 p0", 1, 1, 0, true),
        ("conv2d 1x1 s2 p0", 1, 2, 0, false),
    ] {
        let config = Conv2dConfig {
            in_channels: 3,
            out_channels: 4,
            kernel_size,
            stride,
            padding,
            bias,
        };
        results.extend(conv2d_checks(name, config));
    }
    results.push(max_pool2d_check("max_pool2d 3x3 s2 p1 dx", 3, 2, 1));
    results.push(max_pool2d_check("max_pool2d 2x2 s2 p0 dx", 2, 2, 0));
    results.push(global_avg_pool_check());
    results.push(relu_check());
    results
}

fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

fn normal(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.normal()).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Direct convolution in `f64`, NCHW, the definition in [`crate::nn::Conv2d`]'s docs.
pub(super) fn conv2d_reference(
    config: &Conv2dConfig,
    shape: ImageShape,
    x: &[f64],
    weight: &[f64],
    bias: &[f64],
) -> Vec<f64> {
    let (k, s, p) = (config.kernel_size, config.stride, config.padding);
    let out_h = (shape.height + 2 * p - k) / s + 1;
    let out_w = (shape.width + 2 * p - k) / s + 1;
    let mut y = Vec::with_capacity(shape.batch * config.out_channels * out_h * out_w);
    for n in 0..shape.batch {
        for o in 0..config.out_channels {
            for u in 0..out_h {
                for v in 0..out_w {
                    let mut sum = bias.get(o).copied().unwrap_or(0.0);
                    for c in 0..shape.channels {
                        for i in 0..k {
                            for j in 0..k {
                                let (h, w) = (
                                    (u * s + i) as isize - p as isize,
                                    (v * s + j) as isize - p as isize,
                                );
                                if h < 0
                                    || w < 0
                                    || h as usize >= shape.height
                                    || w as usize >= shape.width
                                {
                                    continue;
                                }
                                let at = ((n * shape.channels + c) * shape.height + h as usize)
                                    * shape.width
                                    + w as usize;
                                sum += weight[((o * shape.channels + c) * k + i) * k + j] * x[at];
                            }
                        }
                    }
                    y.push(sum);
                }
            }
        }
    }
    y
}

fn conv2d_checks(name: &str, config: Conv2dConfig) -> Vec<CheckResult> {
    let mut rng = Rng::new(0xC0);
    let shape = ImageShape::new(2, config.in_channels, 5, 6);
    let mut conv = Conv2d::new("conv", config).expect("valid configuration");
    conv.weight.value = normal(&mut rng, conv.weight.len()).into();
    if let Some(bias) = &mut conv.bias {
        bias.value = normal(&mut rng, bias.len()).into();
    }
    let out_shape = conv.output_shape(shape).expect("kernel fits");
    let x = normal(&mut rng, shape.len());
    let g = normal(&mut rng, out_shape.len());
    let mut dx = vec![0.0; shape.len()];
    conv.backward(&x, shape, &g, &mut dx).expect("sizes match");

    let (x64, g64, w64) = (to_f64(&x), to_f64(&g), to_f64(&conv.weight.value));
    let b64 = conv.bias.as_ref().map_or(Vec::new(), |b| to_f64(&b.value));
    let loss =
        |x: &[f64], w: &[f64], b: &[f64]| dot(&g64, &conv2d_reference(&config, shape, x, w, b));
    let mut results = vec![
        compare(
            &format!("{name} dx"),
            &dx,
            &numeric_gradient(|v| loss(v, &w64, &b64), &x64, STEP),
            TOLERANCE,
        ),
        compare(
            &format!("{name} dweight"),
            &conv.weight.grad,
            &numeric_gradient(|v| loss(&x64, v, &b64), &w64, STEP),
            TOLERANCE,
        ),
    ];
    if let Some(bias) = &conv.bias {
        results.push(compare(
            &format!("{name} dbias"),
            &bias.grad,
            &numeric_gradient(|v| loss(&x64, &w64, v), &b64, STEP),
            TOLERANCE,
        ));
    }
    results
}

/// Max pooling in `f64` with `-inf` padding.
fn max_pool2d_reference(
    shape: ImageShape,
    kernel: usize,
    stride: usize,
    padding: usize,
    x: &[f64],
) -> Vec<f64> {
    let out_h = (shape.height + 2 * padding - kernel) / stride + 1;
    let out_w = (shape.width + 2 * padding - kernel) / stride + 1;
    let mut y = Vec::new();
    for plane in x.chunks(shape.plane_len()) {
        for u in 0..out_h {
            for v in 0..out_w {
                let mut best = f64::NEG_INFINITY;
                for i in 0..kernel {
                    for j in 0..kernel {
                        let (h, w) = (
                            (u * stride + i) as isize - padding as isize,
                            (v * stride + j) as isize - padding as isize,
                        );
                        if h >= 0
                            && w >= 0
                            && (h as usize) < shape.height
                            && (w as usize) < shape.width
                        {
                            best = best.max(plane[h as usize * shape.width + w as usize]);
                        }
                    }
                }
                y.push(best);
            }
        }
    }
    y
}

fn max_pool2d_check(name: &str, kernel: usize, stride: usize, padding: usize) -> CheckResult {
    let mut rng = Rng::new(0x9001);
    let shape = ImageShape::new(2, 2, 5, 6);
    // A shuffled grid of distinct values 0.01 apart: no step of 1e-4 changes a winner.
    let mut x: Vec<f32> = (0..shape.len()).map(|i| i as f32 * 0.01 - 1.0).collect();
    for i in (1..x.len()).rev() {
        x.swap(i, rng.below(i + 1));
    }
    let mut pool = MaxPool2d::new(kernel, stride, padding).expect("valid pooling");
    let out_shape = pool.output_shape(shape).expect("window fits");
    let mut y = vec![0.0; out_shape.len()];
    pool.forward(&x, shape, &mut y).expect("sizes match");
    let g = normal(&mut rng, out_shape.len());
    let mut dx = vec![0.0; shape.len()];
    pool.backward(&g, shape, &mut dx).expect("sizes match");
    let g64 = to_f64(&g);
    let numeric = numeric_gradient(
        |v| {
            dot(
                &g64,
                &max_pool2d_reference(shape, kernel, stride, padding, v),
            )
        },
        &to_f64(&x),
        STEP,
    );
    compare(name, &dx, &numeric, TOLERANCE)
}

fn global_avg_pool_check() -> CheckResult {
    let mut rng = Rng::new(0xA7);
    let shape = ImageShape::new(2, 3, 4, 5);
    let x = normal(&mut rng, shape.len());
    let g = normal(&mut rng, shape.batch * shape.channels);
    let mut dx = vec![0.0; shape.len()];
    GlobalAvgPool
        .backward(&g, shape, &mut dx)
        .expect("sizes match");
    let g64 = to_f64(&g);
    let numeric = numeric_gradient(
        |v| {
            let means: Vec<f64> = v
                .chunks(shape.plane_len())
                .map(|plane| plane.iter().sum::<f64>() / shape.plane_len() as f64)
                .collect();
            dot(&g64, &means)
        },
        &to_f64(&x),
        STEP,
    );
    compare("global_avg_pool dx", &dx, &numeric, TOLERANCE)
}

fn relu_check() -> CheckResult {
    let mut rng = Rng::new(0x8E1);
    // |x| >= 0.1: no difference step crosses the kink at 0.
    let x: Vec<f32> = (0..60)
        .map(|_| {
            let v = rng.normal();
            v.signum() * (v.abs() + 0.1)
        })
        .collect();
    let g = normal(&mut rng, x.len());
    let mut y = vec![0.0; x.len()];
    relu_forward(&x, &mut y).expect("sizes match");
    let mut dx = vec![0.0; x.len()];
    relu_backward(&y, &g, &mut dx).expect("sizes match");
    let g64 = to_f64(&g);
    let numeric = numeric_gradient(
        |v| v.iter().zip(&g64).map(|(x, g)| x.max(0.0) * g).sum(),
        &to_f64(&x),
        STEP,
    );
    compare("relu dx", &dx, &numeric, TOLERANCE)
}
