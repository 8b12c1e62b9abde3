#!/bin/bash
# resnorm against PyTorch eager / Hugging Face generate at real sizes, alternating in one
# loop: for each preset (gpt2-124m, llama-135m) the training step (`bench train --preset`
# against tools/bench_torch_presets.py train) and single-sequence greedy decoding (`bench
# sample --preset` against generate(do_sample=False, use_cache=True)), same thread count.
# One JSON line per run on stdout, then per-round ratios (PyTorch ms / resnorm ms, resnorm
# tokens/s / PyTorch tokens/s, resnorm peak RSS / PyTorch peak RSS) on stderr.
#
#   tools/bench_presets.sh ROUNDS RESNORM [EXTRA_TRAIN_FLAGS [EXTRA_SAMPLE_FLAGS]]
#   e.g. tools/bench_presets.sh 4 target/release/resnorm "--steps 3" "--tokens 128 --runs 3"
# The extra flags go to both sides (both accept --steps, --batch, --context, --tokens, --runs).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1 resnorm=$2 train=${3:-} sample=${4:-} threads=${THREADS:-2}
emit() { echo "{\"round\":$1,\"bench\":\"$2\",\"variant\":\"$3\",\"result\":$4}"; }
for r in $(seq 1 "$rounds"); do
    for preset in gpt2-124m llama-135m; do
        emit "$r" "train-$preset" resnorm \
            "$($resnorm --threads "$threads" bench train --json --preset $preset $train | tail -1)"
        emit "$r" "train-$preset" torch \
            "$(python3 tools/bench_torch_presets.py train --threads "$threads" --preset $preset $train | tail -1)"
        emit "$r" "sample-$preset" resnorm \
            "$($resnorm --threads "$threads" bench sample --json --preset $preset $sample | tail -1)"
        emit "$r" "sample-$preset" torch \
            "$(python3 tools/bench_torch_presets.py sample --threads "$threads" --preset $preset $sample | tail -1)"
    done
done 2>/dev/null | python3 -c '
import json, sys
rows = []
for line in sys.stdin:
    print(line, end="", flush=True)
    rows.append(json.loads(line))
pairs = {}
for row in rows:
    pairs.setdefault((row["bench"], row["round"]), {})[row["variant"]] = row["result"]
for (bench, rnd), p in sorted(pairs.items()):
    if "resnorm" not in p or "torch" not in p:
        continue
    ours, theirs = p["resnorm"], p["torch"]
    speed = theirs["ms"] / ours["ms"] if "ms" in ours else ours["tok_s"] / theirs["tok_s"]
    memory = ours["rss_mib"] / theirs["rss_mib"]
    print(f"{bench} round {rnd}: speed {speed:.2f}x, memory {memory:.2f}x", file=sys.stderr)
'
