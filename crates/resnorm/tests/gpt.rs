//! The GPT model: parity with the PyTorch reference (tools/fixtures/gpt.py), gradient checks
//! of every placement, gradient flow to every parameter, initialization, and bad input.

mod common;

use common::{assert_close, Fixture};
use resnorm::gradcheck::gpt::{check_model, tiny_config};
use resnorm::kernels::NormKind;
use resnorm::models::gpt::{Gpt, GptConfig, Placement};
use resnorm::Error;

/// Fixture tolerances: float32 PyTorch vs float32 resnorm, different summation orders.
const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn parity(placement: Placement, norm: NormKind) {
    let fx = Fixture::load(&format!("gpt_{placement}_{norm}"));
    let meta = |k: &str| fx.metadata[k].parse::<usize>().unwrap();
    let config = GptConfig {
        layers: meta("layers"),
        heads: meta("heads"),
        width: meta("width"),
        context: meta("context"),
        vocab: meta("vocab"),
        placement,
        norm,
        eps: fx.meta_f32("eps"),
        ..GptConfig::default() // residual_scaling: the fixture's weights replace the init
    };
    let mut model = Gpt::new(config, 0).unwrap();
    let mut names = Vec::new();
    model.visit_params_mut(&mut |p| {
        let t = fx.get(&format!("param.{}", p.name));
        assert_eq!(t.shape, p.shape, "{}: shape", p.name);
        p.value.copy_from_slice(&t.data);
        names.push(p.name.clone());
    });
    let fixture_params = fx
        .tensors
        .keys()
        .filter(|k| k.starts_with("param."))
        .count();
    assert_eq!(
        fixture_params,
        names.len(),
        "the model and PyTorch have the same parameters"
    );
    let tokens: Vec<u32> = fx.get("tokens").data.iter().map(|&v| v as u32).collect();
    let targets: Vec<u32> = fx.get("targets").data.iter().map(|&v| v as u32).collect();
    let batch = meta("batch");
    let loss = model
        .forward(&tokens, batch, Some(&targets))
        .unwrap()
        .unwrap();
    assert_close("loss", &[loss], &fx.get("loss").data, RTOL, 0.0);
    assert_close("logits", model.logits(), &fx.get("logits").data, RTOL, ATOL);
    model.backward().unwrap();
    model.visit_params(&mut |p| {
        let want = &fx.get(&format!("grad.{}", p.name)).data;
        assert_close(
            &format!("{placement} {norm} grad {}", p.name),
            &p.grad,
            want,
            RTOL,
            ATOL,
        );
    });
}

#[test]
fn every_placement_matches_pytorch() {
    for placement in Placement::ALL {
        parity(placement, NormKind::Layer);
        if placement.normalizes() {
            parity(placement, NormKind::Rms);
        }
    }
}

#[test]
fn every_placement_passes_the_gradient_check() {
    for placement in Placement::ALL {
        for norm in [NormKind::Layer, NormKind::Rms] {
            for r in check_model(placement, norm) {
                assert!(
                    r.passed,
                    "{}: max rel err {:.3e} > {:.0e}",
                    r.name, r.max_rel_err, r.tolerance
                );
            }
        }
    }
}

/// Every parameter tensor must receive a gradient (the failure mode of a fused kernel that
/// silently stops gradients). ReZero's sublayers are exactly cut off at initialization
/// (a = 0), so every model takes one SGD step first and is checked on the second.
#[test]
fn every_parameter_receives_a_gradient() {
    for placement in Placement::ALL {
        for norm in [NormKind::Layer, NormKind::Rms] {
            let config = GptConfig {
                placement,
                norm,
                ..tiny_config(placement, norm)
            };
            let mut model = Gpt::new(config, 3).unwrap();
            let tokens = [1, 4, 2, 8, 5, 7, 3, 9];
            let targets = [4, 2, 8, 5, 7, 3, 9, 1];
            for step in 0..2 {
                model.zero_grad();
                model.forward(&tokens, 2, Some(&targets)).unwrap();
                model.backward().unwrap();
                if step == 0 && placement == Placement::ReZero {
                    model.visit_params(&mut |p| {
                        let zero = p.grad.iter().all(|&g| g == 0.0);
                        let is_gate = p.name.contains("rezero");
                        let is_embedding = p.name.starts_with("wte") || p.name.starts_with("wpe");
                        assert!(
                            zero != (is_gate || is_embedding),
                            "re-zero at init: {} gradient zero = {zero}",
                            p.name
                        );
                    });
                }
                model.visit_params_mut(&mut |p| {
                    for (v, g) in p.value.iter_mut().zip(&p.grad) {
                        *v -= 0.5 * g;
                    }
                });
            }
            model.visit_params(&mut |p| {
                let norm2: f32 = p.grad.iter().map(|g| g * g).sum();
                assert!(
                    norm2 > 0.0 && norm2.is_finite(),
                    "{placement} {norm}: {} has gradient norm² {norm2}",
                    p.name
                );
            });
        }
    }
}

