"""Config pieces both apps' typed configs share: the AdamW settings, the precisions, the choice check.

No torch here (nor in the app configs that extend these), so a config error and every `--help` answer at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# accelerate's mixed_precision values the apps support; auto: bf16 on a GPU that has it, else fp32 (devices.py)
MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")


def check_choice(key: str, value: Any, choices: Iterable) -> None:
    """A config value must be one of `choices`; the error names the key."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{key}={value!r}; choose one of {', '.join(map(str, choices))}")


# auto: fused, the fastest on CPU too (4.5x foreach's step on ELECTRA-Small's tensors on this 2-core machine), and
# the one that skips a bad update from a device flag, without a host sync (pretrain/step.py)
OPTIMIZER_IMPLEMENTATIONS = ("auto", "fused", "foreach", "plain")


@dataclass
class AdamWConfig:
    """AdamW settings shared by pretraining and fine-tuning (GR optimization.py: eps 1e-6, wd 0.01, clip 1.0)."""

    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-6
    weight_decay: float = 0.01  # not applied to LayerNorm weights and biases
    max_grad_norm: float = 1.0
    implementation: str = "auto"  # auto (fused) | fused | foreach | plain
    bias_correction: bool = True  # false: the original's Adam, without bias correction (larger early steps)

    def __post_init__(self) -> None:
        if self.eps <= 0 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ValueError("optim: eps and max_grad_norm must be > 0, weight_decay >= 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must be two values in [0, 1), got {list(self.betas)}")
        check_choice("optim.implementation", self.implementation, OPTIMIZER_IMPLEMENTATIONS)
