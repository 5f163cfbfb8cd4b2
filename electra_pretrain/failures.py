"""Failures a user can act on, told in one line with the remedy: out of memory, a full disk. Anything else
unexpected is a bug and keeps its traceback."""

from __future__ import annotations

import errno

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# what torch, safetensors and the OS say when a write runs out of room (torch's zip writer loses the errno)
DISK_FULL_MESSAGES = ("No space left on device", "Disk quota exceeded", "File too large", "unexpected pos")


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def known_failure(error: BaseException) -> str | None:
    """One line naming the cause and the remedy, or None for anything else."""
    text = str(error)
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return (
            f"out of memory ({first_line(error)}); lower trainer.micro_batch_size (gradient accumulation keeps "
            "the global batch), the sequence length or the model size"
        )
    if getattr(error, "errno", None) in DISK_FULL_ERRNOS or any(m in text for m in DISK_FULL_MESSAGES):
        return (
            f"no space left on device, or a file size limit reached ({first_line(error)}); free space or "
            "choose an output_dir on a larger disk, then rerun the same command"
        )
    return None
