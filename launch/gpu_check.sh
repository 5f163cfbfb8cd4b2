#!/usr/bin/env bash
# `make gpu-check`: the one-command GPU validation (electra_pretrain/tools/gpu_check.py): at most 10 minutes on a
# CUDA machine, writing gpu-report.json and gpu-report.md into the folder given (default: gpu-report/). Without
# CUDA it says so in one line.
#
# On a machine that has torch but not our other dependencies (and no package index), carry the wheels from here:
#   launch/carry_wheels.sh .whl        # here: the wheels that machine lacks, for its Python (3.12 by default)
#   # there, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD PYTHON=python3 bash launch/gpu_check.sh gpu-report
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-report}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
exec "$PYTHON" -m electra_pretrain.tools.gpu_check "$out" "${@:2}"
