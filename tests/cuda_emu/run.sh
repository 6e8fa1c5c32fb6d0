#!/usr/bin/env bash
# Runs the project's CUDA kernels on the CPU under AddressSanitizer/UBSan
# and compares them with float64 references (see shim.h: one host thread
# per CUDA thread, real barriers and warp shuffles). No GPU needed.
# The harnesses mirror the kernels' signatures and the Rust launch sizes:
# change them together. Usage (any directory):
#   tests/cuda_emu/run.sh             # all harnesses
#   tests/cuda_emu/run.sh loss_test   # one
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
incs=(-I "$here" -I "$here/shiminc" -I . -I src/device -I src/loss)
for d in $(git ls-files '*.cu' | xargs -n1 dirname | sort -u); do incs+=(-I "$d"); done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for name in ${@:-loss_test nn_test conv_test}; do
  g++ -std=c++20 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    "${incs[@]}" "$here/$name.cpp" -o "$out/$name" -lpthread
  "$out/$name" >"$out/$name.log" 2>&1 || status=1
  grep -v '^ok ' "$out/$name.log" || true
  echo "$name: $(grep -c '^ok ' "$out/$name.log") checks passed"
done
exit $status
