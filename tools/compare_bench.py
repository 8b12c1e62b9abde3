#!/usr/bin/env python3
"""Prints resnorm vs PyTorch speed per benchmark row from two JSON-lines files.

    resnorm bench norms --threads 2 --json > resnorm.jsonl
    python3 tools/bench_torch_norms.py --threads 2 > torch.jsonl
    python3 tools/compare_bench.py resnorm.jsonl torch.jsonl

Rows are matched on (op, rows, cols, pass, threads). speedup = torch ms / resnorm ms
(above 1 means resnorm is faster). copy% is resnorm's GB/s as a share of the copy bandwidth
that `resnorm bench norms` measured at the same working-set size.
"""
import json
import sys


def load(path: str) -> dict:
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                rows[(r["op"], r["rows"], r["cols"], r["pass"], r["threads"])] = r
    return rows


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ours, ref = load(sys.argv[1]), load(sys.argv[2])
    header = f"{'op':<15} {'rows x cols':>12} {'pass':<8} {'resnorm ms':>10} {'torch ms':>9} {'speedup':>8} {'GB/s':>7} {'copy%':>6}"
    print(header)
    print("-" * len(header))
    for key, r in ours.items():
        op, rows, cols, pass_, _threads = key
        t = ref.get(key)
        torch_ms = f"{t['ms']:.3f}" if t else "-"
        speedup = f"{t['ms'] / r['ms']:.2f}x" if t else "-"
        copy = f"{100 * r['gbps'] / r['copy_gbps']:.0f}%" if r.get("copy_gbps") else "-"
        print(f"{op:<15} {f'{rows}x{cols}':>12} {pass_:<8} {r['ms']:>10.3f} {torch_ms:>9} {speedup:>8} {r['gbps']:>7.1f} {copy:>6}")


if __name__ == "__main__":
    main()
