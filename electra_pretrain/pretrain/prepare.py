"""`electra-pretrain prepare`: build the training examples once, in parallel, into a folder a run reads with
`data=prepared data.path=DIR` (the layout: prepared.py).

The examples are those the stream builds (packing.py's builder, the same sources, document boundaries and held-out
share): documents are read in file order; the i-th training document goes to shard i mod `shards`, and each shard
has its own builder with its own seeded RNG, so the output depends on the data, the tokenizer and the settings, not
on how many processes built it. Each of `num_proc` processes reads every document (reading is cheap next to
tokenizing) and builds the shards k with k mod num_proc equal to its index. The folder is written beside its
destination and renamed into place when whole, with checksums.json.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from electra_pretrain.files import publish_folder, staging
from electra_pretrain.pretrain.config import SourceSpec
from electra_pretrain.pretrain.packing import ExampleBuilder
from electra_pretrain.pretrain.prepared import (
    FORMAT,
    HELD_OUT_FILE,
    MANIFEST,
    TOKENIZER_FOLDER,
    VERSION,
    id_dtype,
    shard_files,
    tokenizer_fingerprint,
)
from electra_pretrain.pretrain.sources import READ_STATS, documents, is_held_out
from electra_pretrain.tokenizer import load_tokenizer, save_tokenizer, token_id

WRITE_ROWS = 4096  # examples gathered before a shard's files are appended to


@dataclass
class PrepareSettings:
    sources: list[SourceSpec]
    tokenizer: str
    out: str
    max_seq_length: int = 128
    held_out_share: float = 0.0
    seed: int = 0
    shards: int = 16
    num_proc: int = 1
    extra: dict = field(default_factory=dict)  # recorded in the manifest as given (the command line)

    def __post_init__(self) -> None:
        if self.max_seq_length < 8:
            raise ValueError(f"prepare: --max-seq-length must be >= 8, got {self.max_seq_length}")
        if self.shards < 1 or self.num_proc < 1:
            raise ValueError(f"prepare: --shards and --num-proc must be >= 1, got {self.shards}, {self.num_proc}")
        if not 0.0 <= self.held_out_share < 1.0:
            raise ValueError(f"prepare: --held-out-share must be in [0, 1), got {self.held_out_share}")
        self.sources = [s if isinstance(s, SourceSpec) else SourceSpec(**s) for s in self.sources]


def prepare(settings: PrepareSettings) -> dict:
    """Build the folder; returns its manifest."""
    from electra_pretrain.pretrain.startup import check_tokenizer_fits

    tokenizer = load_tokenizer(settings.tokenizer)
    check_tokenizer_fits(tokenizer, settings.sources, settings.seed, 0.2, settings.tokenizer)
    out = Path(settings.out)
    start = time.perf_counter()
    with staging(out) as staged:
        processes = min(settings.num_proc, settings.shards)
        if processes == 1:
            parts = [build_part(settings, 0, 1, str(staged))]
        else:
            # spawn, not fork: a forked tokenizers library would turn its own parallelism off (or deadlock)
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                parts = pool.starmap(build_part, [(settings, p, processes, str(staged)) for p in range(processes)])
        shards = sorted((shard for part in parts for shard in part["shards"]), key=lambda shard: shard["index"])
        save_tokenizer(tokenizer, staged / TOKENIZER_FOLDER, model_max_length=settings.max_seq_length)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "tokenizer": {
                "fingerprint": tokenizer_fingerprint(tokenizer),
                "source": str(settings.tokenizer),
                "vocab_size": tokenizer.get_vocab_size(),
                "pad_id": token_id(tokenizer, "[PAD]"),
            },
            "builder": {
                "max_seq_length": settings.max_seq_length,
                "held_out_share": settings.held_out_share,
                "seed": settings.seed,
                "shards": settings.shards,
            },
            "sources": [asdict(source) for source in settings.sources],
            "id_dtype": id_dtype(tokenizer.get_vocab_size()),
            "documents": parts[0]["documents"],  # every part reads every document
            "held_out_documents": parts[0]["held_out_documents"],
            "examples": sum(shard["examples"] for shard in shards),
            "tokens": sum(shard["tokens"] for shard in shards),
            "shards": shards,
            "read": dict(parts[0]["read"]),
            "seconds": round(time.perf_counter() - start, 3),
            "processes": processes,
            **settings.extra,
        }
        if manifest["examples"] == 0:
            raise ValueError(
                f"prepare: the sources yielded no examples ({[s.files or s.hub for s in settings.sources]})"
            )
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        publish_folder(staged, out)
    return manifest


def build_part(settings: PrepareSettings, part: int, parts: int, folder: str) -> dict:
    """Build the shards k with k mod `parts` == `part` into `folder`; their counts."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one process per core already
    tokenizer = load_tokenizer(settings.tokenizer)
    dtype = np.dtype(id_dtype(tokenizer.get_vocab_size()))
    pad = token_id(tokenizer, "[PAD]")
    mine = [k for k in range(settings.shards) if k % parts == part]
    writers = {k: ShardWriter(Path(folder), k, settings.max_seq_length, dtype, pad) for k in mine}
    builders = {
        k: ExampleBuilder(tokenizer, settings.max_seq_length, random.Random(f"{settings.seed}:{k}")) for k in mine
    }
    held_out = (
        open(Path(folder) / HELD_OUT_FILE, "w", encoding="utf-8") if part == 0 and settings.held_out_share else None
    )
    training = held_back = 0
    try:
        for row in documents(settings.sources, seed=settings.seed, shuffle_files=False):
            text = row["text"]
            if settings.held_out_share and is_held_out(text, settings.held_out_share):
                held_back += 1
                if held_out is not None:
                    held_out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                continue
            shard = training % settings.shards
            training += 1
            if shard in writers:
                writers[shard].add(builders[shard].document_examples(text))
    finally:
        if held_out is not None:
            held_out.close()
    return {
        "shards": [writer.close() for writer in writers.values()],
        "documents": training,
        "held_out_documents": held_back,
        "read": dict(READ_STATS),
    }


class ShardWriter:
    """Appends examples to one shard's two files, a few thousand rows at a time."""

    def __init__(self, folder: Path, index: int, length: int, dtype: np.dtype, pad: int):
        self.index, self.length, self.dtype, self.pad = index, length, dtype, pad
        ids_name, meta_name = shard_files(index)
        self.ids_file = open(folder / ids_name, "wb")
        self.meta_file = open(folder / meta_name, "wb")
        self.rows: list = []
        self.examples = self.tokens = 0

    def add(self, examples) -> None:
        for example in examples:
            self.rows.append(example)
            if len(self.rows) >= WRITE_ROWS:
                self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        ids = np.full((len(self.rows), self.length), self.pad, dtype=self.dtype)
        meta = np.empty((len(self.rows), 2), dtype=np.int32)
        for row, example in enumerate(self.rows):
            ids[row, : len(example.input_ids)] = example.input_ids
            meta[row] = (len(example.input_ids), example.num_first)
        ids.tofile(self.ids_file)
        meta.tofile(self.meta_file)
        self.examples += len(self.rows)
        self.tokens += int(meta[:, 0].sum())
        self.rows = []

    def close(self) -> dict:
        self._flush()
        self.ids_file.close()
        self.meta_file.close()
        return {"index": self.index, "examples": self.examples, "tokens": self.tokens}