#[test]
fn the_same_seed_gives_bit_identical_weights() {
    let config = GptConfig {
        placement: Placement::DeepNorm,
        ..GptConfig::default()
    };
    let collect = |seed| {
        let model = Gpt::new(config.clone(), seed).unwrap();
        let mut values = Vec::new();
        model.visit_params(&mut |p| values.extend(p.value.iter().map(|v| v.to_bits())));
        values
    };
    assert_eq!(collect(5), collect(5));
    assert_ne!(collect(5), collect(6));
}

#[test]
fn initialization_follows_gpt2_and_the_placements() {
    let layers = 6;
    let std_of = |model: &Gpt, name: &str| {
        let mut out = None;
        model.visit_params(&mut |p| {
            if p.name == name {
                let n = p.value.len() as f32;
                let mean = p.value.iter().sum::<f32>() / n;
                out = Some((p.value.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt());
            }
        });
        out.unwrap_or_else(|| panic!("no parameter {name}"))
    };
    let base = GptConfig {
        layers,
        width: 64,
        heads: 4,
        ..GptConfig::default()
    };
    let pre = Gpt::new(base.clone(), 1).unwrap();
    assert!((std_of(&pre, "h.0.mlp.c_fc.weight") - 0.02).abs() < 0.001);
    let residual_std = 0.02 / (2.0 * layers as f32).sqrt();
    assert!((std_of(&pre, "h.3.attn.c_proj.weight") - residual_std).abs() < 0.0005);
    let unscaled = GptConfig {
        residual_scaling: false,
        ..base.clone()
    };
    let unscaled = Gpt::new(unscaled, 1).unwrap();
    assert!((std_of(&unscaled, "h.3.attn.c_proj.weight") - 0.02).abs() < 0.001);
    assert!((std_of(&unscaled, "h.3.mlp.c_proj.weight") - 0.02).abs() < 0.001);
    assert_eq!(std_of(&pre, "h.0.ln_1.weight"), 0.0); // all ones
    let deep = Gpt::new(
        GptConfig {
            placement: Placement::DeepNorm,
            ..base.clone()
        },
        1,
    )
    .unwrap();
    let beta = (8.0 * layers as f32).powf(-0.25);
    let xavier_fc = beta * (2.0f32 / (64.0 + 256.0)).sqrt();
    assert!((std_of(&deep, "h.0.mlp.c_fc.weight") / xavier_fc - 1.0).abs() < 0.05);
    let rezero = Gpt::new(
        GptConfig {
            placement: Placement::ReZero,
            ..base
        },
        1,
    )
    .unwrap();
    rezero.visit_params(&mut |p| {
        if p.name.contains("rezero") {
            assert_eq!(p.value[..], [0.0]);
        }
    });
}

#[test]
fn parameter_names_follow_hugging_face_gpt2() {
    let model = Gpt::new(
        GptConfig {
            layers: 1,
            ..GptConfig::default()
        },
        0,
    )
    .unwrap();
    let mut names = Vec::new();
    model.visit_params(&mut |p| names.push((p.name.clone(), p.shape.clone())));
    let c = 128;
    let expected: Vec<(String, Vec<usize>)> = [
        ("wte.weight", vec![256, c]),
        ("wpe.weight", vec![64, c]),
        ("h.0.ln_1.weight", vec![c]),
        ("h.0.ln_1.bias", vec![c]),
        ("h.0.attn.c_attn.weight", vec![c, 3 * c]),
        ("h.0.attn.c_attn.bias", vec![3 * c]),
        ("h.0.attn.c_proj.weight", vec![c, c]),
        ("h.0.attn.c_proj.bias", vec![c]),
        ("h.0.ln_2.weight", vec![c]),
        ("h.0.ln_2.bias", vec![c]),
        ("h.0.mlp.c_fc.weight", vec![c, 4 * c]),
        ("h.0.mlp.c_fc.bias", vec![4 * c]),
        ("h.0.mlp.c_proj.weight", vec![4 * c, c]),
        ("h.0.mlp.c_proj.bias", vec![c]),
        ("ln_f.weight", vec![c]),
        ("ln_f.bias", vec![c]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(names, expected);
    let mut model = model;
    let slice_names: Vec<String> = model.params_mut().iter().map(|p| p.name.clone()).collect();
    let visited: Vec<String> = names.into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        slice_names, visited,
        "params_mut and visit_params agree on the order"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let config = tiny_config(Placement::PreLn, NormKind::Layer);
    let mut model = Gpt::new(config, 0).unwrap();
    let err = model.forward(&[1, 2, 11, 3], 1, None).unwrap_err();
    assert!(err.to_string().contains("11"), "token id >= vocab: {err}");
    let err = model.forward(&[1, 2, 3, 4, 5, 6], 1, None).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("context"),
        "{err}"
    );
    assert!(matches!(
        model.forward(&[], 1, None),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        model.forward(&[1, 2, 3], 0, None),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        model.forward(&[1, 2, 3], 2, None),
        Err(Error::Shape { .. })
    ));
    assert!(model
        .forward(&[1, 2], 1, Some(&[1, 12]))
        .unwrap_err()
        .to_string()
        .contains("12"));
    assert!(model.forward(&[1, 2], 1, Some(&[1])).is_err());
    let mut fresh = Gpt::new(tiny_config(Placement::PostLn, NormKind::Rms), 0).unwrap();
    assert!(fresh.backward().is_err(), "backward before forward");
    fresh.forward(&[1, 2], 1, None).unwrap();
    assert!(
        fresh.backward().is_err(),
        "backward after a forward without targets"
    );
    let bad = GptConfig {
        heads: 3,
        ..tiny_config(Placement::PreLn, NormKind::Layer)
    };
    assert!(matches!(Gpt::new(bad, 0), Err(Error::Config(_))));
}

#[test]
fn stream_stats_show_what_the_placements_do_to_the_residual_stream() {
    let stats_of = |placement, layers| {
        let config = GptConfig {
            layers,
            width: 32,
            heads: 2,
            context: 16,
            vocab: 20,
            placement,
            ..GptConfig::default()
        };
        let mut model = Gpt::new(config, 9).unwrap();
        model.record_stream_stats(true);
        let tokens: Vec<u32> = (0..32).map(|i| (i * 7 % 20) as u32).collect();
        let targets: Vec<u32> = (0..32).map(|i| (i * 3 % 20) as u32).collect();
        model.forward(&tokens, 2, Some(&targets)).unwrap();
        model.backward().unwrap();
        model.stream_stats().unwrap().clone()
    };
    let post = stats_of(Placement::PostLn, 4);
    assert_eq!(
        (post.rms.len(), post.cosine.len(), post.grad_norm.len()),
        (9, 8, 9)
    );
    // A normalized row has RMS √(var / (var + eps)): 0.994 for the first unit, whose input
    // (embeddings of std 0.02) has a variance of only ~8e-4; 1 within 1e-3 after that.
    let normalized = |r: f32, tol: f32| (r - 1.0).abs() < tol;
    assert!(normalized(post.rms[1], 1e-2), "post-ln: {:?}", post.rms);
    assert!(
        post.rms[2..].iter().all(|&r| normalized(r, 1e-3)),
        "post-ln: {:?}",
        post.rms
    );
    let pre = stats_of(Placement::PreLn, 4);
    assert!(
        pre.rms[8] > pre.rms[0],
        "pre-ln stream grows: {:?}",
        pre.rms
    );
    assert!(
        pre.cosine.iter().all(|&c| c > 0.9),
        "small updates turn the stream little: {:?}",
        pre.cosine
    );
    // Without residual connections the gradient reaching the input is over an order of
    // magnitude below the one at the output, and the gap widens with depth.
    let input_to_output = |layers| {
        let g = stats_of(Placement::NoResidual, layers).grad_norm;
        g[0] / g[2 * layers]
    };
    let (shallow, deep) = (input_to_output(4), input_to_output(8));
    assert!(
        deep < 0.05 && deep < 0.5 * shallow,
        "no residual: {shallow:e} (L=4), {deep:e} (L=8)"
    );
    let residual = stats_of(Placement::PreLn, 8);
    assert!(
        residual.grad_norm[0] > 0.5 * residual.grad_norm[16],
        "pre-ln keeps it: {:?}",
        residual.grad_norm
    );
}
