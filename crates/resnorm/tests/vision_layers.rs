//! Conv2d and its patch extraction against naive `f64` references, finite differences (the
//! image layers' `resnorm gradcheck` rows) and PyTorch fixtures; pooling and ReLU are in
//! `pooling_relu.rs`.
//!
//! Tolerances: against the `f64` references `rtol 1e-5, atol 1e-5` (f32 sums of at most a
//! few hundred unit-sized terms); against PyTorch `rtol 1e-5, atol 2e-5` (different
//! summation orders of up to 147 terms).

mod common;

use common::{assert_close, assert_invalid, assert_shape_error, Fixture};
use resnorm::gradcheck::vision;
use resnorm::kernels::{col2im, col2im_add, im2col, PatchGeometry};
use resnorm::nn::{Conv2d, Conv2dConfig, ImageShape, Param};
use resnorm::rng::Rng;

fn normal(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.normal()).collect()
}

fn config(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> Conv2dConfig {
    Conv2dConfig {
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        bias,
    }
}

/// Output, dx, dweight and dbias of a convolution by direct loops in f64.
struct ConvReference {
    y: Vec<f32>,
    dx: Vec<f32>,
    dweight: Vec<f32>,
    dbias: Vec<f32>,
}

fn conv_reference(
    cfg: &Conv2dConfig,
    shape: ImageShape,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    dy: &[f32],
) -> ConvReference {
    let (k, s, p) = (cfg.kernel_size, cfg.stride, cfg.padding);
    let oh = (shape.height + 2 * p - k) / s + 1;
    let ow = (shape.width + 2 * p - k) / s + 1;
    let (c_in, c_out) = (cfg.in_channels, cfg.out_channels);
    let mut y = vec![0f64; shape.batch * c_out * oh * ow];
    let mut dx = vec![0f64; x.len()];
    let mut dw = vec![0f64; w.len()];
    for n in 0..shape.batch {
        for o in 0..c_out {
            for u in 0..oh {
                for v in 0..ow {
                    let yi = ((n * c_out + o) * oh + u) * ow + v;
                    let g = dy[yi] as f64;
                    y[yi] = b.get(o).map_or(0.0, |&b| b as f64);
                    for c in 0..c_in {
                        for i in 0..k {
                            for j in 0..k {
                                let h = (u * s + i) as isize - p as isize;
                                let wc = (v * s + j) as isize - p as isize;
                                if h < 0
                                    || wc < 0
                                    || h as usize >= shape.height
                                    || wc as usize >= shape.width
                                {
                                    continue;
                                }
                                let xi = ((n * c_in + c) * shape.height + h as usize) * shape.width
                                    + wc as usize;
                                let wi = ((o * c_in + c) * k + i) * k + j;
                                y[yi] += w[wi] as f64 * x[xi] as f64;
                                dx[xi] += g * w[wi] as f64;
                                dw[wi] += g * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    let db: Vec<f64> = (0..c_out)
        .map(|o| {
            let planes = dy.chunks(oh * ow).skip(o).step_by(c_out);
            planes.flatten().map(|&g| g as f64).sum()
        })
        .collect();
    let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    ConvReference {
        y: f(y),
        dx: f(dx),
        dweight: f(dw),
        dbias: if b.is_empty() { Vec::new() } else { f(db) },
    }
}

fn random_conv(name: &str, cfg: Conv2dConfig, rng: &mut Rng) -> Conv2d {
    let mut conv = Conv2d::new(name, cfg).unwrap();
    conv.weight.value = normal(rng, conv.weight.len()).into();
    if let Some(b) = &mut conv.bias {
        b.value = normal(rng, b.len()).into();
    }
    conv
}

#[test]
fn conv2d_matches_direct_loops() {
    let mut rng = Rng::new(11);
    // Batches of 5 and 7 split into uneven per-thread blocks; non-square images; 5x5 kernel.
    let cases = [
        (config(3, 4, 3, 1, 1, true), ImageShape::new(5, 3, 6, 7)),
        (config(3, 6, 3, 2, 1, false), ImageShape::new(7, 3, 9, 8)),
        (config(2, 3, 5, 2, 2, true), ImageShape::new(3, 2, 7, 6)),
        (config(4, 5, 1, 2, 0, false), ImageShape::new(5, 4, 5, 6)),
        (config(2, 2, 3, 3, 0, true), ImageShape::new(2, 2, 8, 8)),
        (config(1, 2, 4, 1, 2, false), ImageShape::new(2, 1, 3, 3)),
        // The direct 3x3 kernels: output channels in blocks of 8 plus single ones (forward
        // 9 = 8 + 1, input gradient 11 = 8 + 3), groups of 34 images and a remainder group,
        // 1x1 images, rows longer than a strip of 48.
        (config(5, 7, 3, 1, 1, true), ImageShape::new(80, 5, 5, 5)),
        (config(11, 9, 3, 1, 1, true), ImageShape::new(3, 11, 6, 5)),
        (config(3, 9, 3, 1, 1, false), ImageShape::new(3, 3, 1, 1)),
        (config(2, 6, 3, 1, 1, false), ImageShape::new(2, 2, 3, 70)),
        // Rows exactly one vector wide; a span of 307 vectors (five weight-gradient segments).
        (config(2, 3, 3, 1, 1, false), ImageShape::new(3, 2, 4, 16)),
        (config(1, 2, 3, 1, 1, true), ImageShape::new(1, 1, 70, 70)),
        // One large image: the matrix products themselves run on several threads.
        (
            config(16, 32, 3, 1, 1, false),
            ImageShape::new(1, 16, 16, 16),
        ),
    ];
    for (cfg, shape) in cases {
        let what = format!("{cfg:?} on {shape}");
        let mut conv = random_conv("c", cfg, &mut rng);
        let out = conv.output_shape(shape).unwrap();
        let x = normal(&mut rng, shape.len());
        let dy = normal(&mut rng, out.len());
        let bias = conv.bias.as_ref().map_or(Vec::new(), |b| b.value.to_vec());
        let want = conv_reference(&cfg, shape, &x, &conv.weight.value, &bias, &dy);
        let mut y = vec![f32::NAN; out.len()];
        conv.forward(&x, shape, &mut y).unwrap();
        assert_close(&format!("{what} y"), &y, &want.y, 1e-5, 1e-5);
        let mut dx = vec![f32::NAN; shape.len()];
        conv.backward(&x, shape, &dy, &mut dx).unwrap();
        assert_close(&format!("{what} dx"), &dx, &want.dx, 1e-5, 1e-5);
        assert_close(
            &format!("{what} dw"),
            &conv.weight.grad,
            &want.dweight,
            1e-5,
            1e-5,
        );
        if let Some(b) = &conv.bias {
            assert_close(&format!("{what} db"), &b.grad, &want.dbias, 1e-5, 1e-5);
        }
    }
}

#[test]
fn conv2d_backward_accumulates_parameter_grads_deterministically() {
    let mut rng = Rng::new(12);
    let cfg = config(3, 4, 3, 2, 1, true);
    let shape = ImageShape::new(6, 3, 8, 8);
    let mut conv = random_conv("layer1.0.conv1", cfg, &mut rng);
    let out = conv.output_shape(shape).unwrap();
    let x = normal(&mut rng, shape.len());
    let dy = normal(&mut rng, out.len());
    let mut dx = vec![0.0; shape.len()];
    conv.backward(&x, shape, &dy, &mut dx).unwrap();
    let once: Vec<Vec<f32>> = params(&conv).into_iter().map(|p| p.grad.to_vec()).collect();
    let dx_once = dx.clone();
    conv.backward(&x, shape, &dy, &mut dx).unwrap();
    assert_eq!(dx, dx_once, "dx is overwritten, identically");
    for (p, first) in params(&conv).iter().zip(&once) {
        let doubled: Vec<f32> = first.iter().map(|g| 2.0 * g).collect();
        assert_eq!(p.grad[..], doubled[..], "{} accumulates", p.name);
    }
    conv.zero_grad();
    assert!(params(&conv)
        .iter()
        .all(|p| p.grad.iter().all(|&g| g == 0.0)));
}

/// `backward_add` adds `∂L/∂input` onto `dinput` and the parameter gradients as `backward`
/// does: through the direct kernels exactly `r + dx` (one addition per pixel); through
/// im2col the same sum of at most 5 terms (r and up to 4 patches, each below ~4 here) in
/// another order (`r` first), so within 5 roundings of 2.4e-7 each way: 4e-6.
#[test]
fn conv2d_backward_add_adds_onto_the_input_gradient() {
    let mut rng = Rng::new(13);
    let cases = [
        (config(3, 4, 3, 1, 1, false), 0.0),
        (config(3, 4, 3, 2, 1, false), 4e-6),
        (config(3, 4, 1, 2, 0, false), 4e-6),
    ];
    for (cfg, tolerance) in cases {
        let shape = ImageShape::new(5, 3, 8, 7);
        let mut conv = random_conv("c", cfg, &mut rng);
        let out = conv.output_shape(shape).unwrap();
        let (x, dy, r) = (
            normal(&mut rng, shape.len()),
            normal(&mut rng, out.len()),
            normal(&mut rng, shape.len()),
        );
        let mut dx = vec![f32::NAN; shape.len()];
        conv.backward(&x, shape, &dy, &mut dx).unwrap();
        let grads: Vec<Vec<f32>> = params(&conv).into_iter().map(|p| p.grad.to_vec()).collect();
        conv.zero_grad();
        let mut sum = r.clone();
        conv.backward_add(&x, shape, &dy, &mut sum).unwrap();
        let want: Vec<f32> = r.iter().zip(&dx).map(|(r, d)| r + d).collect();
        assert_close(
            &format!("{cfg:?} r + dx"),
            &sum,
            &want,
            tolerance,
            tolerance,
        );
        for (p, want) in params(&conv).iter().zip(&grads) {
            assert_eq!(p.grad[..], want[..], "{cfg:?} {}", p.name);
        }
    }
}

fn params(conv: &Conv2d) -> Vec<Param> {
    let mut out = Vec::new();
    conv.visit_params(&mut |p| out.push(p.clone()));
    out
}

#[test]
fn conv2d_names_shapes_and_kaiming_init_follow_torchvision() {
    let mut conv = Conv2d::new("conv1", config(3, 64, 7, 2, 3, false)).unwrap();
    let names: Vec<(String, Vec<usize>)> = params(&conv)
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    assert_eq!(names, vec![("conv1.weight".into(), vec![64, 3, 7, 7])]);
    let with_bias = Conv2d::new("fc", config(2, 5, 1, 1, 0, true)).unwrap();
    assert_eq!(params(&with_bias)[1].name, "fc.bias");
    assert_eq!(params(&with_bias)[1].shape, vec![5]);

    conv.init_kaiming_normal(&mut Rng::new(5));
    let w = &conv.weight.value;
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let expected = (2.0 / (64.0 * 49.0f64)).sqrt(); // fan_out = out * k * k
    assert!(mean.abs() < 0.05 * expected, "mean {mean}");
    assert!(
        (std / expected - 1.0).abs() < 0.03,
        "std {std}, expected {expected}"
    );
    let mut visited = 0;
    conv.visit_params_mut(&mut |p| {
        p.value[0] = 1.0;
        visited += 1;
    });
    assert_eq!((visited, conv.weight.value[0]), (1, 1.0));
}

#[test]
fn im2col_and_col2im_are_adjoint() {
    // <im2col(x), c> == <x, col2im(c)> for every geometry: col2im is the exact transpose.
    let mut rng = Rng::new(13);
    for (k, s, p) in [(3, 1, 1), (3, 2, 1), (1, 2, 0), (5, 3, 2), (2, 2, 1)] {
        let g = PatchGeometry::new(2, 6, 7, k, s, p).unwrap();
        let x = normal(&mut rng, g.image_len());
        let c = normal(&mut rng, g.cols_len());
        let mut cols = vec![0.0; g.cols_len()];
        let mut back = vec![0.0; g.image_len()];
        im2col(&g, &x, &mut cols).unwrap();
        col2im(&g, &c, &mut back).unwrap();
        let lhs: f64 = cols
            .iter()
            .zip(&c)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let rhs: f64 = x
            .iter()
            .zip(&back)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!(
            (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
            "{k} {s} {p}: {lhs} {rhs}"
        );
    }
}

#[test]
fn gradient_checks_pass() {
    let checks = vision::checks();
    assert_eq!(checks.len(), 17);
    for check in checks {
        assert!(check.passed, "{check:?}");
    }
}

fn fixture_conv(name: &str, bias: bool) {
    let f = Fixture::load(name);
    let (x, w) = (f.get("x"), f.get("weight"));
    let cfg = config(
        w.shape[1],
        w.shape[0],
        f.meta_f32("kernel_size") as usize,
        f.meta_f32("stride") as usize,
        f.meta_f32("padding") as usize,
        bias,
    );
    let shape = ImageShape::new(x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let mut conv = Conv2d::new("conv", cfg).unwrap();
    conv.weight.value = w.data.clone().into();
    if let Some(b) = &mut conv.bias {
        b.value = f.get("bias").data.clone().into();
    }
    let mut y = vec![0.0; f.get("y").data.len()];
    conv.forward(&x.data, shape, &mut y).unwrap();
    assert_close(&format!("{name} y"), &y, &f.get("y").data, 1e-5, 2e-5);
    let mut dx = vec![0.0; x.data.len()];
    conv.backward(&x.data, shape, &f.get("dy").data, &mut dx)
        .unwrap();
    assert_close(&format!("{name} dx"), &dx, &f.get("dx").data, 1e-5, 2e-5);
    let dw = &f.get("dweight").data;
    assert_close(
        &format!("{name} dweight"),
        &conv.weight.grad,
        dw,
        1e-5,
        2e-5,
    );
    if let Some(b) = &conv.bias {
        assert_close(
            &format!("{name} dbias"),
            &b.grad,
            &f.get("dbias").data,
            1e-5,
            2e-5,
        );
    }
}

#[test]
fn conv2d_matches_pytorch() {
    fixture_conv("vision_conv2d_3x3_s1_p1_bias", true);
    fixture_conv("vision_conv2d_3x3_s2_p1", false);
    fixture_conv("vision_conv2d_1x1_s2_p0", false);
    fixture_conv("vision_conv2d_7x7_s2_p3", false);
}

#[test]
fn conv2d_rejects_bad_input() {
    assert_invalid(Conv2d::new("c", config(0, 4, 3, 1, 1, false)), "at least 1");
    assert_invalid(Conv2d::new("c", config(3, 4, 3, 0, 1, false)), "at least 1");
    assert_invalid(Conv2d::new("c", config(3, 4, 0, 1, 1, false)), "at least 1");
    let mut conv = Conv2d::new("conv1", config(3, 4, 3, 1, 0, true)).unwrap();
    let shape = ImageShape::new(2, 3, 4, 4);
    let (x, mut y, mut dx) = (vec![0.0; 96], vec![0.0; 32], vec![0.0; 96]);
    assert_shape_error(
        conv.output_shape(ImageShape::new(2, 2, 4, 4)),
        "conv1.weight",
    );
    assert_shape_error(
        conv.output_shape(ImageShape::new(2, 3, 2, 4)),
        "does not fit",
    );
    assert_shape_error(conv.forward(&x[1..], shape, &mut y), "input has 95");
    assert_shape_error(conv.forward(&x, shape, &mut y[1..]), "output has 31");
    assert_shape_error(
        conv.forward(&[], ImageShape::new(0, 3, 4, 4), &mut []),
        "zero dimension",
    );
    assert_shape_error(conv.backward(&x, shape, &y[1..], &mut dx), "doutput has 31");
    assert_shape_error(conv.backward(&x, shape, &y, &mut dx[1..]), "dinput has 95");
    assert_shape_error(conv.backward(&x[1..], shape, &y, &mut dx), "input has 95");
    assert!(params(&conv)
        .iter()
        .all(|p| p.grad.iter().all(|&g| g == 0.0)));
}

#[test]
fn patch_geometry_rejects_bad_sizes() {
    assert_shape_error(PatchGeometry::new(0, 4, 4, 3, 1, 1), "zero dimension");
    assert_invalid(PatchGeometry::new(1, 4, 4, 0, 1, 1), "at least 1");
    assert_invalid(PatchGeometry::new(1, 4, 4, 3, 0, 1), "at least 1");
    assert_shape_error(PatchGeometry::new(1, 4, 1, 4, 1, 1), "does not fit");
    let g = PatchGeometry::new(1, 4, 4, 3, 1, 1).unwrap();
    assert_shape_error(
        im2col(&g, &[0.0; 15], &mut vec![0.0; g.cols_len()]),
        "image has 15",
    );
    assert_shape_error(col2im(&g, &[0.0; 3], &mut [0.0; 16]), "cols 3");
    assert_shape_error(col2im_add(&g, &[0.0; 3], &mut [0.0; 16]), "cols 3");
}
