"""Single-sentence and sentence-pair classification (GLUE's CoLA, SST-2, MRPC, QQP, MNLI, QNLI, RTE; spam):
`ElectraForSequenceClassification`, cross-entropy, accuracy / F1 of the positive class / Matthews correlation."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator

from electra_pretrain.finetune.kinds.base import Prediction, SentenceTask, check_known, class_names
from electra_pretrain.finetune.metrics import accuracy, f1, matthews
from electra_pretrain.finetune.models import ElectraForSequenceClassification
from electra_pretrain.finetune.readers import TaskExample


class Classification(SentenceTask):
    name = "classification"
    model_class = ElectraForSequenceClassification

    def parse_label(self, value: Any, where: str, hub_names: list[str] | None) -> str:
        if hub_names and isinstance(value, int):
            return hub_names[value]
        return str(value)

    def learn_labels(self, train: list[TaskExample]) -> None:
        self.labels = class_names(self.task, {example.label for example in train})

    def check_labels(self, examples: list[TaskExample], split: str) -> None:
        for example in examples:
            if example.label is not None:
                check_known([example.label], self.names, example.source, split)

    def stratum(self, example: TaskExample) -> object:
        return example.label

    @property
    def names(self) -> list[str]:
        assert self.labels is not None, "learn_labels first"
        return self.labels

    def label_id(self, label: Any) -> int:
        return self.names.index(label)

    def batch_outputs(
        self, logits: torch.Tensor, batch: dict[str, torch.Tensor], accelerator: Accelerator
    ) -> torch.Tensor:
        return logits.float().softmax(-1)  # (B, labels) class probabilities

    def predictions(self, examples: list[TaskExample], features: list, outputs: list) -> list[Prediction]:
        return [
            Prediction(
                self.names[max(range(len(p)), key=p.__getitem__)],
                {"probabilities": {name: round(q, 6) for name, q in zip(self.names, p)}},
            )
            for p in outputs
        ]

    def score(self, examples: list[TaskExample], predictions: list[Prediction]) -> dict[str, float]:
        gold = [e.label for e in examples]
        predicted = [p.value for p in predictions]
        functions = {"accuracy": accuracy, "matthews": matthews, "f1": lambda g, p: f1(g, p, self.task.positive_label)}
        return {name: functions[name](gold, predicted) for name in self.task.metrics}
