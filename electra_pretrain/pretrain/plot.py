"""Curves of one or more runs from their metrics.jsonl, as one PNG (matplotlib, headless Agg backend).

Panels: total loss; MLM loss and RTD loss (training, and held-out as dashed lines with markers); accuracies;
held-out AUCs; the representation figures; learning rate; throughput. Several runs are overlaid, one colour per run
(labelled with the run's folder name), against steps, tokens or training FLOPs (`--x flops` puts runs of different
objectives, ELECTRA and the masked-LM baseline, on one compute axis).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from electra_pretrain.tracking import METRICS_FILE

X_AXES = ("step", "tokens", "flops")
# (title, [(metric, label)]): training metrics are drawn solid, "eval/" ones dashed with markers.
PANELS = (
    ("loss (RTD: 1 x MLM + 50 x RTD)", [("loss", "train")]),
    ("MLM loss", [("mlm_loss", "train"), ("eval/mlm_loss", "held-out")]),
    ("RTD loss", [("rtd_loss", "train"), ("eval/rtd_loss", "held-out")]),
    (
        "accuracy",
        [
            ("gen_accuracy", "MLM train"),
            ("mlm_accuracy", "MLM train"),
            ("eval/mlm_accuracy", "MLM held-out"),
            ("disc_accuracy", "RTD train"),
            ("eval/disc_accuracy", "RTD held-out"),
        ],
    ),
    (
        "held-out discriminator AUC",
        [("eval/disc_auc", "generator's replacements"), ("eval/random_replacement_auc", "random replacements")],
    ),
    ("held-out token states: effective rank", [("eval/effective_rank", "effective rank")]),
    ("held-out token states: mean cosine", [("eval/mean_cosine", "mean cosine")]),
    ("learning rate", [("lr", "lr")]),
    ("throughput (non-pad tokens/s)", [("tokens_per_s", "tokens/s")]),
)


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl. A last line cut short by a kill is passed over with a notice (training
    drops it the same way when it resumes); a damaged line elsewhere, or no row at all, is an error."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {METRICS_FILE} (is this a run's output_dir?)")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                print(f"notice: {path}:{number}: the last line was cut short (a killed run); left out")
                continue
            raise ValueError(f"{path}:{number}: not a JSON line") from None
    if not rows:
        raise ValueError(f"{path}: no rows yet (the run has not logged a step); nothing to plot")
    return rows


def _series(rows: list[dict], metric: str, x_axis: str) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([r["step"] for r in rows if metric in r], dtype=float)
    values = np.array([r[metric] for r in rows if metric in r], dtype=float)
    if x_axis != "step":  # eval rows may carry no token count: read it off the training rows
        known = [(r["step"], r[x_axis]) for r in rows if x_axis in r]
        if not known:
            return np.array([]), np.array([])
        known_steps, known_x = (np.array(column, dtype=float) for column in zip(*known))
        steps = np.interp(steps, known_steps, known_x)
    return steps, values


def plot_runs(run_dirs: list[Path], out: Path, x_axis: str = "step") -> Path:
    """Draw the runs' curves into `out` (PNG); returns `out`."""
    if x_axis not in X_AXES:
        raise ValueError(f"x axis {x_axis!r}; choose one of {X_AXES}")
    import matplotlib

    matplotlib.use("Agg")  # headless; imported here so that the command line starts without it
    import matplotlib.pyplot as plt

    runs = [(Path(d).name or str(d), read_metrics(Path(d))) for d in run_dirs]
    columns = 2
    rows_needed = -(-len(PANELS) // columns)
    fig, axes = plt.subplots(rows_needed, columns, figsize=(12, 3.2 * rows_needed), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, metrics) in zip(axes.flat, PANELS):
        for run_index, (name, rows) in enumerate(runs):
            for metric_index, (metric, label) in enumerate(metrics):
                x, y = _series(rows, metric, x_axis)
                if not len(x):
                    continue
                held_out = metric.startswith("eval/")
                style: dict[str, Any] = (
                    dict(linestyle="--", marker="o", markersize=3) if held_out else dict(linewidth=1.2)
                )
                if len(x) == 1:  # one logged point draws no line: mark it
                    style.update(marker="o", markersize=5)
                if len(runs) > 1:  # one colour per run; the metric by line style and a thinner second line
                    colour = colours[run_index % len(colours)]
                    style["linewidth"] = 1.2 if metric_index < 2 else 0.7
                else:
                    colour = colours[metric_index % len(colours)]
                ax.plot(x, y, color=colour, label=f"{name}: {label}" if len(runs) > 1 else label, **style)
        ax.set_title(title)
        ax.set_xlabel(x_axis)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in axes.flat[len(PANELS) :]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
