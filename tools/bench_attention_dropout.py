#!/usr/bin/env python3
"""The attention kernels' time with attention dropout off and on, and against a build from
before attention dropout existed.

Runs `examples/attention_dropout_cost` (AFTER, rates 0 and 0.1) and, if given, the same
example built on the tree before the change (BEFORE, rate 0 only: see docs/benchmarks.md
for how it is built) alternately, PAIRS times each, pinned to one core. Round 0 of each run
(buffers grown) is left out. Prints, per binary and rate, the minimum over every round, the
median of each run's minimum and the median of all rounds; then the median ratio of p=0.1
to p=0 within the same round of AFTER (the two run back to back, so load moves both).

    python3 tools/bench_attention_dropout.py --after target/release/examples/attention_dropout_cost \
        --before /tmp/attention_cost_before --shape 32 4 64 64 --rounds 60 --pairs 12
"""
import argparse
import re
import statistics
import subprocess

ROUND = re.compile(r"^round (\d+):")
TIME = re.compile(r"p=(\S+) (\S+) ms")


def run(binary, shape, rounds, rates, core):
    """Each round's `{rate: ms}` of one run, round 0 left out."""
    command = [binary, *map(str, shape), str(rounds), *rates]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rounds_seen = []
    for line in out.splitlines():
        m = ROUND.match(line)
        if m and int(m.group(1)) > 0:
            rounds_seen.append({rate: float(ms) for rate, ms in TIME.findall(line)})
    return rounds_seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--after", required=True)
    parser.add_argument("--before")
    parser.add_argument("--shape", type=int, nargs=4, default=[32, 4, 64, 64],
                        metavar=("BATCH", "HEADS", "SEQ", "HEAD_DIM"))
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--core", type=int, default=1, help="taskset core; -1: not pinned")
    args = parser.parse_args()
    core = None if args.core < 0 else args.core
    sides = [("after", args.after, ["0", "0.1"])]
    if args.before:
        sides.insert(0, ("before", args.before, ["0"]))
    runs = {side: [] for side, _, _ in sides}
    for _ in range(args.pairs):
        for side, binary, rates in sides:
            runs[side].append(run(binary, args.shape, args.rounds, rates, core))
    print(f"B, H, T, d = {args.shape}, {args.pairs} runs x {args.rounds - 1} rounds, core {core}")
    for side, _, rates in sides:
        for rate in rates:
            per_run = [[r[rate] for r in one] for one in runs[side]]
            every = [ms for one in per_run for ms in one]
            print(f"  {side:6} p={rate:4}: min {min(every):.2f} ms, median of run minimums "
                  f"{statistics.median(min(one) for one in per_run):.2f} ms, median of all "
                  f"rounds {statistics.median(every):.2f} ms")
    ratios = [r["0.1"] / r["0"] for one in runs["after"] for r in one]
    q = statistics.quantiles(ratios, n=4)
    print(f"  after, same round: p=0.1 / p=0 median {statistics.median(ratios):.3f} "
          f"(quartiles {q[0]:.3f}-{q[2]:.3f}, {len(ratios)} rounds)")


if __name__ == "__main__":
    main()
