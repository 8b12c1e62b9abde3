//! Gradient checks of the attention kernels ([`crate::kernels::attention`]) in every mode:
//! causal or bidirectional, self or cross, padded or not, grouped key/value heads or not, a
//! sequence with no valid key; and the `f64` references that the tests compare with.
//!
//! With attention dropout ([`dropout_modes`]) the references draw the kernels' mask from its
//! hash alone ([`crate::kernels::dropout::DropoutMask::factor`]): a fixed seed makes a fixed
//! function, which finite differences can check.
//!
//! Self-attention modes run on one fused `[B, T, (H + 2·H_kv)·d]` buffer ([`Grads::Packed`]),
//! cross-attention on `[B, Tq, H·d]` queries and `[B, Tk, 2·H_kv·d]` keys/values
//! ([`Grads::Split`]), so that both layouts' strides are exercised.
//!
//! ```
//! let results = resnorm::gradcheck::attention::checks();
//! assert!(results.iter().all(|r| r.passed), "{results:#?}");
//! ```

use super::{compare, numeric_gradient, CheckResult};
use crate::kernels::attention::{
    attention_backward, attention_forward, AttentionShape, GradTarget, Grads, Rows,
};
use crate::kernels::dropout::DropoutMask;
use crate::rng::Rng;

/// Central-difference step.
const STEP: f64 = 1e-4;
/// Largest relative error accepted (see [`compare`]).
const TOLERANCE: f64 = 1e-4;

/// One mode of attention to check: a name, a shape, the valid keys per sequence and the
/// layout of the operands.
#[derive(Clone, Debug)]
pub struct Mode {
    /// What the mode covers, e.g. `causal self grouped`.
    pub name: &'static str,
    /// Sizes and options.
    pub shape: AttentionShape,
    /// Valid keys per sequence (all of them without).
    pub key_lengths: Option<Vec<usize>>,
    /// `q`, `k` and `v` in one fused buffer ([`Grads::Packed`], self-attention), rather than
    /// `q` in one and `k`, `v` in another ([`Grads::Split`]); needs `q_len == kv_len`.
    pub fused: bool,
}

/// Every mode, small and odd-sized: 2 sequences, heads of 3 features.
pub fn modes() -> Vec<Mode> {
    let base = |tq, tk| AttentionShape::new(2, 4, tq, tk, 3);
    vec![
        Mode {
            name: "causal self",
            fused: true,
            shape: base(7, 7).causal(),
            key_lengths: None,
        },
        Mode {
            name: "causal self padded grouped",
            fused: true,
            shape: base(7, 7).causal().grouped(2),
            key_lengths: Some(vec![7, 4]),
        },
        Mode {
            name: "bidirectional self padded",
            fused: true,
            shape: base(6, 6),
            key_lengths: Some(vec![6, 2]),
        },
        Mode {
            name: "bidirectional self grouped",
            fused: true,
            shape: base(5, 5).grouped(1),
            key_lengths: None,
        },
        Mode {
            name: "cross padded grouped",
            fused: false,
            shape: base(5, 9).grouped(2),
            key_lengths: Some(vec![9, 4]),
        },
        Mode {
            name: "cross with an empty source",
            fused: false,
            shape: base(4, 6),
            key_lengths: Some(vec![0, 5]),
        },
        Mode {
            name: "causal cache (new queries last)",
            fused: false,
            shape: base(3, 8).causal().grouped(2),
            key_lengths: Some(vec![8, 6]),
        },
    ]
}

/// The rate of [`dropout_modes`]: high, so that a row keeps few of its keys.
pub const DROPOUT_RATE: f32 = 0.3;

/// Modes with attention dropout at [`DROPOUT_RATE`]: causal and bidirectional, self and
/// cross, padded rows, a sequence with no valid key.
pub fn dropout_modes() -> Vec<Mode> {
    let mask = DropoutMask::new(DROPOUT_RATE, 13).expect("a rate below 1");
    let base = |tq, tk| AttentionShape::new(2, 4, tq, tk, 3).dropped(mask);
    vec![
        Mode {
            name: "dropout causal self padded grouped",
            fused: true,
            shape: base(7, 7).causal().grouped(2),
            key_lengths: Some(vec![7, 4]),
        },
        Mode {
            name: "dropout bidirectional self padded",
            fused: true,
            shape: base(6, 6),
            key_lengths: Some(vec![6, 2]),
        },
        Mode {
            name: "dropout cross padded with an empty source",
            fused: false,
            shape: base(5, 9),
            key_lengths: Some(vec![9, 0]),
        },
    ]
}

/// The factor `m / (1 - p)` of probability `(b, h, i, j)` under `shape`'s dropout (1 without).
fn kept(shape: &AttentionShape, (b, h, i, j): (usize, usize, usize, usize)) -> f64 {
    let index = ((b * shape.heads + h) * shape.q_len + i) * shape.kv_len + j;
    shape
        .dropout
        .map_or(1.0, |mask| mask.factor(index as u64) as f64)
}

