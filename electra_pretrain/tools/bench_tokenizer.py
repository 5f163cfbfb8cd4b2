"""`electra-pretrain bench tokenizer`: our deterministic WordPiece trainer against tokenizers' own
`WordPieceTrainer` on the same documents, each in a fresh process: CPU time (every thread), wall time and peak
memory, and their ratios. The same merge rule on both sides (pairs seen at least `min_frequency` times)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

TRAINERS = ("tokenizers", "ours")


def read_documents(files: list[str], document_boundary: str) -> Iterator[str]:
    """Documents of plain text files (a light reader: no datasets import in the measured process)."""
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            if document_boundary == "line":
                yield from (line for line in f if line.strip())
                continue
            lines: list[str] = []
            for line in f:
                if line.strip():
                    lines.append(line)
                elif lines:
                    yield "".join(lines)
                    lines = []
            if lines:
                yield "".join(lines)


def train_once(trainer: str, files: list[str], document_boundary: str, vocab_size: int, min_frequency: int) -> dict:
    """Train one vocabulary in this process; what it cost."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    from electra_pretrain.tokenizer import SPECIAL_TOKENS, _bert_pipeline, train_tokenizer

    start = time.perf_counter()
    texts = read_documents(files, document_boundary)
    if trainer == "tokenizers":
        tokenizer = _bert_pipeline(Tokenizer(WordPiece(unk_token="[UNK]")), lowercase=True)
        native = WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=native)
    else:
        tokenizer = train_tokenizer(texts, vocab_size, min_frequency=min_frequency, show_progress=False)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "trainer": trainer,
        "tokens": tokenizer.get_vocab_size(),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(usage),
    }


def peak_rss_mb(usage: resource.struct_rusage) -> float:
    """This process's peak resident memory: VmHWM belongs to the process image (ru_maxrss outlives an exec, so a
    child would report its parent's peak when that was higher)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return usage.ru_maxrss / 1024


def bench_tokenizer(files: list[str], document_boundary: str, vocab_size: int, min_frequency: int = 2) -> dict:
    """Both trainers, each in its own process (so peak memory is its own); ours over tokenizers' as ratios."""
    from electra_pretrain.pretrain.sources import resolve_files

    files = resolve_files(files)
    megabytes = sum(os.path.getsize(p) for p in files) / 1e6
    rows = []
    for trainer in TRAINERS:
        settings = [trainer, files, document_boundary, vocab_size, min_frequency]
        result = subprocess.run(
            [sys.executable, "-m", "electra_pretrain.tools.bench_tokenizer", json.dumps(settings)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    native, ours = rows
    return {
        "megabytes": megabytes,
        "vocab_size": vocab_size,
        "rows": rows,
        "cpu_ratio": ours["cpu_s"] / native["cpu_s"],
        "memory_ratio": ours["peak_rss_mb"] / native["peak_rss_mb"],
    }


if __name__ == "__main__":
    print(json.dumps(train_once(*json.loads(sys.argv[1]))))
