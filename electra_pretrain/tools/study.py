"""`electra-pretrain study`: does pretraining pay on a labelled task when labels are scarce?

For a task and its unlabeled text (by default the text of its training split, labels dropped; its validation and
test text are never seen), in OUT:
  1. pretrain/rtd   the ELECTRA recipe (`--pretrain`, default experiment=cpu_domain) on that text;
  2. pretrain/mlm   the masked-LM baseline on the same text and tokenizer, with the FLOPs the RTD run spent
                    (trainer.max_flops), so the two compare at equal compute;
  3. finetune/<start>/<labels>/...  for each start (rtd, mlm, and random weights of the same shape) and each label
     count (a seeded stratified subsample, task.max_train_examples; "all" for the whole training split): a search
     over `--lrs` on the first `--search-seeds` seeds, chosen on the validation set, then every seed at that rate;
  4. study.json, study.md (the main metric on the test split, else validation: median [min, max] over the seeds,
     and the chosen rate) and study.png (the metric against the label count, log x, a line per start).
Every step is skipped when its outputs exist, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

STARTS = ("rtd", "mlm", "random")
DEFAULT_LABELS = ("100", "300")
FULL_LABELS = ("50", "100", "300", "1000", "all")
# Small encoders fine-tune best at higher rates than BERT's 2e-5..5e-5: on the spam task the random-weights start
# chose 3e-3 and the pretrained ones 1e-3 (docs/pretraining-recipe.md).
DEFAULT_LRS = (3e-4, 1e-3, 3e-3)


@dataclass
class StudyConfig:
    out: Path
    task_overrides: list[str]  # finetune.py overrides that name the task and its files (task=spam ...)
    text: list[str] = field(default_factory=list)  # unlabeled text files; empty: the task's training split
    pretrain_overrides: list[str] = field(default_factory=lambda: ["experiment=cpu_domain"])
    finetune_overrides: list[str] = field(default_factory=list)
    starts: tuple[str, ...] = STARTS
    labels: tuple[str, ...] = DEFAULT_LABELS
    seeds: tuple[int, ...] = (0, 1, 2)
    lrs: tuple[float, ...] = DEFAULT_LRS
    search_seeds: int = 1  # the lr search runs on the first seeds only (all of them with --full)

    def __post_init__(self) -> None:
        unknown = [s for s in self.starts if s not in STARTS]
        if unknown:
            raise ValueError(f"study: unknown start(s) {unknown}; choose from {list(STARTS)}")
        for count in self.labels:
            if count != "all" and not (count.isdigit() and int(count) > 0):
                raise ValueError(f"study: label count {count!r} is neither a positive number nor 'all'")
        if not 1 <= self.search_seeds <= len(self.seeds):
            raise ValueError(f"study: --search-seeds must be between 1 and the {len(self.seeds)} seeds")


def epochs_for(labels: int) -> int:
    """Passes over a subsample of `labels` examples: enough to see about 2000 examples, 3 to 20."""
    return min(20, max(3, math.ceil(2000 / labels)))


def run_study(config: StudyConfig) -> dict:
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    task = task_config(config.task_overrides)
    text = config.text or [str(unlabeled_text(task, out / "unlabeled"))]
    rtd = pretrain(config, text, "rtd", [])
    budget = json.loads((rtd / "metrics.jsonl").read_text().splitlines()[-1])["flops"]
    mlm = None
    if "mlm" in config.starts:  # the RTD run's tokenizer, as its export carries it; its FLOPs as the budget
        mlm = pretrain(
            config,
            text,
            "mlm",
            [
                "model.objective=mlm",
                f"tokenizer.path={rtd / 'export' / 'discriminator'}",
                f"trainer.max_flops={budget}",
            ],
        )
    train_size = len(task_examples(task, "train"))
    cells: dict[str, dict[str, dict]] = {}
    for start in config.starts:
        model = (mlm if start == "mlm" else rtd) / "export"  # type: ignore[operator]
        for count in config.labels:
            labels = train_size if count == "all" else min(int(count), train_size)
            cells.setdefault(start, {})[count] = fine_tune_cell(config, start, model, labels, out)
    report = {
        "task": task.name,
        "metric": task.metrics[0],
        "split": "test" if task.test_files else "validation",
        "pretraining_flops": budget,
        "train_examples": train_size,
        "text": text,
        "pretrain_overrides": config.pretrain_overrides,
        "cells": cells,
    }
    (out / "study.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "study.md").write_text(markdown_table(report))
    plot_study(report, out / "study.png")
    return report


def task_config(overrides: list[str]):
    """The TaskConfig the overrides compose (finetune.py's configs, validated)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from electra_pretrain.finetune.app import CONFIG_DIR
    from electra_pretrain.finetune.config import FinetuneConfig

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("finetune", overrides=["model_path=unused", *overrides])
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, FinetuneConfig)
    return config.task


def task_examples(task, split: str):
    from electra_pretrain.finetune.data import read_task
    from electra_pretrain.finetune.kinds import task_kind

    examples, _ = read_task(task_kind(task), task)
    return examples[split]


def unlabeled_text(task, folder: Path) -> Path:
    """The training split's text, one example per line (labels dropped): what pretraining may read."""
    path = folder / "train.txt"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(" ".join(e.texts).split()) for e in task_examples(task, "train")]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8")
        tmp.replace(path)
    return path


