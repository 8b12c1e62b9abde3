//! The image data side: IDX and digits readers (every error path, on tiny files in a temp
//! folder), the real shared files when present, normalization, seeded batches, augmentation.

mod common;

use common::{gzip, idx, TempDir};

use std::path::Path;

use resnorm::data::image::*;
use resnorm::nn::ImageShape;
use resnorm::rng::Rng;
use resnorm::Error;

fn assert_format_error<T: std::fmt::Debug>(result: resnorm::Result<T>, path: &Path, needle: &str) {
    match result {
        Err(Error::Format { path: p, detail }) => {
            assert_eq!(p, path, "{detail}");
            assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
        }
        other => panic!("expected a format error with {needle:?}, got {other:?}"),
    }
}

#[test]
fn idx_reads_raw_and_gzip_files() {
    let dir = TempDir::new("idx");
    let pixels: Vec<u8> = (0..2 * 3 * 2).map(|v| (v * 20) as u8).collect();
    let images = idx(&[2, 3, 2], &pixels);
    let raw = dir.write("raw-images-idx3-ubyte", &images);
    let packed = dir.write("packed-images-idx3-ubyte.gz", &gzip(&images));
    for path in [&raw, &packed] {
        let array = read_idx(path).unwrap();
        assert_eq!(array.dims, vec![2, 3, 2]);
        assert_eq!(array.data, pixels);
    }
    let labels = dir.write("labels", &gzip(&idx(&[2], &[7, 3])));
    let pair = read_mnist(&packed, &labels).unwrap();
    assert_eq!(pair.shape, ImageShape::new(2, 1, 3, 2));
    assert_eq!(pair.labels, vec![7, 3]);
    assert_eq!(pair.pixels[1], 20.0 / 255.0);
    assert_eq!(pair.pixels[11], 220.0 / 255.0);
}

#[test]
fn idx_rejects_broken_files_naming_them() {
    let dir = TempDir::new("idx-errors");
    let cases: [(&str, Vec<u8>, &str); 8] = [
        ("short", vec![0, 0, 8], "shorter than the magic"),
        (
            "magic",
            vec![1, 0, 8, 1, 0, 0, 0, 1, 5],
            "magic starts 01 00",
        ),
        (
            "type",
            vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0],
            "element type 0x0d",
        ),
        ("rank0", vec![0, 0, 8, 0], "0 dimensions"),
        (
            "header",
            vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0],
            "16-byte header",
        ),
        (
            "truncated",
            idx(&[2, 2, 2], &[1; 7]),
            "truncated: sizes [2, 2, 2] need 8 bytes",
        ),
        ("trailing", idx(&[3], &[1; 4]), "trailing bytes"),
        (
            "gzip",
            vec![0x1f, 0x8b, 8, 0, 1, 2, 3],
            "broken gzip stream",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.write(name, &bytes);
        assert_format_error(read_idx(&path), &path, needle);
    }
    let truncated_gz = dir.write("truncated.gz", &gzip(&idx(&[4, 2, 2], &[0; 15])));
    assert_format_error(read_idx(&truncated_gz), &truncated_gz, "truncated");
    let missing = dir.0.join("missing");
    assert!(matches!(read_idx(&missing), Err(Error::Io { path, .. }) if path == missing));
}

#[test]
fn mnist_pairs_must_agree() {
    let dir = TempDir::new("mnist-pairs");
    let images = dir.write("images", &idx(&[3, 2, 2], &[0; 12]));
    let labels = dir.write("labels", &idx(&[2], &[0, 1]));
    let err = read_mnist(&images, &labels).unwrap_err().to_string();
    assert!(
        err.contains("2 labels, but") && err.contains("holds 3 images"),
        "{err}"
    );
    assert!(err.starts_with(&labels.display().to_string()), "{err}");
    let flat = dir.write("flat", &idx(&[12], &[0; 12]));
    assert_format_error(
        read_mnist(&flat, &labels),
        &flat,
        "expected [images, height, width]",
    );
    let square = dir.write("square", &idx(&[1, 1], &[0]));
    assert_format_error(read_mnist(&images, &square), &square, "expected [labels]");
}

