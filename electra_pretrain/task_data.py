"""Labelled examples for fine-tuning, from local files or a hub dataset.

Files: csv, tsv, json / jsonl and parquet through `datasets` (every csv/tsv column read as text, so "NA" stays a
word and "007" keeps its zeros); CoNLL columns (a token per line, blank lines between sentences, -DOCSTART- lines
skipped) for token classification. tsv files are read without quote handling, as GLUE's files and the original's
reader (`csv.reader(delimiter="\\t", quotechar=None)`) need: their sentences contain unbalanced quotes. A csv/tsv
file whose first line lacks the task's fields is read with `task.column_names` (GLUE's CoLA has no header).
A row without a needed field is an error naming the file and row; a file may omit the label only in the test split.
"""

from __future__ import annotations

import csv
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from electra_pretrain.finetune_config import TaskConfig

TASK_KINDS = ("classification", "regression", "token_classification")
FORMATS = ("auto", "csv", "tsv", "json", "parquet", "conll")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
              ".conll": "conll", ".iob": "conll", ".bio": "conll", ".txt": "conll"}
SPLITS = ("train", "validation", "test")


@dataclass
class Example:
    """texts: (a,) or (a, b) for sequence tasks, the words for token tasks; label: a class name, a number, a tag
    list, or None where the file has none (test files)."""

    texts: tuple[str, ...] | list[str]
    label: str | float | list[str] | None
    source: str  # "file:row" for error messages


def expand(patterns: list[str], key: str) -> list[Path]:
    paths = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matched or not all(Path(p).is_file() for p in matched):
            raise FileNotFoundError(f"{key}: {pattern} matches no file")
        paths += [Path(p) for p in matched]
    return paths


def file_format(path: Path, configured: str) -> str:
    if configured != "auto":
        return configured
    if path.suffix.lower() not in EXTENSIONS:
        raise ValueError(f"{path}: cannot tell the format from the extension {path.suffix!r}; set task.format "
                         f"({', '.join(FORMATS[1:])})")
    return EXTENSIONS[path.suffix.lower()]


def read_split(task: TaskConfig, split: str, patterns: list[str]) -> list[Example]:
    """Every example of the split's files, in file order."""
    examples: list[Example] = []
    for path in expand(patterns, f"task.{split}_files"):
        fmt = file_format(path, task.format)
        if fmt == "conll":
            examples += read_conll(path, task, split)
        else:
            examples += rows_to_examples(read_table(path, fmt, task), task, split, str(path))
    if not examples:
        raise ValueError(f"task.{split}_files: {', '.join(patterns)} hold no examples")
    return examples


def read_table(path: Path, fmt: str, task: TaskConfig) -> list[dict]:
    import datasets
    from datasets import Features, Value, load_dataset

    datasets.disable_progress_bars()  # one bar per small file is noise here; the summary counts the examples
    if fmt in ("csv", "tsv"):
        delimiter = "\t" if fmt == "tsv" else ","
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a spreadsheet's byte-order mark
            first = next(csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if fmt == "tsv" else
                                    csv.QUOTE_MINIMAL), [])
        needed = task.text_fields if task.kind != "token_classification" else [task.tokens_field]
        if all(name in first for name in needed):
            names, header = first, 0
        elif task.column_names and len(task.column_names) == len(first):
            names, header = list(task.column_names), None
        else:
            raise ValueError(f"{path}: the first line ({', '.join(first[:8])}) names none of the fields "
                             f"{list(needed)}; for a file without a header set task.column_names to its "
                             f"{len(first)} columns")
        kwargs = dict(sep=delimiter, header=header, column_names=None if header == 0 else names,
                      features=Features({name: Value("string") for name in names}), keep_default_na=False,
                      na_filter=False, quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
        builder = "csv"
    else:
        kwargs, builder = {}, fmt
    try:
        dataset = load_dataset(builder, data_files=[str(path)], split="train", **kwargs)
    except Exception as error:  # datasets wraps the parser's error; its first line names what went wrong
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path}: not a readable {fmt} file ({first_line})") from None
    return dataset.to_list()


def _field(row: dict, name: str, source: str, key: str):
    if name not in row or row[name] is None:
        raise ValueError(f"{source}: no {name!r} field ({key}; the row has {', '.join(map(str, row))})")
    return row[name]


