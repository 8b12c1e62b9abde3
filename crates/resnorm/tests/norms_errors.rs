//! Bad input to the norm kernels: every mismatched length, empty width, bad eps and
//! misplaced bias or gradient is a typed error, returned before any output is touched.

use resnorm::kernels::add_norm::{add_norm_backward, add_norm_forward, UpstreamGrads};
use resnorm::kernels::layer_norm::{layer_norm_backward, layer_norm_forward};
use resnorm::kernels::norm::{
    NormGrads, NormKind, NormStats, NormStatsMut, NormWeights, DEFAULT_EPS,
};
use resnorm::kernels::rms_norm::{rms_norm_backward, rms_norm_forward};
use resnorm::{Error, Result};

#[test]
fn norm_kind_spellings_round_trip() {
    for (kind, name) in [(NormKind::Layer, "layer"), (NormKind::Rms, "rms")] {
        assert_eq!(kind.to_string(), name);
        assert_eq!(name.parse::<NormKind>().unwrap(), kind);
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<NormKind>(&json).unwrap(), kind);
    }
    assert!(matches!(
        "batch".parse::<NormKind>(),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(serde_json::from_str::<NormKind>("\"Layer\"").is_err());
}

fn assert_shape_error(what: &str, result: Result<()>) {
    assert!(
        matches!(result, Err(Error::Shape { .. })),
        "{what}: expected a shape error, got {result:?}"
    );
}

fn assert_invalid(what: &str, result: Result<()>) {
    assert!(
        matches!(result, Err(Error::InvalidArgument { .. })),
        "{what}: expected an invalid-argument error, got {result:?}"
    );
}

/// Valid buffers for 2 rows of 4 columns; each error test breaks one thing.
struct Buffers {
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    out: Vec<f32>,
    rows: Vec<f32>,
    grad: Vec<f32>,
}

fn buffers() -> Buffers {
    Buffers {
        x: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0],
        weight: vec![1.0; 4],
        bias: vec![0.0; 4],
        out: vec![f32::NAN; 8],
        rows: vec![f32::NAN; 2],
        grad: vec![0.0; 4],
    }
}

#[test]
fn forward_rejects_bad_parameters_before_writing() {
    let mut b = buffers();
    let (x, bias) = (b.x.clone(), b.bias.clone());
    let mut ln = |weight: &[f32], bias: Option<&[f32]>, eps: f32| {
        let w = NormWeights { weight, bias, eps };
        let mut mean = b.rows.clone();
        layer_norm_forward(&x, &w, &mut b.out, &mut mean, &mut b.rows)
    };
    assert_invalid("empty weight (cols = 0)", ln(&[], None, DEFAULT_EPS));
    for eps in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
        assert_invalid(&format!("eps {eps}"), ln(&[1.0; 4], None, eps));
    }
    assert_shape_error("bias of 3", ln(&[1.0; 4], Some(&bias[..3]), DEFAULT_EPS));
    assert_shape_error(
        "weight of 3 (x is not whole rows)",
        ln(&[1.0; 3], None, DEFAULT_EPS),
    );
    assert_shape_error(
        "weight of 5 (x is not whole rows)",
        ln(&[1.0; 5], None, DEFAULT_EPS),
    );
    assert!(b.out.iter().all(|v| v.is_nan()), "nothing written on error");

    let w = NormWeights {
        weight: &b.weight,
        bias: Some(&b.bias),
        eps: DEFAULT_EPS,
    };
    let mut rstd = vec![0.0; 2];
    assert_invalid(
        "bias given to rms_norm",
        rms_norm_forward(&b.x, &w, &mut b.out, &mut rstd),
    );
    let no_bias = NormWeights { bias: None, ..w };
    assert_invalid(
        "zero eps to rms_norm",
        rms_norm_forward(
            &b.x,
            &NormWeights {
                eps: 0.0,
                ..no_bias
            },
            &mut b.out,
            &mut rstd,
        ),
    );
}

