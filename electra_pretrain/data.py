"""The training stream: documents -> examples -> shuffle buffer -> padded batches, sharded and resumable.

Each process reads its own share of the documents (`datasets.distributed.split_dataset_by_node`: whole files when
the file count divides evenly, every world_size-th document otherwise); dataloader workers split that share again
(datasets does this by shard inside a worker). The stream never ends: after the last document it starts the next
epoch with the files in a new seeded order.

Resume: `state_dict()` holds the datasets stream position after the last document read, the examples already built
from it but not yet yielded, the shuffle buffer and the RNG, so `load_state_dict()` continues with exactly the next
example. (datasets' own shuffle buffer is not restored on resume, hence ours.) Exact resume needs
`num_workers=0`; the tokenizer is multi-threaded on its own.
"""

from __future__ import annotations

import logging
import random
import signal
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from tokenizers import Tokenizer

from electra_pretrain.examples import Example, ExampleBuilder

log = logging.getLogger(__name__)

# The signals that ask a run to save and stop (train.StopFlag). SLURM and Ctrl-C send them to every process of the
# job, data workers included; workers ignore them so that the main process can finish its step and save.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


@dataclass
class StreamConfig:
    max_seq_length: int = 128
    shuffle_buffer: int = 1000  # examples; 0 or 1 keeps document order
    seed: int = 0


class ExampleStream(torch.utils.data.IterableDataset):
    """Infinite, deterministic, resumable stream of `Example`s for one process."""

    def __init__(self, documents: Callable[[int], datasets.IterableDataset], tokenizer: Tokenizer,
                 config: StreamConfig, rank: int = 0, world_size: int = 1):
        """`documents(epoch)` builds the document stream of an epoch (all processes, before sharding)."""
        super().__init__()
        self.documents = documents
        self.tokenizer = tokenizer
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self._rng = random.Random(f"{config.seed}:{rank}")
        self._epoch = 0
        self._documents_state: dict | None = None  # datasets' position after the last document read
        self._pending: deque[Example] = deque()  # built from the last document, not yet in the buffer
        self._buffer: list[Example] = []
        self._target_length = config.max_seq_length
        self.examples_yielded = 0

    def _epoch_documents(self) -> datasets.IterableDataset:
        return split_dataset_by_node(self.documents(self._epoch), rank=self.rank, world_size=self.world_size)

    def __iter__(self) -> Iterator[Example]:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.num_workers > 1:
            # Each worker keeps its own RNG; their states are not checkpointed (see module docstring).
            self._rng = random.Random(f"{self.config.seed}:{self.rank}:{worker.id}")
        builder = ExampleBuilder(self.tokenizer, self.config.max_seq_length, self._rng)
        builder.target_length = self._target_length
        while True:
            docs = self._epoch_documents()
            if self._documents_state is not None:
                docs.load_state_dict(self._documents_state)
            produced = bool(self._pending or self._buffer)
            yield from self._drain(self.config.shuffle_buffer)  # what a resumed state still holds comes first
            for row in docs:
                self._pending.extend(builder.document_examples(row["text"]))
                self._target_length = builder.target_length
                self._documents_state = docs.state_dict()
                produced = produced or bool(self._pending)
                yield from self._drain(self.config.shuffle_buffer)
            if not produced:
                raise ValueError("data: the sources yielded no examples for this process "
                                 "(every file empty or skipped, or fewer documents than processes)")
            yield from self._drain(0)  # end of epoch: empty the buffer before the next pass
            self._epoch += 1
            self._documents_state = None
            log.info("data: rank %d starts epoch %d", self.rank, self._epoch)

    def _drain(self, keep: int) -> Iterator[Example]:
        """Move pending examples through the shuffle buffer, yielding while it holds more than `keep`."""
        while self._pending or len(self._buffer) > keep:
            if self._pending:
                self._buffer.append(self._pending.popleft())
            if len(self._buffer) > keep:
                index = self._rng.randrange(len(self._buffer))
                self._buffer[index], self._buffer[-1] = self._buffer[-1], self._buffer[index]
                self.examples_yielded += 1
                yield self._buffer.pop()

    def state_dict(self) -> dict:
        """Plain Python containers only, so it loads with `torch.load(weights_only=True)`."""
        return {
            "epoch": self._epoch,
            "documents": self._documents_state,
            "pending": [(e.input_ids, e.num_first) for e in self._pending],
            "buffer": [(e.input_ids, e.num_first) for e in self._buffer],
            "rng": self._rng.getstate(),
            "target_length": self._target_length,
            "examples_yielded": self.examples_yielded,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            raise ValueError(f"data state was saved by rank {state['rank']} of {state['world_size']}, "
                             f"cannot resume rank {self.rank} of {self.world_size}")
        self._epoch = state["epoch"]
        self._documents_state = state["documents"]
        self._pending = deque(Example(list(ids), n) for ids, n in state["pending"])
        self._buffer = [Example(list(ids), n) for ids, n in state["buffer"]]
        self._rng.setstate(_as_tuples(state["rng"]))
        self._target_length = state["target_length"]
        self.examples_yielded = state["examples_yielded"]


def _as_tuples(value):
    """random.Random.setstate wants nested tuples back; serialisation may have turned them into lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class Collator:
    """Pads examples to a fixed max_seq_length (static shapes for compiled steps) and builds token types."""

    def __init__(self, max_seq_length: int, pad_token_id: int):
        self.max_seq_length = max_seq_length
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        batch = len(examples)
        input_ids = torch.full((batch, self.max_seq_length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, self.max_seq_length), dtype=torch.long)
        token_type_ids = torch.zeros((batch, self.max_seq_length), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example.input_ids)
            assert 0 < n <= self.max_seq_length, n
            input_ids[row, :n] = torch.tensor(example.input_ids)
            attention_mask[row, :n] = 1
            token_type_ids[row, example.num_first:n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def ignore_stop_signals(worker_id: int) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def make_dataloader(stream: ExampleStream, batch_size: int, pad_token_id: int,
                    num_workers: int = 0) -> torch.utils.data.DataLoader:
    # A private generator: starting an iterator draws a seed from it, which must not advance the global RNG that a
    # resumed run restores (dropout and masking would then differ from an uninterrupted run).
    return torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=num_workers,
                                       collate_fn=Collator(stream.config.max_seq_length, pad_token_id),
                                       persistent_workers=num_workers > 0, worker_init_fn=ignore_stop_signals,
                                       generator=torch.Generator().manual_seed(stream.config.seed))
