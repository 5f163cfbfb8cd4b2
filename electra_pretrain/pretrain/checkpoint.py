"""Resume state: the `Checkpointer` decides when to save, writes whole checkpoints or none, and finds the newest
intact one on resume.

`output_dir/checkpoints/step_<N>/` holds everything needed to continue bit-exactly:
  model.safetensors       the joint module (shared tensors stored once)
  optimizer.pt, scheduler.pt, scaler.pt (fp16 only)
  rng_<rank>.pt, data_<rank>.pt   every process's RNG states and dataloader state (every worker's stream position)
  config.yaml, tokenizer/ the resolved config and tokenizer, so a checkpoint exports on its own
  trainer_state.json      the loop's state, the process count and a sha256 of every other file (written last)
A checkpoint is written to `.tmp_step_<N>`, every file and the folder are fsynced, and only then is it renamed;
older ones are removed only afterwards. A write that fails (a full disk) removes its partial folder and stops the
run with one line, the previous checkpoint intact. Weights that are not finite are never written. On resume each
checkpoint's checksums are verified and a damaged one is passed over, with a warning, for the one before it.
Weights are loaded from safetensors only; everything else with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer

from electra_pretrain.files import checksums, fsync, fsync_tree, verify_checksums
from electra_pretrain.pretrain.config import TrainerConfig
from electra_pretrain.run_lock import RunLock
from electra_pretrain.tokenizer import load_tokenizer, save_tokenizer

STEP_DIR = re.compile(r"^step_(\d+)$")
STATE_FILE = "trainer_state.json"


class CheckpointMismatch(ValueError):
    """Checkpoints this run cannot continue from (another tokenizer, none readable); never skipped silently."""


class CheckpointDamaged(Exception):
    """A checkpoint whose files do not match their recorded checksums."""


@dataclass
class Resumed:
    path: Path
    train_state: dict  # TrainState.state_dict() as saved
    num_processes: int  # of the run that saved it
    data_state: dict | None  # this process's dataloader state; None when the process count changed

    def data_states(self) -> list[dict]:
        """The dataloader states of every process that saved the checkpoint, by rank."""
        return [torch.load(self.path / f"data_{rank}.pt", weights_only=True) for rank in range(self.num_processes)]


def rng_state() -> dict:
    np_state = cast(tuple, np.random.get_state())  # the legacy tuple: (kind, keys, pos, has_gauss, gauss)
    state: dict[str, object] = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
    }
    if torch.cuda.is_available():  # this process's device only: a resume may see other devices, or fewer
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    if torch.cuda.is_available():
        cuda = saved_cuda_state(state.get("cuda"), torch.cuda.current_device())
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def saved_cuda_state(saved, device: int):
    """This process's CUDA RNG state in a checkpoint: saved as one state, or (checkpoints before that) one per
    device visible then, of which this device's if it was among them."""
    if isinstance(saved, (list, tuple)):
        return saved[device] if device < len(saved) else None
    return saved


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def checkpoint_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` but the state file, by relative path."""
    return checksums(folder, leave_out=(STATE_FILE,))


def verify_checkpoint(folder: Path) -> None:
    """Every file of a checkpoint folder matches the checksums its trainer_state.json records."""
    state = folder / STATE_FILE
    if not state.is_file():
        raise ValueError(
            f"{folder}: no {STATE_FILE}, so its files cannot be verified (an incomplete copy?); "
            "--no-verify reads it anyway"
        )
    try:
        recorded = json.loads(state.read_text())["checksums"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{state}: not a checkpoint state this version reads (damaged?)") from None
    verify_checksums(folder, recorded, str(state))


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Renamed (hence complete) checkpoint folders, newest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints_dir.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def weights_are_finite(model: torch.nn.Module) -> bool:
    return bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())


class Checkpointer:
    """Owns `output_dir/checkpoints`: the save policy, the run-folder lock, checksums and the fallback on resume."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, config: TrainerConfig):
        self.accelerator = accelerator
        self.folder = output_dir / "checkpoints"
        self.config = config
        self.pending = False  # a save postponed past a loss spike
        # Only the main process writes, so only it needs the folder to itself.
        self.lock = RunLock(output_dir) if accelerator.is_main_process else None

    def due(self, step: int, force: bool) -> bool:
        """Every `save_every` steps, when forced, or while a save waits for a healthy step."""
        return force or self.pending or step % self.config.save_every == 0

    def should_save(self, step: int, force: bool, healthy: bool) -> bool:
        """Due (see `due`) and healthy: a save that falls on a skipped step (a loss spike) waits for the next
        applied one, so a checkpoint is never taken right after an update was refused."""
        due = self.due(step, force)
        self.pending = due and not healthy
        return due and healthy

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        data_state: dict,
        train_state: dict,
        config_yaml: str,
        tokenizer: Tokenizer,
    ) -> Path:
        """Write step_<step> whole or not at all. Collective: every process calls it."""
        accelerator = self.accelerator
        unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)  # keys without _orig_mod.
        if not weights_are_finite(unwrapped):
            raise FloatingPointError(
                f"step {step}: the weights hold non-finite values; not saving a checkpoint "
                f"(the newest good one stays {self._newest_name()})"
            )
        final, tmp = self.folder / f"step_{step}", self.folder / f".tmp_step_{step}"
        try:
            if accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            accelerator.wait_for_everyone()
            rank = accelerator.process_index
            torch.save(rng_state(), tmp / f"rng_{rank}.pt")
            torch.save(data_state, tmp / f"data_{rank}.pt")
            if accelerator.is_main_process:
                save_model(unwrapped, str(tmp / "model.safetensors"), metadata={"format": "pt"})
                torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
                if accelerator.scaler is not None:
                    torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
                (tmp / "config.yaml").write_text(config_yaml)
                save_tokenizer(tokenizer, tmp / "tokenizer")
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                state = {
                    "step": step,
                    "num_processes": accelerator.num_processes,
                    "train_state": train_state,
                    "checksums": checkpoint_checksums(tmp),
                }
                (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
                fsync_tree(tmp)
        except Exception as error:  # a full disk surfaces as OSError, or as torch's / safetensors' own errors
            if accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(
                f"writing checkpoint {final} failed ({_one_line(error)}); removed the partial folder, "
                f"the newest complete checkpoint is {self._newest_name()}"
            ) from None
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if final.exists():  # a rerun reached the same step again: replace it only now that the new one is whole
                shutil.rmtree(final)
            tmp.rename(final)
            fsync(self.folder)
            for old in complete_checkpoints(self.folder)[self.config.keep_last :]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
        return final

    def _newest_name(self) -> str:
        found = complete_checkpoints(self.folder)
        return str(found[0]) if found else "none"

    def candidates(self) -> list[Path]:
        """Checkpoints to try, newest first; `trainer.resume_from` names one (a path or step_<N>) instead."""
        choice = self.config.resume_from
        if choice is None:
            return complete_checkpoints(self.folder)
        path = Path(choice) if os.sep in choice else self.folder / choice
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(
                f"trainer.resume_from={choice!r}: {path} is not a checkpoint folder "
                f"(found: {[p.name for p in complete_checkpoints(self.folder)]})"
            )
        return [path]

    def resume(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, tokenizer: Tokenizer
    ) -> Resumed | None:
        """Load the newest checkpoint whose files are intact, passing over damaged ones with a warning."""
        checkpoints = self.candidates()
        for checkpoint in checkpoints:
            try:
                return self._load(checkpoint, model, optimizer, scheduler, tokenizer)
            except CheckpointMismatch:
                raise
            except Exception as error:  # damaged, truncated or unreadable files surface as many exception types
                self.accelerator.print(
                    f"WARNING: {checkpoint} is damaged or unreadable ({_one_line(error)}); "
                    "trying the previous checkpoint"
                )
        if checkpoints:
            raise CheckpointMismatch(
                f"{self.folder}: no checkpoint could be read; move the folder aside to start afresh"
            )
        return None

    def _load(self, checkpoint: Path, model, optimizer, scheduler, tokenizer: Tokenizer) -> Resumed:
        accelerator = self.accelerator
        state = json.loads((checkpoint / STATE_FILE).read_text())
        try:
            verify_checksums(checkpoint, state["checksums"], STATE_FILE)
        except ValueError as error:
            raise CheckpointDamaged(str(error)) from None
        saved = load_tokenizer(checkpoint / "tokenizer").get_vocab()
        ours = tokenizer.get_vocab()
        if saved != ours:
            moved = sum(saved.get(token) != index for token, index in ours.items())
            raise CheckpointMismatch(
                f"{checkpoint}: trained with another tokenizer ({len(saved)} tokens; this run's "
                f"has {len(ours)}, {moved} of them with a different or no id there)"
            )
        device = accelerator.device if accelerator.device.type != "cpu" else "cpu"  # torch.load refuses "cpu:0"
        # Read to CPU; load_state_dict copies into the parameters wherever they live.
        load_model(
            accelerator.unwrap_model(model, keep_torch_compile=False),
            str(checkpoint / "model.safetensors"),
            strict=True,
        )
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True))
        scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        if accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(torch.load(checkpoint / "scaler.pt", weights_only=True))
        if state["num_processes"] != accelerator.num_processes:  # the caller re-seeds and re-deals the data
            return Resumed(checkpoint, state["train_state"], state["num_processes"], None)
        rank = accelerator.process_index
        set_rng_state(torch.load(checkpoint / f"rng_{rank}.pt", weights_only=True))
        data_state = torch.load(checkpoint / f"data_{rank}.pt", weights_only=True)
        return Resumed(checkpoint, state["train_state"], state["num_processes"], data_state)

    def newest_tokenizer(self) -> Path | None:
        """The tokenizer copy of the newest checkpoint, to restore a damaged run tokenizer from."""
        for checkpoint in complete_checkpoints(self.folder):
            if (checkpoint / "tokenizer" / "tokenizer.json").is_file():
                return checkpoint / "tokenizer"
        return None

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
