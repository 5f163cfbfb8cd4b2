"""Stopping a run cleanly: the signals that ask it to save and exit, and the processes that must hear them.

SLURM, a scheduler's preemption and Ctrl-C send SIGTERM / SIGUSR1 / SIGINT to every process of the job, data workers
included: workers ignore them (pretrain/stream.py), the training loop sets a flag, finishes its step, saves and
exits with jobs.EXIT_STOPPED. Under torchrun a process also gets SIGTERM when its launcher dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import torch
from accelerate import Accelerator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopFlag:
    """SIGTERM / SIGUSR1 / SIGINT (preemption, SLURM's warning signal, Ctrl-C) ask the loop to save and exit.

    A second SIGINT aborts at once, as Ctrl-C does elsewhere.
    """

    def __init__(self):
        self.requested = False
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def agreed(self, accelerator: Accelerator, may_sync: bool) -> bool:
        """Whether every process stops now. One process reads its flag every step; several agree (an all-reduce,
        a host sync) only at steps where `may_sync`, the log steps, so a stop waits up to trainer.log_every steps."""
        if accelerator.num_processes == 1:
            return self.requested
        if not may_sync:
            return False
        flag = torch.tensor(float(self.requested), device=accelerator.device)
        return bool(accelerator.reduce(flag, "max") > 0)


def die_with_launcher() -> None:
    """Under torchrun, have the kernel send SIGTERM (save and exit) to this process when the launcher dies, so
    a killed launcher never leaves processes training and writing on their own."""
    if "TORCHELASTIC_RUN_ID" in os.environ and sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() == 1:  # the launcher died before the call
            os.kill(os.getpid(), signal.SIGTERM)
