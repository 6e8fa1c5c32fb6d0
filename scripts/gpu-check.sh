#!/usr/bin/env bash
# GPU check: builds the CUDA path, runs the CUDA tests (CUDA ops against the
# CPU ops on random inputs), trains polytune's embedded default on the GPU,
# and prints the CUDA benchmarks.
#
# Needs an NVIDIA GPU, nvidia-smi and nvcc (the CUDA toolkit) on PATH.
# CI cannot run this (no GPU there); it only type-checks the CUDA code with
# `--features cuda,ci-check`. Usage: scripts/gpu-check.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

echo "==> device"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
nvcc --version | tail -n 2
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d .)}"
echo "CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}"

echo "==> build (release, --features cuda)"
cargo build --release --features cuda --tests --benches

echo "==> CUDA tests: fused PolyLoss and vision ops against the CPU ops"
cargo test --release --features cuda --test cuda_loss --test cuda_nn -- --nocapture

echo "==> polytune on CUDA: the embedded default (small ResNet, digits) must still reach >= 95 %"
cargo build --release -p polytune --features cuda
out=$(target/release/polytune train --device cuda 2>&1 | tee /dev/stderr | grep '^validation: top-1')
top1=$(echo "$out" | sed -E 's/^validation: top-1 ([0-9.]+).*/\1/')
python3 -c "import sys; t = float(sys.argv[1]); print('polytune cuda top-1', t); sys.exit(0 if t >= 0.95 else 1)" "$top1"

echo "==> CUDA benchmarks"
bench_args=(--noplot)
if [ "$quick" = 1 ]; then
  bench_args+=(--warm-up-time 1 --measurement-time 2 --sample-size 10)
fi
cargo bench --features cuda --bench poly_loss -- "${bench_args[@]}" cuda/
cargo bench --features cuda --bench conv2d -- "${bench_args[@]}" cuda/
echo "==> gpu-check done"
