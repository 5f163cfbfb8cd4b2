"""What the training loop measures: device sums over a log interval, throughput, and training FLOPs per token.

Nothing here syncs with the host except `IntervalMetrics.reduce`, once per log step.
"""

from __future__ import annotations

import time

import torch

from electra_pretrain.flops import encoder_forward_flops
from electra_pretrain.model_config import ElectraConfig
from electra_pretrain.pretrain.objective import Electra, MaskedLM, Objective
from electra_pretrain.pretrain.step import StepResult


class IntervalMetrics:
    """Device sums over the steps of one log interval; reduced over processes (one host sync) only when logged."""

    def __init__(self, device: torch.device, log_every: int, names: tuple[str, ...]):
        """`names`: the objective's logged values (Electra.logged, MaskedLM.logged)."""
        self.log_every = log_every
        self.names = names
        self.sums = {name: torch.zeros((), device=device) for name in (*names, "grad_norm")}
        self.tokens = torch.zeros((), device=device)
        self.steps = 0
        self.throughput = Throughput()

    def add(self, result: StepResult) -> None:
        for name in self.names:
            self.sums[name] += result.metrics[name]
        self.sums["grad_norm"] += result.grad_norm.float()
        self.tokens += result.tokens
        self.steps += 1

    def should_log(self, step: int, last: bool) -> bool:
        return last or step % self.log_every == 0

    def reduce(self, accelerator) -> tuple[dict[str, float], int]:
        """(means over the interval and the processes, non-pad tokens of all processes), then start afresh."""
        values = accelerator.reduce(torch.stack([*self.sums.values()]), "mean") / self.steps
        tokens = int(accelerator.reduce(self.tokens, "sum").item())
        record = dict(zip(self.sums, values.tolist()))
        record["tokens_per_s"], record["data_wait_share"] = self.throughput.rate(tokens)
        for value in (*self.sums.values(), self.tokens):
            value.zero_()
        self.steps = 0
        return record, tokens


def train_flops_per_token(model: Objective, seq_len: int, predictions_per_seq: int) -> float:
    """Training FLOPs per position (3 x forward) of the objective's models."""
    if isinstance(model, Electra):
        return electra_train_flops_per_token(
            model.generator.config, model.discriminator.config, seq_len, predictions_per_seq
        )
    assert isinstance(model, MaskedLM)
    return masked_lm_train_flops_per_token(model.model.config, seq_len, predictions_per_seq)


def masked_lm_train_flops_per_token(config: ElectraConfig, seq_len: int, predictions_per_seq: int) -> float:
    """The masked-LM baseline: one encoder, the MLM head (h -> E -> V) only at the masked positions."""
    mlm_head = 2 * (config.hidden_size * config.embedding_size + config.embedding_size * config.vocab_size)
    return 3 * (encoder_forward_flops(config, seq_len) + mlm_head * predictions_per_seq / seq_len)


def electra_train_flops_per_token(
    generator: ElectraConfig, discriminator: ElectraConfig, seq_len: int, predictions_per_seq: int
) -> float:
    """Training FLOPs per token (3 x forward): both encoders, the RTD head on every token, the MLM head only at
    the masked positions (predictions_per_seq of seq_len). ELECTRA-Small at 128: about 70 MFLOP."""
    disc = encoder_forward_flops(discriminator, seq_len) + 2 * discriminator.hidden_size**2
    mlm_head = 2 * (generator.hidden_size * generator.embedding_size + generator.embedding_size * generator.vocab_size)
    gen = encoder_forward_flops(generator, seq_len) + mlm_head * predictions_per_seq / seq_len
    return 3 * (disc + gen)


class Throughput:
    """Tokens per second between calls to `rate` (wall clock; the caller syncs the device first), leaving out what
    is not training (evaluation, saving, the first step's compilation and start-up: `exclude`), and the share of
    the training time spent waiting for the next batch (`waited`)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.excluded_seconds = self.excluded_tokens = self.waiting = 0.0

    def exclude(self, seconds: float, tokens: float = 0.0) -> None:
        self.excluded_seconds += seconds
        self.excluded_tokens += tokens

    def waited(self, seconds: float) -> None:
        self.waiting += seconds

    def rate(self, tokens: float) -> tuple[float, float]:
        """(tokens per second, share of the time spent waiting for data) since the last call."""
        now = time.perf_counter()
        seconds = max(now - self.start - self.excluded_seconds, 1e-9)
        rate = max(tokens - self.excluded_tokens, 0.0) / seconds
        share = min(self.waiting / seconds, 1.0)
        self.start, self.excluded_seconds, self.excluded_tokens, self.waiting = now, 0.0, 0.0, 0.0
        return rate, share
