//! The attention kernels against PyTorch's `scaled_dot_product_attention` with explicit
//! masks (fixtures from `tools/fixtures/attention.py`), in every mode: forward, backward and
//! cache decoding. Where a sequence has no valid key resnorm gives zeros, as recent PyTorch
//! does; fixtures from versions that gave NaN there are accepted too.

mod common;

use common::{assert_close, Fixture};
use resnorm::gradcheck::attention::{run_kernels, Mode, Packed};
use resnorm::kernels::attention::{attention_decode, AttentionShape};

const TOL: f32 = 1e-5;

const MODES: [&str; 6] = [
    "causal_self",
    "causal_self_padded_grouped",
    "bidirectional_self_padded",
    "cross_padded_grouped_scaled",
    "cross_empty_source",
    "causal_cache",
];

fn mode(name: &'static str, f: &Fixture) -> Mode {
    let (q, k) = (f.get("q"), f.get("k"));
    let (heads, kv_heads) = (
        f.meta_f32("heads") as usize,
        f.meta_f32("kv_heads") as usize,
    );
    let head_dim = q.shape[2] / heads;
    let mut shape = AttentionShape::new(q.shape[0], heads, q.shape[1], k.shape[1], head_dim)
        .grouped(kv_heads)
        .scaled(f.meta_f32("scale"));
    shape.causal = f.meta_f32("causal") == 1.0;
    let lengths = f.get("lengths").data.iter().map(|&l| l as usize).collect();
    Mode {
        name,
        fused: name.contains("self"),
        shape,
        key_lengths: Some(lengths),
    }
}

/// `got` equals `want` where PyTorch's value is a number, and is zero where it is NaN.
fn assert_matches(what: &str, got: &[f32], want: &[f32]) {
    let (mut numbers, mut expected) = (Vec::new(), Vec::new());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert_eq!(
                g, 0.0,
                "{what}[{i}]: PyTorch's NaN (no valid key) must be zero"
            );
        } else {
            numbers.push(g);
            expected.push(w);
        }
    }
    assert_close(what, &numbers, &expected, TOL, TOL);
}

#[test]
fn every_mode_matches_pytorch() {
    for name in MODES {
        let f = Fixture::load(&format!("attention_{name}"));
        let mode = mode(name, &f);
        let (q, k, v) = (&f.get("q").data, &f.get("k").data, &f.get("v").data);
        let (out, _, [dq, dk, dv]) = run_kernels(&mode, (q, k, v), &f.get("dout").data).unwrap();
        let what = |part| format!("{name} {part}");
        assert_matches(&what("out"), &out, &f.get("out").data);
        assert_matches(&what("dq"), &dq, &f.get("dq").data);
        assert_matches(&what("dk"), &dk, &f.get("dk").data);
        assert_matches(&what("dv"), &dv, &f.get("dv").data);

        let s = mode.shape;
        let packed = Packed::new(&mode, (q, k, v));
        let (mut decoded, mut probs) = (vec![0.0; s.out_len()], vec![0.0; s.probs_len()]);
        let lengths = mode.key_lengths.as_deref();
        attention_decode(&mut decoded, &mut probs, packed.views(&mode), &s, lengths).unwrap();
        assert_matches(&what("decoded out"), &decoded, &f.get("out").data);
    }
}
