#!/usr/bin/env bash
# Prints the path of an nvcc that runs here: `$NVCC` if set, else nvcc from
# PyPI (`nvidia-cuda-nvcc` + `nvidia-cuda-cccl`, CUDA 13 — the cu12 wheels
# ship no nvcc; no root, no toolkit), installed once into
# `${XDG_CACHE_HOME:-$HOME/.cache}/poly-loss/nvcc-<version>` outside the
# repository and reused. The wheel also carries the toolkit headers
# (`include/cuda.h`, `cuda_fp16.h`). Used by check-kernels.sh and link-check.sh.
set -euo pipefail

pip_version="13.5.37"       # nvidia-cuda-nvcc; nvidia-cuda-cccl follows it
cccl_version="13.3.5.0.6"

die() { printf 'nvcc-from-pypi: %s\n' "$*" >&2; exit 1; }

if [ -n "${NVCC:-}" ]; then
  "$NVCC" --version >/dev/null 2>&1 || die "NVCC=$NVCC does not run"
  echo "$NVCC"
  exit 0
fi

cache="${XDG_CACHE_HOME:-$HOME/.cache}/poly-loss"
dir="$cache/nvcc-$pip_version"
nvcc_bin="$dir/nvidia/cu13/bin/nvcc"
if [ -x "$nvcc_bin" ] && [ -f "$dir/.complete" ]; then
  echo "$nvcc_bin"
  exit 0
fi
command -v python3 >/dev/null || die "python3 not found: it is needed to install nvcc from PyPI (or set NVCC)"
python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip: install python3-pip (or set NVCC)"
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.nvcc-install.XXXXXX")
echo "installing nvcc $pip_version from PyPI into $dir" >&2
if ! python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$tmp" "nvidia-cuda-nvcc==$pip_version" "nvidia-cuda-cccl==$cccl_version" >&2; then
  rm -rf "$tmp"
  die "pip could not install nvidia-cuda-nvcc==$pip_version / nvidia-cuda-cccl==$cccl_version (network or index problem; see pip's message above)"
fi
[ -x "$tmp/nvidia/cu13/bin/nvcc" ] || { rm -rf "$tmp"; die "the nvidia-cuda-nvcc wheel has no nvidia/cu13/bin/nvcc"; }
touch "$tmp/.complete"
rm -rf "$dir"
mv "$tmp" "$dir"  # atomic: a half-finished install is never used
echo "$nvcc_bin"
