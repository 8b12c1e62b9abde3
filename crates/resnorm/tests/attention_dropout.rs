//! Attention dropout in the attention kernels: forward and backward against the naive `f64`
//! references with the same mask (regenerated from its hash) in every mode, a rate of 0
//! bit for bit the path without dropout, the kept fraction and the kept values, the mean
//! over many seeds against the undropped output, and decoding refusing a mask.

mod common;

use common::attention::{assert_modes_match_the_reference, named_modes, widen};
use common::is_invalid;
use resnorm::gradcheck::attention::{
    dropout_modes, modes, operands, reference_forward, run_kernels, Mode, Packed,
};
use resnorm::kernels::attention::{attention_decode, AttentionShape};
use resnorm::kernels::dropout::DropoutMask;
use resnorm::rng::Rng;

/// The gradient-check dropout modes and larger ones that cross the kernels' blocks of four
/// rows and vectors of sixteen, with heads of 12 and 64 features.
fn all_dropout_modes() -> Vec<Mode> {
    let mask = DropoutMask::new(0.1, 21).unwrap();
    let big = |tq, tk, d| AttentionShape::new(2, 4, tq, tk, d).dropped(mask);
    let mut all = dropout_modes();
    all.extend(named_modes([
        (
            "dropout causal self padded grouped 37",
            big(37, 37, 64).causal().grouped(2),
            Some(vec![30, 37]),
        ),
        (
            "dropout bidirectional self padded 53",
            big(53, 53, 12),
            Some(vec![53, 17]),
        ),
        (
            "dropout cross padded 37x53",
            big(37, 53, 64).grouped(1),
            Some(vec![5, 53]),
        ),
    ]));
    all
}

#[test]
fn every_dropout_mode_matches_the_f64_reference_with_the_same_mask() {
    // The same tolerances as the modes without dropout; the saved probabilities are the
    // softmax's, undropped.
    assert_modes_match_the_reference(all_dropout_modes(), &mut Rng::new(31));
}

#[test]
fn a_rate_of_zero_is_the_path_without_dropout_bit_for_bit() {
    let mut rng = Rng::new(32);
    for mode in modes() {
        let zero = Mode {
            shape: mode.shape.dropped(DropoutMask::new(0.0, 5).unwrap()),
            ..mode.clone()
        };
        assert_eq!(zero.shape, mode.shape, "{}: no mask kept", mode.name);
        let (q, k, v) = operands(&mode, &mut rng);
        let dout: Vec<f32> = (0..mode.shape.out_len()).map(|_| rng.normal()).collect();
        let plain = run_kernels(&mode, (&q, &k, &v), &dout).unwrap();
        let dropped = run_kernels(&zero, (&q, &k, &v), &dout).unwrap();
        assert_eq!(plain, dropped, "{}", mode.name);
    }
}