def pretrain(config: StudyConfig, text: list[str], name: str, extra: list[str]) -> Path:
    """Pretrain (or resume, or find finished) OUT/pretrain/<name>; returns its folder."""
    folder = config.out / "pretrain" / name
    if not (folder / "export").is_dir():
        files = ",".join(text)
        command = [
            sys.executable,
            "-m",
            "electra_pretrain",
            "train",
            *config.pretrain_overrides,
            "data=text",
            f"data.files=[{files}]",
            "data.document_boundary=line",
            *extra,
            f"output_dir={folder}",
        ]
        print(f"study: pretraining {name}: {' '.join(command[2:])}", flush=True)
        if subprocess.run(command).returncode != 0:
            raise ChildProcessError(f"study: pretraining {name} failed (see its log above); rerun the study to resume")
    return folder


def fine_tune(
    config: StudyConfig, start: str, model: Path, labels: int, lr: float, seeds: list[int], folder: Path
) -> dict:
    """One fine-tuning run (or its results.json when it finished before)."""
    from electra_pretrain.finetune.app import finetune_from_overrides

    if (folder / "results.json").is_file():
        return json.loads((folder / "results.json").read_text())
    overrides = [
        *config.task_overrides,
        f"model_path={model}",
        f"task.max_train_examples={labels}",
        f"trainer.epochs={epochs_for(labels)}",
        f"optim.lr={lr}",
        f"seeds=[{','.join(map(str, seeds))}]",
        "trainer.save_model=false",
        "logging=none",
        *config.finetune_overrides,
        f"output_dir={folder}",
    ]
    if start == "random":
        overrides.append("model_init=random")
    print(f"study: fine-tuning {start}, {labels} labels, lr {lr:g}, seeds {seeds}", flush=True)
    results = finetune_from_overrides(overrides)
    if not results:
        raise ChildProcessError("study: fine-tuning was stopped; rerun the study to resume")
    return results


def seed_score(row: dict, metric: str) -> float:
    tests = row.get("test", {})
    return (tests["test"] if "test" in tests else row["validation"])[metric]


def fine_tune_cell(config: StudyConfig, start: str, model: Path, labels: int, out: Path) -> dict:
    """The lr search on the first seeds (validation), then every seed at the chosen rate; the cell's scores."""
    base = out / "finetune" / start / str(labels)
    search_seeds, seeds = list(config.seeds[: config.search_seeds]), list(config.seeds)
    searched = {lr: fine_tune(config, start, model, labels, lr, search_seeds, base / f"lr{lr:g}") for lr in config.lrs}
    metric = next(iter(searched.values()))["metric"]
    lr = max(config.lrs, key=lambda rate: searched[rate]["validation"][metric])
    rows = list(searched[lr]["per_seed"])
    rest = [seed for seed in seeds if seed not in search_seeds]
    if rest:
        rows += fine_tune(config, start, model, labels, lr, rest, base / f"lr{lr:g}-seeds")["per_seed"]
    scores = [seed_score(row, metric) for row in rows]
    at_edge = len(config.lrs) > 1 and lr in (min(config.lrs), max(config.lrs))
    if at_edge:  # the best rate may lie outside the grid: this start may be under-tuned
        print(
            f"notice: {start}, {labels} labels: the chosen lr {lr:g} is at the edge of the grid {list(config.lrs)}; "
            "widen --lrs to be sure this start is not under-tuned",
            flush=True,
        )
    return {
        "labels": labels,
        "lr": lr,
        "search": {f"{rate:g}": searched[rate]["validation"][metric] for rate in config.lrs},
        "lr_at_grid_edge": at_edge,
        "seeds": [row["seed"] for row in rows],
        "scores": scores,
        "median": statistics.median(scores),
        "min": min(scores),
        "max": max(scores),
        "validation": [row["validation"][metric] for row in rows],
    }


def markdown_table(report: dict) -> str:
    counts = list(next(iter(report["cells"].values())))
    header = (
        "| start | "
        + " | ".join(f"{c} labels" if c != "all" else f"all ({report['train_examples']})" for c in counts)
        + " |"
    )
    lines = [
        f"{report['task']}: {report['metric']} on the {report['split']} split, median [min, max] over the seeds "
        f"(the lr chosen on validation); pretraining {report['pretraining_flops']:.3g} FLOPs each",
        "",
        header,
        "|---|" + "---|" * len(counts),
    ]
    for start, row in report["cells"].items():
        cells = [
            f"{row[c]['median']:.3f} [{row[c]['min']:.3f}, {row[c]['max']:.3f}] (lr {row[c]['lr']:g})" for c in counts
        ]
        lines.append(f"| {start} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_study(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for start, row in report["cells"].items():
        cells = sorted(row.values(), key=lambda cell: cell["labels"])
        x = [cell["labels"] for cell in cells]
        y = [cell["median"] for cell in cells]
        spread = [[cell["median"] - cell["min"] for cell in cells], [cell["max"] - cell["median"] for cell in cells]]
        ax.errorbar(
            x,
            y,
            yerr=spread,
            marker="o",
            capsize=3,
            label={"rtd": "ELECTRA (RTD)", "mlm": "masked LM", "random": "random weights"}[start],
        )
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(f"{report['metric']} ({report['split']})")
    ax.set_title(f"{report['task']}: pretraining at {report['pretraining_flops']:.2g} FLOPs each")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