#[test]
fn mnist_split_finds_standard_names() {
    let dir = TempDir::new("mnist-split");
    dir.write(
        "t10k-images-idx3-ubyte.gz",
        &gzip(&idx(&[1, 2, 2], &[255, 0, 0, 255])),
    );
    dir.write("t10k-labels-idx1-ubyte", &idx(&[1], &[9]));
    let test = read_mnist_split(&dir.0, MnistSplit::Test).unwrap();
    assert_eq!(
        (test.labels.clone(), test.pixels.clone()),
        (vec![9], vec![1.0, 0.0, 0.0, 1.0])
    );
    let err = read_mnist_split(&dir.0, MnistSplit::Train).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("train-images-idx3-ubyte")),
        "{err}"
    );
}

fn digits_line(pixel: &str, label: &str) -> String {
    let mut fields = vec!["3"; 64];
    fields[10] = pixel;
    fields.push(label);
    fields.join(",")
}

#[test]
fn digits_csv_reads_plain_and_gzip() {
    let dir = TempDir::new("digits");
    let text = format!("{}\n\n{}\n", digits_line("16", "0"), digits_line("0", "9"));
    for path in [
        dir.write("d.csv", text.as_bytes()),
        dir.write("d.csv.gz", &gzip(text.as_bytes())),
    ] {
        let digits = read_digits_csv(&path).unwrap();
        assert_eq!(digits.shape, ImageShape::new(2, 1, 8, 8));
        assert_eq!(digits.labels, vec![0, 9]);
        assert_eq!(
            (digits.pixels[10], digits.pixels[74], digits.pixels[0]),
            (1.0, 0.0, 3.0 / 16.0)
        );
    }
}

#[test]
fn digits_csv_rejects_bad_rows() {
    let dir = TempDir::new("digits-errors");
    let good = digits_line("1", "1");
    let cases = [
        ("fields", format!("{good}\n1,2,3\n"), "line 2: 3 fields"),
        (
            "pixel",
            digits_line("17", "1"),
            "line 1, column 11: \"17\" is not an integer in 0..=16",
        ),
        ("fraction", digits_line("1.5", "1"), "column 11"),
        (
            "label",
            digits_line("1", "10"),
            "column 65: \"10\" is not an integer in 0..=9",
        ),
        ("text", digits_line("x", "1"), "\"x\""),
        ("empty", "\n\n".to_string(), "no digits"),
    ];
    for (name, text, needle) in cases {
        let path = dir.write(name, text.as_bytes());
        assert_format_error(read_digits_csv(&path), &path, needle);
    }
    let binary = dir.write("binary", &[0xff, 0xfe, 0x00]);
    assert_format_error(read_digits_csv(&binary), &binary, "not UTF-8");
}

#[test]
fn real_fashion_mnist_test_split() {
    let Some(shared) = common::shared_data() else {
        return;
    };
    let dir = shared.join("images/fashion-mnist");
    let test = read_mnist_split(&dir, MnistSplit::Test).unwrap();
    assert_eq!(test.shape, ImageShape::new(10_000, 1, 28, 28));
    let mut per_class = [0usize; 10];
    test.labels.iter().for_each(|&l| per_class[l as usize] += 1);
    assert_eq!(per_class, [1000; 10]);
    let stats = Normalization::measure(&test);
    // Fashion-MNIST's well-known statistics (train: 0.2860, 0.3530; the test split is close).
    assert!(
        (stats.mean[0] - 0.286).abs() < 0.01 && (stats.std[0] - 0.353).abs() < 0.01,
        "{stats:?}"
    );
}

