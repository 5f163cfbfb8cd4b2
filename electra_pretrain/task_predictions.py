"""A task's data once read and encoded, and the way back from model outputs to labels, scores and prediction rows.

Raw outputs (from FineTuner.predict, one per example in file order): class probabilities, a regression value, or a
list holding the predicted tag id at every token position (only each kept word's first sub-token is read).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from electra_pretrain.task_batches import Encoded, TaskEncoder
from electra_pretrain.task_data import Example, check_labels, label_names, read_task
from electra_pretrain.task_metrics import compute

if TYPE_CHECKING:
    from electra_pretrain.finetune_config import FinetuneConfig, TaskConfig


@dataclass
class TaskData:
    kind: str
    tokenizer: Tokenizer
    label_names: list[str] | None  # None: regression
    examples: dict[str, list[Example]]  # split -> examples in file order
    encoded: dict[str, list[Encoded]]

    def labelled(self, split: str) -> bool:
        return all(e.label is not None for e in self.examples[split])

    def truncated(self, split: str) -> int:
        """Examples cut at task.max_length (token tasks: words left without a prediction)."""
        if self.kind == "token_classification":
            return sum(e.words - len(e.first_tokens) for e in self.encoded[split])
        return sum(e.truncated for e in self.encoded[split])

    def predicted_labels(self, split: str, outputs: list) -> list:
        """Class names, values, or per example the predicted tags of the words that fit in task.max_length."""
        if self.kind == "regression":
            return list(outputs)
        if self.kind == "classification":
            return [self.label_names[max(range(len(p)), key=p.__getitem__)] for p in outputs]
        return [[self.label_names[ids[position]] for position in e.first_tokens]
                for e, ids in zip(self.encoded[split], outputs)]

    def score(self, split: str, outputs: list, task: TaskConfig) -> dict[str, float]:
        predicted = self.predicted_labels(split, outputs)
        gold = [e.label for e in self.examples[split]]
        if self.kind == "token_classification":  # words past the length limit are not scored (counted at start)
            gold = [tags[:len(p)] for tags, p in zip(gold, predicted)]
        return compute(self.kind, task.metrics, gold, predicted, task.positive_label)

    def summary(self, folder: Path, config: FinetuneConfig) -> str:
        task = config.task
        sizes = ", ".join(f"{split} {len(examples)}" for split, examples in self.examples.items())
        labels = "regression (one output)" if self.label_names is None else \
            f"{len(self.label_names)} labels {self.label_names[:12]}{' ...' if len(self.label_names) > 12 else ''}"
        unit = "words" if self.kind == "token_classification" else "examples"
        cut = ", ".join(f"{split} {self.truncated(split)}" for split in self.examples)
        return "\n".join([
            f"task:      {task.name} ({task.kind}), {labels}, metrics {list(task.metrics)}",
            f"model:     {folder} ({config.model_init} weights)",
            f"examples:  {sizes}",
            f"length:    at most {task.max_length} tokens; {unit} cut off by that limit: {cut}",
            f"seeds:     {config.run_seeds()}, {config.trainer.epochs} epochs, batch {config.trainer.batch_size}, "
            f"kept epoch: {config.trainer.keep}",
        ])


def prepare_task_data(task: TaskConfig, tokenizer: Tokenizer) -> TaskData:
    """Read (training and validation rows always carry labels: task_data refuses them otherwise), check the labels,
    encode."""
    examples = read_task(task)
    names = label_names(task, examples["train"])
    for split, split_examples in examples.items():
        check_labels(split_examples, names, task.kind, split)
    encoder = TaskEncoder(tokenizer, task.kind, task.max_length, names)
    encoded = {split: encoder(split_examples) for split, split_examples in examples.items()}
    return TaskData(task.kind, encoder.tokenizer, names, examples, encoded)


def prediction_rows(split: str, outputs: list, data: TaskData) -> Iterator[dict]:
    """One JSON-ready row per example, in file order: its index, its label when known, the prediction (and the
    class probabilities)."""
    predicted = data.predicted_labels(split, outputs)
    for index, (example, output, prediction) in enumerate(zip(data.examples[split], outputs, predicted)):
        row: dict = {"index": index}
        if data.kind == "token_classification":
            row["tokens"] = list(example.texts)
            if example.label is not None:
                row["tags"] = example.label
            row["prediction"] = prediction + [None] * (len(example.texts) - len(prediction))  # None: cut off
        else:
            if example.label is not None:
                row["label"] = example.label
            row["prediction"] = prediction
            if data.kind == "classification":
                row["probabilities"] = {name: round(p, 6) for name, p in zip(data.label_names, output)}
        yield row
