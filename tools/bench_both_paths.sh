#!/bin/bash
# Side by side, in one loop: a resnorm binary before a change, the same after it (default
# features), the same built with --no-default-features run under RESNORM_SIMD=avx2, and
# PyTorch with and without its AVX2 caps; the GPT steps (6-layer and nanoGPT), decoding and
# resnet20 training. One JSON line per run on stdout, for docs/benchmarks.md.
#
#   tools/bench_both_paths.sh ROUNDS BEFORE AFTER AFTER_NO_AVX512 [FASHION_MNIST_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1 before=$2 after=$3 avx2=$4 data=${5:-../shared/data/images/fashion-mnist}
big="--layers 6 --heads 6 --width 384 --context 256 --batch 8 --vocab 65"
nano="--layers 4 --heads 4 --width 128 --context 64 --batch 12 --vocab 65"
cap="RESNORM_SIMD=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 DNNL_MAX_CPU_ISA=AVX2"
resnet="--threads 2 --batch-size 128 --images 1280 --data $data"
emit() { echo "{\"round\":$1,\"bench\":\"$2\",\"variant\":\"$3\",\"result\":$4}"; }
for r in $(seq 1 "$rounds"); do
    for model in big nano; do
        if [ $model = big ]; then m=$big steps=10; else m=$nano steps=20; fi
        emit "$r" step-$model before "$($before --threads 2 bench train --json --steps $steps $m | tail -1)"
        emit "$r" step-$model after "$($after --threads 2 bench train --json --steps $steps $m | tail -1)"
        emit "$r" step-$model torch "$(python3 tools/bench_torch_gpt.py speed --threads 2 --steps $steps $m | tail -1)"
        emit "$r" step-$model after-avx2 "$(env $cap $avx2 --threads 2 bench train --json --steps $steps $m | tail -1)"
        emit "$r" step-$model torch-avx2 "$(env $cap python3 tools/bench_torch_gpt.py speed --threads 2 --steps $steps $m | tail -1)"
    done
    emit "$r" sample before "$($before --threads 2 bench sample --json | tail -1)"
    emit "$r" sample after "$($after --threads 2 bench sample --json | tail -1)"
    emit "$r" sample torch "$(python3 tools/bench_torch_gpt.py sample --threads 2 --layers 6 --heads 6 --width 384 --context 256 --vocab 65 | tail -1)"
    emit "$r" sample after-avx2 "$(env $cap $avx2 --threads 2 bench sample --json | tail -1)"
    emit "$r" resnet20 before "$(python3 tools/bench_torch_resnet.py $resnet --resnorm "$before" | tail -1)"
    emit "$r" resnet20 after "$(python3 tools/bench_torch_resnet.py $resnet --resnorm "$after" | tail -1)"
    emit "$r" resnet20 after-avx2 "$(env $cap python3 tools/bench_torch_resnet.py $resnet --resnorm "$avx2" | tail -1)"
done 2>/dev/null
