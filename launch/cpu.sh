#!/usr/bin/env bash
# Several training processes on one CPU machine (gloo, accelerate's MULTI_CPU):
#   NPROC=2 launch/cpu.sh train.py <overrides>
# `accelerate launch` starts a single process on CPU unless mpirun is set up, so torchrun starts them; each process
# gets an equal share of the cores (OMP_NUM_THREADS), else they oversubscribe the machine.
set -euo pipefail
nproc=${NPROC:-2}
cores=$(python3 -c 'import os; print(len(os.sched_getaffinity(0)))' 2>/dev/null || nproc)
export ACCELERATE_USE_CPU=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / nproc > 0 ? cores / nproc : 1 ))}
exec "${PYTHON:-python}" -m torch.distributed.run --nproc_per_node "$nproc" --master_port "${MASTER_PORT:-29500}" "$@"
