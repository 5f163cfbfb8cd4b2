"""`electra-pretrain bench data`: tokens/s of the training data path, tokenizing on the fly against reading
prepared examples (the same examples), for each dataloader worker count, in one run; what a reader ("slot") reads
at 1, 8 and 32 slots; `prepare`'s throughput on one core; and the cores a host would need to feed 8 GPUs.

Every figure is per process, as the trainer's loader delivers batches to its training loop.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

# What one H100 consumes in tokens/s when it trains each preset in bf16 (the GPU issue's estimate for Small; Base
# from its 8.3x the FLOPs per token): the projection's demand, not a measurement of this machine.
GPU_TOKENS_PER_S = {"small": 3.0e6, "base": 3.0e6 / 8.3}
SLOT_COUNTS = (1, 8, 32)


def bench_data(
    files: list[str],
    document_boundary: str,
    tokenizer_path: str | None,
    vocab_size: int,
    seq_len: int,
    examples: int,
    workers: list[int],
    batch_size: int = 128,
    prepared: str | None = None,
) -> dict:
    from electra_pretrain.pretrain.config import SourceSpec
    from electra_pretrain.pretrain.prepare import PrepareSettings, prepare
    from electra_pretrain.pretrain.prepared import Manifest, PreparedExamples, PreparedLoader, PreparedStream
    from electra_pretrain.pretrain.sources import documents, resolve_files
    from electra_pretrain.pretrain.stream import ExampleStream, StreamConfig, example_dataloader, make_dataloader
    from electra_pretrain.tokenizer import load_tokenizer, save_tokenizer, token_id, train_tokenizer

    specs = [SourceSpec(files=files, document_boundary=document_boundary)]
    scratch = tempfile.TemporaryDirectory(prefix="bench_data_")
    if tokenizer_path is None:
        tokenizer = train_tokenizer((r["text"] for r in documents(specs, 0)), vocab_size, show_progress=False)
        tokenizer_path = str(Path(scratch.name) / "tokenizer")
        save_tokenizer(tokenizer, tokenizer_path)
    tokenizer = load_tokenizer(tokenizer_path)
    prepare_row = None
    if prepared is None:  # built here on one process: prepare's throughput per core
        prepared = str(Path(scratch.name) / "prepared")
        built = prepare(PrepareSettings(specs, tokenizer_path, prepared, max_seq_length=seq_len, shards=4, num_proc=1))
        prepare_row = {
            "tokens": built["tokens"],
            "seconds": built["seconds"],
            "tokens_per_s_per_core": built["tokens"] / built["seconds"],
        }
    manifest = Manifest.read(prepared)
    batches = max(1, examples // batch_size)

    def timed(loader) -> dict:
        iterator = iter(loader)
        next(iterator)  # workers started and their buffers filled: time the steady state
        start = time.perf_counter()
        tokens = sum(int(next(iterator)["attention_mask"].sum()) for _ in range(batches))
        seconds = time.perf_counter() - start
        del iterator
        return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}

    rows = []
    pad = token_id(tokenizer, "[PAD]")
    for count in workers:
        stream = ExampleStream(lambda epoch: documents(specs, seed=epoch), tokenizer, StreamConfig(seq_len))
        fly = timed(example_dataloader(stream, batch_size, pad, count))
        ready = PreparedStream(PreparedExamples(manifest), batch_size, seed=0)
        from_disk = timed(PreparedLoader(make_dataloader(ready, None, None, 0, count)))
        rows.append(
            {
                "num_workers": count,
                "on_the_fly_tokens_per_s": fly["tokens_per_s"],
                "prepared_tokens_per_s": from_disk["tokens_per_s"],
                "ratio": from_disk["tokens_per_s"] / fly["tokens_per_s"],
                "examples": batches * batch_size,
            }
        )
    corpus_bytes = sum(os.path.getsize(p) for p in resolve_files(files))
    row_bytes = seq_len * PreparedExamples(manifest).dtype.itemsize + 8
    reads = [
        {
            "slots": slots,
            # by document, every reader reads every document to tokenize its share of them
            "by_document_bytes_per_slot": corpus_bytes,
            # by file (as many files as slots at least): measured, the most any slot reads in an epoch
            "by_file_bytes_per_slot": _most_read_by_file(specs, tokenizer, seq_len, slots),
            # a prepared reader touches its own rows only: an epoch's examples over the slots
            "prepared_bytes_per_slot": manifest.examples * row_bytes / slots,
        }
        for slots in SLOT_COUNTS
    ]
    per_core = rows[0]["on_the_fly_tokens_per_s"]  # 0 workers first: one core tokenizing
    prepared_per_core = rows[0]["prepared_tokens_per_s"]
    projection = {
        preset: {
            "tokens_per_s_for_8_gpus": 8 * rate,
            "cores_on_the_fly": 8 * rate / per_core,
            "cores_prepared": 8 * rate / prepared_per_core,
        }
        for preset, rate in GPU_TOKENS_PER_S.items()
    }
    scratch.cleanup()
    return {
        "rows": rows,
        "reads": reads,
        "prepare": prepare_row,
        "projection": projection,
        "corpus_bytes": corpus_bytes,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }


def _most_read_by_file(specs: list, tokenizer, seq_len: int, slots: int) -> float | None:
    """The most text (UTF-8 bytes) any of `slots` slots reads in an epoch when the stream shards by file; None when
    there are fewer files than slots (the stream then shards by document)."""
    from electra_pretrain.pretrain.sources import documents
    from electra_pretrain.pretrain.stream import ExampleStream, StreamConfig, shards_by_file

    if not shards_by_file(documents(specs, seed=0).num_shards, slots, True):
        return None
    config = StreamConfig(seq_len, shard_files=True)
    return max(
        sum(
            len(text.encode())
            for text in ExampleStream(
                lambda e: documents(specs, seed=e), tokenizer, config, slot, slots
            ).documents_to_read()
        )
        for slot in range(slots)
    )
