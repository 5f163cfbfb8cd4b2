"""Multiple choice (SWAG-style: a context and N candidate endings): `ElectraForMultipleChoice`, one score per
choice, cross-entropy over the choices, accuracy.

Each choice is the pair `[CLS] context [SEP] start of the ending + ending [SEP]` (transformers' run_swag), cut to
task.max_length longest first; an example's choices go through the encoder side by side. The label is the index of
the right ending (0-based; a hub dataset's integer, or its text in a file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from tokenizers import Tokenizer

from electra_pretrain.finetune.batches import Feature, pad
from electra_pretrain.finetune.kinds.base import Prediction, TaskKind, bounded, truncating_copy
from electra_pretrain.finetune.metrics import accuracy
from electra_pretrain.finetune.models import ElectraForMultipleChoice
from electra_pretrain.finetune.readers import TaskExample, field_of


@dataclass
class ChoicesFeature(Feature):
    """`input_ids` and `token_type_ids` hold one row per choice; `label` is the right choice's index."""

    def __len__(self) -> int:
        return max(len(row) for row in self.input_ids)


class MultipleChoice(TaskKind):
    name = "multiple_choice"
    model_class = ElectraForMultipleChoice

    def needed_fields(self) -> list[str]:
        return [*self.task.text_fields, *self.task.endings_fields]

    def from_rows(
        self, rows: list[dict], split: str, source: str, hub_names: list[str] | None = None
    ) -> list[TaskExample]:
        task, examples = self.task, []
        choices = len(task.endings_fields)
        labelled = split != "test" or all(row.get(task.label_field) not in (None, -1, "") for row in rows)
        for i, row in enumerate(rows):
            where = f"{source}:{i + 1}"
            context = str(field_of(row, task.text_fields[0], where, "task.text_fields"))
            start = (
                str(field_of(row, task.text_fields[1], where, "task.text_fields")) if len(task.text_fields) > 1 else ""
            )
            endings = [str(field_of(row, name, where, "task.endings_fields")) for name in task.endings_fields]
            label = None
            if labelled:
                value = field_of(row, task.label_field, where, "task.label_field")
                try:
                    label = int(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: label {value!r} is not a choice index (0 to {choices - 1})") from None
                if not 0 <= label < choices:
                    raise ValueError(f"{where}: label {label} is not a choice index (0 to {choices - 1})")
            texts = (context, *[f"{start} {ending}".strip() for ending in endings])
            examples.append(TaskExample(texts, label, where))
        return examples

    def encode(self, examples: Sequence[TaskExample], tokenizer: Tokenizer) -> list[Feature]:
        tokenizer = truncating_copy(tokenizer, self.task.max_length)
        features: list[Feature] = []
        for index, example in enumerate(examples):
            context, cut_context = bounded(example.texts[0], self.task.max_length)
            endings = [bounded(text, self.task.max_length) for text in example.texts[1:]]
            encodings = tokenizer.encode_batch([(context, ending) for ending, _ in endings])
            truncated = cut_context or any(cut for _, cut in endings) or any(e.overflowing for e in encodings)
            features.append(
                ChoicesFeature(
                    index, index, [e.ids for e in encodings], [e.type_ids for e in encodings], example.label, truncated
                )
            )
        return features

    def collate(self, pad_id: int) -> Callable[[list], dict[str, torch.Tensor]]:
        def collate(batch: list[ChoicesFeature]) -> dict[str, torch.Tensor]:
            length = max(len(f) for f in batch)
            rows = [row for f in batch for row in f.input_ids]
            types = [row for f in batch for row in f.token_type_ids]
            shape = (len(batch), len(batch[0].input_ids), length)
            out = {
                "input_ids": pad(rows, pad_id, length).view(shape),
                "attention_mask": pad([[1] * len(r) for r in rows], 0, length).view(shape),
                "token_type_ids": pad(types, 0, length).view(shape),
                "index": torch.tensor([f.index for f in batch]),
            }
            if all(f.label is not None for f in batch):
                out["labels"] = torch.tensor([f.label for f in batch])
            return out

        return collate

    def batch_outputs(
        self, logits: torch.Tensor, batch: dict[str, torch.Tensor], accelerator: Accelerator
    ) -> torch.Tensor:
        return logits.float().softmax(-1)  # (B, choices)

    def predictions(self, examples: list[TaskExample], features: list, outputs: list) -> list[Prediction]:
        return [
            Prediction(max(range(len(p)), key=p.__getitem__), {"probabilities": [round(q, 6) for q in p]})
            for p in outputs
        ]

    def score(self, examples: list[TaskExample], predictions: list[Prediction]) -> dict[str, float]:
        scores = {"accuracy": accuracy([e.label for e in examples], [p.value for p in predictions])}
        return {name: scores[name] for name in self.task.metrics}

    def prediction_row(self, example: TaskExample, prediction: Prediction) -> dict:
        row: dict[str, Any] = {}
        if example.label is not None:
            row["label"] = example.label
        return {**row, "prediction": prediction.value, **prediction.details}
