//! The parameter-free image layers, max pooling, global average pooling and ReLU, against
//! naive references and PyTorch fixtures (exact, or to rounding `1e-6`: they do no arithmetic
//! beyond one sum per plane), and their errors. Their finite-difference checks run with the
//! convolution's in `vision_layers.rs`.

mod common;

use common::{assert_close, assert_invalid, assert_shape_error, Fixture};
use resnorm::kernels::{
    add_relu_forward, relu_backward, relu_backward_in_place, relu_forward, relu_forward_in_place,
};
use resnorm::nn::{GlobalAvgPool, ImageShape, MaxPool2d};
use resnorm::rng::Rng;

fn normal(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.normal()).collect()
}

fn max_pool_reference(
    shape: ImageShape,
    k: usize,
    s: usize,
    p: usize,
    x: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let oh = (shape.height + 2 * p - k) / s + 1;
    let ow = (shape.width + 2 * p - k) / s + 1;
    let (mut y, mut dx) = (Vec::new(), vec![0.0f32; x.len()]);
    for (plane_index, plane) in x.chunks(shape.plane_len()).enumerate() {
        for u in 0..oh {
            for v in 0..ow {
                let mut best: Option<usize> = None;
                for i in 0..k {
                    for j in 0..k {
                        let (h, w) = (
                            (u * s + i) as isize - p as isize,
                            (v * s + j) as isize - p as isize,
                        );
                        if h < 0 || w < 0 || h as usize >= shape.height || w as usize >= shape.width
                        {
                            continue;
                        }
                        let at = h as usize * shape.width + w as usize;
                        if best.is_none_or(|b| plane[at] > plane[b]) {
                            best = Some(at);
                        }
                    }
                }
                let best = best.unwrap();
                y.push(plane[best]);
                dx[plane_index * shape.plane_len() + best] += dy[y.len() - 1];
            }
        }
    }
    (y, dx)
}

