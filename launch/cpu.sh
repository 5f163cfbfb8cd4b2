#!/usr/bin/env bash
# Several training processes on one CPU machine (gloo, accelerate's MULTI_CPU):
#   NPROC=2 launch/cpu.sh train.py <overrides>
# `accelerate launch` starts a single process on CPU unless mpirun is set up, so torchrun starts them; each process
# gets an equal share of the cores (OMP_NUM_THREADS), else they oversubscribe the machine. The Python is $PYTHON,
# else the checkout's .venv (made by `make install`) when there is one, else the `python` on PATH.
set -euo pipefail
nproc=${NPROC:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$here/.venv/bin/python" ]]; then PYTHON="$here/.venv/bin/python"; else PYTHON=python; fi
fi
cores=$("$PYTHON" -c 'import os; print(len(os.sched_getaffinity(0)))' 2>/dev/null || nproc)
export ACCELERATE_USE_CPU=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / nproc > 0 ? cores / nproc : 1 ))}
exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$nproc" --master_port "${MASTER_PORT:-29500}" "$@"