/// Attention in `f64` on dense `q [B, Tq, H·d]`, `k`, `v [B, Tk, H_kv·d]`: the output
/// `[B, Tq, H·d]` and the probabilities `[B, H, Tq, Tk]` (zero where a query sees nothing;
/// undropped: the output alone reads the dropout mask).
pub fn reference_forward(
    (q, k, v): (&[f64], &[f64], &[f64]),
    shape: &AttentionShape,
    key_lengths: Option<&[usize]>,
) -> (Vec<f64>, Vec<f64>) {
    let s = shape;
    let (d, group) = (s.head_dim, s.group());
    let (qw, kw) = (s.heads * d, s.kv_heads * d);
    let mut out = vec![0.0; s.batch * s.q_len * qw];
    let mut probs = vec![0.0; s.batch * s.heads * s.q_len * s.kv_len];
    for b in 0..s.batch {
        let len = key_lengths.map_or(s.kv_len, |l| l[b]);
        for h in 0..s.heads {
            let g = h / group;
            for i in 0..s.q_len {
                // Causal: the queries are the last `Tq` of the `Tk` positions.
                let seen = match s.causal {
                    true => len.min(i + s.kv_len - s.q_len + 1),
                    false => len,
                };
                let qi = &q[(b * s.q_len + i) * qw + h * d..][..d];
                let scores: Vec<f64> = (0..seen)
                    .map(|j| {
                        let kj = &k[(b * s.kv_len + j) * kw + g * d..][..d];
                        s.scale as f64 * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|z| (z - max).exp()).collect();
                let total: f64 = e.iter().sum();
                let p = &mut probs[((b * s.heads + h) * s.q_len + i) * s.kv_len..][..s.kv_len];
                for (j, e) in e.iter().enumerate() {
                    p[j] = e / total;
                }
                let o = &mut out[(b * s.q_len + i) * qw + h * d..][..d];
                for (j, &pj) in p[..seen].iter().enumerate() {
                    let vj = &v[(b * s.kv_len + j) * kw + g * d..][..d];
                    let pj = pj * kept(s, (b, h, i, j));
                    o.iter_mut().zip(vj).for_each(|(o, v)| *o += pj * v);
                }
            }
        }
    }
    (out, probs)
}

/// The backward of [`reference_forward`] in `f64`: `(dq, dk, dv)`, dense as `q`, `k`, `v`.
pub fn reference_backward(
    dout: &[f64],
    (q, k, v): (&[f64], &[f64], &[f64]),
    shape: &AttentionShape,
    key_lengths: Option<&[usize]>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let s = shape;
    let (_, probs) = reference_forward((q, k, v), s, key_lengths);
    let (d, group) = (s.head_dim, s.group());
    let (qw, kw) = (s.heads * d, s.kv_heads * d);
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for b in 0..s.batch {
        for h in 0..s.heads {
            let g = h / group;
            for i in 0..s.q_len {
                let p = &probs[((b * s.heads + h) * s.q_len + i) * s.kv_len..][..s.kv_len];
                let go = &dout[(b * s.q_len + i) * qw + h * d..][..d];
                let key = |j: usize| (b * s.kv_len + j) * kw + g * d;
                // dP = M ⊙ (dO·Vᵀ) / (1 - p); the softmax's backward sums P ⊙ dP.
                let dp: Vec<f64> = (0..s.kv_len)
                    .map(|j| {
                        let dp: f64 = go.iter().zip(&v[key(j)..][..d]).map(|(a, b)| a * b).sum();
                        dp * kept(s, (b, h, i, j))
                    })
                    .collect();
                let dot: f64 = p.iter().zip(&dp).map(|(p, dp)| p * dp).sum();
                for j in 0..s.kv_len {
                    let ds = s.scale as f64 * p[j] * (dp[j] - dot);
                    let dropped = p[j] * kept(s, (b, h, i, j));
                    let qi = (b * s.q_len + i) * qw + h * d;
                    for c in 0..d {
                        dq[qi + c] += ds * k[key(j) + c];
                        dk[key(j) + c] += ds * q[qi + c];
                        dv[key(j) + c] += dropped * go[c];
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}

/// Random dense operands of `mode`: `(q, k, v)`.
pub fn operands(mode: &Mode, rng: &mut Rng) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let s = &mode.shape;
    let mut draw = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
    let q = draw(s.batch * s.q_len * s.heads * s.head_dim);
    let k = draw(s.batch * s.kv_len * s.kv_heads * s.head_dim);
    let v = draw(k.len());
    (q, k, v)
}

/// The kernels' layout of dense operands: one fused buffer `[q | k | v]` per row for
/// self-attention, else `q` and `[k | v]`; and `(column, row_stride)` of each part.
pub struct Packed {
    /// The query buffer (fused with the keys and values for self-attention).
    pub first: Vec<f32>,
    /// The key/value buffer (empty for self-attention).
    pub second: Vec<f32>,
    /// Column and row stride of `q`, `k`, `v` in their buffers.
    pub places: [(usize, usize); 3],
}

impl Packed {
    /// Lays out dense `q`, `k`, `v` for `mode`.
    pub fn new(mode: &Mode, (q, k, v): (&[f32], &[f32], &[f32])) -> Packed {
        let s = &mode.shape;
        let (qw, kw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let rows = |parts: &[(&[f32], usize)], count: usize| -> Vec<f32> {
            (0..count)
                .flat_map(|r| {
                    parts
                        .iter()
                        .flat_map(move |(m, w)| m[r * w..][..*w].to_vec())
                })
                .collect()
        };
        if mode.fused {
            let n = s.batch * s.q_len;
            let stride = qw + 2 * kw;
            Packed {
                first: rows(&[(q, qw), (k, kw), (v, kw)], n),
                second: Vec::new(),
                places: [(0, stride), (qw, stride), (qw + kw, stride)],
            }
        } else {
            Packed {
                first: q.to_vec(),
                second: rows(&[(k, kw), (v, kw)], s.batch * s.kv_len),
                places: [(0, qw), (0, 2 * kw), (kw, 2 * kw)],
            }
        }
    }

    /// The kernels' views of `q`, `k`, `v`.
    pub fn views(&self, mode: &Mode) -> (Rows<'_>, Rows<'_>, Rows<'_>) {
        let s = &mode.shape;
        let kv = if mode.fused {
            &self.first
        } else {
            &self.second
        };
        let [(qc, qs), (kc, ks), (vc, vs)] = self.places;
        (
            Rows::new(&self.first, qs, qc, s.q_len),
            Rows::new(kv, ks, kc, s.kv_len),
            Rows::new(kv, vs, vc, s.kv_len),
        )
    }

    /// Dense `(q, k, v)`-shaped gradients read back from kernel-layout `first` and `second`.
    pub fn unpack(&self, mode: &Mode, first: &[f32], second: &[f32]) -> [Vec<f32>; 3] {
        let s = &mode.shape;
        let (qw, kw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let kv = if mode.fused { first } else { second };
        let sources = [first, kv, kv];
        let counts = [s.batch * s.q_len, s.batch * s.kv_len, s.batch * s.kv_len];
        let widths = [qw, kw, kw];
        std::array::from_fn(|i| {
            let (column, stride) = self.places[i];
            (0..counts[i])
                .flat_map(|r| sources[i][r * stride + column..][..widths[i]].to_vec())
                .collect()
        })
    }
}

/// What [`run_kernels`] returns: the output, the probabilities and `[dq, dk, dv]`, dense.
pub type KernelResults = (Vec<f32>, Vec<f32>, [Vec<f32>; 3]);

/// Runs the kernels' forward and backward on `mode`.
pub fn run_kernels(
    mode: &Mode,
    (q, k, v): (&[f32], &[f32], &[f32]),
    dout: &[f32],
) -> crate::Result<KernelResults> {
    let s = &mode.shape;
    let lengths = mode.key_lengths.as_deref();
    let packed = Packed::new(mode, (q, k, v));
    let mut out = vec![0.0; s.out_len()];
    let mut probs = vec![0.0; s.probs_len()];
    attention_forward(&mut out, &mut probs, packed.views(mode), s, lengths)?;
    let mut first = vec![f32::NAN; packed.first.len()];
    let mut second = vec![f32::NAN; packed.second.len()];
    let grads = match mode.fused {
        true => Grads::Packed(GradTarget::new(&mut first)),
        false => Grads::Split {
            dq: GradTarget::new(&mut first),
            dkv: GradTarget::new(&mut second),
        },
    };
    attention_backward(grads, dout, &probs, packed.views(mode), s, lengths)?;
    let grads = packed.unpack(mode, &first, &second);
    Ok((out, probs, grads))
}

/// Every mode's `dq`, `dk`, `dv` against central differences of [`reference_forward`], those
/// of [`dropout_modes`] included.
pub fn checks() -> Vec<CheckResult> {
    let mut rng = Rng::new(20);
    let mut results = Vec::new();
    for mode in modes().into_iter().chain(dropout_modes()) {
        let (q, k, v) = operands(&mode, &mut rng);
        let g: Vec<f32> = (0..mode.shape.out_len()).map(|_| rng.normal()).collect();
        let (_, _, grads) = run_kernels(&mode, (&q, &k, &v), &g).expect("sizes match");
        let widen = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let (gd, qd, kd, vd) = (widen(&g), widen(&q), widen(&k), widen(&v));
        let lengths = mode.key_lengths.as_deref();
        let loss = |out: Vec<f64>| gd.iter().zip(&out).map(|(g, y)| g * y).sum::<f64>();
        let numeric = [
            numeric_gradient(
                |x| loss(reference_forward((x, &kd, &vd), &mode.shape, lengths).0),
                &qd,
                STEP,
            ),
            numeric_gradient(
                |x| loss(reference_forward((&qd, x, &vd), &mode.shape, lengths).0),
                &kd,
                STEP,
            ),
            numeric_gradient(
                |x| loss(reference_forward((&qd, &kd, x), &mode.shape, lengths).0),
                &vd,
                STEP,
            ),
        ];
        for ((part, analytic), numeric) in ["dq", "dk", "dv"].iter().zip(&grads).zip(&numeric) {
            let name = format!("attention {} {part}", mode.name);
            results.push(compare(&name, analytic, numeric, TOLERANCE));
        }
    }
    results
}
