"""What a fine-tuning run leaves in output_dir, written whole or not at all, and never mixed with another run's.

  config.yaml                the resolved config
  results.json               validation (and test) scores: median and mean over the seeds, every seed's evaluations
  predictions/<split>.jsonl  the kept seed's predictions, in file order (question answering: also <split>.json in the
                             official SQuAD format, {question id: answer}, and <split>_na_prob.json for SQuAD 2.0)
  predictions/<name>.tsv     GLUE submission files (task.glue_submission)
  model/                     the kept seed's model as a transformers folder, with the tokenizer, task.yaml (what
                             `electra-pretrain predict` reads) and a model card
  seed_<s>/                  each seed's metrics.jsonl (and wandb run) and predictions

A fresh run first removes an earlier run's outputs from the folder (naming them in the log); the final outputs are
written beside their place, fsynced and renamed into it (model/ with its checksums.json).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from omegaconf import OmegaConf

from electra_pretrain.files import publish_file, publish_folder, staging
from electra_pretrain.finetune.config import FinetuneConfig
from electra_pretrain.finetune.data import TaskData
from electra_pretrain.finetune.kinds import Prediction
from electra_pretrain.finetune.models import TaskModel

RESULTS_FILE = "results.json"
TASK_FILE = "task.yaml"  # in model/: the task section and labels `electra-pretrain predict` reads
OUTPUTS = (RESULTS_FILE, "predictions", "model")


def remove_stale_outputs(out: Path) -> list[str]:
    """An earlier run's outputs (results.json, predictions/, model/, seed_*/), removed; returns their names."""
    stale = [out / name for name in OUTPUTS if (out / name).exists()] + sorted(out.glob("seed_*"))
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return [path.name for path in stale]


def write_predictions(folder: Path, predictions: dict[str, list[Prediction]], data: TaskData) -> None:
    """predictions/<split>.jsonl for each split (and the SQuAD files for question answering)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_predictions in predictions.items():
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in data.prediction_rows(split, split_predictions):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if data.kind.name == "question_answering":
            examples = data.examples[split]
            answers = {e.id or str(i): p.value for i, (e, p) in enumerate(zip(examples, split_predictions))}
            (folder / f"{split}.json").write_text(json.dumps(answers, ensure_ascii=False, indent=1) + "\n")
            if data.kind.task.allow_no_answer:
                no_answer = {
                    e.id or str(i): p.details["no_answer_score"]
                    for i, (e, p) in enumerate(zip(examples, split_predictions))
                }
                (folder / f"{split}_na_prob.json").write_text(json.dumps(no_answer, indent=1) + "\n")


def write_glue_submission(folder: Path, config: FinetuneConfig) -> None:
    """`index<TAB>prediction` files as the GLUE leaderboard reads them, from the predictions/<split>.jsonl in
    `folder` (label names; STS-B scores to 3 decimals)."""
    for split, name in config.task.glue_submission.items():
        if not (folder / f"{split}.jsonl").is_file():
            continue  # that test set was not given
        rows = ["index\tprediction"]
        with open(folder / f"{split}.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                value = row["prediction"]
                rows.append(f"{row['index']}\t{value:.3f}" if isinstance(value, float) else f"{row['index']}\t{value}")
        (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n")


def write_model(
    out: Path, model: TaskModel, tokenizer, config: FinetuneConfig, summary: dict, kept: dict, labels: list[str] | None
) -> Path:
    """output_dir/model: the kept seed's weights as a transformers folder, the tokenizer, task.yaml, the card."""
    from electra_pretrain.tokenizer import save_tokenizer

    with staging(out / "model") as staged:
        model.save_pretrained(staged)
        save_tokenizer(tokenizer, staged, model_max_length=config.task.max_length)
        task = OmegaConf.to_yaml(OmegaConf.create({"task": OmegaConf.structured(config.task), "labels": labels}))
        (staged / TASK_FILE).write_text(task)
        (staged / "README.md").write_text(fine_tuned_model_card(model, summary, kept))
        return publish_folder(staged, out / "model")


def write_results(out: Path, summary: dict) -> None:
    staged = out / f".tmp_{RESULTS_FILE}"
    staged.write_text(json.dumps(summary, indent=2) + "\n")
    publish_file(staged, out / RESULTS_FILE)


def publish_predictions(out: Path, seed_folder: Path, config: FinetuneConfig) -> None:
    """output_dir/predictions: a copy of the kept seed's, plus the GLUE submission files."""
    staged = out / ".tmp_predictions"
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(seed_folder, staged)
    write_glue_submission(staged, config)
    publish_folder(staged, out / "predictions", with_checksums=False)


def fine_tuned_model_card(model: TaskModel, summary: dict, kept: dict) -> str:
    scores = ", ".join(f"{k} {v:.4f}" for k, v in kept["validation"].items())
    medians = ", ".join(f"{k} {v:.4f}" for k, v in summary["validation"].items())
    return "\n".join(
        [
            f"# ELECTRA fine-tuned: {summary['task']} ({model.architecture})",
            "",
            f"Fine-tuned with electra-pretrain from `{summary['model_path']}` ({summary['model_init']} weights).",
            "",
            f"- labels: {model.labels if model.labels else 'none (the head predicts values or positions)'}",
            f"- this model: seed {kept['seed']}, {summary['selection']}; validation {scores}",
            f"- seeds {summary['seeds']}, validation median: {medians}",
            f"- command: `{' '.join(['python', *sys.argv])}`",
            "",
            "```python",
            f"from transformers import {model.architecture}, ElectraTokenizerFast",
            f'model = {model.architecture}.from_pretrained("PATH")',
            'tokenizer = ElectraTokenizerFast.from_pretrained("PATH")',
            "```",
            "",
            f"`electra-pretrain predict PATH FILES` runs it on new files of the same layout ({TASK_FILE}).",
            "",
        ]
    )
