//! Fully connected layer, stored as Hugging Face GPT-2's `Conv1D`: weight `[in, out]`.
//!
//! Over `rows` input rows `x [rows, in]`:
//!
//! ```text
//! forward   y  = x W + b                   [rows, out]
//! backward  dx = dy Wᵀ                     (overwritten)
//!           dW += xᵀ dy                    [in, out]
//!           db += Σ_rows dy                [out]
//! ```
//!
//! The layer owns `weight` and `bias`; the caller owns the activations. Backward needs the
//! forward's input `x` and the output gradient `dy`. The products run on
//! [`crate::kernels::matmul()`] (transposes by strides, no copies); the forward's bias is added
//! by [`crate::kernels::matmul_plus_row`], each thread adding it to the rows it just computed.
//! The bias gradient is summed in fixed blocks of rows, each into a partial row, the partials
//! then added in block order, so it is bit-for-bit the same for any thread count.
//!
//! ```
//! use resnorm::nn::Linear;
//! let mut fc = Linear::new("h.0.mlp.c_fc", 2, 3, true).unwrap();
//! fc.weight.value.copy_from_slice(&[1.0, 0.0, 2.0, 0.0, 1.0, 3.0]); // [in=2, out=3]
//! fc.bias.as_mut().unwrap().value.copy_from_slice(&[0.5, 0.5, 0.5]);
//! let x = [1.0, 2.0];
//! let mut y = [0.0; 3];
//! fc.forward(&mut y, &x).unwrap();
//! assert_eq!(y, [1.5, 2.5, 8.5]);
//! let mut dx = [0.0; 2];
//! fc.backward(&mut dx, &x, &[1.0, 1.0, 1.0]).unwrap();
//! assert_eq!(dx, [3.0, 4.0]);
//! assert_eq!(fc.weight.grad[..], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
//! assert!(fc.forward(&mut y, &[1.0, 2.0, 3.0]).is_err());
//! ```

use crate::kernels::{matmul, matmul_plus_row, MatDims, Trans};
use crate::nn::{Param, ParamKind};
use crate::rng::Rng;
use crate::{Error, Result};

/// Bias gradients over at least this many `dy` elements are summed on the thread pool.
const PARALLEL_MIN_LEN: usize = 1 << 15;

/// `y = x W + b` with `W` stored `[in, out]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// `{name}.weight`, `[in, out]`.
    pub weight: Param,
    /// `{name}.bias`, `[out]`, when the layer has one.
    pub bias: Option<Param>,
}

impl Linear {
    /// A zero-initialized layer whose parameters are called `{name}.weight` and `{name}.bias`.
    pub fn new(name: &str, in_features: usize, out_features: usize, bias: bool) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::invalid(
                "Linear::new",
                format!("{name}: sizes must be positive, got {in_features} -> {out_features}"),
            ));
        }
        let weight = Param::zeros(
            format!("{name}.weight"),
            vec![in_features, out_features],
            ParamKind::Weight,
        );
        let bias =
            bias.then(|| Param::zeros(format!("{name}.bias"), vec![out_features], ParamKind::Bias));
        Ok(Linear { weight, bias })
    }

    /// Draws the weight from `N(0, std²)` and zeroes the bias (GPT-2 uses `std = 0.02`).
    pub fn init(&mut self, rng: &mut Rng, std: f32) {
        rng.fill_normal(&mut self.weight.value, 0.0, std);
        if let Some(bias) = &mut self.bias {
            bias.value.fill(0.0);
        }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.shape[0]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.shape[1]
    }

    /// Hands `weight`, then `bias`, to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.weight);
        if let Some(bias) = &self.bias {
            f(bias);
        }
    }

    /// Hands `weight`, then `bias`, to `f` for writing.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        if let Some(bias) = &mut self.bias {
            f(bias);
        }
    }

    /// `out [rows, out] = x [rows, in] · W + b`, `rows = x.len() / in`.
    pub fn forward(&self, out: &mut [f32], x: &[f32]) -> Result<()> {
        let dims = self.dims("Linear::forward", x, out)?;
        match &self.bias {
            Some(bias) => {
                matmul_plus_row(out, x, &self.weight.value, &bias.value, dims, Trans::NONE)
            }
            None => matmul(out, x, &self.weight.value, dims, Trans::NONE, false),
        }
    }

    /// Writes `dx = dy Wᵀ`; adds `xᵀ dy` into the weight gradient and `Σ_rows dy` into the
    /// bias gradient. `x` is the forward's input.
    pub fn backward(&mut self, dx: &mut [f32], x: &[f32], dy: &[f32]) -> Result<()> {
        const OP: &str = "Linear::backward";
        let dims = self.dims(OP, x, dy)?;
        if dx.len() != x.len() {
            return Err(Error::shape(
                OP,
                format!("dx has {} elements, x has {}", dx.len(), x.len()),
            ));
        }
        let MatDims {
            m: rows,
            k: n_in,
            n: n_out,
        } = dims;
        let dx_dims = MatDims {
            m: rows,
            k: n_out,
            n: n_in,
        };
        matmul(
            dx,
            dy,
            &self.weight.value,
            dx_dims,
            Trans { a: false, b: true },
            false,
        )?;
        let dw_dims = MatDims {
            m: n_in,
            k: rows,
            n: n_out,
        };
        matmul(
            &mut self.weight.grad,
            x,
            dy,
            dw_dims,
            Trans { a: true, b: false },
            true,
        )?;
        if let Some(bias) = &mut self.bias {
            add_column_sums(&mut bias.grad, dy);
        }
        Ok(())
    }

    /// Checks `x [rows, in]` against `y [rows, out]` and returns the product's sizes.
    fn dims(&self, op: &'static str, x: &[f32], y: &[f32]) -> Result<MatDims> {
        let (n_in, n_out) = (self.in_features(), self.out_features());
        let rows = x.len() / n_in;
        if !x.len().is_multiple_of(n_in) || y.len() != rows * n_out {
            return Err(Error::shape(
                op,
                format!(
                    "{}: input has {} elements and output {}, expected [rows, {n_in}] and \
                     [rows, {n_out}]",
                    self.weight.name,
                    x.len(),
                    y.len()
                ),
            ));
        }
        Ok(MatDims {
            m: rows,
            k: n_in,
            n: n_out,
        })
    }
}

