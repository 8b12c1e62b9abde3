//! ResNet parity with PyTorch/torchvision: one training-mode forward and backward (logits,
//! loss, every parameter gradient, updated BatchNorm running statistics) and one
//! evaluation-mode forward, on fixtures written by tools/fixtures/resnet.py. Also: names and
//! shapes against torchvision's state dict, zero_init_residual, and bad input.

mod common;

use std::path::PathBuf;

use common::{assert_close, Fixture};
use resnorm::kernels::{cross_entropy_backward, cross_entropy_forward};
use resnorm::models::resnet::{ResNet, ResNetConfig, Stem};
use resnorm::nn::{BatchNorm2d, ImageShape, Param};
use resnorm::rng::Rng;

/// Relative tolerance of every comparison, against each tensor's largest magnitude
/// (`|a - e| <= 1e-4·(|e| + max|e|)`): gradients of near-cancelling sums are compared at the
/// scale of their tensor.
const RTOL: f32 = 1e-4;

fn tiny_config(shortcuts: bool) -> ResNetConfig {
    ResNetConfig {
        stem: Stem::Small,
        in_channels: 1,
        stage_blocks: vec![2, 1, 1],
        stage_channels: vec![4, 8, 16],
        shortcuts,
        zero_init_residual: false,
        num_classes: 10,
    }
}

fn close(what: &str, actual: &[f32], expected: &[f32]) {
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert_close(what, actual, expected, RTOL, RTOL * scale);
}

/// Loads `fixture` into a network of shape `config` and checks the whole step.
fn check_parity(fixture: &Fixture, config: &ResNetConfig) {
    let mut net = ResNet::new(config, &mut Rng::new(0)).unwrap();
    let mut names = Vec::new();
    for p in net.params_mut() {
        let t = fixture.get(&format!("param.{}", p.name));
        assert_eq!(t.shape, p.shape, "{}: shape differs from torch", p.name);
        p.value.copy_from_slice(&t.data);
        names.push(p.name.clone());
    }
    net.visit_buffers_mut(&mut |p: &mut Param| {
        let t = fixture.get(&format!("buffer.{}", p.name));
        assert_eq!(t.shape, p.shape, "{}", p.name);
        p.value.copy_from_slice(&t.data);
        names.push(p.name.clone());
    });
    let torch_names = fixture
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix("param.").or(k.strip_prefix("buffer.")))
        .count();
    assert_eq!(names.len(), torch_names, "every torch tensor has a twin");

    let x = fixture.get("x");
    let shape = ImageShape::new(x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let labels: Vec<u32> = fixture
        .get("labels")
        .data
        .iter()
        .map(|&l| l as u32)
        .collect();
    let logits = net.forward(&x.data, shape).unwrap().to_vec();
    close("logits", &logits, &fixture.get("logits").data);
    let classes = config.num_classes;
    let (mut losses, mut lse) = (vec![0.0; labels.len()], vec![0.0; labels.len()]);
    let loss = cross_entropy_forward(&logits, &labels, classes, &mut losses, &mut lse).unwrap();
    close("loss", &[loss], &fixture.get("loss").data);
    let mut dlogits = vec![0.0; logits.len()];
    cross_entropy_backward(&mut dlogits, &logits, &lse, &labels, classes, 1.0).unwrap();
    net.backward(&x.data, &dlogits).unwrap();
    net.visit_params(&mut |p| {
        close(
            &format!("grad {}", p.name),
            &p.grad,
            &fixture.get(&format!("grad.{}", p.name)).data,
        )
    });
    net.visit_buffers(&mut |p| {
        close(
            &format!("running {}", p.name),
            &p.value,
            &fixture.get(&format!("running.{}", p.name)).data,
        )
    });
    net.set_training(false);
    let eval_logits = net.forward(&x.data, shape).unwrap();
    close("eval logits", eval_logits, &fixture.get("eval_logits").data);
}

#[test]
fn cifar_style_resnet_matches_pytorch() {
    check_parity(&Fixture::load("resnet_cifar_tiny"), &tiny_config(true));
}

#[test]
fn plain_network_matches_pytorch() {
    check_parity(&Fixture::load("resnet_plain_tiny"), &tiny_config(false));
}

#[test]
fn torchvision_resnet18_matches() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/generated/resnet18_torchvision.safetensors");
    if !path.is_file() {
        eprintln!(
            "skipping: {} is absent (90 MB, not committed); write it with \
             `python3 tools/fixtures/resnet.py resnet18`",
            path.display()
        );
        return;
    }
    let fixture = Fixture::load("generated/resnet18_torchvision");
    check_parity(&fixture, &ResNetConfig::named("resnet18", 3, 10).unwrap());
}

