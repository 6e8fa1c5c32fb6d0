#!/usr/bin/env bash
# GPU check, one command (about 10 minutes on one GPU):
#   1. builds the CUDA path (release) and runs every CUDA test (CUDA ops
#      against the CPU ops, -inf logits, the library's CUDA unit tests);
#   2. runs the CUDA test binaries again under compute-sanitizer
#      (memcheck, then racecheck) — skipped with a note if it is missing;
#   3. trains polytune's embedded default on the GPU (>= 95 % top-1);
#   4. times the CUDA benchmarks and prints a Markdown table for
#      BENCHMARKS.md.
#
# Needs an NVIDIA GPU, nvidia-smi and nvcc (the CUDA toolkit) on PATH;
# honours CARGO_TARGET_DIR, CUDA_ARCHS, NVCC. CI cannot run this (no GPU
# there): it type-checks the CUDA code (`--features cuda,ci-check`) and
# compiles the kernels with scripts/check-kernels.sh.
# Usage: scripts/gpu-check.sh [--quick]   (--quick: shorter benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1
start=$SECONDS
step() { printf '\n==> %s (%d s)\n' "$*" "$((SECONDS - start))"; }

target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

step "device"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
nvcc --version | tail -n 2
# dfdx's own build reads the compute capability (nvidia-smi or this variable).
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d .)}"
echo "CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} target dir ${target_dir}"

cuda_tests=(cuda_loss cuda_nn cuda_neg_inf_logits)
test_args=()
for t in "${cuda_tests[@]}"; do test_args+=(--test "$t"); done

step "build (release, --features cuda)"
cargo build --release --features cuda --tests --benches
cargo build --release -p polytune --features cuda

step "CUDA tests: the library's CUDA unit tests and the CUDA integration tests"
cargo test --release --features cuda --lib -- device::cuda
cargo test --release --features cuda "${test_args[@]}" -- --nocapture

step "compute-sanitizer over the CUDA tests"
if command -v compute-sanitizer >/dev/null; then
  mapfile -t bins < <(cargo test --release --features cuda "${test_args[@]}" --no-run --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
  for tool in memcheck racecheck; do
    for b in "${bins[@]}"; do
      echo "-- $tool $(basename "$b")"
      # Single-threaded test harness: one CUDA context at a time.
      compute-sanitizer --tool "$tool" --error-exitcode 1 --print-limit 20 "$b" --test-threads 1
    done
  done
else
  echo "compute-sanitizer not on PATH: sanitizer pass SKIPPED"
fi

step "polytune on CUDA: the embedded default (small ResNet, digits) must still reach >= 95 %"
out=$("$target_dir/release/polytune" train --device cuda 2>&1 | tee /dev/stderr | grep '^validation: top-1')
top1=$(echo "$out" | sed -E 's/^validation: top-1 ([0-9.]+).*/\1/')
python3 -c "import sys; t = float(sys.argv[1]); print('polytune cuda top-1', t); sys.exit(0 if t >= 0.95 else 1)" "$top1"

step "CUDA benchmarks"
bench_args=(--noplot)
if [ "$quick" = 1 ]; then
  bench_args+=(--warm-up-time 1 --measurement-time 2 --sample-size 10)
else
  bench_args+=(--warm-up-time 2 --measurement-time 5)
fi
cargo bench --features cuda --bench poly_loss -- "${bench_args[@]}" cuda/
cargo bench --features cuda --bench conv2d -- "${bench_args[@]}" cuda/

step "table for BENCHMARKS.md"
gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1)
python3 - "$target_dir/criterion" "$gpu" <<'EOF'
import json, pathlib, sys
root, gpu = pathlib.Path(sys.argv[1]), sys.argv[2]
rows = []
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    if not bench.get("full_id", "").startswith("cuda/") and "/cuda/" not in bench.get("full_id", ""):
        continue
    e = json.loads(est.read_text())
    med, lo, hi = (e["median"]["point_estimate"], e["median"]["confidence_interval"]["lower_bound"],
                   e["median"]["confidence_interval"]["upper_bound"])
    rows.append((bench["full_id"], med / 1e3, lo / 1e3, hi / 1e3))
print(f"\nCUDA benchmarks on {gpu} (criterion median, 95 % CI):\n")
print("| benchmark | median µs | CI µs |")
print("|---|---:|---|")
for name, med, lo, hi in rows:
    print(f"| `{name}` | {med:.1f} | {lo:.1f}–{hi:.1f} |")
EOF
step "gpu-check done"
