//! A minimal tensor: a shape and contiguous row-major `f32` storage.
//!
//! Kernels work on plain slices; `Tensor` is the owner that keeps a buffer and its shape
//! together, checks them once at construction, and hands out the slices. The buffer is an
//! [`AlignedVec`]: its rows start on cache lines wherever their length allows.
//!
//! ```
//! use resnorm::{AlignedVec, Tensor};
//! let t = Tensor::from_vec(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
//! assert_eq!(t.shape(), &[2, 3]);
//! assert_eq!((t.rows(), t.cols()), (2, 3));
//! assert_eq!(&t.data()[3..], &[4.0, 5.0, 6.0]);
//! assert!(Tensor::from_vec(vec![2, 2], vec![0.0; 3]).is_err());
//! let aligned = Tensor::from_aligned(vec![3], AlignedVec::zeros(3)).unwrap();
//! assert_eq!(aligned.data(), &[0.0; 3]);
//! assert!(Tensor::from_aligned(vec![2, 2], AlignedVec::zeros(3)).is_err());
//! assert!(t.reshape(vec![4]).is_err());
//! ```

use crate::{AlignedVec, Error, Result};

/// Shape plus contiguous row-major `f32` data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: AlignedVec,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let len = shape.iter().product();
        Tensor {
            shape,
            data: AlignedVec::zeros(len),
        }
    }

    /// Holds (a copy of) `data`, which must hold exactly the product of `shape` elements.
    pub fn from_vec(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        Tensor::check_len(&shape, &data, "Tensor::from_vec")?;
        Ok(Tensor {
            shape,
            data: AlignedVec::from(data),
        })
    }

    /// Holds `data` (no copy), which must hold exactly the product of `shape` elements.
    pub fn from_aligned(shape: Vec<usize>, data: AlignedVec) -> Result<Self> {
        Tensor::check_len(&shape, &data, "Tensor::from_aligned")?;
        Ok(Tensor { shape, data })
    }

    /// Checks that `shape` holds exactly `data.len()` elements.
    fn check_len(shape: &[usize], data: &[f32], op: &'static str) -> Result<()> {
        let len: usize = shape.iter().product();
        if len != data.len() {
            return Err(Error::shape(
                op,
                format!(
                    "shape {shape:?} holds {len} elements, data has {}",
                    data.len()
                ),
            ));
        }
        Ok(())
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Size of the last dimension (1 for a scalar).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Product of every dimension but the last: the rows a row-wise kernel sees.
    pub fn rows(&self) -> usize {
        match self.cols() {
            0 => 0,
            c => self.len() / c,
        }
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The elements, row-major, for writing.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Same data, another shape of the same size.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self> {
        Tensor::check_len(&shape, &self.data, "Tensor::reshape")?;
        Ok(Tensor {
            shape,
            data: self.data,
        })
    }
}
