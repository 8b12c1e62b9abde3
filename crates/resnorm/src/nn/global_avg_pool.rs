//! Global average pooling, NCHW `[N, C, H, W]` to `[N, C]`: the mean of every channel plane,
//! as `torch.nn.AdaptiveAvgPool2d((1, 1))` followed by flattening.
//!
//! ```text
//! y[n, c] = (1 / HW) Σ_{h,w} x[n, c, h, w]        dx[n, c, h, w] = dy[n, c] / HW
//! ```
//!
//! The layer has no parameters and keeps nothing between passes: backward needs only the
//! shape.
//!
//! ```
//! use resnorm::nn::{GlobalAvgPool, ImageShape};
//! let shape = ImageShape::new(1, 2, 1, 2);
//! let mut y = [0.0; 2];
//! GlobalAvgPool.forward(&[1.0, 3.0, -2.0, 2.0], shape, &mut y).unwrap();
//! assert_eq!(y, [2.0, 0.0]);
//! let mut dx = [0.0; 4];
//! GlobalAvgPool.backward(&[1.0, 4.0], shape, &mut dx).unwrap();
//! assert_eq!(dx, [0.5, 0.5, 2.0, 2.0]);
//! ```

use crate::nn::ImageShape;
use crate::{Error, Result};

/// Averages every channel plane to one value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalAvgPool;

impl GlobalAvgPool {
    fn check_pooled(op: &'static str, what: &str, shape: ImageShape, pooled: &[f32]) -> Result<()> {
        if pooled.len() != shape.batch * shape.channels {
            return Err(Error::shape(
                op,
                format!(
                    "{what} has {} elements, input {shape} pools to {} x {}",
                    pooled.len(),
                    shape.batch,
                    shape.channels
                ),
            ));
        }
        Ok(())
    }

    /// `output[n, c]` = mean of plane `(n, c)` of `input` (shape `shape`).
    pub fn forward(&self, input: &[f32], shape: ImageShape, output: &mut [f32]) -> Result<()> {
        const OP: &str = "GlobalAvgPool::forward";
        shape.check_len(OP, "input", input)?;
        Self::check_pooled(OP, "output", shape, output)?;
        let scale = 1.0 / shape.plane_len() as f32;
        for (y, plane) in output.iter_mut().zip(input.chunks(shape.plane_len())) {
            *y = plane.iter().sum::<f32>() * scale;
        }
        Ok(())
    }

    /// Overwrites `dinput` (shape `shape`) with `doutput[n, c] / (H·W)` on every pixel.
    pub fn backward(&self, doutput: &[f32], shape: ImageShape, dinput: &mut [f32]) -> Result<()> {
        const OP: &str = "GlobalAvgPool::backward";
        shape.check_len(OP, "dinput", dinput)?;
        Self::check_pooled(OP, "doutput", shape, doutput)?;
        let scale = 1.0 / shape.plane_len() as f32;
        for (&g, plane) in doutput.iter().zip(dinput.chunks_mut(shape.plane_len())) {
            plane.fill(g * scale);
        }
        Ok(())
    }
}
