#!/usr/bin/env bash
# Test BLEU against training time, resnorm and its PyTorch twin, on the same recipe.
#
#   tools/bench_translate_bleu.sh OUT [TWIN_STEPS] [-- extra `translate train` flags]
#
# 1. `resnorm translate train` (release build, 2 threads) into OUT/run; every checkpoint
#    it saves (each --save-every steps, 250 by default) is copied to OUT/snapshots/step-N.
# 2. `resnorm translate eval` on the test split, greedy, for every snapshot, into
#    OUT/resnorm.jsonl: {"step","elapsed","bleu","chrf"}; elapsed is the run's clock at
#    that step (its validation losses and saves included).
# 3. tools/train_torch_translate.py with the run's tokenizer.json for TWIN_STEPS steps
#    (default: the same number) into OUT/twin.jsonl: {"step","train_s","bleu","chrf"}.
# 4. tools/plot_bleu_curve.py draws both into OUT/bleu.svg.
# Each side's peak RSS over its whole run goes to OUT/{resnorm,twin}.rss (GNU time, KiB).
# Run it on a quiet machine: the clocks are the comparison.
set -euo pipefail
out=${1:?usage: bench_translate_bleu.sh OUT [TWIN_STEPS] [-- train flags]}
shift
twin_steps=""
if [[ $# -gt 0 && $1 != "--" ]]; then twin_steps=$1; shift; fi
[[ $# -gt 0 && $1 == "--" ]] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/resnorm
data=$root/../shared/data/translation
mkdir -p "$out/snapshots"
out=$(cd "$out" && pwd)

peak() { if [[ -x /usr/bin/time ]]; then /usr/bin/time -f "%M" -o "$1" "${@:2}"; else "${@:2}"; fi; }
peak "$out/resnorm.rss" "$bin" --threads 2 translate train --data "$data" --src en --tgt es --out "$out/run" \
    --overwrite "$@" > "$out/train.log" 2>&1 &
train=$!
last=""
while kill -0 $train 2>/dev/null; do
    state=$out/run/checkpoint/state.json
    if [[ -f $state ]]; then
        step=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$state" 2>/dev/null || true)
        if [[ -n $step && $step != "$last" && ! -d $out/snapshots/step-$step ]]; then
            cp -r "$out/run/checkpoint" "$out/snapshots/tmp" 2>/dev/null \
                && mv "$out/snapshots/tmp" "$out/snapshots/step-$step" && last=$step
            rm -rf "$out/snapshots/tmp"
        fi
    fi
    sleep 2
done
wait $train
step=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$out/run/checkpoint/state.json")
[[ -d $out/snapshots/step-$step ]] || cp -r "$out/run/checkpoint" "$out/snapshots/step-$step"
tail -n 3 "$out/train.log"

: > "$out/resnorm.jsonl"
for dir in $(ls -d "$out"/snapshots/step-* | sort -t- -k2 -n); do
    "$bin" --threads 2 translate eval --checkpoint "$dir" --json | python3 -c '
import json, sys
e = json.load(sys.stdin)
s = json.load(open(sys.argv[1] + "/state.json"))
print(json.dumps({"step": s["step"], "elapsed": round(s["elapsed"], 2), "bleu": round(e["bleu"], 2), "chrf": round(e["chrf"], 2)}))' "$dir" \
        | tee -a "$out/resnorm.jsonl"
done

peak "$out/twin.rss" python3 "$root/tools/train_torch_translate.py" --tokenizer "$out/run/checkpoint/tokenizer.json" \
    --data "$data" --threads 2 --steps "${twin_steps:-$step}" --log "$out/twin.jsonl"
python3 "$root/tools/plot_bleu_curve.py" "$out/resnorm.jsonl" "$out/twin.jsonl" "$out/bleu.svg"
