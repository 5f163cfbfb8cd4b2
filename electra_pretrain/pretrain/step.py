"""One optimizer step of the joint module, and the guards that keep a bad step away from the weights.

A step makes no host sync (the GPU runs ahead while the next batch is built): a non-finite loss or gradient norm,
or a loss spike, is found on the device and the update skipped there, as a loss scaler does (the fused AdamW kernel
leaves weights, moments and step count untouched when its `found_inf` is set). `SkipCounts` counts the skips on the
device; the trainer reads them at its next log or save step and stops or reports there. Only fp16, whose loss
scaler accelerate reads every step, and the non-fused optimizers (which cannot skip on the device) sync per step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from electra_pretrain.pretrain.objective import Objective


@dataclass
class StepResult:
    metrics: dict[str, torch.Tensor]  # device scalars, means over the micro-batches (no host sync)
    tokens: torch.Tensor  # non-pad tokens of this process in this step
    grad_norm: torch.Tensor


class LossSpikeGuard:
    """A step whose loss exceeds `factor` x the running mean of accepted losses is a spike (skipped or stopped).

    The mean is an exponential moving average kept on the device; the guard is active from the second accepted step
    on, so that a blow-up in the first steps cannot poison the mean (a fresh ELECTRA starts near ln(V) + 50 ln 2 and
    its loss then falls, so a 10x jump is never noise). `factor=0` turns it off.
    """

    def __init__(self, factor: float, device: torch.device, decay: float = 0.98, warmup: int = 1):
        self.factor, self.decay, self.warmup = factor, decay, warmup
        self.mean = torch.zeros((), device=device)
        self.accepted = torch.zeros((), dtype=torch.long, device=device)

    def is_spike(self, loss: torch.Tensor) -> torch.Tensor:
        """() bool on the device."""
        if self.factor == 0:
            return torch.zeros((), dtype=torch.bool, device=loss.device)
        return (self.accepted >= self.warmup) & (loss > self.factor * self.mean)

    def accept(self, loss: torch.Tensor, accepted: torch.Tensor) -> None:
        """Fold `loss` into the mean if `accepted` (a device bool)."""
        weight = torch.where(self.accepted > 0, self.decay, 0.0)
        updated = self.mean * weight + loss.detach().float() * (1.0 - weight)
        self.mean.copy_(torch.where(accepted, updated, self.mean))
        self.accepted += accepted

    def state_dict(self) -> dict:
        return {"mean": float(self.mean), "accepted": int(self.accepted)}

    def load_state_dict(self, state: dict) -> None:
        self.mean.fill_(state["mean"])
        self.accepted.fill_(state["accepted"])


class SkipCounts:
    """Skipped updates, counted on the device between two reads."""

    KINDS = ("non_finite", "loss_spike", "fp16_overflow")

    def __init__(self, device: torch.device):
        self.counts = torch.zeros(len(self.KINDS), dtype=torch.long, device=device)
        self.in_a_row = torch.zeros((), dtype=torch.long, device=device)  # the current streak of skipped steps
        self.longest = torch.zeros((), dtype=torch.long, device=device)  # the longest streak since the last read

    def add(self, non_finite: torch.Tensor, spike: torch.Tensor, overflow: torch.Tensor) -> None:
        self.counts += torch.stack([non_finite, spike, overflow]).long()
        skipped = non_finite | spike | overflow
        self.in_a_row.copy_((self.in_a_row + 1) * skipped)
        torch.maximum(self.longest, self.in_a_row, out=self.longest)

    def read(self) -> tuple[dict[str, int], int, int]:
        """(skips by kind, longest streak, current streak) since the last read; one host sync."""
        *counts, longest, current = torch.cat([self.counts, self.longest[None], self.in_a_row[None]]).tolist()
        self.counts.zero_()
        self.longest.copy_(self.in_a_row)
        return dict(zip(self.KINDS, counts)), longest, current


def skips_on_device(optimizer) -> bool:
    """Whether the optimizer can skip an update from a device flag (torch's fused Adam/AdamW kernels)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    return bool(inner.defaults.get("fused"))


def train_step(
    model: Objective,
    batches: list[dict[str, torch.Tensor]],
    optimizer,
    scheduler,
    accelerator: Accelerator,
    max_grad_norm: float,
    guard: LossSpikeGuard,
    skips: SkipCounts,
) -> StepResult:
    """One optimizer step over `batches` (the gradient-accumulation micro-batches of this process); the step's
    metrics are the objective's `logged` values, averaged over the micro-batches."""
    logged = accelerator.unwrap_model(model, keep_torch_compile=False).logged
    sums = {name: torch.zeros((), device=accelerator.device) for name in logged}
    tokens = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(batches):
        # Gradients are all-reduced only on the last micro-batch.
        sync = contextlib.nullcontext() if i == len(batches) - 1 else accelerator.no_sync(model)
        with sync:
            out = model(**batch)
            accelerator.backward(out.loss / len(batches))
        scalars = out.scalars()
        for name in logged:
            sums[name] += scalars[name].detach()
        tokens += scalars["tokens"]
    sums = {name: value / len(batches) for name, value in sums.items()}
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    loss = sums["loss"]
    non_finite = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
    spike = guard.is_spike(loss) & ~non_finite
    if accelerator.num_processes > 1 and guard.factor:
        # The loss is this process's own (the gradient norm is already global): every process must take the same
        # decision, or their weights would drift apart. A device all-reduce, not a host sync.
        spike = accelerator.reduce(spike.float(), "max") > 0
    no = torch.zeros((), dtype=torch.bool, device=loss.device)
    if accelerator.scaler is not None:  # fp16: the scaler skips overflowing steps and syncs to report it
        if spike.item():
            overflow = no
        else:
            scale = accelerator.scaler.get_scale()
            optimizer.step()
            # accelerate calls a step skipped only when the optimizer's step never ran; a fused kernel runs with
            # the overflow flag and skips inside, and the scaler then lowers its scale: that is the sign.
            skipped = accelerator.optimizer_step_was_skipped or accelerator.scaler.get_scale() < scale
            overflow = torch.tensor(skipped, device=loss.device)
        skips.add(no, spike, overflow)
        guard.accept(loss, ~(spike | overflow | non_finite))  # a NaN loss never enters the running mean
    else:
        skip = non_finite | spike
        inner = getattr(optimizer, "optimizer", optimizer)
        if skips_on_device(optimizer):
            inner.found_inf = skip.float()
            optimizer.step()
        elif not skip.item():  # foreach / plain kernels take no device flag
            optimizer.step()
        skips.add(non_finite, spike, no)
        guard.accept(loss, ~skip)
    scheduler.step()  # the schedule follows steps taken, skipped or not, as with a loss scaler
    optimizer.zero_grad(set_to_none=True)
    return StepResult(sums, tokens, grad_norm.detach())
