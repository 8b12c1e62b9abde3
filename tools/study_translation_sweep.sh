#!/usr/bin/env bash
# The learning-rate sweep behind `resnorm study --preset translation` (docs/study.md,
# "Translation preset"): Post-LN and Pre-LN, with and without warm-up, at a few peak rates,
# with the preset's model and data settings, through `resnorm translate train`.
#
#   tools/study_translation_sweep.sh BIN DATA_DIR OUT_DIR "LRS" "PLACEMENTS" LAYERS STEPS WARMUP
#   e.g. tools/study_translation_sweep.sh target/release/resnorm /tmp/sweep-data /tmp/sweep \
#        "1e-3 3e-3 1e-2" "post-ln pre-ln" 3 400 80
#
# DATA_DIR holds train.{en,es} and valid.{en,es}; the preset validates on the first 200 valid
# pairs (`head -200 valid.en > DATA_DIR/valid.en`, the same for .es). Prints one line per run.
set -euo pipefail
bin=$1 data=$2 out=$3 lrs=$4 placements=$5 layers=$6 steps=$7 warmup=$8
for lr in $lrs; do
  for p in $placements; do
    for w in 0 "$warmup"; do
      min_lr=$(python3 -c "print($lr / 10)")
      line=$("$bin" translate train --data "$data" --out "$out/$p-L$layers-lr$lr-w$w" --overwrite \
        --vocab 2000 --width 64 --heads 4 --encoder-layers "$layers" --decoder-layers "$layers" \
        --max-len 96 --max-tokens 1024 --steps "$steps" --lr "$lr" --min-lr "$min_lr" \
        --warmup "$w" --grad-clip 1 --placement "$p" --seed 1 --eval-every 0 --save-every 0 \
        --bleu-sentences 100 2>&1 | grep -E 'validation loss|diverged' | tail -1 || true)
      echo "$p L=$layers lr=$lr warmup=$w: $line"
    done
  done
done
