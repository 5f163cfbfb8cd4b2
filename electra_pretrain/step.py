"""One optimizer step of the joint module, and the guards that keep a bad step away from the weights."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from electra_pretrain.objective import Electra

METRICS = ("loss", "mlm_loss", "rtd_loss", "gen_accuracy", "disc_accuracy", "replaced_fraction", "disc_precision",
           "disc_recall")
SPIKE_ACTIONS = ("skip", "stop")


@dataclass
class StepResult:
    metrics: dict[str, torch.Tensor]  # device scalars, means over the micro-batches (no host sync)
    tokens: torch.Tensor  # non-pad tokens of this process in this step
    grad_norm: torch.Tensor
    skipped: str | None  # why the update was not applied: "fp16_overflow" or "loss_spike"; None when it was


class LossSpikeGuard:
    """A step whose loss exceeds `factor` x the running mean of accepted losses is a spike (skipped or stopped).

    The mean is an exponential moving average kept on the device; the guard is active from the second step on, so
    that a blow-up in the first steps cannot poison the mean (a fresh ELECTRA starts near ln(V) + 50 ln 2 and its
    loss then falls, so a 10x jump is never noise). `factor=0` turns it off.
    """

    def __init__(self, factor: float, device: torch.device, decay: float = 0.98, warmup: int = 1):
        self.factor, self.decay, self.warmup = factor, decay, warmup
        self.mean = torch.zeros((), device=device)
        self.accepted = 0

    def is_spike(self, loss: torch.Tensor) -> torch.Tensor:
        """() bool on the device."""
        if self.factor == 0 or self.accepted < self.warmup:
            return torch.zeros((), dtype=torch.bool, device=loss.device)
        return loss > self.factor * self.mean

    def accept(self, loss: torch.Tensor) -> None:
        weight = self.decay if self.accepted else 0.0
        self.mean.mul_(weight).add_(loss.detach().float(), alpha=1.0 - weight)
        self.accepted += 1

    def state_dict(self) -> dict:
        return {"mean": float(self.mean), "accepted": self.accepted}

    def load_state_dict(self, state: dict) -> None:
        self.mean.fill_(state["mean"])
        self.accepted = state["accepted"]


def train_step(model: Electra, batches: list[dict[str, torch.Tensor]], optimizer, scheduler,
               accelerator: Accelerator, max_grad_norm: float, step: int, guard: LossSpikeGuard | None = None,
               spike_action: str = "skip") -> StepResult:
    """One optimizer step over `batches` (the gradient-accumulation micro-batches of this process)."""
    guard = guard or LossSpikeGuard(0.0, accelerator.device)
    sums = {name: torch.zeros((), device=accelerator.device) for name in METRICS}
    tokens = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(batches):
        # Gradients are all-reduced only on the last micro-batch.
        sync = contextlib.nullcontext() if i == len(batches) - 1 else accelerator.no_sync(model)
        with sync:
            out = model(**batch)
            accelerator.backward(out.loss / len(batches))
        for name, value in (("loss", out.loss), ("mlm_loss", out.mlm_loss), ("rtd_loss", out.rtd_loss),
                            *out.metrics.items()):
            if name in sums:
                sums[name] += value.detach()
        tokens += out.metrics["tokens"]
    sums = {name: value / len(batches) for name, value in sums.items()}
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    loss = sums["loss"]
    finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
    spike = guard.is_spike(loss)
    # The one host sync of a step: never let a non-finite or spiking update reach the weights.
    finite_ok, spike_seen = (bool(v) for v in torch.stack([finite, spike]).tolist())
    if not finite_ok and accelerator.scaler is None:
        raise FloatingPointError(f"step {step}: non-finite loss ({loss.item()}) or gradient norm "
                                 f"({grad_norm.item()}); stopped before the optimizer step")
    if spike_seen:
        message = (f"step {step}: loss {loss.item():.4g} is over {guard.factor:g} x its running mean "
                   f"{guard.mean.item():.4g}")
        if spike_action == "stop":
            raise FloatingPointError(f"{message}; stopped before the optimizer step (trainer.loss_spike_action)")
        optimizer.zero_grad(set_to_none=True)
        accelerator.print(f"{message}; update skipped")
        return StepResult(sums, tokens, grad_norm.detach(), "loss_spike")
    optimizer.step()  # with fp16 the loss scaler skips a step whose gradients overflowed
    skipped = "fp16_overflow" if accelerator.optimizer_step_was_skipped else None
    if skipped is None:
        scheduler.step()
        guard.accept(loss)
    optimizer.zero_grad(set_to_none=True)
    return StepResult(sums, tokens, grad_norm.detach(), skipped)
