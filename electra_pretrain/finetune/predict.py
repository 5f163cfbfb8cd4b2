"""`electra-pretrain predict MODEL_DIR FILES`: a fine-tuned model (output_dir/model) on new files of its task's
layout, the same prediction rows as the fine-tune's own prediction files.

The folder's task.yaml says how to read the files (fields, format, kind) and the labels; the files may lack the
label (then rows carry only the prediction). Examples go through in batches of similar length, longest first, with
a progress bar; bf16 autocast on a GPU that has it (precision=auto), fp32 on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from electra_pretrain.finetune.batches import TaskDataset
from electra_pretrain.finetune.config import TaskConfig
from electra_pretrain.finetune.data import read_split
from electra_pretrain.finetune.kinds import TaskKind, task_kind
from electra_pretrain.finetune.models import TaskModel
from electra_pretrain.finetune.outputs import TASK_FILE
from electra_pretrain.jobs import yaml_mapping
from electra_pretrain.model_config import ElectraConfig
from electra_pretrain.tokenizer import load_tokenizer, token_id
from electra_pretrain.weights import read_weights


class _Gather:
    """What the kinds' batch_outputs expect of an accelerator, for one process."""

    @staticmethod
    def pad_across_processes(tensor: torch.Tensor, dim: int = 0, pad_index: float = 0) -> torch.Tensor:
        return tensor


def load_fine_tuned(folder: Path, verify: bool = True) -> tuple[TaskKind, TaskModel]:
    """The task kind (with its labels) and the model, every weight loaded strictly, from output_dir/model."""
    task_file = folder / TASK_FILE
    if not task_file.is_file():
        raise FileNotFoundError(f"{folder}: no {TASK_FILE}; name the model/ folder a fine-tuning run wrote")
    saved = yaml_mapping(task_file.read_text())
    task = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TaskConfig), saved["task"]))
    assert isinstance(task, TaskConfig)
    kind = task_kind(task)
    kind.labels = list(saved["labels"]) if saved.get("labels") is not None else None
    model = kind.model_class(ElectraConfig.load(folder), kind.labels)
    model.load_weights(read_weights(folder, verify), str(folder))
    return kind, model.eval()


def predict_files(
    folder: Path,
    files: list[str],
    batch_size: int = 64,
    precision: str = "auto",
    device: str = "auto",
    verify: bool = True,
) -> Iterator[dict]:
    """The prediction row of every example of the files, in file order."""
    from electra_pretrain.devices import resolve_precision

    kind, model = load_fine_tuned(folder, verify)
    tokenizer = load_tokenizer(folder)
    examples = read_split(kind, kind.task, "test", files, "test")
    features = kind.encode(examples, tokenizer)
    target = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
    )
    use_bf16 = resolve_precision(precision, "--precision") == "bf16"
    model.to(target)
    loader = torch.utils.data.DataLoader(
        TaskDataset(features, by_length=True),
        batch_size=batch_size,
        collate_fn=kind.collate(token_id(tokenizer, "[PAD]")),
    )
    outputs: list = [None] * len(features)
    with torch.no_grad(), torch.autocast(target.type, dtype=torch.bfloat16, enabled=use_bf16):
        for batch in tqdm(loader, desc="predict", unit="batch", disable=None):
            logits = model(*(batch[k].to(target) for k in ("input_ids", "attention_mask", "token_type_ids")))
            values = kind.batch_outputs(logits.float(), batch, _Gather())
            for i, value in zip(batch["index"].tolist(), values.cpu().tolist()):
                outputs[i] = value
    predictions = kind.predictions(examples, features, outputs)
    for index, (example, prediction) in enumerate(zip(examples, predictions)):
        yield {"index": index, **kind.prediction_row(example, prediction)}


def write_prediction_rows(rows: Iterator[dict], out: Path | None) -> int:
    """jsonl to `out` (stdout when None); returns the row count."""
    count = 0
    with open(out, "w", encoding="utf-8") if out else contextlib.nullcontext(sys.stdout) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