/// Rows of `dy` per block of the bias gradient's sum. Each block is summed into a partial
/// row of its own and the partials are added in block order, so the bits depend neither on
/// the thread count nor on which thread took which block.
const SUM_BLOCK_ROWS: usize = 256;

/// `sums[j] += Σ_r dy[r, j]`: blocks of [`SUM_BLOCK_ROWS`] rows, each summed into a partial
/// row on the pool (every thread reading whole rows, in order), then the partials added.
///
/// Each thread summing a block of columns over all rows was slower: the bias gradients of
/// one layer of the 6-layer width-384 GPT (`dy` of 1152, 384, 1536 and 384 columns, 2048
/// rows), 2 threads, a scratch program alternating the two, three runs: 1.06-1.16 ms
/// against 1.60-1.78.
fn add_column_sums(sums: &mut [f32], dy: &[f32]) {
    let cols = sums.len();
    let blocks = (dy.len() / cols).div_ceil(SUM_BLOCK_ROWS);
    let block_len = SUM_BLOCK_ROWS * cols;
    let mut partials = PARTIAL_SUMS.take();
    if partials.len() < blocks * cols {
        partials.resize(blocks * cols, 0.0);
    }
    let partials_used = &mut partials[..blocks * cols];
    let sum_block = |block: usize, partial: &mut [f32]| {
        partial.fill(0.0);
        let rows = dy[block * block_len..]
            .chunks_exact(cols)
            .take(SUM_BLOCK_ROWS);
        for row in rows {
            for (p, &g) in partial.iter_mut().zip(row) {
                *p += g;
            }
        }
    };
    if dy.len() < PARALLEL_MIN_LEN {
        for (block, partial) in partials_used.chunks_exact_mut(cols).enumerate() {
            sum_block(block, partial);
        }
    } else {
        let Ok(()) =
            crate::threads::for_each_chunk_spinning(partials_used, cols, &|block, partial| {
                sum_block(block, partial);
                Ok::<(), std::convert::Infallible>(())
            });
    }
    for partial in partials_used.chunks_exact(cols) {
        for (s, p) in sums.iter_mut().zip(partial) {
            *s += p;
        }
    }
    PARTIAL_SUMS.set(partials);
}

thread_local! {
    /// The per-block partial rows of [`add_column_sums`], kept between calls.
    static PARTIAL_SUMS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_gradient_is_the_row_blocks_summed_in_order() {
        // 700 rows: two full blocks and a short one, on the pool (44800 elements).
        let (rows, cols) = (700, 64);
        assert!(rows * cols >= PARALLEL_MIN_LEN && rows % SUM_BLOCK_ROWS != 0);
        let mut rng = Rng::new(3);
        let dy: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let start: Vec<f32> = (0..cols).map(|j| j as f32).collect();
        let mut want = start.clone();
        for block in dy.chunks(SUM_BLOCK_ROWS * cols) {
            let mut partial = vec![0.0f32; cols];
            for row in block.chunks_exact(cols) {
                partial.iter_mut().zip(row).for_each(|(p, g)| *p += g);
            }
            want.iter_mut().zip(&partial).for_each(|(s, p)| *s += p);
        }
        let mut sums = start;
        add_column_sums(&mut sums, &dy);
        assert_eq!(
            sums, want,
            "the same bits as one thread summing the blocks in order"
        );
    }
}