#[test]
fn names_and_shapes_follow_torchvision() {
    let config = ResNetConfig::named("resnet18", 3, 10).unwrap();
    let net = ResNet::new(&config, &mut Rng::new(1)).unwrap();
    let mut params = Vec::new();
    net.visit_params(&mut |p| params.push((p.name.clone(), p.shape.clone())));
    let count: usize = params
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(count, 11_181_642, "torchvision resnet18(num_classes=10)");
    let find = |name: &str| params.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(find("conv1.weight"), [64, 3, 7, 7]);
    assert_eq!(find("layer2.0.downsample.0.weight"), [128, 64, 1, 1]);
    assert_eq!(find("layer4.1.conv2.weight"), [512, 512, 3, 3]);
    assert_eq!(find("fc.weight"), [10, 512]);
    let mut buffers = Vec::new();
    net.visit_buffers(&mut |p| buffers.push(p.name.clone()));
    assert_eq!(buffers[..2], ["bn1.running_mean", "bn1.running_var"]);
    assert!(buffers.contains(&"layer1.0.bn1.running_mean".to_string()));
    // 20 BatchNorms: stem, 2 per block, 3 projections.
    assert_eq!(buffers.len(), 2 * 20);

    let resnet56 = ResNetConfig::named("resnet56", 1, 10).unwrap();
    assert_eq!(
        (resnet56.depth(), resnet56.stage_blocks.clone()),
        (56, vec![9, 9, 9])
    );
    let plain20 = ResNetConfig::named("plain20", 1, 10).unwrap();
    assert!(!plain20.shortcuts);
    let plain = ResNet::new(&plain20, &mut Rng::new(1)).unwrap();
    let mut names = Vec::new();
    plain.visit_params(&mut |p| names.push(p.name.clone()));
    assert!(!names.iter().any(|n| n.contains("downsample")));
}

#[test]
fn zero_init_residual_makes_every_block_start_from_its_shortcut() {
    let mut config = ResNetConfig::named("resnet20", 1, 10).unwrap();
    config.zero_init_residual = true;
    let mut net = ResNet::new(&config, &mut Rng::new(3)).unwrap();
    for block in &net.blocks {
        assert!(block.branch2.bn.weight.value.iter().all(|&w| w == 0.0));
        assert!(block.branch1.bn.weight.value.iter().all(|&w| w == 1.0));
    }
    // With zero residual branches, a block of identity shortcut passes relu(x) = x on.
    let shape = ImageShape::new(2, 1, 8, 8);
    let mut rng = Rng::new(4);
    let images: Vec<f32> = (0..shape.len()).map(|_| rng.normal()).collect();
    net.forward(&images, shape).unwrap();
    assert_eq!(net.blocks[1].output(), net.blocks[0].output());
}

#[test]
fn bad_input_is_refused() {
    assert!(ResNetConfig::named("resnet21", 1, 10).is_err());
    assert!(ResNetConfig::named("plain18", 1, 10).is_err());
    assert!(ResNetConfig::named("vgg16", 1, 10).is_err());
    assert!(ResNetConfig::named("resnet20", 0, 10).is_err());
    let config = tiny_config(true);
    let mut net = ResNet::new(&config, &mut Rng::new(0)).unwrap();
    let shape = ImageShape::new(2, 1, 8, 8);
    assert!(
        net.backward(&[0.0; 128], &[0.0; 20]).is_err(),
        "no forward yet"
    );
    assert!(net.responses().is_err(), "no forward yet");
    assert!(net.forward(&[0.0; 127], shape).is_err());
    let three_channels = ImageShape::new(2, 3, 8, 8);
    assert!(net.forward(&[0.0; 384], three_channels).is_err());
    net.forward(&[0.5; 128], shape).unwrap();
    assert!(net.backward(&[0.5; 128], &[0.0; 19]).is_err());
    assert!(net.backward(&[0.5; 100], &[0.0; 20]).is_err());
    let mut bad = config.clone();
    bad.stage_channels.pop();
    assert!(ResNet::new(&bad, &mut Rng::new(0)).is_err());
}

#[test]
fn batch_norm2d_and_basic_block_gradients_match_finite_differences() {
    let results = resnorm::gradcheck::resnet::checks();
    assert!(results.len() >= 3 + 3 * 6);
    for check in results {
        eprintln!("{}: max rel err {:.2e}", check.name, check.max_rel_err);
        assert!(check.passed, "{check:?}");
    }
}

#[test]
fn batch_norm2d_refuses_bad_input() {
    assert!(BatchNorm2d::new("bn", 0).is_err());
    let mut bn = BatchNorm2d::new("bn", 2).unwrap();
    let shape = ImageShape::new(2, 2, 1, 2);
    let mut out = [0.0; 8];
    let mut dx = [0.0; 8];
    assert!(
        bn.backward(&[1.0; 8], shape, &[1.0; 8], &mut dx).is_err(),
        "no forward yet"
    );
    assert!(
        bn.backward_relu(&[1.0; 8], shape, &[1.0; 8], &mut dx)
            .is_err(),
        "no forward yet"
    );
    assert!(
        bn.normalized(&[1.0; 8], shape, &mut out).is_err(),
        "nothing saved to normalize with"
    );
    let wrong_channels = ImageShape::new(2, 4, 1, 1);
    assert!(bn.forward(&[1.0; 8], wrong_channels, &mut out).is_err());
    assert!(bn.forward(&[1.0; 7], shape, &mut out).is_err());
    let single = ImageShape::new(1, 2, 1, 1);
    assert!(
        bn.forward(&[1.0; 2], single, &mut [0.0; 2]).is_err(),
        "one value per channel"
    );
    bn.forward(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0], shape, &mut out)
        .unwrap();
    let other = ImageShape::new(1, 2, 2, 2);
    assert!(
        bn.backward(&[1.0; 8], other, &[1.0; 8], &mut dx).is_err(),
        "shape changed"
    );
    assert!(bn.backward(&[1.0; 8], shape, &[1.0; 7], &mut dx).is_err());
    bn.backward(
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0],
        shape,
        &[1.0; 8],
        &mut dx,
    )
    .unwrap();
}
