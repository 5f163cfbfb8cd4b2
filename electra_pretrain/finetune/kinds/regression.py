"""Sentence(-pair) regression (GLUE's STS-B): `ElectraForSequenceClassification` with one output, mean squared
error, Pearson and Spearman correlation."""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate import Accelerator

from electra_pretrain.finetune.batches import Collate
from electra_pretrain.finetune.kinds.base import Prediction, SentenceTask
from electra_pretrain.finetune.metrics import pearson, spearman
from electra_pretrain.finetune.models import ElectraForSequenceClassification
from electra_pretrain.finetune.readers import TaskExample


class Regression(SentenceTask):
    name = "regression"
    model_class = ElectraForSequenceClassification

    def parse_label(self, value: Any, where: str, hub_names: list[str] | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label {value!r} is not a number (task.kind=regression)") from None
        if not math.isfinite(number):
            raise ValueError(f"{where}: label {value!r} is not a finite number (task.kind=regression)")
        return number

    def collate(self, pad_id: int) -> Collate:
        return Collate(pad_id, label_dtype=torch.float32)

    def batch_outputs(
        self, logits: torch.Tensor, batch: dict[str, torch.Tensor], accelerator: Accelerator
    ) -> torch.Tensor:
        return logits.float().squeeze(-1)  # (B,) values

    def predictions(self, examples: list[TaskExample], features: list, outputs: list) -> list[Prediction]:
        return [Prediction(value) for value in outputs]

    def degenerate(self, predictions: list[Prediction]) -> str | None:
        return None  # values are never all equal to the digit

    def score(self, examples: list[TaskExample], predictions: list[Prediction]) -> dict[str, float]:
        gold = [e.label for e in examples]
        predicted = [p.value for p in predictions]
        functions = {"pearson": pearson, "spearman": spearman}
        return {name: functions[name](gold, predicted) for name in self.task.metrics}