/// With `V` the identity (`Tk = d`, value `j` the unit vector `e_j`), the output rows are
/// the dropped probabilities: each is `0` or `P/(1-p)`, and the kept fraction is `1-p`.
#[test]
fn the_output_keeps_one_minus_p_of_the_probabilities_scaled() {
    let p = 0.1f32;
    let (batch, heads, t) = (8, 4, 64);
    let mode = Mode {
        name: "identity values",
        fused: false,
        shape: AttentionShape::new(batch, heads, t, t, t).dropped(DropoutMask::new(p, 8).unwrap()),
        key_lengths: None,
    };
    let mut rng = Rng::new(33);
    let (q, k, _) = operands(&mode, &mut rng);
    let v: Vec<f32> = (0..batch * t * heads * t)
        .map(|n| {
            let (j, x) = ((n / (heads * t)) % t, n % t);
            if j == x {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let dout = vec![0.0; mode.shape.out_len()];
    let (out, probs, _) = run_kernels(&mode, (&q, &k, &v), &dout).unwrap();
    let (mut kept, mut total) = (0usize, 0usize);
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..t {
                let row = &out[(b * t + i) * heads * t + h * t..][..t];
                let probs = &probs[((b * heads + h) * t + i) * t..][..t];
                for (&o, &p_ij) in row.iter().zip(probs) {
                    total += 1;
                    if o != 0.0 {
                        kept += 1;
                        let want = p_ij / (1.0 - p);
                        assert!((o - want).abs() <= 1e-6 * want, "{o} vs {want}");
                    }
                }
            }
        }
    }
    // Five standard deviations of a binomial proportion over 131072 probabilities.
    let fraction = kept as f64 / total as f64;
    let sd = (p as f64 * (1.0 - p as f64) / total as f64).sqrt();
    assert!(
        (fraction - (1.0 - p as f64)).abs() < 5.0 * sd,
        "kept {fraction}, sd {sd}"
    );
}

/// Inverted dropout keeps the expectation: over `N` seeds the mean output is the undropped
/// one. Each output `o = Σ_j P_j f_j v_j` with independent factors `f_j` of mean 1 and
/// variance `p/(1-p)`, so `Var o = p/(1-p) Σ_j P_j² v_j²`; every element's mean must lie
/// within five standard errors of the undropped output (plus f32 rounding).
#[test]
fn the_mean_over_seeds_is_the_undropped_output() {
    let p = 0.3f32;
    let seeds = 4000;
    let mode = Mode {
        name: "causal self padded",
        fused: true,
        shape: AttentionShape::new(2, 2, 6, 6, 3).causal(),
        key_lengths: Some(vec![6, 4]),
    };
    let mut rng = Rng::new(34);
    let (q, k, v) = operands(&mode, &mut rng);
    let dout = vec![0.0; mode.shape.out_len()];
    let lengths = mode.key_lengths.as_deref();
    let (q64, k64, v64) = (widen(&q), widen(&k), widen(&v));
    let (want, probs) = reference_forward((&q64, &k64, &v64), &mode.shape, lengths);
    let mut mean = vec![0.0f64; want.len()];
    for seed in 0..seeds {
        let dropped = Mode {
            shape: mode.shape.dropped(DropoutMask::new(p, seed).unwrap()),
            ..mode.clone()
        };
        let (out, _, _) = run_kernels(&dropped, (&q, &k, &v), &dout).unwrap();
        mean.iter_mut()
            .zip(&out)
            .for_each(|(m, &o)| *m += o as f64 / seeds as f64);
    }
    let s = &mode.shape;
    let d = s.head_dim;
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..s.q_len {
                let probs = &probs[((b * s.heads + h) * s.q_len + i) * s.kv_len..][..s.kv_len];
                for x in 0..d {
                    let at = (b * s.q_len + i) * s.heads * d + h * d + x;
                    let var: f64 = (probs.iter().enumerate())
                        .map(|(j, &pj)| {
                            let vj = v64[(b * s.kv_len + j) * s.heads * d + h * d + x];
                            pj * pj * vj * vj
                        })
                        .sum::<f64>()
                        * p as f64
                        / (1.0 - p as f64);
                    let bound = 5.0 * (var / seeds as f64).sqrt() + 1e-5;
                    assert!(
                        (mean[at] - want[at]).abs() <= bound,
                        "out[{at}]: mean {} vs {} (bound {bound})",
                        mean[at],
                        want[at]
                    );
                }
            }
        }
    }
}

#[test]
fn decoding_refuses_a_dropout_mask() {
    let mode = &dropout_modes()[0];
    let (q, k, v) = operands(mode, &mut Rng::new(35));
    let packed = Packed::new(mode, (&q, &k, &v));
    let s = &mode.shape;
    let (mut out, mut probs) = (vec![0.0; s.out_len()], vec![0.0; s.probs_len()]);
    let lengths = mode.key_lengths.as_deref();
    assert!(is_invalid(attention_decode(
        &mut out,
        &mut probs,
        packed.views(mode),
        s,
        lengths
    )));
}
