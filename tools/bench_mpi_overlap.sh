#!/bin/bash
# What the overlap of the gradient sums with the backward pass hides, on 2 ranks x 1 thread:
# the mpi_overlap example (crates/resnorm/examples/mpi_overlap.rs) alternates a blocking
# all-reduce of the 13 buckets, the overlapped sums, and the overlapped sums with P more
# MPI_Testall calls at each unit's end, ROUNDS rounds of each, then prints the medians.
#
#   tools/bench_mpi_overlap.sh [ROUNDS] [CONTEXT] [BATCH]      (docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6} context=${2:-64} batch=${3:-4}
cargo build --release -p resnorm --features mpi --example mpi_overlap
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
for p in 32 512; do
    date -u
    uptime
    mpirun --oversubscribe -np 2 target/release/examples/mpi_overlap "$context" "$batch" "$rounds" "$p"
done
