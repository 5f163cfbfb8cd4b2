"""Running train.py as a user does (a subprocess on a small corpus) and reading what a run leaves behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
    "OMP_NUM_THREADS": "1",
}
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2")


def overrides(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "model=tiny",
        "data=text",
        f"data.files=[{corpus}/*.txt]",
        "data.max_seq_length=64",
        f"tokenizer.path={corpus.parent / 'tokenizer'}",
        "trainer.global_batch_size=8",
        "trainer.max_steps=12",
        "trainer.save_every=4",
        "trainer.log_every=1",
        "optim.warmup_steps=3",
        "optim.lr=2e-3",
        "logging=none",
        f"output_dir={out}",
        *extra,
    ]


def train(args: list[str], launcher=(sys.executable,), check=True, env=None, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*launcher, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"train.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def start(args: list[str], **kwargs) -> subprocess.Popen:
    """train.py in the background, in its own process group (so a test can signal the whole job, as SLURM does)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out: Path) -> dict[int, tuple]:
    """Per-step (loss, mlm_loss, rtd_loss)."""
    return {r["step"]: (r["loss"], r["mlm_loss"], r["rtd_loss"]) for r in metrics(out)}


def assert_same_exports(a: Path, b: Path) -> None:
    for name in ("discriminator", "generator"):
        wa, wb = (load_file(p / "export" / name / "model.safetensors") for p in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
