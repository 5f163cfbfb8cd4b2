"""A task's data once read and encoded: examples and features of every split, and the way from model outputs to
predictions, scores and prediction rows (each step delegated to the task's kind)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from electra_pretrain.finetune.batches import Feature
from electra_pretrain.finetune.config import FinetuneConfig, TaskConfig
from electra_pretrain.finetune.kinds import Prediction, TaskKind, task_kind
from electra_pretrain.finetune.readers import SPLITS, TaskExample, expand, read_hub_split, task_file_format


@dataclass
class TaskData:
    kind: TaskKind
    tokenizer: Tokenizer
    examples: dict[str, list[TaskExample]]  # split -> examples in file order
    features: dict[str, list[Feature]]  # split -> features, `index` = position
    roles: dict[str, str]  # split -> train | validation | test (extra sets have their own names)

    @property
    def label_names(self) -> list[str] | None:
        return self.kind.labels

    def extra_validation_splits(self) -> list[str]:
        return [split for split, role in self.roles.items() if role == "validation" and split != "validation"]

    def test_splits(self) -> list[str]:
        return [split for split, role in self.roles.items() if role == "test"]

    def labelled(self, split: str) -> bool:
        return all(e.label is not None for e in self.examples[split])

    def train_subsample(self, size: int | None, seed: int) -> list[Feature]:
        """The training features, or a stratified subsample of `size` examples (all of them when there are no
        more): each stratum (class) in proportion to its share, at least one of each, drawn with `seed`."""
        examples, features = self.examples["train"], self.features["train"]
        if size is None or size >= len(examples):
            return features
        chosen = set(stratified_sample([self.kind.stratum(e) for e in examples], size, seed))
        return [f for f in features if f.example in chosen]

    def predictions(self, split: str, outputs: list) -> list[Prediction]:
        """Per example, from the outputs of every feature of the split (in feature order)."""
        return self.kind.predictions(self.examples[split], self.features[split], outputs)

    def score(self, split: str, predictions: list[Prediction]) -> dict[str, float]:
        return self.kind.score(self.examples[split], predictions)

    def prediction_rows(self, split: str, predictions: list[Prediction]) -> Iterator[dict]:
        """One JSON-ready row per example, in file order: its index, its label when known, the prediction."""
        for index, (example, prediction) in enumerate(zip(self.examples[split], predictions)):
            yield {"index": index, **self.kind.prediction_row(example, prediction)}

    def summary(self, folder: Path, config: FinetuneConfig) -> str:
        task, labels = config.task, self.label_names
        sizes = ", ".join(f"{split} {len(examples)}" for split, examples in self.examples.items())
        described = (
            "no label names"
            if labels is None
            else f"{len(labels)} labels {labels[:12]}{' ...' if len(labels) > 12 else ''}"
        )
        if task.kind == "regression":
            described = "regression (one output)"
        cut = ", ".join(f"{split} {self.kind.truncated(self.features[split])}" for split in self.examples)
        return "\n".join(
            [
                f"task:      {task.name} ({task.kind}), {described}, metrics {list(task.metrics)}",
                f"model:     {folder} ({config.model_init} weights)",
                f"examples:  {sizes}"
                + (
                    f"; training on {task.max_train_examples} of them (task.max_train_examples, stratified, drawn "
                    f"with {'each seed' if task.subsample_seed is None else f'seed {task.subsample_seed}'})"
                    if task.max_train_examples is not None and task.max_train_examples < len(self.examples["train"])
                    else ""
                ),
                f"length:    at most {task.max_length} tokens; {self.kind.unit} cut off by that limit: {cut}",
                f"seeds:     {config.run_seeds()}, "
                + (
                    f"{config.trainer.max_steps} steps"
                    if config.trainer.max_steps
                    else f"{config.trainer.epochs} epochs"
                )
                + f", batch {config.trainer.batch_size}, kept: the {config.trainer.keep} evaluation of each seed"
                + (", training pairs also swapped (task.swap_pairs)" if task.swap_pairs else ""),
            ]
        )


def stratified_sample(strata: list, size: int, seed: int) -> list[int]:
    """Indices of `size` items: each stratum gets its share of `size` (largest remainders), at least one item, and
    its items are drawn uniformly with a generator seeded by `seed`; returned in their original order."""
    groups: dict = {}
    for index, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(index)
    if size < len(groups):
        raise ValueError(
            f"task.max_train_examples={size} cannot hold one example of each of the {len(groups)} classes; raise it"
        )
    keys = sorted(groups, key=str)
    exact = {k: size * len(groups[k]) / len(strata) for k in keys}
    quota = {k: max(1, int(exact[k])) for k in keys}
    by_remainder = sorted(keys, key=lambda k: (-(exact[k] - int(exact[k])), str(k)))
    while sum(quota.values()) < size:
        k = next(k for k in by_remainder if quota[k] < len(groups[k]))
        quota[k] += 1
        by_remainder.remove(k)
        by_remainder.append(k)
    while sum(quota.values()) > size:  # the at-least-one rule took some from larger classes
        k = max((k for k in keys if quota[k] > 1), key=lambda k: (quota[k] - exact[k], str(k)))
        quota[k] -= 1
    rng = random.Random(seed)
    return sorted(i for k in keys for i in rng.sample(groups[k], quota[k]))


def split_files(task: TaskConfig) -> dict[str, tuple[str, list[str]]]:
    """split -> (role, file patterns): train, validation, test, then the extra validation and test sets."""
    splits = {
        split: (split, list(getattr(task, f"{split}_files"))) for split in SPLITS if getattr(task, f"{split}_files")
    }
    for name, patterns in task.extra_validation_files.items():
        splits[name] = ("validation", list(patterns))
    for name, patterns in task.extra_test_files.items():
        splits[name] = ("test", list(patterns))
    clash = [name for name in (*task.extra_validation_files, *task.extra_test_files) if name in SPLITS]
    if clash:
        raise ValueError(
            f"task.extra_validation_files / extra_test_files: {clash} would replace a split; choose "
            "other names (e.g. validation_mismatched)"
        )
    return splits


def read_task(kind: TaskKind, task: TaskConfig) -> tuple[dict[str, list[TaskExample]], dict[str, str]]:
    """(split -> examples, split -> role) from files or task.hub."""
    if task.hub:
        examples, roles = {}, {}
        for split, name in zip(SPLITS, task.hub_splits):
            rows, names = read_hub_split(task, name, kind.hub_label_field())
            examples[split] = kind.from_rows(rows, split, f"{task.hub}/{name}", names)
            roles[split] = split
        return examples, roles
    for split in ("train", "validation"):
        if not getattr(task, f"{split}_files"):
            raise ValueError(
                f"task.{split}_files is empty; name the {split} file(s), e.g. "
                f"'task.{split}_files=[data/{split}.csv]' (or task.hub)"
            )
    splits = split_files(task)
    examples = {split: read_split(kind, task, split, patterns, role) for split, (role, patterns) in splits.items()}
    return examples, {split: role for split, (role, _) in splits.items()}


def read_split(kind: TaskKind, task: TaskConfig, split: str, patterns: list[str], role: str = "") -> list[TaskExample]:
    """Every example of the split's files, in file order (`role`: train, validation or test, as the split)."""
    examples: list[TaskExample] = []
    key = f"task.{split}_files" if split in SPLITS else f"task.extra_*_files.{split}"
    for path in expand(patterns, key):
        examples += kind.read_file(path, task_file_format(path, task.format, kind.text_format), role or split)
    if not examples:
        raise ValueError(f"{key}: {', '.join(patterns)} hold no examples")
    return examples


def prepare_task_data(task: TaskConfig, tokenizer: Tokenizer) -> TaskData:
    """Read (training and validation rows always carry labels: the kinds refuse them otherwise), learn and check
    the labels, encode; with task.swap_pairs each training pair is also encoded the other way round (both features
    belong to the same example, so a subsample keeps or drops them together)."""
    kind = task_kind(task)
    examples, roles = read_task(kind, task)
    kind.learn_labels(examples["train"])
    for split, split_examples in examples.items():
        kind.check_labels(split_examples, roles[split])
    features = {split: kind.encode(split_examples, tokenizer) for split, split_examples in examples.items()}
    if task.swap_pairs:
        train = examples["train"]
        swapped = kind.encode([TaskExample((e.texts[1], e.texts[0]), e.label, e.source) for e in train], tokenizer)
        offset = len(features["train"])
        for feature in swapped:
            feature.index += offset  # the swapped pair of example i keeps example = i
        features["train"] = features["train"] + swapped
    return TaskData(kind, tokenizer, examples, features, roles)
