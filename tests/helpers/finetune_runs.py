"""Running fine-tuning as a user does (finetune.py in a subprocess) or in-process through Hydra's compose API, and
reading what a run leaves behind."""

import json
import subprocess
import sys
from pathlib import Path

from .runs import ENV, ROOT


def finetune(args: list[str], launcher=(sys.executable,), check=True, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*launcher, str(ROOT / "finetune.py"), *args],
        cwd=ROOT,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"finetune.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def finetune_in_process(overrides: list[str]) -> dict:
    """finetune.py's run without a new interpreter (Hydra's compose API); returns the results."""
    from electra_pretrain.finetune.app import finetune_from_overrides

    return finetune_from_overrides(["logging=none", *overrides])


def predictions(out: Path, split: str = "validation") -> list[dict]:
    return [json.loads(line) for line in (out / "predictions" / f"{split}.jsonl").read_text().splitlines()]
