"""One writer per run folder: an exclusive POSIX record lock (`fcntl.lockf`) on `output_dir/.lock`, held for the
whole run. Unlike `flock`, it is not shared with forked children, so a dataloader worker that outlives a killed
trainer for a few seconds does not keep the folder locked.

Two runs in one folder would interleave metrics.jsonl and remove each other's checkpoints; the second one is refused
at start-up, naming the holder. The operating system drops the lock when its process dies, however it dies, so a
killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"


class RunLock:
    def __init__(self, output_dir: Path):
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / LOCK_FILE
        self._file = open(self.path, "a+")
        try:
            fcntl.lockf(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EAGAIN or EACCES, by platform
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise ValueError(
                f"{output_dir} is in use by {holder}; wait for that run to end or choose another output_dir"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.lockf(self._file, fcntl.LOCK_UN)
            self._file.close()
