//! BatchNorm with its activation fused into the same pass: the same floats as the unfused
//! composition (BatchNorm, then `relu_forward` / `add_relu_forward`; `relu_backward`, then
//! BatchNorm's backward), bit for bit, on odd shapes; and the errors of the new inputs.
//! (`resnorm gradcheck` checks `batch_norm+relu` against finite differences, and the ResNet
//! fixtures check the fused model against torchvision.)

use resnorm::kernels::batch_norm::{
    batch_norm_backward, batch_norm_forward_eval, batch_norm_forward_train, batch_norm_normalized,
    batch_norm_relu_backward, Activation, BatchNormGrads, BatchNormParams, BatchNormShape,
    RunningStats, SavedStats, SavedStatsMut,
};
use resnorm::kernels::{add_relu_forward, relu_backward, relu_forward};
use resnorm::rng::Rng;
use resnorm::Error;

/// N, C, S: odd sizes, one channel, the 2-D (N, C) case, planes longer than a task.
const SHAPES: [(usize, usize, usize); 5] =
    [(2, 3, 7), (1, 1, 5), (5, 3, 1), (3, 2, 33), (2, 5, 4100)];

fn normal(rng: &mut Rng, len: usize, mean: f32, std: f32) -> Vec<f32> {
    let mut v = vec![0.0; len];
    rng.fill_normal(&mut v, mean, std);
    v
}

/// A layer's inputs and parameters, and what a training forward pass saved.
struct Layer {
    shape: BatchNormShape,
    x: Vec<f32>,
    skip: Vec<f32>,
    dy: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    running: (Vec<f32>, Vec<f32>),
    saved: (Vec<f32>, Vec<f32>, Vec<f32>),
}

impl Layer {
    fn random((batch, channels, spatial): (usize, usize, usize), seed: u64) -> Layer {
        let shape = BatchNormShape {
            batch,
            channels,
            spatial,
        };
        let len = batch * channels * spatial;
        let mut rng = Rng::new(seed);
        Layer {
            shape,
            x: normal(&mut rng, len, 0.5, 2.0),
            skip: normal(&mut rng, len, 0.0, 1.0),
            dy: normal(&mut rng, len, 0.0, 1.0),
            weight: normal(&mut rng, channels, 1.0, 0.5),
            bias: normal(&mut rng, channels, 0.0, 0.5),
            running: (vec![0.0; channels], vec![1.0; channels]),
            saved: (
                vec![0.0; channels],
                vec![0.0; channels],
                vec![0.0; channels],
            ),
        }
    }

    fn params(&self) -> BatchNormParams<'_> {
        BatchNormParams {
            weight: &self.weight,
            bias: &self.bias,
            eps: 1e-5,
        }
    }

    fn train(&mut self, activation: fn(&[f32]) -> Activation<'_>) -> resnorm::Result<Vec<f32>> {
        let mut out = vec![0.0; self.x.len()];
        let params = BatchNormParams {
            weight: &self.weight,
            bias: &self.bias,
            eps: 1e-5,
        };
        let running = RunningStats {
            mean: &mut self.running.0,
            var: &mut self.running.1,
            momentum: 0.1,
        };
        let saved = SavedStatsMut {
            mean: &mut self.saved.0,
            rstd: &mut self.saved.1,
            shift: &mut self.saved.2,
        };
        let activation = activation(&self.skip);
        batch_norm_forward_train(
            &self.x, self.shape, params, running, activation, &mut out, saved,
        )?;
        Ok(out)
    }

    fn eval(&self, activation: Activation) -> Vec<f32> {
        let mut out = vec![0.0; self.x.len()];
        let (mean, var) = (&self.running.0, &self.running.1);
        batch_norm_forward_eval(
            &self.x,
            self.shape,
            self.params(),
            mean,
            var,
            activation,
            &mut out,
        )
        .unwrap();
        out
    }

    fn saved(&self) -> SavedStats<'_> {
        SavedStats {
            mean: &self.saved.0,
            rstd: &self.saved.1,
            shift: &self.saved.2,
        }
    }

    /// `(dx, dweight, dbias)` of the plain backward (`relu: false`) or the ReLU's, for `dy`.
    fn backward(&self, dy: &[f32], relu: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let channels = self.shape.channels;
        let (mut dx, mut dweight, mut dbias) = (
            vec![0.0; dy.len()],
            vec![0.0; channels],
            vec![0.0; channels],
        );
        let grads = BatchNormGrads {
            dweight: &mut dweight,
            dbias: &mut dbias,
        };
        let backward = if relu {
            batch_norm_relu_backward
        } else {
            batch_norm_backward
        };
        let (x, w) = (&self.x, &self.weight);
        backward(dy, x, self.shape, w, self.saved(), &mut dx, grads).unwrap();
        (dx, dweight, dbias)
    }
}