def rows_to_examples(rows: list[dict], task: TaskConfig, split: str, source: str,
                     label_names: list[str] | None = None) -> list[Example]:
    """Examples from table rows. `label_names`: a hub dataset's ClassLabel names for integer labels."""
    examples = []
    labelled = split != "test" or all(task.label_field in row and row[task.label_field] is not None
                                      and row[task.label_field] != -1 for row in rows)
    for i, row in enumerate(rows):
        where = f"{source}:{i + 1}"
        if task.kind == "token_classification":
            words = [str(w) for w in _field(row, task.tokens_field, where, "task.tokens_field")]
            tags = _field(row, task.tags_field, where, "task.tags_field") if labelled else None
            if tags is not None:
                tags = [label_names[t] if label_names and isinstance(t, int) else str(t) for t in tags]
                if len(tags) != len(words):
                    raise ValueError(f"{where}: {len(words)} tokens but {len(tags)} tags")
            examples.append(Example(words, tags, where))
            continue
        texts = tuple(str(_field(row, name, where, "task.text_fields")) for name in task.text_fields)
        label = _field(row, task.label_field, where, "task.label_field") if labelled else None
        if label is not None:
            label = _parse_label(label, task, where, label_names)
        examples.append(Example(texts, label, where))
    return examples


def _parse_label(value, task: TaskConfig, where: str, label_names: list[str] | None) -> str | float:
    if task.kind == "regression":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label {value!r} is not a number (task.kind=regression)") from None
    if label_names and isinstance(value, int):
        return label_names[value]
    return str(value)


def read_conll(path: Path, task: TaskConfig, split: str) -> list[Example]:
    examples, words, tags, start = [], [], [], 1
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate([*lines, ""], start=1):
        columns = line.split()
        if columns and columns[0] == "-DOCSTART-":
            continue
        if not columns:
            if words:
                examples.append(Example(words, tags if split != "test" or all(tags) else None,
                                        f"{path}:{start}"))
            words, tags, start = [], [], number + 1
            continue
        if not words:
            start = number
        try:
            words.append(columns[task.conll_token_column])
            tag = columns[task.conll_tag_column] if len(columns) > 1 else None
        except IndexError:
            raise ValueError(f"{path}:{number}: no column {task.conll_token_column} / {task.conll_tag_column} "
                             f"(task.conll_token_column / conll_tag_column) in {line!r}") from None
        if tag is None and split != "test":
            raise ValueError(f"{path}:{number}: {line!r} has no tag column (CoNLL: token ... tag)")
        tags.append(tag)
    return examples


def read_hub(task: TaskConfig) -> dict[str, list[Example]]:
    """task.hub's splits (task.hub_splits: train, validation and optionally test). Needs the network."""
    import datasets

    examples = {}
    for split, name in zip(SPLITS, task.hub_splits):
        try:
            dataset = datasets.load_dataset(task.hub, task.hub_config, split=name)
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            offline = datasets.config.HF_HUB_OFFLINE
            raise ValueError(f"task.hub={task.hub} (config {task.hub_config}, split {name}) could not be loaded"
                             f"{' because HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set' if offline else ''}: "
                             f"{first}; use local files (task.train_files, task.validation_files) offline") from None
        feature = dataset.features.get(task.tags_field if task.kind == "token_classification" else task.label_field)
        feature = getattr(feature, "feature", feature)  # a Sequence of ClassLabel for tags
        names = list(feature.names) if hasattr(feature, "names") else None
        examples[split] = rows_to_examples(dataset.to_list(), task, split, f"{task.hub}/{name}", names)
    return examples


def read_task(task: TaskConfig) -> dict[str, list[Example]]:
    """{"train": [...], "validation": [...], "test": [...] (when given)}."""
    if task.hub:
        return read_hub(task)
    for split in ("train", "validation"):
        if not getattr(task, f"{split}_files"):
            raise ValueError(f"task.{split}_files is empty; name the {split} file(s), e.g. "
                             f"'task.{split}_files=[data/{split}.csv]' (or task.hub)")
    return {split: read_split(task, split, getattr(task, f"{split}_files")) for split in SPLITS
            if getattr(task, f"{split}_files")}


def label_names(task: TaskConfig, train: list[Example]) -> list[str] | None:
    """Class / tag names in id order: task.labels, else the sorted names seen in training (None: regression)."""
    if task.kind == "regression":
        return None
    if task.labels:
        return [str(label) for label in task.labels]
    seen = {tag for example in train for tag in example.label} if task.kind == "token_classification" \
        else {example.label for example in train}
    if len(seen) < 2:
        raise ValueError(f"task.train_files: only the label(s) {sorted(seen)} occur in training; a classifier "
                         "needs at least two (or list them in task.labels)")
    return sorted(seen)


def check_labels(examples: list[Example], names: list[str] | None, kind: str, split: str) -> None:
    """Every label of a split is one the model can predict; the first one that is not is named with its row."""
    if names is None:
        return
    known = set(names)
    for example in examples:
        labels = [] if example.label is None else example.label if kind == "token_classification" \
            else [example.label]
        for label in labels:
            if label not in known:
                raise ValueError(f"{example.source}: label {label!r} ({split}) is not one of {names} (the "
                                 "training labels, or task.labels)")
