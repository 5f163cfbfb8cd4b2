"""Token classification (NER, chunking): `ElectraForTokenClassification`, one tag per word, read from CoNLL columns
or json / parquet `tokens` + `tags` lists; conlleval's span F1 / precision / recall and token accuracy.

Each word's first sub-token carries its tag and later sub-tokens are ignored (-100), as transformers' run_ner does:
tags are looked up by word id, so a word that tokenizes to nothing (a soft hyphen, a zero-width character) shifts
nothing; it is predicted `O`. Words cut off by task.max_length are counted at start-up and not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tokenizers import Tokenizer

from electra_pretrain.finetune.batches import IGNORE, Feature
from electra_pretrain.finetune.kinds.base import Prediction, TaskKind, check_known, class_names, truncating_copy
from electra_pretrain.finetune.metrics import OUTSIDE, span_scores
from electra_pretrain.finetune.models import ElectraForTokenClassification
from electra_pretrain.finetune.readers import TaskExample, field_of
from electra_pretrain.wordpiece_trainer import MAX_WORD_CHARS


@dataclass
class TokenFeature(Feature):
    first_tokens: tuple[int | None, ...] = ()  # each word's first sub-token position (None: no token)
    kept: int = 0  # words before the max_length cut (all of them when nothing was cut)


class TokenClassification(TaskKind):
    name = "token_classification"
    model_class = ElectraForTokenClassification
    unit = "words"
    text_format = "conll"

    def needed_fields(self) -> list[str]:
        return [self.task.tokens_field]

    def hub_label_field(self) -> str:
        return self.task.tags_field

    def read_file(self, path: Path, fmt: str, split: str) -> list[TaskExample]:
        if fmt == "conll":
            return read_conll(path, self.task.conll_token_column, self.task.conll_tag_column, split)
        return super().read_file(path, fmt, split)

    def from_rows(
        self, rows: list[dict], split: str, source: str, hub_names: list[str] | None = None
    ) -> list[TaskExample]:
        task, examples = self.task, []
        labelled = split != "test" or all(task.tags_field in row and row[task.tags_field] is not None for row in rows)
        for i, row in enumerate(rows):
            where = f"{source}:{i + 1}"
            words = [str(w) for w in field_of(row, task.tokens_field, where, "task.tokens_field")]
            tags = field_of(row, task.tags_field, where, "task.tags_field") if labelled else None
            if tags is not None:
                tags = [hub_names[t] if hub_names and isinstance(t, int) else str(t) for t in tags]
                if len(tags) != len(words):
                    raise ValueError(f"{where}: {len(words)} tokens but {len(tags)} tags")
            examples.append(TaskExample(words, tags, where))
        return examples

    def learn_labels(self, train: list[TaskExample]) -> None:
        self.labels = class_names(self.task, {tag for example in train for tag in example.label})

    @property
    def names(self) -> list[str]:
        assert self.labels is not None, "learn_labels first"
        return self.labels

    def check_labels(self, examples: list[TaskExample], split: str) -> None:
        for example in examples:
            check_known(example.label or [], self.names, example.source, split)

    def encode(self, examples: Sequence[TaskExample], tokenizer: Tokenizer) -> list[Feature]:
        tokenizer = truncating_copy(tokenizer, self.task.max_length)
        ids = {name: i for i, name in enumerate(self.names)}
        # a word over MAX_WORD_CHARS characters is one [UNK] however long: no need to read all of it
        words = [[word[: MAX_WORD_CHARS + 1] for word in e.texts] for e in examples]
        encodings = tokenizer.encode_batch(words, is_pretokenized=True)
        features: list[Feature] = []
        for index, (example, encoding) in enumerate(zip(examples, encodings)):
            first: list[int | None] = [None] * len(example.texts)
            for position, word in enumerate(encoding.word_ids):
                if word is not None and first[word] is None:
                    first[word] = position
            seen = [w for w in encoding.word_ids if w is not None]
            kept = seen[-1] + 1 if encoding.overflowing and seen else len(example.texts)
            labels: list[int] | None = None
            if example.label is not None:
                labels = [IGNORE] * len(encoding.ids)
                for word, start in enumerate(first):
                    if start is not None:
                        labels[start] = ids[example.label[word]]
            features.append(
                TokenFeature(
                    index,
                    index,
                    encoding.ids,
                    encoding.type_ids,
                    labels,
                    bool(encoding.overflowing),
                    tuple(first),
                    kept,
                )
            )
        return features

    def truncated(self, features: list) -> int:
        return sum(len(f.first_tokens) - f.kept for f in features)

    def batch_outputs(
        self, logits: torch.Tensor, batch: dict[str, torch.Tensor], accelerator: Accelerator
    ) -> torch.Tensor:
        # (B, L) the predicted tag id at every position, padded to one length over processes for the gather
        return accelerator.pad_across_processes(logits.argmax(-1), dim=1, pad_index=IGNORE)

    def predictions(self, examples: list[TaskExample], features: list, outputs: list) -> list[Prediction]:
        return [
            Prediction(
                [
                    self.names[ids[position]] if position is not None else OUTSIDE
                    for position in feature.first_tokens[: feature.kept]
                ]
            )
            for feature, ids in zip(features, outputs)
        ]

    def score(self, examples: list[TaskExample], predictions: list[Prediction]) -> dict[str, float]:
        predicted = [p.value for p in predictions]
        gold = [e.label[: len(p)] for e, p in zip(examples, predicted)]  # words past the length limit: not scored
        scores = span_scores(gold, predicted)
        return {name: scores[name] for name in self.task.metrics}

    def prediction_row(self, example: TaskExample, prediction: Prediction) -> dict:
        row: dict[str, Any] = {"tokens": list(example.texts)}
        if example.label is not None:
            row["tags"] = example.label
        row["prediction"] = prediction.value + [None] * (len(example.texts) - len(prediction.value))  # None: cut off
        return row


def read_conll(path: Path, token_column: int, tag_column: int, split: str) -> list[TaskExample]:
    """CoNLL columns: a token per line, blank lines between sentences, -DOCSTART- lines skipped."""
    examples: list[TaskExample] = []
    words: list[str] = []
    tags: list[str | None] = []
    start = 1
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate([*lines, ""], start=1):
        columns = line.split()
        if columns and columns[0] == "-DOCSTART-":
            continue
        if not columns:
            if words:
                examples.append(TaskExample(words, tags if split != "test" or all(tags) else None, f"{path}:{start}"))
            words, tags, start = [], [], number + 1
            continue
        if not words:
            start = number
        try:
            words.append(columns[token_column])
            tag = columns[tag_column] if len(columns) > 1 else None
        except IndexError:
            raise ValueError(
                f"{path}:{number}: no column {token_column} / {tag_column} "
                f"(task.conll_token_column / conll_tag_column) in {line!r}"
            ) from None
        if tag is None and split != "test":
            raise ValueError(f"{path}:{number}: {line!r} has no tag column (CoNLL: token ... tag)")
        tags.append(tag)
    return examples
