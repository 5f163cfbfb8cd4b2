"""Two kinds of checkpoint: resume state and export.

Resume state, `output_dir/checkpoints/step_<N>/`, holds everything needed to continue bit-exactly:
  model.safetensors       the joint module (shared tensors stored once)
  optimizer.pt, scheduler.pt, scaler.pt (fp16 only)
  rng_<rank>.pt, data_<rank>.pt   every process's RNG states and data-stream position
  trainer_state.json      step and counters
  config.yaml, tokenizer/ the resolved config and tokenizer, so a checkpoint exports on its own
It is written to a temporary folder and renamed once complete; older ones are removed only afterwards. Only
safetensors are loaded for weights; everything else with `torch.load(weights_only=True)`.

Export, `export/discriminator/` and `export/generator/`: transformers-format folders (config.json,
model.safetensors) with the tokenizer files, for ElectraForPreTraining / ElectraForMaskedLM.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer

from electra_pretrain.config import ModelConfig
from electra_pretrain.objective import Electra, build_electra
from electra_pretrain.tokenizer import load_tokenizer, save_tokenizer

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d+)$")
STATE_FILE = "trainer_state.json"


class CheckpointMismatch(ValueError):
    """Checkpoints this run cannot continue from (another process count or tokenizer, none readable); never
    skipped silently."""


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(accelerator: Accelerator, checkpoints_dir: Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, data_state: dict, trainer_state: dict,
                    config_yaml: str, tokenizer: Tokenizer, keep_last: int) -> Path:
    """Every process writes its RNG and data state; the main process writes the rest and renames. Collective."""
    final = checkpoints_dir / f"step_{step}"
    tmp = checkpoints_dir / f".tmp_step_{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    torch.save(rng_state(), tmp / f"rng_{rank}.pt")
    torch.save(data_state, tmp / f"data_{rank}.pt")
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
        (tmp / "config.yaml").write_text(config_yaml)
        save_tokenizer(tokenizer, tmp / "tokenizer")
        state = {**trainer_state, "step": step, "num_processes": accelerator.num_processes}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # a rerun reached the same step again: replace it only now that the new one is whole
            shutil.rmtree(final)
        tmp.rename(final)
        for old in complete_checkpoints(checkpoints_dir)[keep_last:]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Renamed (hence complete) checkpoint folders, newest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints_dir.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, tokenizer: Tokenizer) -> tuple[dict, dict]:
    """Restore everything in place; returns (trainer_state, this process's data state). Raises if unreadable."""
    state = json.loads((checkpoint / STATE_FILE).read_text())
    saved_vocab = load_tokenizer(checkpoint / "tokenizer").get_vocab()
    if saved_vocab != tokenizer.get_vocab():
        raise CheckpointMismatch(f"{checkpoint}: trained with a different tokenizer vocabulary "
                                 f"({len(saved_vocab)} tokens) than this run's ({tokenizer.get_vocab_size()} tokens)")
    if state["num_processes"] != accelerator.num_processes:
        raise CheckpointMismatch(f"{checkpoint}: saved by {state['num_processes']} processes, resuming with "
                         f"{accelerator.num_processes}; the data position cannot be carried over")
    device = accelerator.device if accelerator.device.type != "cpu" else "cpu"  # torch.load refuses "cpu:0"
    # Read to CPU; load_state_dict copies into the parameters wherever they live.
    load_model(accelerator.unwrap_model(model), str(checkpoint / "model.safetensors"), strict=True)
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(torch.load(checkpoint / "scaler.pt", weights_only=True))
    rank = accelerator.process_index
    set_rng_state(torch.load(checkpoint / f"rng_{rank}.pt", weights_only=True))
    data_state = torch.load(checkpoint / f"data_{rank}.pt", weights_only=True)
    return state, data_state


def resume_latest(accelerator: Accelerator, checkpoints_dir: Path, model, optimizer, scheduler,
                  tokenizer: Tokenizer):
    """Load the newest checkpoint that reads back whole, skipping unreadable ones with a warning.

    Returns (checkpoint, trainer_state, data_state), or None when there is no checkpoint at all.
    """
    checkpoints = complete_checkpoints(checkpoints_dir)
    for checkpoint in checkpoints:
        try:
            return checkpoint, *load_checkpoint(accelerator, checkpoint, model, optimizer, scheduler, tokenizer)
        except CheckpointMismatch:
            raise
        except Exception as error:  # truncated or corrupt files surface as many exception types
            accelerator.print(f"WARNING: {checkpoint} is unreadable ({type(error).__name__}: {error}); "
                              "trying the previous checkpoint")
    if checkpoints:
        raise CheckpointMismatch(f"{checkpoints_dir}: no checkpoint could be read; move the folder aside to start "
                                 "afresh")
    return None


def export_models(electra: Electra, tokenizer: Tokenizer, out: Path, config_yaml: str | None = None) -> None:
    """Write out/discriminator and out/generator, each a transformers folder with the tokenizer files."""
    max_length = electra.discriminator.config.max_position_embeddings
    for name, model in (("discriminator", electra.discriminator), ("generator", electra.generator)):
        model.save_pretrained(out / name)
        save_tokenizer(tokenizer, out / name, model_max_length=max_length)
    if config_yaml is not None:
        (out / "train_config.yaml").write_text(config_yaml)


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> None:
    """Export a resume checkpoint folder on its own (its config.yaml and tokenizer/ say how to rebuild it)."""
    checkpoint, out = Path(checkpoint), Path(out)
    for needed in ("config.yaml", "tokenizer", "model.safetensors"):
        if not (checkpoint / needed).exists():
            raise FileNotFoundError(f"{checkpoint}: no {needed}; is this an output_dir/checkpoints/step_<N> folder?")
    config_yaml = (checkpoint / "config.yaml").read_text()
    model_config = ModelConfig(**OmegaConf.to_container(OmegaConf.create(config_yaml)["model"]))
    tokenizer = load_tokenizer(checkpoint / "tokenizer")
    electra = build_electra(model_config, tokenizer)
    load_model(electra, str(checkpoint / "model.safetensors"), strict=True)
    export_models(electra, tokenizer, out, config_yaml)
