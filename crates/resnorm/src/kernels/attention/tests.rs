//! The scalar level's path run head by head from buffers left full of NaN, against the
//! public functions (at the level in force): the same results to
//! rounding, so the padding and the blocks' reach are cleared by the head code and nothing
//! else left over is read; with attention dropout too, so the mask's index and its
//! regeneration agree between the levels.

use super::columns::SharedColumns;
use super::head::{self, GradSinks, HeadShape};
use super::{attention_backward, attention_forward, GradTarget, Grads};
use crate::gradcheck::attention::{dropout_modes, modes, operands, Mode, Packed};
use crate::kernels::dropout::DropoutMask;
use crate::kernels::simd::Scalar;
use crate::rng::Rng;

#[test]
fn the_scalar_path_from_nan_scratch_matches() {
    let mut rng = Rng::new(3);
    let mut all = modes();
    all.extend(dropout_modes());
    let big = super::AttentionShape::new(2, 4, 37, 37, 20)
        .causal()
        .grouped(2);
    all.push(Mode {
        name: "causal self grouped 37",
        fused: true,
        shape: big,
        key_lengths: Some(vec![30, 37]),
    });
    all.push(Mode {
        name: "dropout causal self grouped 37",
        fused: true,
        shape: big.dropped(DropoutMask::new(0.1, 4).unwrap()),
        key_lengths: Some(vec![30, 37]),
    });
    for mode in all {
        let (q, k, v) = operands(&mode, &mut rng);
        let s = mode.shape;
        let lengths = mode.key_lengths.as_deref();
        let packed = Packed::new(&mode, (&q, &k, &v));
        let views = packed.views(&mode);
        let dout: Vec<f32> = (0..s.out_len()).map(|_| rng.normal()).collect();
        let (mut out, mut probs) = (vec![0.0; s.out_len()], vec![f32::NAN; s.probs_len()]);
        attention_forward(&mut out, &mut probs, views, &s, lengths).unwrap();
        let (mut dq, mut dkv) = (
            vec![0.0; packed.first.len()],
            vec![0.0; packed.second.len()],
        );
        let grads = match mode.fused {
            true => Grads::Packed(GradTarget::new(&mut dq)),
            false => Grads::Split {
                dq: GradTarget::new(&mut dq),
                dkv: GradTarget::new(&mut dkv),
            },
        };
        attention_backward(grads, &dout, &probs, views, &s, lengths).unwrap();

        let mut scratch = vec![f32::NAN; 1 << 16];
        let (mut out_p, mut probs_p) = (vec![f32::NAN; out.len()], vec![f32::NAN; probs.len()]);
        let (mut dq_p, mut dkv_p) = (vec![f32::NAN; dq.len()], vec![f32::NAN; dkv.len()]);
        let head_shape = |b| HeadShape {
            attn: s,
            len: s.key_length(lengths, b),
        };
        {
            let shared = SharedColumns::new(&mut out_p, s.heads * s.head_dim);
            let (q, k, v) = (&views.0, &views.1, &views.2);
            for (bh, probs) in probs_p.chunks_exact_mut(s.q_len * s.kv_len).enumerate() {
                let (b, h) = (bh / s.heads, bh % s.heads);
                // SAFETY: the scalar level runs anywhere; one head at a time.
                unsafe {
                    head::forward::<Scalar>(
                        &head_shape(b),
                        (b, h),
                        (q, k, v),
                        probs,
                        &shared,
                        &mut scratch,
                    )
                };
            }
        }
        {
            let first = SharedColumns::new(&mut dq_p, views.0.row_stride);
            let second = SharedColumns::new(&mut dkv_p, views.1.row_stride);
            let targets = match mode.fused {
                true => [&first; 3],
                false => [&first, &second, &second],
            };
            for bg in 0..s.batch * s.kv_heads {
                let (b, g) = (bg / s.kv_heads, bg % s.kv_heads);
                let sinks = GradSinks {
                    targets,
                    bias_sums: None,
                };
                let probs = &probs[b * s.heads * s.q_len * s.kv_len..];
                let operands = (&views.0, &views.1, &views.2);
                // SAFETY: as above.
                unsafe {
                    head::backward::<Scalar>(
                        &head_shape(b),
                        (b, g),
                        operands,
                        &dout,
                        probs,
                        sinks,
                        &mut scratch,
                    )
                };
            }
        }
        for (name, got, want) in [
            ("out", &out_p, &out),
            ("probs", &probs_p, &probs),
            ("dq", &dq_p, &dq),
            ("dkv", &dkv_p, &dkv),
        ] {
            // Both probs keep NaN where a query sees no key (not written); elsewhere a NaN
            // fails.
            let close = got
                .iter()
                .zip(want.iter())
                .all(|(a, b)| (a - b).abs() < 1e-5 || (a.is_nan() && b.is_nan()));
            assert!(close, "{name} differs in {}", mode.name);
        }
    }
}
