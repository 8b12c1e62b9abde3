//! The attention kernels' forward and backward with attention dropout at each given rate,
//! alternating in the same loop (a rate of 0 is the path without dropout).
//!
//! ```sh
//! cargo run --release -p resnorm --example attention_dropout_cost -- \
//!     [BATCH] [HEADS] [SEQ] [HEAD_DIM] [ROUNDS] [RATE...]
//! ```
//! Defaults: the translation recipe's encoder self-attention on a batch of 2,048 tokens
//! (32 sentences of 64 positions, 4 heads of 64 features, bidirectional, the second half of
//! the sentences padded to 48 keys), 15 rounds, rates 0 and 0.1. Prints per-round times and
//! each rate's median forward + backward (docs/benchmarks.md).

use std::time::Instant;

use resnorm::kernels::attention::{
    attention_backward, attention_forward, AttentionShape, GradTarget, Grads, Rows,
};
use resnorm::kernels::dropout::DropoutMask;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let int = |i: usize, default: usize| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("sizes are integers"))
    };
    let (batch, heads, seq, d, rounds) =
        (int(0, 32), int(1, 4), int(2, 64), int(3, 64), int(4, 15));
    let rates: Vec<f32> = match args.len() > 5 {
        true => args[5..]
            .iter()
            .map(|a| a.parse().expect("rates are numbers"))
            .collect(),
        false => vec![0.0, 0.1],
    };
    let c = heads * d;
    let lengths: Vec<usize> = (0..batch)
        .map(|b| if b < batch / 2 { seq } else { seq * 3 / 4 })
        .collect();
    let qkv: Vec<f32> = (0..batch * seq * 3 * c)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let dout: Vec<f32> = (0..batch * seq * c)
        .map(|i| (i as f32 * 0.11).cos())
        .collect();
    let view = |column| Rows::new(&qkv, 3 * c, column, seq);
    let operands = (view(0), view(c), view(2 * c));
    let base = AttentionShape::new(batch, heads, seq, seq, d);
    let (mut out, mut probs) = (vec![0.0; base.out_len()], vec![0.0; base.probs_len()]);
    let mut dqkv = vec![0.0; qkv.len()];
    let mut times = vec![Vec::new(); rates.len()];
    for round in 0..rounds {
        let mut line = format!("round {round}:");
        for (rate, times) in rates.iter().zip(&mut times) {
            let mask = DropoutMask::new(*rate, round as u64).expect("a valid rate");
            let shape = base.dropped(mask);
            let t = Instant::now();
            attention_forward(&mut out, &mut probs, operands, &shape, Some(&lengths))
                .expect("sizes match");
            let grads = Grads::Packed(GradTarget::new(&mut dqkv));
            attention_backward(grads, &dout, &probs, operands, &shape, Some(&lengths))
                .expect("sizes match");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            line += &format!(" p={rate} {:.2} ms", times[round]);
        }
        println!("{line}");
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    let summary: Vec<String> = (rates.iter().zip(&medians))
        .map(|(rate, ms)| format!("p={rate} {ms:.2} ms"))
        .collect();
    println!(
        "B={batch} H={heads} T={seq} d={d}, {} threads, forward+backward medians: {}",
        resnorm::threads::num_threads(),
        summary.join(", ")
    );
}
