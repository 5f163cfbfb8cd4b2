"""Text sources as streaming `datasets.IterableDataset`s of documents: rows `{"text": str}`, one document each.

- Plain text (.txt, optionally .gz/.bz2/.xz) is read by our own generator under
  `IterableDataset.from_generator`, one shard per file, so we can name the file in every skip or repair (invalid
  UTF-8, NUL bytes, empty files) and bound the memory of megabyte lines. Two layouts: `blank_line` (the original
  format: a sentence or paragraph per line, a blank line between documents) and `line` (one document per line).
- .jsonl is read the same way, so a malformed record is named by file and line.
- .json, .parquet and .csv go through `datasets.load_dataset(<builder>, streaming=True)`; a hub dataset name
  goes through `load_dataset(name, streaming=True)` for users who are online.
- Binary files (images, executables, archives) among text files are skipped and counted; if nothing is left, or a
  .csv / .json / .parquet file is to be read as plain text, that is an error.
Several sources mix with `interleave_datasets` by weight. Errors name the pattern, file or field at fault.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets

from electra_pretrain.pretrain.config import SourceSpec

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text")
COMPRESSED: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
JSONL_SUFFIXES = (".jsonl",)
# Signatures of common binary formats, and the share of control bytes in a file's first BINARY_SNIFF_BYTES above
# which it is not text (a few stray NUL bytes in text are repaired instead).
BINARY_MAGIC = (b"\x89PNG", b"\x7fELF", b"%PDF", b"PK\x03\x04", b"\xff\xd8\xff", b"GIF8", b"\x1f\x8b", b"MZ")
BINARY_SNIFF_BYTES = 8192
BINARY_CONTROL_SHARE = 0.1
# A document longer than this many characters is cut into several (examples never cross a cut); reading a line
# this long or longer takes memory in proportion to this bound, not to the line.
MAX_DOCUMENT_CHARS = 1 << 20

# Process-wide tallies of what the readers skipped or repaired; the trainer logs them.
READ_STATS: Counter[str] = Counter()
_BINARY_FILES: set[str] = set()
_RECORDED: set[str] = set()  # the files whose skips and repairs READ_STATS holds


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


def source_format(path: str) -> str:
    suffix = _suffix(path)
    if suffix in TEXT_SUFFIXES or suffix == "":
        return "text"
    if suffix in BUILDERS:
        return BUILDERS[suffix]
    raise ValueError(f"data: cannot tell the format of {path!r} from its suffix; set the source's `format`")


def _open_text(path: str) -> io.TextIOBase:
    opener = COMPRESSED.get(os.path.splitext(path)[1], open)
    # Universal newlines turn CRLF and CR into "\n"; undecodable bytes become U+FFFD and are counted per file.
    return io.TextIOWrapper(opener(path, "rb"), encoding="utf-8", errors="replace", newline=None)


def looks_binary(path: str) -> bool:
    """True for a file whose first bytes are a binary signature or mostly control characters."""
    opener = COMPRESSED.get(os.path.splitext(path)[1], open)
    with opener(path, "rb") as f:
        head = f.read(BINARY_SNIFF_BYTES)
    if head.startswith(BINARY_MAGIC):
        return True
    control = sum(1 for byte in head if byte < 32 and byte not in b"\t\n\r\f\v\b\x1b")
    return bool(head) and control / len(head) > BINARY_CONTROL_SHARE


def text_files(files: list[str], pattern: Sequence[str]) -> list[str]:
    """The files to read as plain text: binary ones skipped (counted, logged); structured formats refused."""
    kept = []
    for path in files:
        if _suffix(path) in BUILDERS:
            raise ValueError(
                f"data: {path} is a {BUILDERS[_suffix(path)]} file, but the source's format=text "
                "would read it as plain text; set data.format=auto (or its own format)"
            )
        if not _skip_binary(path):
            kept.append(path)
    if not kept:
        raise ValueError(f"data: {list(pattern)} holds no text file ({len(files)} binary file(s) skipped)")
    return kept


def _skip_binary(path: str) -> bool:
    """Whether the file is binary, counted and warned about once (every epoch sniffs again)."""
    if not looks_binary(path):
        return False
    if path not in _BINARY_FILES:
        _BINARY_FILES.add(path)
        READ_STATS["binary_files_skipped"] += 1
        log.warning("%s: binary, not text; skipped", path)
    return True


def _suffix(path: str) -> str:
    stem, suffix = os.path.splitext(path)
    return os.path.splitext(stem)[1] if suffix in COMPRESSED else suffix


def _jsonl_documents(files: list[str], text_field: str) -> Iterator[dict]:
    for path in files:  # this shard's share, as for text files
        found: Counter[str] = Counter()
        with _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{path}:{number}: not a JSON record ({error.msg} at column {error.colno})"
                    ) from None
                if not isinstance(record, dict) or text_field not in record:
                    fields = sorted(record) if isinstance(record, dict) else type(record).__name__
                    raise ValueError(
                        f"{path}:{number}: no field {text_field!r} (found: {fields}); set the source's text_field"
                    )
                text = record[text_field]
                if isinstance(text, str) and text.strip():
                    yield {"text": text}
                else:
                    found["empty_documents"] += 1
        _record(path, found)


def _record(path: str, found: Counter[str]) -> None:
    """Add a file's skips and repairs to READ_STATS, with one warning each, the first time the file is read whole
    (epochs, the tokenizer and the held-out set read it again: the counts stay those of the data, not of reads)."""
    if path in _RECORDED:
        return
    _RECORDED.add(path)
    READ_STATS.update(found)
    messages = {
        "invalid_utf8_replaced": "invalid UTF-8 sequences replaced with U+FFFD",
        "nul_bytes_removed": "NUL bytes removed",
        "empty_documents": "empty documents (blank lines, or records without text) skipped",
        "documents_cut": f"documents over {MAX_DOCUMENT_CHARS} characters cut into parts",
    }
    for kind, count in found.items():
        if kind == "empty_files":
            log.warning("%s: no text (empty or whitespace only), skipped", path)
        else:
            log.warning("%s: %d %s", path, count, messages[kind])


def _read_text_file(path: str, boundary: str) -> Iterator[str]:
    """Documents of one text file; skips and repairs are counted and logged with the file's name."""
    found: Counter[str] = Counter()
    documents = 0
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
            found["empty_documents"] += 1

    with _open_text(path) as f:
        while piece := f.readline(MAX_DOCUMENT_CHARS):
            found["invalid_utf8_replaced"] += piece.count("\ufffd")
            if "\x00" in piece:
                found["nul_bytes_removed"] += piece.count("\x00")
                piece = piece.replace("\x00", "")
            line_ends = piece.endswith("\n")
            if boundary == "blank_line" and line_ends and not piece.strip():
                yield from flush()  # a blank line ends a document
                continue
            lines.append(piece)
            size += len(piece)
            if (boundary == "line" and line_ends) or size >= MAX_DOCUMENT_CHARS:
                if size >= MAX_DOCUMENT_CHARS:
                    found["documents_cut"] += 1
                yield from flush()
        if lines:  # the last line had no newline (a file that ends with one has nothing left here)
            yield from flush()
    if documents == 0:
        found["empty_files"] += 1
    _record(path, +found)


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
    if spec.format == "auto":  # a file of no known suffix that is binary (an image among texts) is skipped, counted
        files = [f for f in files if _suffix(f) in (*TEXT_SUFFIXES, *BUILDERS) or not _skip_binary(f)]
        if not files:
            raise ValueError(f"data: {list(spec.files)} holds no text file (binary files skipped)")
    formats = {spec.format if spec.format != "auto" else source_format(f) for f in files}
    if len(formats) > 1:
        raise ValueError(f"data: {spec.files} mixes formats {sorted(formats)}; give each format its own source")
    fmt = formats.pop()
    features = datasets.Features({"text": datasets.Value("string")})
    if fmt == "text":
        return datasets.IterableDataset.from_generator(
            _text_documents,
            gen_kwargs={"files": text_files(files, spec.files), "boundary": spec.document_boundary},
            features=features,
        )
    if fmt == "json" and all(_suffix(f) in JSONL_SUFFIXES for f in files):
        return datasets.IterableDataset.from_generator(
            _jsonl_documents, gen_kwargs={"files": files, "text_field": spec.text_field}, features=features
        )
    ds = datasets.load_dataset(fmt, data_files=files, split="train", streaming=True)
    return _select_text(ds, spec.text_field, f"{fmt} files {spec.files}")


