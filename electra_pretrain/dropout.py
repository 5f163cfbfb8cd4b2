"""Dropout that draws its keep mask two elements per 64-bit random number on CPU.

On CPU, torch's `bernoulli_` draws one random number per element from a single serial generator, which made
dropout (hidden and attention, p = 0.1 as in the ELECTRA recipe) about 15% of a `small` training step. Here each
64-bit integer from `torch.randint` is viewed as two uniform int32 lanes and an element is kept when its lane is at
least a threshold: 2x fewer draws, the same torch generator (so seeding and checkpointed RNG state still decide
the mask), and a drop probability of round(p * 2^32) / 2^32, i.e. p to within 2.4e-10. On CUDA torch's fused
Philox dropout is already cheap, so `auto` keeps it there. Measured figures: docs/performance.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from electra_pretrain.model_config import DROPOUT_IMPLEMENTATIONS


def uses_packed(implementation: str, device: torch.device) -> bool:
    return implementation == "packed" or (implementation == "auto" and device.type == "cpu")


def packed_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout: zero each element with probability p (to within 2^-32), scale the rest by 1/(1-p)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    numel = x.numel()
    draws = torch.randint(-(2**63), 2**63 - 1, ((numel + 1) // 2,), dtype=torch.int64, device=x.device)
    lanes = draws.view(torch.int32)[:numel].view(x.shape)  # uniform over [-2^31, 2^31)
    keep = lanes >= -(2**31) + round(p * 2**32)
    return torch.where(keep, x * (1.0 / (1.0 - p)), 0.0)


def dropout(x: torch.Tensor, p: float, training: bool, implementation: str = "auto") -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if uses_packed(implementation, x.device):
        return packed_dropout(x, p)
    return F.dropout(x, p, training=True)


class Dropout(nn.Module):
    """`nn.Dropout` with a choice of mask generator; `implementation` is set by `set_dropout_implementation`."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.implementation: str = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.implementation)

    def extra_repr(self) -> str:
        return f"p={self.p}, implementation={self.implementation}"


def set_dropout_implementation(model: nn.Module, implementation: str) -> None:
    if implementation not in DROPOUT_IMPLEMENTATIONS:
        raise ValueError(f"dropout implementation must be one of {DROPOUT_IMPLEMENTATIONS}, got {implementation!r}")
    for module in model.modules():
        if isinstance(module, Dropout):
            module.implementation = implementation
