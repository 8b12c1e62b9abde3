//! The cost of the dropout kernel on a GPT-step-sized tensor, against a scale by a constant
//! (the same memory traffic with no hash), alternating in the same loop.
//!
//! ```sh
//! cargo run --release -p resnorm --example dropout_cost -- [ROWS] [WIDTH] [ROUNDS]
//! ```
//! Defaults: 8·1024 rows of width 768 (GPT-2 small's residual stream at batch 8, context
//! 1024), 15 rounds. Prints per-round times, medians and the ratio (docs/benchmarks.md).

use std::time::Instant;

use resnorm::kernels::dropout::{dropout_forward, DropoutMask};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("ROWS WIDTH ROUNDS are integers"))
        .collect();
    let rows = args.first().copied().unwrap_or(8 * 1024);
    let width = args.get(1).copied().unwrap_or(768);
    let rounds = args.get(2).copied().unwrap_or(15);
    let n = rows * width;
    let mut x: Vec<f32> = (0..n).map(|i| (i as f32 * 1e-3).sin()).collect();
    let mask = DropoutMask::new(0.1, 1).expect("a valid rate");
    let scale = |x: &mut [f32]| {
        resnorm::threads::pool().install(|| {
            use rayon::prelude::*;
            x.par_chunks_mut(n.div_ceil(resnorm::threads::num_threads()))
                .for_each(|c| c.iter_mut().for_each(|v| *v *= 1.0000001));
        })
    };
    let (mut drop_ms, mut scale_ms) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        dropout_forward(&mut x, &mask.site(round as u64), 0);
        drop_ms.push(t.elapsed().as_secs_f64() * 1e3);
        x.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0) + 0.5); // keep values alive
        let t = Instant::now();
        scale(&mut x);
        scale_ms.push(t.elapsed().as_secs_f64() * 1e3);
        println!(
            "round {round}: dropout {:.2} ms, scale {:.2} ms",
            drop_ms[round], scale_ms[round]
        );
    }
    let ratios: Vec<f64> = drop_ms.iter().zip(&scale_ms).map(|(d, s)| d / s).collect();
    println!(
        "{rows}x{width} ({:.1} M elements), {} threads: dropout median {:.2} ms ({:.2} ns/element), scale median {:.2} ms, median ratio {:.2}",
        n as f64 / 1e6,
        resnorm::threads::num_threads(),
        median(drop_ms.clone()),
        median(drop_ms) * 1e6 / n as f64,
        median(scale_ms),
        median(ratios)
    );
}
