"""The task-kind strategy: everything that differs between kinds of fine-tuning task, in one object per kind.

A kind reads its examples (from table rows, or a format of its own), names its labels, encodes examples into
features, picks its model class, turns the model's outputs into predictions, scores them and writes prediction
rows. The fine-tuner (train.py) and the task data (data.py) only call these methods, so a new kind is one new file
in this folder, registered in kinds/__init__.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import Accelerator
from tokenizers import Tokenizer

from electra_pretrain.finetune.batches import Collate, Feature
from electra_pretrain.finetune.config import TaskConfig
from electra_pretrain.finetune.models import TaskModel
from electra_pretrain.finetune.readers import TaskExample, field_of, read_table
from electra_pretrain.wordpiece_trainer import MAX_WORD_CHARS


@dataclass
class Prediction:
    """What the model predicts for one example, in the task's own terms (a class name, a value, a tag per word, an
    answer text, a choice), and what a prediction row shows beside it (class probabilities, ...)."""

    value: Any
    details: dict = field(default_factory=dict)


class TaskKind:
    """One kind of task. Subclasses set `name` and `model_class` and implement the steps that raise here.

    `labels` (class or tag names in id order, None for kinds without names) is set once from the training
    examples by `learn_labels`, before anything is encoded."""

    name: ClassVar[str]
    model_class: ClassVar[type[TaskModel]]
    unit: ClassVar[str] = "examples"  # what `truncated` counts
    text_format: ClassVar[str] = "tsv"  # how a .txt task file is read

    def __init__(self, task: TaskConfig):
        self.task = task
        self.labels: list[str] | None = None

    # -- reading
    def needed_fields(self) -> list[str]:
        """The fields a csv/tsv header must name for the file to be read by its header."""
        return list(self.task.text_fields)

    def read_file(self, path: Path, fmt: str, split: str) -> list[TaskExample]:
        if fmt in ("conll", "squad"):
            owner = "token classification" if fmt == "conll" else "question answering"
            raise ValueError(
                f"{path}: task.format={fmt} is for {owner}, not task.kind={self.name} (a tab-separated "
                "file is task.format=tsv)"
            )
        rows = read_table(path, fmt, self.needed_fields(), self.task.column_names)
        return self.from_rows(rows, split, str(path))

    def hub_label_field(self) -> str:
        return self.task.label_field

    def from_rows(
        self, rows: list[dict], split: str, source: str, hub_names: list[str] | None = None
    ) -> list[TaskExample]:
        """Examples from table rows, in order. `hub_names`: a hub dataset's ClassLabel names for integer labels."""
        raise NotImplementedError

    def learn_labels(self, train: list[TaskExample]) -> None:
        """Set `labels` from the training examples (task.labels first); kinds without label names keep None."""

    def check_labels(self, examples: list[TaskExample], split: str) -> None:
        """Every label of a split is one the model can predict; the first that is not is named with its row."""

    def stratum(self, example: TaskExample) -> object:
        """What a stratified subsample keeps in proportion (the class); one stratum for kinds without classes."""
        return None

    # -- encoding and model
    def encode(self, examples: Sequence[TaskExample], tokenizer: Tokenizer) -> list[Feature]:
        raise NotImplementedError

    def collate(self, pad_id: int) -> Callable[[list], dict[str, torch.Tensor]]:
        return Collate(pad_id)

    def truncated(self, features: list) -> int:
        """Examples cut at task.max_length (or the kind's own `unit`, e.g. words)."""
        return sum(f.truncated for f in features)

    # -- outputs
    def batch_outputs(
        self, logits: torch.Tensor, batch: dict[str, torch.Tensor], accelerator: Accelerator
    ) -> torch.Tensor:
        """What is kept of a batch's logits for each feature (gathered over processes afterwards)."""
        raise NotImplementedError

    def predictions(self, examples: list[TaskExample], features: list, outputs: list) -> list[Prediction]:
        """One prediction per example from the outputs of its features (`outputs[i]` belongs to features[i])."""
        raise NotImplementedError

    def score(self, examples: list[TaskExample], predictions: list[Prediction]) -> dict[str, float]:
        """task.metrics over the labelled examples."""
        raise NotImplementedError

    def degenerate(self, predictions: list[Prediction]) -> str | None:
        """A warning when the model predicts one and the same thing for every example (it learnt the majority)."""
        values = {json.dumps(p.value) for p in predictions}
        if len(predictions) > 1 and len(values) == 1:
            return f"predicts {predictions[0].value!r} for every one of the {len(predictions)} examples"
        return None

    def prediction_row(self, example: TaskExample, prediction: Prediction) -> dict:
        """The JSON-ready fields of one prediction row (the caller adds the example's index first)."""
        row: dict = {}
        if example.label is not None:
            row["label"] = example.label
        return {**row, "prediction": prediction.value, **prediction.details}