fn relu_of(values: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    relu_forward(values, &mut out).unwrap();
    out
}

#[test]
fn training_activations_match_the_unfused_passes_bit_for_bit() {
    for (i, &dims) in SHAPES.iter().enumerate() {
        let mut layer = Layer::random(dims, 70 + i as u64);
        let plain = layer.train(|_| Activation::Identity).unwrap();
        let fused = layer.train(|_| Activation::Relu).unwrap();
        assert_eq!(fused, relu_of(&plain), "{dims:?} relu");
        assert!(fused.contains(&0.0) && fused.iter().any(|&v| v > 0.0));

        let fused = layer.train(|skip| Activation::AddRelu(skip)).unwrap();
        let mut expected = vec![0.0; plain.len()];
        add_relu_forward(&plain, &layer.skip, &mut expected).unwrap();
        assert_eq!(fused, expected, "{dims:?} add + relu");

        let mut normalized = vec![0.0; plain.len()];
        let (x, w) = (&layer.x, &layer.weight);
        batch_norm_normalized(x, layer.shape, w, layer.saved(), &mut normalized).unwrap();
        assert_eq!(normalized, plain, "{dims:?} normalized again");
    }
}

#[test]
fn eval_activations_match_the_unfused_passes_bit_for_bit() {
    for (i, &dims) in SHAPES.iter().enumerate() {
        let mut layer = Layer::random(dims, 80 + i as u64);
        layer.train(|_| Activation::Identity).unwrap();
        let plain = layer.eval(Activation::Identity);
        assert_eq!(layer.eval(Activation::Relu), relu_of(&plain), "{dims:?}");
        let mut expected = vec![0.0; plain.len()];
        add_relu_forward(&plain, &layer.skip, &mut expected).unwrap();
        let fused = layer.eval(Activation::AddRelu(&layer.skip));
        assert_eq!(fused, expected, "{dims:?} add + relu");
    }
}

/// The ReLU's mask, recomputed inside the backward pass from `x` and the saved statistics,
/// is exactly the forward's: the gradient equals gating `dy` by the saved output first.
#[test]
fn relu_backward_matches_gating_then_the_plain_backward_bit_for_bit() {
    for (i, &dims) in SHAPES.iter().enumerate() {
        let mut layer = Layer::random(dims, 90 + i as u64);
        let out = layer.train(|_| Activation::Relu).unwrap();
        let mut gated = vec![0.0; out.len()];
        relu_backward(&out, &layer.dy, &mut gated).unwrap();
        let expected = layer.backward(&gated, false);
        let fused = layer.backward(&layer.dy, true);
        assert_eq!(fused, expected, "{dims:?}");
    }
}

#[test]
fn bad_skip_and_saved_lengths_are_shape_errors() {
    let mut layer = Layer::random((2, 3, 4), 5);
    layer.skip.pop();
    let short_skip = layer.train(|skip| Activation::AddRelu(skip));
    assert!(
        matches!(short_skip, Err(Error::Shape { .. })),
        "{short_skip:?}"
    );
    let eval = batch_norm_forward_eval(
        &layer.x,
        layer.shape,
        layer.params(),
        &layer.running.0,
        &layer.running.1,
        Activation::AddRelu(&layer.skip),
        &mut vec![0.0; layer.x.len()],
    );
    assert!(matches!(eval, Err(Error::Shape { .. })), "{eval:?}");

    layer.train(|_| Activation::Relu).unwrap();
    let short_shift = &layer.saved.2[..2];
    let saved = SavedStats {
        shift: short_shift,
        ..layer.saved()
    };
    let (mut dx, mut dweight, mut dbias) = (vec![0.0; 24], vec![0.0; 3], vec![0.0; 3]);
    let grads = BatchNormGrads {
        dweight: &mut dweight,
        dbias: &mut dbias,
    };
    let (x, w) = (&layer.x, &layer.weight);
    let result = batch_norm_relu_backward(&layer.dy, x, layer.shape, w, saved, &mut dx, grads);
    assert!(matches!(result, Err(Error::Shape { .. })), "{result:?}");
    let mut out = vec![0.0; 24];
    let result = batch_norm_normalized(x, layer.shape, w, saved, &mut out);
    assert!(matches!(result, Err(Error::Shape { .. })), "{result:?}");
}
