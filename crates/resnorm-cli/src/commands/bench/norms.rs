//! `resnorm bench norms`: times the norm kernels at transformer-sized shapes.
//!
//! For each shape and kernel it prints the median time of the forward pass and of forward
//! plus backward, the effective bandwidth (bytes that must move: every `f32` tensor read or
//! written once, plus per-row statistics), and the copy bandwidth this machine reaches on
//! the same thread pool for the same number of bytes. `tools/bench_torch_norms.py` counts
//! bytes identically for PyTorch; `tools/compare_bench.py` puts both side by side.
//!
//! Each measurement runs inside [`threads::busy`], the pool's workers spinning between calls
//! as a training loop keeps them (and as PyTorch's OpenMP threads spin between operations).

use super::timing::{copy_gbps, gbps, median_ms, Repetitions};
use resnorm::kernels::add_norm::{add_norm_backward, add_norm_forward, UpstreamGrads};
use resnorm::kernels::layer_norm::{layer_norm_backward, layer_norm_forward};
use resnorm::kernels::norm::{NormGrads, NormKind, NormStats, NormStatsMut, NormWeights};
use resnorm::kernels::rms_norm::{rms_norm_backward, rms_norm_forward};
use resnorm::memory::{product, sum, MemoryEstimate};
use resnorm::rng::Rng;
use resnorm::threads;
use resnorm::AlignedVec;
use std::process::ExitCode;

/// rows x cols: four large shapes (memory-bound) and two cache-resident ones.
const SHAPES: [(usize, usize); 6] = [
    (8192, 768),
    (16384, 384),
    (4096, 1024),
    (65536, 128),
    (2048, 384),
    (2048, 768),
];

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object per measurement instead of a table.
    #[arg(long)]
    json: bool,
    /// Only these shapes, as ROWSxCOLS (repeatable), e.g. --shape 8192x768.
    #[arg(long = "shape", value_parser = parse_shape)]
    shapes: Vec<(usize, usize)>,
}

fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected ROWSxCOLS with positive sizes, e.g. 8192x768, got '{s}'");
    let (r, c) = s.split_once('x').ok_or_else(bad)?;
    let (r, c) = (
        r.parse::<usize>().map_err(|_| bad())?,
        c.parse::<usize>().map_err(|_| bad())?,
    );
    if r == 0 || c == 0 {
        return Err(bad());
    }
    Ok((r, c))
}

/// The memory one shape needs: seven `rows x cols` buffers, the weights and statistics, and
/// the copy-bandwidth comparison's two buffers (as large as the biggest pass moves).
fn footprint(rows: usize, cols: usize) -> resnorm::Result<MemoryEstimate> {
    let what = "benchmark sizes";
    let (r, c) = (rows as u64, cols as u64);
    let floats = sum(
        what,
        &[
            product(what, &[14, r, c])?,
            product(what, &[4, c])?,
            product(what, &[4, r])?,
        ],
    )?;
    MemoryEstimate::new(0, 0, floats)
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Layer,
    Rms,
    AddLayer,
}

impl Op {
    const ALL: [Op; 3] = [Op::Layer, Op::Rms, Op::AddLayer];

    fn name(self) -> &'static str {
        match self {
            Op::Layer => "layer_norm",
            Op::Rms => "rms_norm",
            Op::AddLayer => "add_layer_norm",
        }
    }

    /// Bytes that must cross memory: (forward, backward).
    fn bytes(self, rows: usize, cols: usize) -> (usize, usize) {
        let n = rows * cols * 4;
        let stats = rows * 4 * if self == Op::Rms { 1 } else { 2 };
        match self {
            // read x, r; write sum, y  |  read dy, dsum, sum; write dx
            Op::AddLayer => (4 * n + stats, 4 * n + stats),
            // read x; write y  |  read x, dy; write dx
            _ => (2 * n + stats, 3 * n + stats),
        }
    }
}

/// Every buffer one measurement needs, allocated once, on cache lines (as PyTorch's and
/// resnorm's tensors).
struct Buffers {
    x: AlignedVec,
    residual: AlignedVec,
    dy: AlignedVec,
    dsum: AlignedVec,
    out: AlignedVec,
    sum: AlignedVec,
    dx: AlignedVec,
    weight: AlignedVec,
    bias: AlignedVec,
    dweight: AlignedVec,
    dbias: AlignedVec,
    mean: AlignedVec,
    rstd: AlignedVec,
}

