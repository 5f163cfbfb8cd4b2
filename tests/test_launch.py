"""The SLURM script, run by bash with stand-ins for srun and scontrol (no cluster here): the command it renders
for each node, and the requeue on the time-limit signal after the trainer has saved."""

import os
import signal
import subprocess
import time

import pytest

from .helpers.runs import ROOT


@pytest.mark.slow
def test_slurm_script_renders_the_launch_and_requeues_after_the_trainer_saved(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        f'#!/bin/bash\nif [ "$1" = show ]; then echo node7; echo node8; else echo "scontrol $*" >> {log}; fi\n'
    )
    # srun stands for the training step: it records its command, and on SIGTERM "saves" and exits 75.
    (bin_dir / "srun").write_text(
        f'#!/bin/bash\necho "srun $*" >> {log}\ntrap \'echo "step got SIGTERM" >> {log}; exit 75\' TERM\n'
        "while true; do sleep 0.05; done\n"
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node[7-8]",
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "2",
    }
    job = subprocess.Popen(["bash", "launch/slurm/train.sbatch", "experiment=electra_base"], cwd=ROOT, env=env)
    deadline = time.time() + 30
    while not (log.exists() and "srun" in log.read_text()):
        assert job.poll() is None and time.time() < deadline
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)  # what `--signal=B:USR1@120` delivers before the time limit
    assert job.wait(30) == 0
    calls = log.read_text().splitlines()
    assert calls[0].startswith("srun --kill-on-bad-exit=1")
    for part in (
        "--config_file launch/accelerate/multi_node.yaml",
        "--num_machines 2",
        "--num_processes 16",
        "--main_process_ip node7",
        "train.py experiment=electra_base",
    ):
        assert part in calls[0], part
    assert calls[1:] == ["step got SIGTERM", "scontrol requeue 4242"]  # requeued only after the step saved


def test_accelerate_configs_start_what_they_say():
    """Each accelerate config, read by accelerate's own launch validation: the launcher and process count it picks.
    (The GPU ones run on GPU machines only; launch/cpu.sh runs in test_train's multi-process test.)"""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    expected = {"single_gpu.yaml": (False, 1), "multi_gpu.yaml": (True, 8), "multi_node.yaml": (True, 16)}
    found = {p.name for p in (ROOT / "launch" / "accelerate").glob("*.yaml")}
    assert found == set(expected)
    for name, (multi_gpu, processes) in expected.items():
        args = launch_command_parser().parse_args(
            ["--config_file", str(ROOT / "launch" / "accelerate" / name), "train.py"]
        )
        args, _, _ = _validate_launch_command(args)
        assert (bool(args.multi_gpu), args.num_processes, bool(args.cpu)) == (multi_gpu, processes, False), name
