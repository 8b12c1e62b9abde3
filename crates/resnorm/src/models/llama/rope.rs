//! Rotary position embeddings in Hugging Face's "rotate half" layout: feature `i` of a head
//! turns with feature `i + d/2` by the angle `p·θ^(-2i/d)` of position `p`.
//!
//! ```text
//! forward   y[i]       = x[i]·cos - x[i+d/2]·sin        (i < d/2, angle p·θ^(-2i/d))
//!           y[i+d/2]   = x[i+d/2]·cos + x[i]·sin
//! backward  dx[i]      = dy[i]·cos + dy[i+d/2]·sin      (the rotation's transpose)
//!           dx[i+d/2]  = dy[i+d/2]·cos - dy[i]·sin
//! ```
//!
//! A [`RopeTable`] holds `cos` and `sin` for a run of positions, computed once per buffer
//! shape (the angles in `f64`, then rounded).
//!
//! ```
//! use resnorm::models::llama::RopeTable;
//! let mut table = RopeTable::new(4, 10_000.0, 3);
//! table.fill(0);
//! let x = [1.0, 2.0, 3.0, 4.0];
//! let mut y = [0.0; 4];
//! table.rotate(&x, &mut y, 0, 1); // position 0 turns by nothing
//! assert_eq!(y, x);
//! table.rotate(&x, &mut y, 2, 1);
//! let mut back = [0.0; 4];
//! table.rotate_back(&y, &mut back, 2, 1);
//! assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-6));
//! ```

/// `cos` and `sin` of `positions` consecutive positions from a first one, `[positions, d/2]`.
#[derive(Clone, Debug)]
pub struct RopeTable {
    half: usize,
    inv_freq: Vec<f64>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// A table for heads of `head_dim` features, base `theta`, `positions` positions.
    pub fn new(head_dim: usize, theta: f64, positions: usize) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
            .collect();
        RopeTable {
            half,
            inv_freq,
            cos: vec![0.0; positions * half],
            sin: vec![0.0; positions * half],
        }
    }

    /// Positions the table holds.
    pub fn positions(&self) -> usize {
        self.cos.len() / self.half
    }

    /// Fills the table for positions `first ..`.
    pub fn fill(&mut self, first: usize) {
        let rows = self.cos.chunks_exact_mut(self.half);
        for (p, (cos, sin)) in rows.zip(self.sin.chunks_exact_mut(self.half)).enumerate() {
            for ((c, s), f) in cos.iter_mut().zip(sin.iter_mut()).zip(&self.inv_freq) {
                // HF rounds the frequency to f32 before multiplying by the position.
                let angle = ((first + p) as f64 * (*f as f32) as f64) as f32 as f64;
                *c = angle.cos() as f32;
                *s = angle.sin() as f32;
            }
        }
    }

    /// Rotates `heads` heads of one row `x` (heads side by side) at table row `p` into `y`.
    pub fn rotate(&self, x: &[f32], y: &mut [f32], p: usize, heads: usize) {
        self.turn(x, y, p, heads, 1.0);
    }

    /// The backward of [`RopeTable::rotate`]: `dx` from `dy`.
    pub fn rotate_back(&self, dy: &[f32], dx: &mut [f32], p: usize, heads: usize) {
        self.turn(dy, dx, p, heads, -1.0);
    }

    /// Turns by the angle of row `p` times `sign`.
    fn turn(&self, x: &[f32], y: &mut [f32], p: usize, heads: usize, sign: f32) {
        let half = self.half;
        let cos = &self.cos[p * half..][..half];
        let sin = &self.sin[p * half..][..half];
        let heads_x = x.chunks_exact(2 * half).take(heads);
        for (x, y) in heads_x.zip(y.chunks_exact_mut(2 * half)) {
            let (x1, x2) = x.split_at(half);
            let (y1, y2) = y.split_at_mut(half);
            for i in 0..half {
                let s = sign * sin[i];
                y1[i] = x1[i] * cos[i] - x2[i] * s;
                y2[i] = x2[i] * cos[i] + x1[i] * s;
            }
        }
    }
}