impl Buffers {
    fn new(rows: usize, cols: usize) -> Self {
        let mut rng = Rng::new(0);
        let mut random = |len: usize| {
            let mut v = AlignedVec::zeros(len);
            rng.fill_normal(&mut v, 0.0, 1.0);
            v
        };
        let n = rows * cols;
        Buffers {
            x: random(n),
            residual: random(n),
            dy: random(n),
            dsum: random(n),
            weight: random(cols),
            bias: random(cols),
            out: AlignedVec::zeros(n),
            sum: AlignedVec::zeros(n),
            dx: AlignedVec::zeros(n),
            dweight: AlignedVec::zeros(cols),
            dbias: AlignedVec::zeros(cols),
            mean: AlignedVec::zeros(rows),
            rstd: AlignedVec::zeros(rows),
        }
    }

    fn forward(&mut self, op: Op) -> resnorm::Result<()> {
        let bias = (op != Op::Rms).then_some(&self.bias[..]);
        let w = NormWeights {
            weight: &self.weight,
            bias,
            eps: 1e-5,
        };
        match op {
            Op::Layer => {
                layer_norm_forward(&self.x, &w, &mut self.out, &mut self.mean, &mut self.rstd)
            }
            Op::Rms => rms_norm_forward(&self.x, &w, &mut self.out, &mut self.rstd),
            Op::AddLayer => {
                let stats = NormStatsMut {
                    mean: &mut self.mean,
                    rstd: &mut self.rstd,
                };
                add_norm_forward(
                    NormKind::Layer,
                    &self.x,
                    &self.residual,
                    &w,
                    &mut self.sum,
                    &mut self.out,
                    stats,
                )
            }
        }
    }

    fn backward(&mut self, op: Op) -> resnorm::Result<()> {
        let bias = (op != Op::Rms).then_some(&self.bias[..]);
        let w = NormWeights {
            weight: &self.weight,
            bias,
            eps: 1e-5,
        };
        let dbias = (op != Op::Rms).then_some(&mut self.dbias[..]);
        let grads = NormGrads {
            dweight: &mut self.dweight,
            dbias,
        };
        match op {
            Op::Layer => layer_norm_backward(
                &self.dy,
                &self.x,
                &w,
                &self.mean,
                &self.rstd,
                &mut self.dx,
                grads,
            ),
            Op::Rms => rms_norm_backward(&self.dy, &self.x, &w, &self.rstd, &mut self.dx, grads),
            Op::AddLayer => {
                let upstream = UpstreamGrads {
                    dout: &self.dy,
                    dsum: Some(&self.dsum),
                };
                let stats = NormStats {
                    mean: &self.mean,
                    rstd: &self.rstd,
                };
                add_norm_backward(
                    NormKind::Layer,
                    upstream,
                    &self.sum,
                    &w,
                    stats,
                    &mut self.dx,
                    grads,
                )
            }
        }
    }
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let shapes = if args.shapes.is_empty() {
        SHAPES.to_vec()
    } else {
        args.shapes
    };
    for &(rows, cols) in &shapes {
        crate::memory::check_fits(
            &format!("bench norms {rows}x{cols}"),
            &footprint(rows, cols)?,
        )?;
    }
    let threads = threads::num_threads();
    let reps = Repetitions::default();
    if !args.json {
        println!(
            "resnorm bench norms: {threads} threads, median of >= {} runs",
            reps.min_reps
        );
        println!(
            "{:<15} {:>12} {:<8} {:>9} {:>8} {:>10} {:>7}",
            "op", "rows x cols", "pass", "ms", "GB/s", "copy GB/s", "copy%"
        );
    }
    for (rows, cols) in shapes {
        let mut buffers = Buffers::new(rows, cols);
        for op in Op::ALL {
            let (fwd_bytes, bwd_bytes) = op.bytes(rows, cols);
            for (pass, bytes) in [("fwd", fwd_bytes), ("fwd_bwd", fwd_bytes + bwd_bytes)] {
                let mut failure = None;
                let ms = threads::busy(|| {
                    median_ms(&reps, || {
                        let result = buffers.forward(op).and_then(|()| match pass {
                            "fwd" => Ok(()),
                            _ => buffers.backward(op),
                        });
                        if let Err(e) = result {
                            failure = Some(e);
                        }
                    })
                });
                if let Some(e) = failure {
                    return Err(e);
                }
                let copy = threads::busy(|| copy_gbps(&reps, bytes));
                let achieved = gbps(bytes, ms);
                if args.json {
                    let line = serde_json::json!({
                        "op": op.name(), "rows": rows, "cols": cols, "pass": pass, "threads": threads,
                        "ms": round(ms, 4), "gbps": round(achieved, 2), "copy_gbps": round(copy, 2),
                        "bytes": bytes, "impl": concat!("resnorm ", env!("CARGO_PKG_VERSION")),
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{:<15} {:>12} {:<8} {:>9.3} {:>8.1} {:>10.1} {:>6.0}%",
                        op.name(),
                        format!("{rows}x{cols}"),
                        pass,
                        ms,
                        achieved,
                        copy,
                        100.0 * achieved / copy
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}
