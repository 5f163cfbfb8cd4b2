"""Metrics out of a run: wandb (or nothing) and, always, metrics.jsonl; the `logging` config both apps share.

Only the main process holds a real tracker; the others get the same object with nothing to write to, so a training
loop never asks which rank it is on.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from electra_pretrain.config_base import check_choice

BACKENDS = ("wandb", "none")  # metrics.jsonl is always written
WANDB_MODES = ("offline", "online", "disabled")
METRICS_FILE = "metrics.jsonl"


@dataclass
class LoggingConfig:
    backend: str = "wandb"  # wandb | none (metrics.jsonl is always written)
    project: str = "electra-pretrain"
    run_name: str | None = None
    mode: str = "offline"  # offline | online | disabled (wandb); online needs your own `wandb login`

    def __post_init__(self) -> None:
        check_choice("logging.backend", self.backend, BACKENDS)
        check_choice("logging.mode", self.mode, WANDB_MODES)


def register_logging_configs() -> None:
    """The `logging` group of both apps: `logging=wandb` (offline unless logging.mode=online; files land in
    <output_dir>/wandb) and `logging=none` (only <output_dir>/metrics.jsonl and the console)."""
    store = ConfigStore.instance()
    store.store(group="logging", name="wandb", node=LoggingConfig(backend="wandb"))
    store.store(group="logging", name="none", node=LoggingConfig(backend="none"))


class Tracker:
    def __init__(self, config: LoggingConfig, output_dir: Path, run_config: dict, enabled: bool, resumed_step: int = 0):
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
            mode: Any = config.mode  # one of WANDB_MODES, checked by LoggingConfig
            self.run = wandb.init(
                project=config.project,
                name=config.run_name,
                dir=str(output_dir),
                mode=mode,
                config=run_config,
                id=id_file.read_text().strip(),
                resume="allow",
            )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        # Wall-clock time on every row, so a log read later says when each step ran and how long the run took.
        metrics = {**metrics, "time": round(time.time(), 3), "elapsed_s": round(time.time() - self.start, 3)}
        # One write of one whole line, so a kill can cut at most the last line (truncate_metrics drops it).
        assert self.jsonl is not None
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