#[test]
fn real_digits_csv() {
    let Some(shared) = common::shared_data() else {
        return;
    };
    let digits = read_digits_csv(&shared.join("images/digits.csv.gz")).unwrap();
    assert_eq!(digits.shape, ImageShape::new(1797, 1, 8, 8));
    assert_eq!(&digits.labels[..3], &[0, 1, 2]);
    let first_row: Vec<f32> = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]
        .map(|v| v / 16.0)
        .to_vec();
    assert_eq!(&digits.pixels[..8], &first_row[..]);
    assert_eq!(ImageDataset::new(digits, None).unwrap().num_classes(), 10);
}

fn ramp_images(count: usize, channels: usize, side: usize) -> LabeledImages {
    let shape = ImageShape::new(count, channels, side, side);
    let pixels = (0..shape.len()).map(|v| (v % 97) as f32 / 96.0).collect();
    let labels = (0..count as u32).map(|i| i % 3).collect();
    LabeledImages::new(shape, pixels, labels).unwrap()
}

#[test]
fn normalization_centres_every_channel() {
    let images = ramp_images(5, 3, 4);
    let stats = Normalization::measure(&images);
    let data = ImageDataset::new(images, Some(&stats)).unwrap();
    let plane = 16;
    for c in 0..3 {
        let values: Vec<f64> = data
            .images()
            .chunks(plane)
            .skip(c)
            .step_by(3)
            .flatten()
            .map(|&v| v as f64)
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "channel {c}: {mean} {var}"
        );
    }
    let constant =
        LabeledImages::new(ImageShape::new(2, 1, 1, 1), vec![0.5, 0.5], vec![0, 0]).unwrap();
    assert_eq!(Normalization::measure(&constant).std, vec![1.0]);
}

#[test]
fn shuffling_is_a_seeded_permutation() {
    let data = ImageDataset::new(ramp_images(50, 1, 2), None).unwrap();
    let order = data.shuffled_order(&mut Rng::new(3));
    assert_eq!(order, data.shuffled_order(&mut Rng::new(3)));
    assert_ne!(order, data.shuffled_order(&mut Rng::new(4)));
    assert_ne!(order, (0..50).collect::<Vec<_>>());
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    // The documented Fisher-Yates, step by step.
    let mut rng = Rng::new(3);
    let mut expected: Vec<usize> = (0..50).collect();
    for i in (1..50).rev() {
        expected.swap(i, rng.below(i + 1));
    }
    assert_eq!(order, expected);
}

#[test]
fn augmentation_crops_with_black_padding_and_flips_as_documented() {
    let (c, side, p) = (2usize, 5usize, 2usize);
    let images = ramp_images(1, c, side);
    let norm = Normalization::new(vec![0.5, 0.25], vec![2.0, 0.5]).unwrap();
    let data = ImageDataset::new(images, Some(&norm)).unwrap();
    let black = [-0.25f32, -0.5];
    let augmentation = Augmentation {
        crop_padding: p,
        horizontal_flip: true,
    };
    let mut rng = Rng::new(9);
    let mut seen_flip = [false; 2];
    for _ in 0..40 {
        let mut replay = rng.clone();
        let (top, left, flip) = (
            replay.below(2 * p + 1),
            replay.below(2 * p + 1),
            replay.below(2) == 1,
        );
        seen_flip[flip as usize] = true;
        let mut out = vec![0.0; c * side * side];
        let mut label = [0];
        data.fill_batch(&[0], &augmentation, &mut rng, &mut out, &mut label)
            .unwrap();
        assert_eq!(rng, replay, "exactly three draws per image");
        let src = data.image(0);
        for ch in 0..c {
            for h in 0..side {
                for w in 0..side {
                    let w_src = if flip { side - 1 - w } else { w };
                    let (r, col) = (
                        h as isize + top as isize - p as isize,
                        w_src as isize + left as isize - p as isize,
                    );
                    let inside =
                        (0..side as isize).contains(&r) && (0..side as isize).contains(&col);
                    let want = if inside {
                        src[(ch * side + r as usize) * side + col as usize]
                    } else {
                        black[ch]
                    };
                    assert_eq!(
                        out[(ch * side + h) * side + w],
                        want,
                        "top {top} left {left} flip {flip}"
                    );
                }
            }
        }
    }
    assert_eq!(seen_flip, [true, true]);
}

