"""Labelled rows for fine-tuning, from local files or a hub dataset; each task kind (kinds/) turns rows into
examples.

Files: csv, tsv, json / jsonl and parquet through `datasets` (every csv/tsv column read as text, so "NA" stays a
word and "007" keeps its zeros). tsv files are read without quote handling, as GLUE's files and the original's
reader (`csv.reader(delimiter="\\t", quotechar=None)`) need: their sentences contain unbalanced quotes. A csv/tsv
file whose first line lacks the task's fields is read with `task.column_names` (GLUE's CoLA has no header).
"""

from __future__ import annotations

import csv
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from electra_pretrain.finetune.config import TASK_FORMATS, TaskConfig

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".conll": "conll",
    ".iob": "conll",
    ".bio": "conll",
}
# Text files mean CoNLL columns to a token task and tab-separated rows (GLUE's layout) to the others (kinds/).
TEXT_SUFFIX = ".txt"
SPLITS = ("train", "validation", "test")


@dataclass
class TaskExample:
    """texts: (a,) or (a, b) for sequence tasks, the words for token tasks, (question, context) for question
    answering, (context, start of the ending, ending 1, ..., ending N) for multiple choice; label: a class name, a
    number, a tag list, the answers [(text, character start), ...], a choice index, or None where the file has none
    (test files)."""

    texts: tuple[str, ...] | list[str]
    label: Any
    source: str  # "file:row" for error messages
    id: str | None = None  # the example's own id, where the data has one (SQuAD question ids)


def expand(patterns: list[str], key: str) -> list[Path]:
    paths = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matched or not all(Path(p).is_file() for p in matched):
            raise FileNotFoundError(f"{key}: {pattern} matches no file")
        paths += [Path(p) for p in matched]
    return paths


def task_file_format(path: Path, configured: str, text_format: str = "tsv") -> str:
    """task.format, else the format of the extension (`text_format` for .txt: the kind's)."""
    if configured != "auto":
        return configured
    if path.suffix.lower() == TEXT_SUFFIX:
        return text_format
    if path.suffix.lower() not in EXTENSIONS:
        raise ValueError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; set task.format "
            f"({', '.join(TASK_FORMATS[1:])})"
        )
    return EXTENSIONS[path.suffix.lower()]


def check_utf8(path: Path) -> None:
    """A text file that is not UTF-8 is named with the line of its first bad byte sequence."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}:{number}: not UTF-8 ({error.reason} at byte {error.start} of the line); "
                    "re-save the file as UTF-8"
                ) from None


def read_table(path: Path, fmt: str, needed: list[str], column_names: list[str]) -> list[dict]:
    """The rows of a csv / tsv / json / parquet file; csv and tsv columns as text. `needed`: the fields a header
    must name (else the file is read with `column_names`)."""
    import datasets
    from datasets import Features, Value, load_dataset

    datasets.disable_progress_bars()  # one bar per small file is noise here; the summary counts the examples
    if fmt != "parquet":
        check_utf8(path)
    kwargs: dict[str, Any] = {}
    builder = fmt
    if fmt in ("csv", "tsv"):
        delimiter = "\t" if fmt == "tsv" else ","
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a spreadsheet's byte-order mark
            first = next(
                csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL), []
            )
        if all(name in first for name in needed):
            names, header = first, 0
        elif column_names and len(column_names) == len(first):
            names, header = list(column_names), None
        else:
            raise ValueError(
                f"{path}: the first line ({', '.join(first[:8])}) names none of the fields "
                f"{list(needed)}; for a file without a header set task.column_names to its "
                f"{len(first)} columns"
            )
        kwargs = dict(
            sep=delimiter,
            header=header,
            column_names=None if header == 0 else names,
            features=Features({name: Value("string") for name in names}),
            keep_default_na=False,
            na_filter=False,
            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
        )
        builder = "csv"
    try:
        dataset = load_dataset(builder, data_files=[str(path)], split="train", **kwargs)
    except Exception as error:  # datasets wraps the parser's error; its first line names what went wrong
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path}: not a readable {fmt} file ({first_line})") from None
    return dataset.to_list()


def field_of(row: dict, name: str, source: str, key: str) -> Any:
    """row[name], or an error naming the row, the field and the config key that names it."""
    if name not in row or row[name] is None:
        raise ValueError(f"{source}: no {name!r} field ({key}; the row has {', '.join(map(str, row))})")
    return row[name]


def read_hub_split(task: TaskConfig, name: str, label_field: str) -> tuple[list[dict], list[str] | None]:
    """The rows of one split of task.hub, and the ClassLabel names of `label_field` (None if it has none).
    Needs the network."""
    import datasets

    try:
        dataset = datasets.load_dataset(task.hub, task.hub_config, split=name)
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        offline = datasets.config.HF_HUB_OFFLINE
        raise ValueError(
            f"task.hub={task.hub} (config {task.hub_config}, split {name}) could not be loaded"
            f"{' because HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set' if offline else ''}: "
            f"{first}; use local files (task.train_files, task.validation_files) offline"
        ) from None
    feature = dataset.features.get(label_field)
    feature = getattr(feature, "feature", feature)  # a Sequence of ClassLabel for tags
    names = list(feature.names) if hasattr(feature, "names") else None
    return dataset.to_list(), names
