"""Text sources as streaming `datasets.IterableDataset`s of documents: rows `{"text": str}`, one document each.

- Plain text (.txt, optionally .gz/.bz2/.xz) is read by our own generator under
  `IterableDataset.from_generator`, one shard per file, so we can name the file in every skip or repair (invalid
  UTF-8, NUL bytes, empty files) and bound the memory of megabyte lines. Two layouts: `blank_line` (the original
  format: a sentence or paragraph per line, a blank line between documents) and `line` (one document per line).
- .jsonl/.json, .parquet and .csv go through `datasets.load_dataset(<builder>, streaming=True)`; a hub dataset name
  goes through `load_dataset(name, streaming=True)` for users who are online.
Several sources mix with `interleave_datasets` by weight. Errors name the pattern, file or field at fault.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import logging
import lzma
import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text")
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# A document longer than this many characters is cut into several (examples never cross a cut); reading a line
# this long or longer takes memory in proportion to this bound, not to the line.
MAX_DOCUMENT_CHARS = 1 << 20

# Process-wide tallies of what the readers skipped or repaired; the trainer logs them.
READ_STATS: Counter[str] = Counter()


@dataclass
class SourceSpec:
    """One source of documents (the `data.sources` entries of the Hydra config)."""

    files: list[str] = field(default_factory=list)  # files, globs or directories (local sources)
    hub: str | None = None  # a hub dataset name instead of files
    hub_config: str | None = None
    split: str = "train"
    format: str = "auto"  # auto (by suffix) | text | json | parquet | csv
    text_field: str = "text"  # the column holding the text (json, parquet, csv, hub)
    document_boundary: str = "blank_line"  # text files: blank_line | line
    weight: float = 1.0

    def __post_init__(self) -> None:
        if bool(self.files) == bool(self.hub):
            raise ValueError("a data source needs exactly one of `files` or `hub`")
        if self.format not in ("auto", "text", "json", "parquet", "csv"):
            raise ValueError(f"data source format={self.format!r}; choose auto, text, json, parquet or csv")
        if self.document_boundary not in ("blank_line", "line"):
            raise ValueError(f"document_boundary={self.document_boundary!r}; choose blank_line or line")
        if self.weight <= 0:
            raise ValueError(f"data source weight must be > 0, got {self.weight}")


def resolve_files(patterns: Sequence[str]) -> list[str]:
    """Expand files, globs and directories (recursively) into a sorted file list; a pattern matching nothing fails."""
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        if os.path.isdir(pattern):
            found = sorted(str(p) for p in Path(pattern).rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not found:
            raise FileNotFoundError(f"data: {pattern!r} matches no file")
        files.extend(found)
    return list(dict.fromkeys(files))


def file_format(path: str) -> str:
    stem, suffix = os.path.splitext(path)
    if suffix in COMPRESSED:
        stem, suffix = os.path.splitext(stem)
    if suffix in TEXT_SUFFIXES or suffix == "":
        return "text"
    if suffix in BUILDERS:
        return BUILDERS[suffix]
    raise ValueError(f"data: cannot tell the format of {path!r} from its suffix; set the source's `format`")


def _open_text(path: str) -> io.TextIOBase:
    opener = COMPRESSED.get(os.path.splitext(path)[1], open)
    # Universal newlines turn CRLF and CR into "\n"; undecodable bytes become U+FFFD and are counted per file.
    return io.TextIOWrapper(opener(path, "rb"), encoding="utf-8", errors="replace", newline=None)


def _read_text_file(path: str, boundary: str) -> Iterator[str]:
    """Documents of one text file; skips and repairs are counted and logged with the file's name."""
    replaced = nul = documents = 0
    lines: list[str] = []
    size = 0

    def flush() -> Iterator[str]:
        nonlocal lines, size, documents
        text = "".join(lines).strip()
        lines, size = [], 0
        if text:
            documents += 1
            yield text
        elif boundary == "line":
            READ_STATS["empty_documents"] += 1

    with _open_text(path) as f:
        while piece := f.readline(MAX_DOCUMENT_CHARS):
            replaced += piece.count("\ufffd")
            if "\x00" in piece:
                nul += piece.count("\x00")
                piece = piece.replace("\x00", "")
            line_ends = piece.endswith("\n")
            if boundary == "blank_line" and line_ends and not piece.strip():
                yield from flush()  # a blank line ends a document
                continue
            lines.append(piece)
            size += len(piece)
            if (boundary == "line" and line_ends) or size >= MAX_DOCUMENT_CHARS:
                if size >= MAX_DOCUMENT_CHARS:
                    READ_STATS["documents_cut"] += 1
                yield from flush()
        yield from flush()
    if replaced:
        READ_STATS["invalid_utf8_replaced"] += replaced
        log.warning("%s: %d invalid UTF-8 sequences replaced with U+FFFD", path, replaced)
    if nul:
        READ_STATS["nul_bytes_removed"] += nul
        log.warning("%s: %d NUL bytes removed", path, nul)
    if documents == 0:
        READ_STATS["empty_files"] += 1
        log.warning("%s: no text (empty or whitespace only), skipped", path)