def class_names(task: TaskConfig, seen: set[str]) -> list[str]:
    """task.labels, else the sorted labels seen in training (at least two)."""
    if task.labels:
        return [str(label) for label in task.labels]
    if len(seen) < 2:
        raise ValueError(
            f"task.train_files: only the label(s) {sorted(seen)} occur in training; a classifier "
            "needs at least two (or list them in task.labels)"
        )
    return sorted(seen)


def check_known(labels: list, known: list[str], source: str, split: str) -> None:
    for label in labels:
        if label not in known:
            raise ValueError(
                f"{source}: label {label!r} ({split}) is not one of {known} (the training labels, or task.labels)"
            )


def bounded(text: str, max_tokens: int) -> tuple[str, bool]:
    """The start of `text` that can still yield `max_tokens` tokens: a token takes at least one character and a word
    over MAX_WORD_CHARS characters is one [UNK], so longer texts are cut before tokenizing (a 50 MB row costs no
    more than its first tokens). Returns (text, whether it was cut)."""
    limit = max_tokens * (MAX_WORD_CHARS + 1)
    return (text[:limit], True) if len(text) > limit else (text, False)


def truncating_copy(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """A copy of the tokenizer that truncates to max_length (longest first) and never pads."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.enable_truncation(max_length, strategy="longest_first")
    copy.no_padding()
    return copy


class SentenceTask(TaskKind):
    """Kinds whose input is one text or a pair: `[CLS] A [SEP] (B [SEP])` from the tokenizer's template, truncated to
    task.max_length by removing tokens from the longer text one at a time (google-research/electra
    `_truncate_seq_pair`; tokenizers' `longest_first`); the model reads the [CLS] state. One feature per example."""

    def from_rows(
        self, rows: list[dict], split: str, source: str, hub_names: list[str] | None = None
    ) -> list[TaskExample]:
        task, examples = self.task, []
        labelled = split != "test" or all(row.get(task.label_field) not in (None, -1, "") for row in rows)
        for i, row in enumerate(rows):
            where = f"{source}:{i + 1}"
            texts = tuple(str(field_of(row, name, where, "task.text_fields")) for name in task.text_fields)
            label = field_of(row, task.label_field, where, "task.label_field") if labelled else None
            if isinstance(label, str) and not label.strip():
                raise ValueError(f"{where}: the label ({task.label_field!r}) is empty")
            if label is not None:
                label = self.parse_label(label, where, hub_names)
            examples.append(TaskExample(texts, label, where))
        return examples

    def parse_label(self, value: Any, where: str, hub_names: list[str] | None) -> Any:
        raise NotImplementedError

    def label_id(self, label: Any) -> Any:
        """The label as the model's loss reads it."""
        return label

    def encode(self, examples: Sequence[TaskExample], tokenizer: Tokenizer) -> list[Feature]:
        tokenizer = truncating_copy(tokenizer, self.task.max_length)
        cut = [[bounded(text, self.task.max_length) for text in e.texts] for e in examples]
        inputs = [texts[0][0] if len(texts) == 1 else (texts[0][0], texts[1][0]) for texts in cut]
        encodings = tokenizer.encode_batch(inputs)
        return [
            Feature(
                i,
                i,
                enc.ids,
                enc.type_ids,
                None if e.label is None else self.label_id(e.label),
                bool(enc.overflowing) or any(was_cut for _, was_cut in texts),
            )
            for i, (e, enc, texts) in enumerate(zip(examples, encodings, cut))
        ]