#[test]
fn forward_rejects_mismatched_buffers() {
    let b = buffers();
    let w = NormWeights {
        weight: &b.weight,
        bias: Some(&b.bias),
        eps: DEFAULT_EPS,
    };
    let rms = NormWeights { bias: None, ..w };
    let (x, residual) = (&b.x[..], &b.x[..]);
    let (mut out, mut out7) = (b.out.clone(), vec![0.0; 7]);
    let (mut two, mut three, mut one) = (vec![0.0; 2], vec![0.0; 3], vec![0.0; 1]);
    assert_shape_error(
        "x of 7",
        layer_norm_forward(&x[..7], &w, &mut out7, &mut two.clone(), &mut two),
    );
    assert_shape_error(
        "out of 7",
        layer_norm_forward(x, &w, &mut out7, &mut two.clone(), &mut two),
    );
    assert_shape_error(
        "mean of 3",
        layer_norm_forward(x, &w, &mut out, &mut three, &mut two),
    );
    assert_shape_error(
        "rstd of 1",
        layer_norm_forward(x, &w, &mut out, &mut two, &mut one),
    );
    assert_shape_error(
        "rms out of 7",
        rms_norm_forward(x, &rms, &mut out7, &mut two),
    );
    assert_shape_error(
        "rms rstd of 3",
        rms_norm_forward(x, &rms, &mut out, &mut three),
    );

    let mut sum = vec![0.0; 8];
    let add =
        |kind, x: &[f32], residual: &[f32], sum: &mut [f32], mean: &mut [f32], rstd: &mut [f32]| {
            let weights = if kind == NormKind::Layer { &w } else { &rms };
            let mut out = vec![0.0; x.len()];
            add_norm_forward(
                kind,
                x,
                residual,
                weights,
                sum,
                &mut out,
                NormStatsMut { mean, rstd },
            )
        };
    let layer = NormKind::Layer;
    assert_shape_error(
        "residual of 7",
        add(
            layer,
            x,
            &residual[..7],
            &mut sum,
            &mut two.clone(),
            &mut two,
        ),
    );
    assert_shape_error(
        "sum of 7",
        add(layer, x, residual, &mut out7, &mut two.clone(), &mut two),
    );
    assert_shape_error(
        "layer mean empty",
        add(layer, x, residual, &mut sum, &mut [], &mut two),
    );
    assert_shape_error(
        "add rstd of 3",
        add(layer, x, residual, &mut sum, &mut two.clone(), &mut three),
    );
    assert_shape_error(
        "rms mean of 3",
        add(NormKind::Rms, x, residual, &mut sum, &mut three, &mut two),
    );
    assert!(add(NormKind::Rms, x, residual, &mut sum, &mut [], &mut two).is_ok());
    assert_invalid(
        "bias given to add rms",
        add_norm_forward(
            NormKind::Rms,
            x,
            residual,
            &w,
            &mut sum,
            &mut out,
            NormStatsMut {
                mean: &mut [],
                rstd: &mut two,
            },
        ),
    );
    let mut short_out = vec![0.0; 7];
    let stats = NormStatsMut {
        mean: &mut [],
        rstd: &mut two,
    };
    assert_shape_error(
        "add out of 7",
        add_norm_forward(
            NormKind::Rms,
            x,
            residual,
            &rms,
            &mut sum,
            &mut short_out,
            stats,
        ),
    );
}

