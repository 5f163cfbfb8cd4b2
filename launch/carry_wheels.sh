#!/usr/bin/env bash
# Wheels of this project's dependencies that a GPU machine with PyTorch, transformers and the scientific Python
# stack lacks (no package index there), for `make gpu-check` on it (launch/gpu_check.sh says how to install them).
#   launch/carry_wheels.sh [DIR] [PYTHON_VERSION]      (defaults: .whl, 3.12)
# The project itself travels as source (PYTHONPATH), so only its dependencies are fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.whl}"
version="${2:-3.12}"
pip="${PIP:-python3 -m pip}"
mkdir -p "$dir"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# what the CUDA image lacks, with their own needs that it lacks too
missing=(datasets dill multiprocess hydra-core omegaconf antlr4-python3-runtime==4.9.3 torchdata)
$pip download --no-deps --only-binary=:all: --python-version "$version" --implementation cp "${platforms[@]}" \
    -d "$dir" "${missing[@]}"
ls -la "$dir"