def _select_text(ds: datasets.IterableDataset, text_field: str, source: str) -> datasets.IterableDataset:
    columns = list(ds.column_names or [])
    if columns and text_field not in columns:
        raise ValueError(f"{source}: no field {text_field!r} (fields: {columns}); set the source's text_field")
    return ds.map(
        _documents_of_field,
        batched=True,
        fn_kwargs={"text_field": text_field, "source": source},
        remove_columns=columns or None,
    )


def is_held_out(text: str, share: float) -> bool:
    """Whether a document belongs to the held-out share: decided by its text alone (md5), so every process, every
    epoch and every rerun agree, and a held-out document is never trained on."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8", "replace")).digest()[:8], "big") < share * 2**64


def _in_part(row: dict, share: float, held_out: bool) -> bool:
    return is_held_out(row["text"], share) == held_out


def documents(
    specs: Sequence[SourceSpec],
    seed: int,
    shuffle_files: bool = True,
    held_out_share: float = 0.0,
    held_out: bool = False,
) -> datasets.IterableDataset:
    """All sources as one stream; several are interleaved by weight until every one is exhausted.

    With `held_out_share` > 0 the stream holds only the documents outside that share (or, with `held_out=True`,
    only those inside it).
    """
    if not specs:
        raise ValueError("data: no sources configured")
    streams = [source_documents(spec, seed + i if shuffle_files else None) for i, spec in enumerate(specs)]
    if len(streams) == 1:
        stream = streams[0]
    else:
        total = sum(spec.weight for spec in specs)
        stream = datasets.interleave_datasets(
            streams, probabilities=[spec.weight / total for spec in specs], seed=seed, stopping_strategy="all_exhausted"
        )
    if held_out_share > 0:
        stream = stream.filter(_in_part, fn_kwargs={"share": held_out_share, "held_out": held_out})
    return stream
