"""AdamW with decay exclusions and the warmup x linear-decay schedule of google-research/electra optimization.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # config.py reads IMPLEMENTATIONS from here
    from electra_pretrain.config import OptimConfig

IMPLEMENTATIONS = ("auto", "fused", "foreach", "plain")  # auto: fused on GPU, foreach on CPU


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and embedding tables only: LayerNorm weights and all biases are excluded (GR)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():  # shared parameters are listed once
        if not param.requires_grad:
            continue
        excluded = name.endswith("bias") or "LayerNorm" in name
        (no_decay if excluded else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    implementation = config.implementation
    if implementation == "auto":
        implementation = "fused" if device.type == "cuda" else "foreach"
    return torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr,
                             betas=tuple(config.betas), eps=config.eps,
                             fused=implementation == "fused" or None,
                             foreach=implementation == "foreach" or None)


def lr_multiplier(step: int, warmup_steps: int, max_steps: int) -> float:
    """GR: lr = peak * (1 - step / max_steps) * min(1, step / warmup_steps), the warmup applied multiplicatively."""
    decay = max(0.0, 1.0 - step / max_steps)
    warmup = min(1.0, step / warmup_steps) if warmup_steps else 1.0
    return decay * warmup


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig,
                    max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, config.warmup_steps, max_steps))
