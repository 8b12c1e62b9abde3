//! The final fully connected layer of a ResNet, stored as torchvision stores `fc`:
//! weight `[classes, features]` (`nn.Linear`'s `[out, in]`), bias `[classes]`.
//!
//! The library's [`crate::nn::Linear`] keeps GPT-2's `[in, out]`; rather than transposing at
//! every save and load, the ResNet owns this layer, whose products read the weight
//! transposed through [`crate::kernels::matmul()`]'s flags (no copies), so a torchvision
//! `state_dict` maps 1:1 onto a checkpoint.
//!
//! ```text
//! y = x Wᵀ + b     dx = dy W     dW += dyᵀ x     db += Σ_rows dy
//! ```

use crate::kernels::{matmul, MatDims, Trans};
use crate::nn::{Param, ParamKind};
use crate::rng::Rng;
use crate::{Error, Result};

/// `y = x Wᵀ + b` with `W` stored `[out, in]`.
#[derive(Clone, Debug)]
pub struct Classifier {
    /// `{name}.weight`, `[out, in]`.
    pub weight: Param,
    /// `{name}.bias`, `[out]`.
    pub bias: Param,
}

impl Classifier {
    /// A zero layer from `in_features` to `out_features`.
    pub fn new(name: &str, in_features: usize, out_features: usize) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::invalid(
                "Classifier::new",
                format!("{name}: sizes must be positive, got {in_features} -> {out_features}"),
            ));
        }
        Ok(Classifier {
            weight: Param::zeros(
                format!("{name}.weight"),
                vec![out_features, in_features],
                ParamKind::Weight,
            ),
            bias: Param::zeros(format!("{name}.bias"), vec![out_features], ParamKind::Bias),
        })
    }

    /// PyTorch's `nn.Linear` initialization: weight and bias from `U(-1/√in, 1/√in)`.
    pub fn init(&mut self, rng: &mut Rng) {
        let bound = 1.0 / (self.in_features() as f32).sqrt();
        rng.fill_uniform(&mut self.weight.value, -bound, bound);
        rng.fill_uniform(&mut self.bias.value, -bound, bound);
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.shape[1]
    }

    /// Output width (the number of classes).
    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }

    fn dims(&self, op: &'static str, x: &[f32], y: &[f32]) -> Result<MatDims> {
        let (k, n) = (self.in_features(), self.out_features());
        let rows = x.len() / k;
        if !x.len().is_multiple_of(k) || y.len() != rows * n || rows == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "{}: input of {} and output of {} elements do not fit [rows, {k}] -> [rows, {n}]",
                    self.weight.name,
                    x.len(),
                    y.len()
                ),
            ));
        }
        Ok(MatDims { m: rows, k, n })
    }

    /// `output [rows, out] = input [rows, in] · Wᵀ + b`.
    pub fn forward(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        let dims = self.dims("Classifier::forward", input, output)?;
        for row in output.chunks_exact_mut(dims.n) {
            row.copy_from_slice(&self.bias.value);
        }
        matmul(
            output,
            input,
            &self.weight.value,
            dims,
            Trans { a: false, b: true },
            true,
        )
    }

    /// Writes `dinput = doutput · W`; adds `doutputᵀ · input` and `Σ_rows doutput` into the
    /// gradients.
    pub fn backward(&mut self, input: &[f32], doutput: &[f32], dinput: &mut [f32]) -> Result<()> {
        const OP: &str = "Classifier::backward";
        let dims = self.dims(OP, input, doutput)?;
        if dinput.len() != input.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "dinput has {} elements, input {}",
                    dinput.len(),
                    input.len()
                ),
            ));
        }
        let MatDims { m: rows, k, n } = dims;
        matmul(
            dinput,
            doutput,
            &self.weight.value,
            MatDims {
                m: rows,
                k: n,
                n: k,
            },
            Trans::NONE,
            false,
        )?;
        let dims_w = MatDims {
            m: n,
            k: rows,
            n: k,
        };
        matmul(
            &mut self.weight.grad,
            doutput,
            input,
            dims_w,
            Trans { a: true, b: false },
            true,
        )?;
        for row in doutput.chunks_exact(n) {
            for (g, &d) in self.bias.grad.iter_mut().zip(row) {
                *g += d;
            }
        }
        Ok(())
    }

    /// Hands the weight, then the bias, to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.weight);
        f(&self.bias);
    }
}
