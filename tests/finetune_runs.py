"""Running fine-tuning as a user does (finetune.py in a subprocess) or in-process through Hydra's compose API, and
reading what a run leaves behind."""

import json
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from .runs import ENV, ROOT


def finetune(args: list[str], launcher=(sys.executable,), check=True, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run([*launcher, str(ROOT / "finetune.py"), *args], cwd=ROOT, env={**ENV, **(env or {})},
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"finetune.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def finetune_in_process(overrides: list[str]) -> dict:
    """The same path as finetune.py's main, without a new interpreter: compose, validate, run; returns results."""
    from electra_pretrain.config import check_known_keys
    from electra_pretrain.finetune import run_finetuning
    from electra_pretrain.finetune_config import FinetuneConfig
    from electra_pretrain.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("finetune", overrides=["logging=none", *overrides])
    check_known_keys(cfg, OmegaConf.structured(FinetuneConfig))
    return run_finetuning(OmegaConf.to_object(cfg), OmegaConf.to_yaml(cfg, resolve=True))


def predictions(out: Path, split: str = "validation") -> list[dict]:
    return [json.loads(line) for line in (out / "predictions" / f"{split}.jsonl").read_text().splitlines()]