#[test]
fn batches_follow_the_order_without_augmentation() {
    let data = ImageDataset::new(ramp_images(6, 1, 3), None).unwrap();
    let mut rng = Rng::new(1);
    let indices = [4, 0, 4];
    let mut images = vec![0.0; 27];
    let mut labels = vec![9; 3];
    data.fill_batch(
        &indices,
        &Augmentation::NONE,
        &mut rng,
        &mut images,
        &mut labels,
    )
    .unwrap();
    assert_eq!(rng, Rng::new(1), "nothing drawn");
    assert_eq!(labels, vec![1, 0, 1]);
    assert_eq!(&images[..9], data.image(4));
    assert_eq!(&images[18..], data.image(4));
    assert_eq!(&images[9..18], data.image(0));
}

#[test]
fn image_data_rejects_bad_input() {
    let shape_error = |r: resnorm::Result<()>, needle: &str| match r {
        Err(e @ Error::Shape { .. }) => assert!(e.to_string().contains(needle), "{e}"),
        other => panic!("expected a shape error with {needle:?}, got {other:?}"),
    };
    let invalid = |r: resnorm::Result<()>, needle: &str| match r {
        Err(e @ Error::InvalidArgument { .. }) => assert!(e.to_string().contains(needle), "{e}"),
        other => panic!("expected an invalid argument with {needle:?}, got {other:?}"),
    };
    let shape = ImageShape::new(2, 1, 2, 2);
    shape_error(
        LabeledImages::new(shape, vec![0.0; 7], vec![0, 1]).map(drop),
        "pixels has 7",
    );
    shape_error(
        LabeledImages::new(shape, vec![0.0; 8], vec![0]).map(drop),
        "1 labels for 2 images",
    );
    invalid(
        Normalization::new(vec![0.0], vec![0.0]).map(drop),
        "std > 0",
    );
    invalid(
        Normalization::new(vec![0.0, 1.0], vec![1.0]).map(drop),
        "equal nonzero length",
    );
    invalid(
        Normalization::new(vec![f32::NAN], vec![1.0]).map(drop),
        "finite",
    );
    let three = Normalization::new(vec![0.0; 3], vec![1.0; 3]).unwrap();
    let images = LabeledImages::new(shape, vec![0.0; 8], vec![0, 1]).unwrap();
    shape_error(
        ImageDataset::new(images.clone(), Some(&three)).map(drop),
        "for 1 channels",
    );
    let zero_std = Normalization {
        mean: vec![0.0],
        std: vec![0.0],
    };
    invalid(
        ImageDataset::new(images.clone(), Some(&zero_std)).map(drop),
        "std > 0",
    );

    let data = ImageDataset::new(images, None).unwrap();
    let mut rng = Rng::new(0);
    let none = Augmentation::NONE;
    shape_error(
        data.fill_batch(&[0, 1], &none, &mut rng, &mut [0.0; 7], &mut [0; 2]),
        "images has 7",
    );
    shape_error(
        data.fill_batch(&[0, 1], &none, &mut rng, &mut [0.0; 8], &mut [0; 1]),
        "1 labels for 2",
    );
    invalid(
        data.fill_batch(&[0, 2], &none, &mut rng, &mut [0.0; 8], &mut [0; 2]),
        "index 2",
    );
    shape_error(
        none.apply(&[0.0; 4], [1, 2, 2], &[0.0; 2], &mut rng, &mut [0.0; 4]),
        "fill 2",
    );
    shape_error(
        none.apply(&[0.0; 4], [1, 2, 2], &[0.0], &mut rng, &mut [0.0; 3]),
        "out 3",
    );
}
