#!/usr/bin/env python3
"""PyTorch reference timings for the norm kernels, in the same JSON-lines format as
`resnorm bench norms --json`, so that tools/compare_bench.py can put them side by side.

    python3 tools/bench_torch_norms.py --threads 2 > torch.jsonl

What is timed is what a user writes in eager PyTorch:
- layer_norm:      y = nn.LayerNorm(C)(x)
- rms_norm:        y = nn.RMSNorm(C, eps=1e-5)(x)
- add_layer_norm:  s = x + r; y = nn.LayerNorm(C)(s)   (unfused; the sum s is returned too)
"fwd" is the forward under torch.no_grad(); "fwd_bwd" is the forward with autograd plus
backward of the given upstream gradients (dy, and ds for add_layer_norm), parameter
gradients included. Timings are medians over repetitions after a warm-up. Bytes are counted
exactly as the Rust bench counts them (see crates/resnorm-cli/src/commands/bench/norms.rs).
"""
import argparse
import json
import statistics
import time

import torch

SHAPES = [(8192, 768), (16384, 384), (4096, 1024), (65536, 128), (2048, 384), (2048, 768)]
OPS = ["layer_norm", "rms_norm", "add_layer_norm"]


def bytes_moved(op: str, rows: int, cols: int, pass_: str) -> int:
    """Bytes that must cross memory: fp32 tensors read/written, plus per-row statistics."""
    n = rows * cols * 4
    stats = rows * 4 * (1 if op == "rms_norm" else 2)
    if op == "add_layer_norm":
        fwd = 4 * n + stats  # read x, r; write sum, y
        bwd = 4 * n + stats  # read dy, dsum, sum; write dx
    else:
        fwd = 2 * n + stats  # read x; write y
        bwd = 3 * n + stats  # read x, dy; write dx
    return fwd if pass_ == "fwd" else fwd + bwd


def median_ms(fn, min_time=0.3, min_reps=5, max_reps=200) -> float:
    fn()
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def make_case(op: str, rows: int, cols: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, cols, generator=g)
    r = torch.randn(rows, cols, generator=g)
    dy = torch.randn(rows, cols, generator=g)
    ds = torch.randn(rows, cols, generator=g)
    norm = torch.nn.RMSNorm(cols, eps=1e-5) if op == "rms_norm" else torch.nn.LayerNorm(cols)

    def fwd():
        with torch.no_grad():
            if op == "add_layer_norm":
                s = x + r
                return norm(s), s
            return norm(x)

    xg = x.clone().requires_grad_(True)
    rg = r.clone().requires_grad_(True)

    def fwd_bwd():
        xg.grad = None
        rg.grad = None
        norm.zero_grad(set_to_none=True)
        if op == "add_layer_norm":
            s = xg + rg
            y = norm(s)
            torch.autograd.backward([y, s], [dy, ds])
        else:
            y = norm(xg)
            y.backward(dy)

    return fwd, fwd_bwd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for rows, cols in SHAPES:
        for op in OPS:
            fwd, fwd_bwd = make_case(op, rows, cols)
            for pass_, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
                ms = median_ms(fn)
                gbps = bytes_moved(op, rows, cols, pass_) / (ms * 1e-3) / 1e9
                line = {"op": op, "rows": rows, "cols": cols, "pass": pass_, "threads": args.threads,
                        "ms": round(ms, 4), "gbps": round(gbps, 2), "impl": f"torch {torch.__version__}"}
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
