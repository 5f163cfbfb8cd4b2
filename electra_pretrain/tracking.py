"""Metrics out of the loop: wandb (or nothing), always metrics.jsonl, and model FLOPs per token for MFU.

Only the main process holds a real tracker; the others get the same object with nothing to write to, so the
training loop never asks which rank it is on.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from electra_pretrain.modeling import ElectraConfig
from electra_pretrain.step import METRICS, StepResult

if TYPE_CHECKING:  # config.py reads BACKENDS and WANDB_MODES from here
    from electra_pretrain.config import LoggingConfig

BACKENDS = ("wandb", "none")  # metrics.jsonl is always written
WANDB_MODES = ("offline", "online", "disabled")
METRICS_FILE = "metrics.jsonl"


class Tracker:
    def __init__(self, config: LoggingConfig, output_dir: Path, run_config: dict, enabled: bool,
                 resumed_step: int = 0):
        """`resumed_step`: rows after it in an existing metrics.jsonl belong to steps that will be trained again."""
        self.enabled = enabled
        self.run = None
        self.jsonl = None
        self.start = time.time()
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / METRICS_FILE
        truncate_metrics(path, resumed_step)
        self.jsonl = open(path, "a", buffering=1)
        if config.backend == "wandb" and config.mode != "disabled":
            import wandb

            # A stable id per output_dir, so a resumed run continues the same wandb run. No key is written here:
            # online mode uses the user's own `wandb login`.
            id_file = output_dir / "wandb_run_id"
            if not id_file.exists():
                id_file.write_text(uuid.uuid4().hex[:12])
            self.run = wandb.init(project=config.project, name=config.run_name, dir=str(output_dir),
                                  mode=config.mode, config=run_config, id=id_file.read_text().strip(),
                                  resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        # Wall-clock time on every row, so a log read later says when each step ran and how long the run took.
        metrics = {**metrics, "time": round(time.time(), 3), "elapsed_s": round(time.time() - self.start, 3)}
        # One write of one whole line, so a kill can cut at most the last line (truncate_metrics drops it).
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.run is not None:
            self.run.finish()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the whole rows of steps up to `last_step`; drop later ones and a line cut short by a kill."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= last_step:
            kept.append(line + "\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)


class IntervalMetrics:
    """Device sums over the steps of one log interval; reduced over processes (one host sync) only when logged."""

    def __init__(self, device: torch.device, log_every: int):
        self.log_every = log_every
        self.sums = {name: torch.zeros((), device=device) for name in (*METRICS, "grad_norm")}
        self.tokens = torch.zeros((), device=device)
        self.steps = 0
        self.throughput = Throughput()

    def add(self, result: StepResult) -> None:
        for name in METRICS:
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
        record["tokens_per_s"] = self.throughput.rate(tokens)
        for value in (*self.sums.values(), self.tokens):
            value.zero_()
        self.steps = 0
        return record, tokens


# Dense bf16 / fp16 tensor-core peaks (no sparsity) of common GPUs, from the vendors' data sheets.
GPU_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "V100": 125e12}


def gpu_peak_flops(precision: str) -> tuple[float, str] | None:
    """(peak FLOP/s, source) of this process's CUDA device from its data sheet (fp32: half the tensor-core
    figure), or None when the device is unknown or there is none."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in GPU_PEAK_FLOPS.items():
        if key in name:
            return (value if precision != "no" else value / 2), f"{name} data sheet"
    return None


def encoder_forward_flops(config: ElectraConfig, seq_len: int) -> float:
    """Matmul FLOPs per token of one encoder forward (2 per multiply-add), attention scores included."""
    h, i = config.hidden_size, config.intermediate_size
    per_layer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * seq_len * h  # QKV + output, FFN; QK^T and AV
    project = 2 * config.embedding_size * h if config.embedding_size != h else 0
    return config.num_hidden_layers * per_layer + project


def electra_train_flops_per_token(generator: ElectraConfig, discriminator: ElectraConfig, seq_len: int,
                                  predictions_per_seq: int) -> float:
    """Training FLOPs per token (3 x forward): both encoders, the RTD head on every token, the MLM head only at
    the masked positions (predictions_per_seq of seq_len). ELECTRA-Small at 128: about 70 MFLOP."""
    disc = encoder_forward_flops(discriminator, seq_len) + 2 * discriminator.hidden_size ** 2
    mlm_head = 2 * (generator.hidden_size * generator.embedding_size + generator.embedding_size * generator.vocab_size)
    gen = encoder_forward_flops(generator, seq_len) + mlm_head * predictions_per_seq / seq_len
    return 3 * (disc + gen)


class Throughput:
    """Tokens per second between calls to `rate` (wall clock; the caller syncs the device first)."""

    def __init__(self):
        self.start = time.perf_counter()

    def rate(self, tokens: float) -> float:
        now = time.perf_counter()
        rate = tokens / max(now - self.start, 1e-9)
        self.start = now
        return rate