#[test]
fn backward_rejects_mismatched_buffers_and_gradients() {
    let b = buffers();
    let w = NormWeights {
        weight: &b.weight,
        bias: Some(&b.bias),
        eps: DEFAULT_EPS,
    };
    let rms = NormWeights { bias: None, ..w };
    let (x, dy) = (&b.x[..], &b.x[..]);
    let (stats2, stats3) = (vec![1.0; 2], vec![1.0; 3]);
    let mut dx = vec![0.0; 8];
    let (mut dw, mut db, mut dw5) = (b.grad.clone(), b.grad.clone(), vec![0.0; 5]);
    let ln = |dy: &[f32],
              mean: &[f32],
              rstd: &[f32],
              dx: &mut [f32],
              dweight: &mut [f32],
              dbias: Option<&mut [f32]>| {
        layer_norm_backward(dy, x, &w, mean, rstd, dx, NormGrads { dweight, dbias })
    };
    assert_shape_error(
        "dy of 7",
        ln(&dy[..7], &stats2, &stats2, &mut dx, &mut dw, Some(&mut db)),
    );
    assert_shape_error(
        "dx of 7",
        ln(dy, &stats2, &stats2, &mut dx[..7], &mut dw, Some(&mut db)),
    );
    assert_shape_error(
        "mean of 3",
        ln(dy, &stats3, &stats2, &mut dx, &mut dw, Some(&mut db)),
    );
    assert_shape_error(
        "rstd of 3",
        ln(dy, &stats2, &stats3, &mut dx, &mut dw, Some(&mut db)),
    );
    assert_shape_error(
        "dweight of 5",
        ln(dy, &stats2, &stats2, &mut dx, &mut dw5, Some(&mut db)),
    );
    assert_shape_error(
        "dbias of 5",
        ln(dy, &stats2, &stats2, &mut dx, &mut dw, Some(&mut dw5)),
    );
    assert_invalid(
        "bias without dbias",
        ln(dy, &stats2, &stats2, &mut dx, &mut dw, None),
    );
    assert_eq!(dw, b.grad, "nothing accumulated on error");

    let mut rms_bwd = |w: &NormWeights, rstd: &[f32], dbias: Option<&mut [f32]>| {
        let grads = NormGrads {
            dweight: &mut dw,
            dbias,
        };
        rms_norm_backward(dy, x, w, rstd, &mut dx, grads)
    };
    assert_invalid("dbias without bias", rms_bwd(&rms, &stats2, Some(&mut db)));
    assert_invalid(
        "bias given to rms_norm_backward",
        rms_bwd(&w, &stats2, Some(&mut db)),
    );
    assert_shape_error("rms rstd of 3", rms_bwd(&rms, &stats3, None));

    let add = |kind, upstream: UpstreamGrads, mean: &[f32], rstd: &[f32], dx: &mut [f32]| {
        let weights = if kind == NormKind::Layer { &w } else { &rms };
        let mut dbias = [0.0; 4];
        let grads = NormGrads {
            dweight: &mut [0.0; 4],
            dbias: weights.bias.map(|_| &mut dbias[..]),
        };
        add_norm_backward(
            kind,
            upstream,
            x,
            weights,
            NormStats { mean, rstd },
            dx,
            grads,
        )
    };
    let up = |dout, dsum| UpstreamGrads { dout, dsum };
    let (layer, rms_kind) = (NormKind::Layer, NormKind::Rms);
    assert_shape_error(
        "dout of 7",
        add(layer, up(&dy[..7], None), &stats2, &stats2, &mut dx),
    );
    assert_shape_error(
        "dsum of 7",
        add(layer, up(dy, Some(&dy[..7])), &stats2, &stats2, &mut dx),
    );
    assert_shape_error(
        "add dx of 7",
        add(layer, up(dy, Some(dy)), &stats2, &stats2, &mut dx[..7]),
    );
    assert_shape_error(
        "layer mean empty",
        add(layer, up(dy, None), &[], &stats2, &mut dx),
    );
    assert_shape_error(
        "add rstd of 3",
        add(rms_kind, up(dy, None), &[], &stats3, &mut dx),
    );
    assert_shape_error(
        "rms mean of 3",
        add(rms_kind, up(dy, None), &stats3, &stats2, &mut dx),
    );
    assert!(add(rms_kind, up(dy, None), &[], &stats2, &mut dx).is_ok());
    assert!(add(rms_kind, up(dy, Some(dy)), &stats2, &stats2, &mut dx).is_ok());
}