#[test]
fn max_pool2d_matches_direct_loops() {
    let mut rng = Rng::new(14);
    for (k, s, p, shape) in [
        (3, 2, 1, ImageShape::new(3, 5, 9, 8)),
        (2, 2, 0, ImageShape::new(2, 3, 6, 7)),
        (3, 1, 1, ImageShape::new(1, 2, 4, 5)),
        (4, 3, 2, ImageShape::new(2, 2, 7, 7)),
    ] {
        let mut pool = MaxPool2d::new(k, s, p).unwrap();
        let out = pool.output_shape(shape).unwrap();
        // Rounded values: ties, where the first maximum in scan order must win.
        let x: Vec<f32> = normal(&mut rng, shape.len())
            .iter()
            .map(|v| (v * 2.0).round())
            .collect();
        let dy = normal(&mut rng, out.len());
        let (want_y, want_dx) = max_pool_reference(shape, k, s, p, &x, &dy);
        let mut y = vec![0.0; out.len()];
        pool.forward(&x, shape, &mut y).unwrap();
        assert_eq!(y, want_y, "{k} {s} {p}");
        let mut dx = vec![f32::NAN; shape.len()];
        pool.backward(&dy, shape, &mut dx).unwrap();
        assert_close(
            &format!("max_pool {k} {s} {p} dx"),
            &dx,
            &want_dx,
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn max_pool2d_propagates_nan() {
    let mut pool = MaxPool2d::new(2, 2, 0).unwrap();
    let shape = ImageShape::new(1, 1, 2, 2);
    let mut y = [0.0];
    pool.forward(&[1.0, f32::NAN, 3.0, 2.0], shape, &mut y)
        .unwrap();
    assert!(y[0].is_nan());
}

#[test]
fn relu_in_place_and_out_of_place_agree() {
    let x = [-2.0, -0.0, 0.0, 0.5, f32::NAN, 3.0];
    let mut y = [0.0; 6];
    relu_forward(&x, &mut y).unwrap();
    let mut z = x;
    relu_forward_in_place(&mut z);
    assert_eq!(format!("{y:?}"), format!("{z:?}"));
    assert_eq!(&y[..4], &[0.0, 0.0, 0.0, 0.5]);
    assert!(y[4].is_nan());
    let dy = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut dx = [0.0; 6];
    relu_backward(&y, &dy, &mut dx).unwrap();
    assert_eq!(dx, [0.0, 0.0, 0.0, 4.0, 5.0, 6.0]);
    let mut g = dy;
    relu_backward_in_place(&y, &mut g).unwrap();
    assert_eq!(g, dx);
    // Large enough for the parallel path.
    let mut rng = Rng::new(15);
    let big = normal(&mut rng, 200_003);
    let mut out = vec![0.0; big.len()];
    relu_forward(&big, &mut out).unwrap();
    assert!(big.iter().zip(&out).all(|(&x, &y)| y == x.max(0.0)));
    let mut big_dx = vec![f32::NAN; big.len()];
    relu_backward(&out, &big, &mut big_dx).unwrap();
    let gated = big
        .iter()
        .zip(&out)
        .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 });
    assert!(gated.eq(big_dx.iter().copied()));
}

#[test]
fn add_relu_is_an_add_then_relu() {
    // The same floats as the add followed by ReLU, NaN and signed zeros included, on a small
    // and a parallel-sized buffer.
    let a = [-2.0, 1.0, -0.0, 0.5, f32::NAN, 3.0];
    let b = [1.0, -1.0, 0.0, 0.25, 1.0, -4.0];
    let mut y = [9.0; 6];
    add_relu_forward(&a, &b, &mut y).unwrap();
    let mut want: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
    relu_forward_in_place(&mut want);
    assert_eq!(format!("{y:?}"), format!("{want:?}"));
    assert_eq!(&y[..4], &[0.0, 0.0, 0.0, 0.75]);
    let mut rng = Rng::new(16);
    let (a, b) = (normal(&mut rng, 200_003), normal(&mut rng, 200_003));
    let mut y = vec![f32::NAN; a.len()];
    add_relu_forward(&a, &b, &mut y).unwrap();
    assert!(a
        .iter()
        .zip(&b)
        .zip(&y)
        .all(|((&a, &b), &y)| y == (a + b).max(0.0)));
    assert_shape_error(
        add_relu_forward(&[0.0; 3], &[0.0; 2], &mut y[..3]),
        "b has 2",
    );
}

fn image_shape(shape: &[usize]) -> ImageShape {
    ImageShape::new(shape[0], shape[1], shape[2], shape[3])
}

#[test]
fn max_pool2d_matches_pytorch() {
    for name in ["vision_max_pool2d_3_2_1", "vision_max_pool2d_3_2_1_ties"] {
        let f = Fixture::load(name);
        let x = f.get("x");
        let shape = image_shape(&x.shape);
        let mut pool = MaxPool2d::new(3, 2, 1).unwrap();
        assert_eq!(
            pool.output_shape(shape).unwrap(),
            image_shape(&f.get("y").shape)
        );
        let mut y = vec![0.0; f.get("y").data.len()];
        pool.forward(&x.data, shape, &mut y).unwrap();
        assert_eq!(y, f.get("y").data, "{name} y");
        let mut dx = vec![0.0; x.data.len()];
        pool.backward(&f.get("dy").data, shape, &mut dx).unwrap();
        assert_close(&format!("{name} dx"), &dx, &f.get("dx").data, 1e-6, 1e-6);
    }
}

#[test]
fn global_avg_pool_matches_pytorch() {
    let f = Fixture::load("vision_global_avg_pool");
    let x = f.get("x");
    let shape = image_shape(&x.shape);
    let mut y = vec![0.0; f.get("y").data.len()];
    GlobalAvgPool.forward(&x.data, shape, &mut y).unwrap();
    assert_close("avg y", &y, &f.get("y").data, 1e-6, 1e-6);
    let mut dx = vec![0.0; x.data.len()];
    GlobalAvgPool
        .backward(&f.get("dy").data, shape, &mut dx)
        .unwrap();
    assert_close("avg dx", &dx, &f.get("dx").data, 1e-6, 1e-6);
}

#[test]
fn relu_matches_pytorch() {
    let f = Fixture::load("vision_relu");
    let x = &f.get("x").data;
    let mut y = vec![0.0; x.len()];
    relu_forward(x, &mut y).unwrap();
    assert_eq!(y, f.get("y").data);
    let mut dx = vec![0.0; x.len()];
    relu_backward(&y, &f.get("dy").data, &mut dx).unwrap();
    assert_eq!(dx, f.get("dx").data);
}

#[test]
fn pooling_and_relu_reject_bad_input() {
    assert_invalid(MaxPool2d::new(3, 2, 2), "half the kernel");
    assert_invalid(MaxPool2d::new(0, 1, 0), "at least 1");
    assert_invalid(MaxPool2d::new(2, 0, 0), "at least 1");
    let mut pool = MaxPool2d::new(3, 2, 1).unwrap();
    let shape = ImageShape::new(1, 2, 5, 5);
    let unpadded = MaxPool2d::new(3, 1, 0).unwrap();
    assert_shape_error(
        unpadded.output_shape(ImageShape::new(1, 1, 2, 5)),
        "does not fit",
    );
    let mut dx = vec![0.0; 50];
    assert_invalid(pool.backward(&[0.0; 18], shape, &mut dx), "none yet");
    assert_shape_error(
        pool.forward(&[0.0; 49], shape, &mut [0.0; 18]),
        "input has 49",
    );
    assert_shape_error(
        pool.forward(&[0.0; 50], shape, &mut [0.0; 17]),
        "output has 17",
    );
    pool.forward(&[0.0; 50], shape, &mut [0.0; 18]).unwrap();
    assert_invalid(
        pool.backward(&[0.0; 18], ImageShape::new(1, 2, 6, 5), &mut [0.0; 60]),
        "[1, 2, 5, 5]",
    );
    assert_shape_error(pool.backward(&[0.0; 17], shape, &mut dx), "doutput has 17");
    assert_shape_error(
        pool.backward(&[0.0; 18], shape, &mut dx[1..]),
        "dinput has 49",
    );

    let avg = GlobalAvgPool;
    assert_shape_error(
        avg.forward(&[0.0; 49], shape, &mut [0.0; 2]),
        "input has 49",
    );
    assert_shape_error(
        avg.forward(&[0.0; 50], shape, &mut [0.0; 3]),
        "output has 3",
    );
    assert_shape_error(avg.backward(&[0.0; 1], shape, &mut dx), "doutput has 1");
    assert_shape_error(
        avg.backward(&[0.0; 2], shape, &mut dx[1..]),
        "dinput has 49",
    );

    assert_shape_error(relu_forward(&[0.0; 3], &mut [0.0; 2]), "output has 2");
    assert_shape_error(
        relu_backward(&[0.0; 3], &[0.0; 2], &mut [0.0; 3]),
        "doutput has 2",
    );
    assert_shape_error(
        relu_backward(&[0.0; 3], &[0.0; 3], &mut [0.0; 4]),
        "dinput has 4",
    );
    assert_shape_error(
        relu_backward_in_place(&[0.0; 3], &mut [0.0; 4]),
        "grad has 4",
    );
}
