"""Which precision a run uses where: `auto` is the `accelerate launch` config's mixed_precision when there is one,
else bf16 on a GPU that supports it (TF32 matmuls for what stays fp32) and IEEE fp32 elsewhere; fp16 needs a GPU."""

from __future__ import annotations

import os

import torch


def on_gpu() -> bool:
    """Whether accelerate will place this process on a CUDA device (ACCELERATE_USE_CPU forces the CPU)."""
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return torch.cuda.is_available() and not forced_cpu


def resolve_precision(requested: str, key: str = "trainer.mixed_precision") -> str:
    """accelerate's mixed_precision for `requested` (config_base.MIXED_PRECISIONS) on this machine."""
    gpu = on_gpu()
    if requested == "fp16" and not gpu:
        raise ValueError(f"{key}=fp16 needs a GPU; on CPU use bf16 or no")
    if requested != "auto":
        return requested
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")  # set by `accelerate launch` from its config
    if launched in ("no", "fp16", "bf16") and (gpu or launched != "fp16"):
        return launched
    return "bf16" if gpu and torch.cuda.is_bf16_supported() else "no"


def allow_tf32() -> None:
    """fp32 matmuls and convolutions on TF32 tensor cores (Ampere and later): what stays fp32 under bf16 autocast,
    and every matmul of a run with mixed_precision=no, runs at tensor-core speed with a 10-bit mantissa."""
    if on_gpu():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def release_accelerator_state() -> None:
    """Forget the precision and the plugins of the run that just ended, so that another run in this process (a
    study, a benchmark, a test) may choose its own: accelerate keeps them process-wide and refuses a change.
    The distributed state (PartialState: ranks, process group) stays, as it must."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
