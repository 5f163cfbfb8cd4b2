"""Model FLOPs (2 per multiply-add) and the peak FLOP/s of known devices, for MFU."""

from __future__ import annotations

import torch

from electra_pretrain.model_config import ElectraConfig

# Dense bf16 / fp16 tensor-core peaks (no sparsity) from the vendors' data sheets, by a part of the device name;
# the first match wins, so the specific forms come first (an H100 PCIe is not an SXM part).
GPU_PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L4", 121e12),
    ("V100", 125e12),
)


def gpu_peak_flops(precision: str, name: str | None = None) -> tuple[float, str] | None:
    """(peak FLOP/s, source) of this process's CUDA device (or the one `name`d) from its data sheet (fp32, which
    runs on TF32 tensor cores here: half the figure), or None when the device is unknown or there is none."""
    if name is None:
        if not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name()
    for key, value in GPU_PEAK_FLOPS:
        if key in name:
            return (value if precision != "no" else value / 2), f"{name} data sheet ({key})"
    return None


def encoder_forward_flops(config: ElectraConfig, seq_len: int) -> float:
    """Matmul FLOPs per token of one encoder forward (2 per multiply-add), attention scores included."""
    h, i = config.hidden_size, config.intermediate_size
    per_layer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * seq_len * h  # QKV + output, FFN; QK^T and AV
    project = 2 * config.embedding_size * h if config.embedding_size != h else 0
    return config.num_hidden_layers * per_layer + project