def _text_documents(files: list[str], boundary: str) -> Iterator[dict]:
    for path in files:  # `files` is this shard's share: datasets splits list-valued gen_kwargs into shards
        for text in _read_text_file(path, boundary):
            yield {"text": text}


def _documents_of_field(batch: dict, text_field: str, source: str) -> dict:
    if text_field not in batch:
        raise ValueError(f"{source}: no field {text_field!r} (fields: {sorted(batch)}); set the source's text_field")
    texts = []
    for value in batch[text_field]:
        if isinstance(value, str) and value.strip():
            texts.append(value)
        else:
            READ_STATS["empty_documents"] += 1
    return {"text": texts}


def source_documents(spec: SourceSpec, shuffle_seed: int | None = None) -> datasets.IterableDataset:
    """A streaming dataset of `{"text": document}` rows for one source; files in a seeded order if a seed is given."""
    if spec.hub:
        source = f"hub dataset {spec.hub!r}"
        ds = datasets.load_dataset(spec.hub, spec.hub_config, split=spec.split, streaming=True)
        return _select_text(ds, spec.text_field, source)
    files = resolve_files(spec.files)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(files)
    formats = {spec.format if spec.format != "auto" else file_format(f) for f in files}
    if len(formats) > 1:
        raise ValueError(f"data: {spec.files} mixes formats {sorted(formats)}; give each format its own source")
    fmt = formats.pop()
    if fmt == "text":
        return datasets.IterableDataset.from_generator(
            _text_documents, gen_kwargs={"files": files, "boundary": spec.document_boundary},
            features=datasets.Features({"text": datasets.Value("string")}))
    ds = datasets.load_dataset(fmt, data_files=files, split="train", streaming=True)
    return _select_text(ds, spec.text_field, f"{fmt} files {spec.files}")


def _select_text(ds: datasets.IterableDataset, text_field: str, source: str) -> datasets.IterableDataset:
    columns = list(ds.column_names or [])
    if columns and text_field not in columns:
        raise ValueError(f"{source}: no field {text_field!r} (fields: {columns}); set the source's text_field")
    return ds.map(_documents_of_field, batched=True, fn_kwargs={"text_field": text_field, "source": source},
                  remove_columns=columns or None)


def documents(specs: Sequence[SourceSpec], seed: int, shuffle_files: bool = True) -> datasets.IterableDataset:
    """All sources as one stream; several are interleaved by weight until every one is exhausted."""
    if not specs:
        raise ValueError("data: no sources configured")
    streams = [source_documents(spec, seed + i if shuffle_files else None) for i, spec in enumerate(specs)]
    if len(streams) == 1:
        return streams[0]
    total = sum(spec.weight for spec in specs)
    return datasets.interleave_datasets(streams, probabilities=[spec.weight / total for spec in specs], seed=seed,
                                        stopping_strategy="all_exhausted")
