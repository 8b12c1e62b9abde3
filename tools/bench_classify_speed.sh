#!/usr/bin/env bash
# Training speed of the encoder classifier, resnorm against its PyTorch twin, in alternating
# short rounds (docs/benchmarks.md, "Sentiment"). Both on the same split, same model and
# recipe, 2 threads each; the sentences/s are the training steps only.
#
#   tools/bench_classify_speed.sh [ROUNDS] [STEPS] [BINARY]
#                                   (defaults 3, 100 and target/release/resnorm)
#
# Needs the binary (cargo build --release -p resnorm-cli), torch, tokenizers, and
# ../shared/data/sentiment/vader_groundtruth.tsv.
set -euo pipefail
ROUNDS=${1:-3}
STEPS=${2:-100}
BIN=${3:-target/release/resnorm}
V=../shared/data/sentiment/vader_groundtruth.tsv
RUN=${TMPDIR:-/tmp}/resnorm-classify-speed
echo "# $(date -u +%FT%TZ) $(uptime | sed 's/.*load/load/')"
for round in $(seq "$ROUNDS"); do
  "$BIN" --threads 2 classify train --body encoder --data "$V" --score-column score \
    --threshold 0.5 --dropout 0.1 --steps "$STEPS" --eval-every 0 --out "$RUN" --overwrite >/dev/null 2>&1
  ours=$(python3 -c "
import json, sys
rows = [json.loads(l) for l in open('$RUN/metrics.jsonl')]
last = rows[-2]  # the final step's record also times the validation pass
print(f\"{last['step'] * 32 / last['elapsed']:.1f}\")")
  twin=$(python3 tools/bench_torch_classify.py --data "$V" --split "$RUN/split.tsv" --steps "$STEPS" \
    --threads 2 --no-eval | sed -n 's/^training: \([0-9.]*\) sentences.*/\1/p')
  python3 -c "print(f'round $round: resnorm $ours sentences/s, torch $twin sentences/s, ratio {$ours / $twin:.2f}')"
done
rm -rf "$RUN"
