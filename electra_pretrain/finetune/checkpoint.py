"""Resuming an interrupted fine-tuning run: `output_dir/.resume/` holds what a rerun of the same command needs.

  config.yaml        the run's resolved config; a rerun with another config starts afresh (the log says so)
  finished.json      the summaries of the seeds that finished, and which of them is kept so far
  kept.safetensors   the weights of that kept seed (for output_dir/model at the end)
  current/           the seed that was stopped: model.safetensors, optimizer.pt, scheduler.pt, rng_<rank>.pt, loop.json
                     (optimizer step, epoch, batches of the epoch already taken, the sampler's generator at the epoch
                     start, evaluations so far, early-stopping count); best.safetensors with trainer.keep=best
Every file is written to a temporary name and renamed, so a kill while saving leaves the previous state whole. The
folder goes when the run finishes. Weights load from safetensors; the rest with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

RESUME_DIR = ".resume"


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".tmp_{path.name}")
    write(tmp)
    tmp.replace(path)


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    _write_atomically(path, lambda tmp: save_file(tensors, str(tmp)))


def rng_state() -> dict[str, Any]:
    np_state = cast(tuple, np.random.get_state())  # the legacy tuple: (kind, keys, pos, has_gauss, gauss)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class ResumeState:
    """The `.resume/` folder of one output_dir (only the main process writes it)."""

    def __init__(self, output_dir: Path, config_yaml: str):
        self.folder = output_dir / RESUME_DIR
        self.config_yaml = config_yaml

    def matches(self) -> bool:
        """Whether the folder holds a stopped run of this very config."""
        saved = self.folder / "config.yaml"
        return saved.is_file() and saved.read_text() == self.config_yaml

    def start(self) -> None:
        """A fresh run: forget any earlier state, remember this config."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        _write_atomically(self.folder / "config.yaml", lambda tmp: tmp.write_text(self.config_yaml))

    # -- finished seeds
    def finished(self) -> tuple[list[dict], int | None]:
        """(the finished seeds' summaries, the kept seed) from finished.json."""
        path = self.folder / "finished.json"
        if not path.is_file():
            return [], None
        saved = json.loads(path.read_text())
        return saved["seeds"], saved["kept_seed"]

    def seed_finished(self, summaries: list[dict], kept_seed: int, kept_state: dict[str, torch.Tensor] | None) -> None:
        """Record the seeds finished so far; `kept_state` when the kept seed changed to the one just finished."""
        if kept_state is not None:
            save_weights(kept_state, self.folder / "kept.safetensors")
        record = json.dumps({"seeds": summaries, "kept_seed": kept_seed}, indent=2)
        _write_atomically(self.folder / "finished.json", lambda tmp: tmp.write_text(record))
        shutil.rmtree(self.folder / "current", ignore_errors=True)

    def kept_weights(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.folder / "kept.safetensors"))

    # -- the seed in progress
    def save_current(
        self,
        accelerator: Accelerator,
        seed: int,
        model_state: dict[str, torch.Tensor],
        optimizer_state: dict,
        scheduler_state: dict,
        loop: dict,
        best_state: dict[str, torch.Tensor] | None,
    ) -> None:
        """Collective: every process writes its random state, the main process the rest, then one rename."""
        current, tmp = self.folder / "current", self.folder / ".tmp_current"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        accelerator.wait_for_everyone()
        torch.save(rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
        if accelerator.is_main_process:
            save_file(
                {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors")
            )
            if best_state is not None:
                save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
            torch.save(optimizer_state, tmp / "optimizer.pt")
            torch.save(scheduler_state, tmp / "scheduler.pt")
            (tmp / "loop.json").write_text(
                json.dumps({"seed": seed, "processes": accelerator.num_processes, **loop}, indent=2)
            )
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(current, ignore_errors=True)
            tmp.rename(current)
        accelerator.wait_for_everyone()

    def current_step(self, seed: int) -> int:
        """The optimizer step at which `seed` was stopped (0 when it was not)."""
        path = self.folder / "current" / "loop.json"
        if not path.is_file():
            return 0
        loop = json.loads(path.read_text())
        return loop["step"] if loop["seed"] == seed else 0

    def current(self, seed: int, accelerator: Accelerator) -> dict | None:
        """The stopped seed's saved state when it is `seed` and was saved by as many processes: {"model",
        "optimizer", "scheduler", "rng" (this process's), "loop", "best"}."""
        folder = self.folder / "current"
        if not (folder / "loop.json").is_file():
            return None
        loop = json.loads((folder / "loop.json").read_text())
        if loop["seed"] != seed:
            return None
        if loop["processes"] != accelerator.num_processes:
            raise ValueError(
                f"{folder}: seed {seed} was stopped with {loop['processes']} process(es); resume it with "
                f"as many (this run has {accelerator.num_processes}), or delete {self.folder} to start "
                "the run afresh"
            )
        best = folder / "best.safetensors"
        return {
            "model": load_file(str(folder / "model.safetensors")),
            "optimizer": torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True),
            "scheduler": torch.load(folder / "scheduler.pt", weights_only=True),
            "rng": torch.load(folder / f"rng_{accelerator.process_index}.pt", weights_only=True),
            "loop": loop,
            "best": load_file(str(best)) if best.is_file() else None,
        }

    def finish(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
