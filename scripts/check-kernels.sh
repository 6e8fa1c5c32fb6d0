#!/usr/bin/env bash
# Compiles every project CUDA kernel (`*.cu`) with a real nvcc, for each GPU
# architecture the crate ships PTX for, with every warning an error — the
# check CI runs on machines without a GPU or a CUDA toolkit.
#
# For each arch: nvcc → PTX (the flags build.rs uses), then ptxas assembles
# that PTX (what the driver's JIT does on the GPU), so register-limit and
# `__launch_bounds__` problems fail here too.
#
# nvcc comes from PyPI (scripts/nvcc-from-pypi.sh: `nvidia-cuda-nvcc` + `nvidia-cuda-cccl`, CUDA 13;
# no root, no toolkit) and is cached outside the repository in
# `${XDG_CACHE_HOME:-$HOME/.cache}/poly-loss/nvcc-<version>`; later runs
# reuse it. `NVCC=/path/to/nvcc` uses an installed toolkit instead.
#
# Usage: scripts/check-kernels.sh [--resource-usage]
#   CUDA_ARCHS="75 80 86 89 90"  archs to check (default: build.rs's list)
#   --resource-usage             also print registers/spills per kernel (sm_80)
set -euo pipefail
cd "$(dirname "$0")/.."

archs=${CUDA_ARCHS:-"75 80 86 89 90"}
report=0
[ "${1:-}" = "--resource-usage" ] && report=1

die() { printf 'check-kernels: %s\n' "$*" >&2; exit 1; }

nvcc=$(scripts/nvcc-from-pypi.sh) || die "no nvcc (see above)"
"$nvcc" --version >/dev/null 2>&1 || die "$nvcc does not run"
nvcc_dir=$(dirname "$nvcc")
ptxas="$nvcc_dir/ptxas"
[ -x "$ptxas" ] || ptxas=$(command -v ptxas) || die "no ptxas next to $nvcc"
echo "nvcc: $("$nvcc" --version | tail -n 1)"

supported=$("$nvcc" --list-gpu-arch | sed -n 's/^compute_//p' | tr '\n' ' ')
for a in $archs; do
  case " $supported " in
    *" $a "*) ;;
    *) die "nvcc does not support sm_$a (it supports: $supported)" ;;
  esac
done

mapfile -t kernels < <(git ls-files '*.cu' 2>/dev/null || find src -name '*.cu')
[ "${#kernels[@]}" -gt 0 ] || die "no .cu files found"
incs=(-Isrc/device -Isrc/loss)
for k in "${kernels[@]}"; do incs+=("-I$(dirname "$k")"); done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The same code-generation flags as build.rs, plus warnings as errors.
flags=(--ptx -O3 --use_fast_math --default-stream per-thread -Werror all-warnings "${incs[@]}")

jobs=()
for a in $archs; do
  for k in "${kernels[@]}"; do
    jobs+=("$a $k")
  done
done

compile_one() {
  local a=${1%% *} k=${1#* }
  local stem
  stem=$(basename "$k" .cu)
  local ptx="$out/${stem}_sm$a.ptx" log="$out/${stem}_sm$a.log"
  if ! "$nvcc" --gpu-architecture="compute_$a" "${flags[@]}" -o "$ptx" "$k" >"$log" 2>&1; then
    printf 'FAIL nvcc sm_%s %s\n' "$a" "$k"; cat "$log"; return 1
  fi
  if ! "$ptxas" --gpu-name "sm_$a" --warning-as-error -O3 -o /dev/null "$ptx" >>"$log" 2>&1; then
    printf 'FAIL ptxas sm_%s %s\n' "$a" "$k"; cat "$log"; return 1
  fi
}

start=$SECONDS
failed=0
pids=()
max_par=$(nproc 2>/dev/null || echo 2)
for j in "${jobs[@]}"; do
  compile_one "$j" &
  pids+=($!)
  if [ "${#pids[@]}" -ge "$max_par" ]; then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || die "kernel compile failed (see above)"
echo "ok: ${#kernels[@]} kernels x archs [$archs] → PTX → ptxas, warnings as errors ($((SECONDS - start)) s)"

if [ "$report" = 1 ]; then
  for k in "${kernels[@]}"; do
    "$nvcc" --gpu-architecture=sm_80 --cubin -O3 --use_fast_math "${incs[@]}" --resource-usage \
      -o "$out/r.cubin" "$k" 2>&1 |
      awk -v f="$(basename "$k")" '
        /Compiling entry function/ { match($0, /_Z[^'"'"']*|[a-z_0-9]+'"'"' for/); n=$0; sub(/.*function '"'"'/, "", n); sub(/'"'"'.*/, "", n) }
        /Used [0-9]+ registers/ { r=$0; sub(/.*Used /, "", r); sub(/ registers.*/, "", r); if (n !~ /^__internal/) printf "%-22s %-28s %3s registers\n", f, n, r }'
  done
fi
