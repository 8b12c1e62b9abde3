#!/usr/bin/env python3
"""The cost of dropout and label smoothing on `resnorm translate train`'s step.

Runs the default recipe (residual dropout 0.3, label smoothing 0.1) and the same run with
both off (`--dropout 0 --label-smoothing 0`) alternately, ROUNDS times each, STEPS steps a
run, with the same seed: both see the same batches in the same order, so the target
tokens/s of the same step compare directly. Step 1 (buffers allocated) is left out.
Prints per-round medians, the medians over all steps and the median per-step ratio.

    python3 tools/bench_dropout_step.py --resnorm target/release/resnorm \
        --data ../shared/data/translation --rounds 3 --steps 6
"""
import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import tempfile


def run(binary, data, steps, extra, out):
    shutil.rmtree(out, ignore_errors=True)
    cmd = [binary, "translate", "train", "--data", data, "--steps", str(steps),
           "--eval-every", "0", "--save-every", "0", "--bleu-sentences", "1",
           "--out", str(out)] + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["tokens_per_s"] for r in map(json.loads, lines) if r["step"] > 1}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--resnorm", default="target/release/resnorm")
    p.add_argument("--data", default="../shared/data/translation")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args()
    sides = {"dropout 0.3 + smoothing 0.1": [], "off": ["--dropout", "0", "--label-smoothing", "0"]}
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_dropout_"))
    results = {name: [] for name in sides}
    ratios = []
    for r in range(a.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        got = {}
        for name in order:
            got[name] = run(a.resnorm, a.data, a.steps, sides[name], tmp / "run")
            results[name].extend(got[name].values())
        on, off = (got[n] for n in sides)
        ratios.extend(off[s] / on[s] for s in on)  # time with / time without
        print(f"round {r}: " + ", ".join(
            f"{n} median {statistics.median(got[n].values()):.0f} tok/s" for n in sides))
    shutil.rmtree(tmp, ignore_errors=True)
    for name, v in results.items():
        print(f"{name}: median {statistics.median(v):.0f} target tok/s over {len(v)} steps")
    print(f"step time with / without: median per-step ratio {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
