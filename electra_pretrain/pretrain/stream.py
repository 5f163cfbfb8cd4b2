"""The training stream: documents -> examples -> shuffle buffer -> padded batches, sharded and resumable.

A reader ("slot") is a process, or a dataloader worker of a process: slots = processes x max(1, num_workers). Each
epoch is sharded in one of two ways:
  - by file, when the source has at least as many files (datasets' shards) as there are slots and
    `StreamConfig.shard_files` is on: slot s reads only the files at positions p of the epoch's seeded file order
    with p % slots == s (datasets' `IterableDataset.shard(contiguous=False)`), so each file is read once per epoch;
  - by document otherwise (few files, or a mixture of sources): every slot walks the epoch's global document order
    and builds examples from the documents whose index i has i % slots == slot. Reading is cheap next to
    tokenizing, so every slot reads every document but tokenizes only its own.
The stream never ends: after the last document it starts the next epoch with the files in a new seeded order.

Resume: a slot's `state_dict()` holds the epoch's sharding mode, the datasets position after its last document
read, the index there, the examples built but not yet yielded, the shuffle buffer and the RNG, so
`load_state_dict()` continues with exactly the next example. torchdata's `StatefulDataLoader` collects these states
from every worker (every SNAPSHOT_EVERY batches), so a checkpoint resumes bit-identically with any `num_workers`, as
long as the process and worker counts are unchanged.

Another layout (`resume_elsewhere`), the old slots' positions say which documents were already read:
  - by document: document i was read by old slot i % old_slots iff its epoch is past, or i is below that slot's
    index; the new slots walk the global order and skip exactly those;
  - by file: old slot s read a prefix of its own file shard; until the new slots are past the old slots' epochs,
    they read each old shard on from where its slot stopped and take the documents j (counted from there) with
    j % new_slots == slot.
Either way the examples the old slots had built but not yielded are dealt out among the new ones. No document is
read twice or left out; only the order of examples differs from an uninterrupted run. (A second change of layout
before the first one's carried-over epoch ends is not tracked document by document.)
"""

from __future__ import annotations

import atexit
import copy
import logging
import multiprocessing
import os
import random
import signal
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import datasets
import torch
from tokenizers import Tokenizer
from torchdata.stateful_dataloader import StatefulDataLoader

from electra_pretrain.pretrain.packing import Example, ExampleBuilder
from electra_pretrain.signals import STOP_SIGNALS

log = logging.getLogger(__name__)
# torchdata 0.11 calls a torch function that torch 2.13 deprecates, once per dataloader.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated")


@dataclass
class StreamConfig:
    max_seq_length: int = 128
    shuffle_buffer: int = 1000  # examples; 0 or 1 keeps document order
    seed: int = 0
    shard_files: bool = False  # each slot reads only its own files when there are at least as many as slots


def shards_by_file(num_files: int, slots: int, shard_files: bool) -> bool:
    """Whether an epoch of `num_files` files (datasets' shards) is read file by file by `slots` slots."""
    return shard_files and num_files >= slots


def _slot(rank: int, world_size: int) -> tuple[int, int]:
    """(this reader's slot, number of slots): a dataloader worker is a slot of its own."""
    worker = torch.utils.data.get_worker_info()
    if worker is None:
        return rank, world_size
    return rank * worker.num_workers + worker.id, world_size * worker.num_workers


def _pack(examples) -> dict[str, torch.Tensor]:
    """Examples as three tensors: cheap to pickle with every batch, and loadable with weights_only=True."""
    examples = list(examples)
    return {
        "ids": torch.tensor([i for e in examples for i in e.input_ids], dtype=torch.int32),
        "lengths": torch.tensor([len(e.input_ids) for e in examples], dtype=torch.int32),
        "num_first": torch.tensor([e.num_first for e in examples], dtype=torch.int32),
    }


def _unpack(packed: dict[str, torch.Tensor]) -> list[Example]:
    pieces = torch.split(packed["ids"], packed["lengths"].tolist())
    return [Example(p.tolist(), n) for p, n in zip(pieces, packed["num_first"].tolist())]


class ExampleStream(torch.utils.data.IterableDataset):
    """Infinite, deterministic, resumable stream of `Example`s for one slot (see the module docstring)."""

    def __init__(
        self,
        documents: Callable[[int], datasets.IterableDataset],
        tokenizer: Tokenizer,
        config: StreamConfig,
        rank: int = 0,
        world_size: int = 1,
    ):
        """`documents(epoch)` builds the document stream of an epoch (all processes, before sharding)."""
        super().__init__()
        self.documents = documents
        self.tokenizer = tokenizer
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self._state: dict | None = None  # set by load_state_dict; else the slot starts afresh
        self._elsewhere: list[dict] | None = None  # set by resume_elsewhere
        self._started = False
        self._fixed_slot: tuple[int, int] | None = None  # a replica replaying another slot (advance)

    # -- the slot's position
    def _start(self) -> None:
        self.slot, self.slots = self._fixed_slot or _slot(self.rank, self.world_size)
        self._rng = random.Random(f"{self.config.seed}:{self.slot}")
        self._epoch = 0
        self._documents_state: dict | None = None  # datasets' position after the last own document read
        self._next_index = 0  # index of the document after it: in the epoch's order, or in the slot's own files
        self._mode: str | None = None  # this epoch's sharding: "document", "file" or "carry" (another layout's files)
        self._carry: dict | None = None  # "carry": the old slots' file positions, and where this slot is among them
        self._pending: deque[Example] = deque()  # built from the last document, not yet in the buffer
        self._buffer: list[Example] = []
        self._target_length = self.config.max_seq_length
        self._read_before: dict | None = None  # another layout's positions, until this slot is past them
        self.examples_yielded = 0
        if self._state is not None:
            self._restore(self._state)
        elif self._elsewhere is not None:
            self._carry_over(self._elsewhere)
        self._started = True

    def state_dict(self) -> dict:
        """Plain containers and tensors only, so it loads with `torch.load(weights_only=True)`."""
        if not self._started:
            self._start()
        return {
            "slot": self.slot,
            "slots": self.slots,
            "epoch": self._epoch,
            "documents": self._documents_state,
            "next_index": self._next_index,
            "pending": _pack(self._pending),
            "buffer": _pack(self._buffer),
            "rng": self._rng.getstate(),
            "target_length": self._target_length,
            "read_before": self._read_before,
            "mode": self._mode,
            "carry": copy.deepcopy(self._carry),  # a snapshot: the live one changes as the slot reads on
            "examples_yielded": self.examples_yielded,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue a slot exactly; in a dataloader worker (StatefulDataLoader calls it there) or a process."""
        self._state, self._started = state, False

    def _restore(self, state: dict) -> None:
        if (state["slot"], state["slots"]) != (self.slot, self.slots):
            raise ValueError(
                f"data state of slot {state['slot']} of {state['slots']} cannot resume slot "
                f"{self.slot} of {self.slots}; use resume_elsewhere for another layout"
            )
        self._epoch = state["epoch"]
        self._documents_state = state["documents"]
        self._next_index = state["next_index"]
        self._pending = deque(_unpack(state["pending"]))
        self._buffer = _unpack(state["buffer"])
        self._rng.setstate(_as_tuples(state["rng"]))
        self._target_length = state["target_length"]
        self._read_before = state["read_before"]
        self._mode = state.get("mode", "document")  # states saved before file sharding existed
        self._carry = state.get("carry")
        self.examples_yielded = state["examples_yielded"]

    def resume_elsewhere(self, old_states: list[dict]) -> None:
        """Continue where the slots of another layout (other process or worker counts) stopped; `old_states` holds
        every old slot's state."""
        self._elsewhere, self._state, self._started = sorted(old_states, key=lambda s: s["slot"]), None, False

    def advance(self, state: dict, examples: int) -> dict:
        """The state of the slot `state` belongs to after `examples` more examples, rebuilt as that slot built them
        (the batches a dataloader worker handed out after its last snapshot)."""
        replica = ExampleStream(self.documents, self.tokenizer, self.config)
        replica._fixed_slot = (state["slot"], state["slots"])
        replica.load_state_dict(state)
        iterator = iter(replica)
        for _ in range(examples):
            next(iterator)
        return replica.state_dict()

    def _carry_over(self, old: list[dict]) -> None:
        built = [e for s in old for e in [*_unpack(s["pending"]), *_unpack(s["buffer"])]]
        self._pending = deque(built[self.slot :: self.slots])
        first_epoch = min(s["epoch"] for s in old)
        self._epoch = first_epoch
        if all(s.get("mode") == "file" for s in old if s["epoch"] == first_epoch):
            # Each old slot read a prefix of its own files: read every old shard on from there, dealing its
            # remaining documents among the new slots.
            self._mode = "carry"
            self._carry = {
                "old": [{"epoch": s["epoch"], "documents": s["documents"]} for s in old],
                "shard": 0,  # the old shard being read
                "documents": None,  # the position in it after the last document this slot took
                "next": 0,  # the count (from the old slot's position) of the document after it
            }
            return
        # By document: start reading where the least advanced old slot stopped; everything before it was read.
        start = min((s for s in old if s["epoch"] == first_epoch), key=lambda s: s["next_index"])
        self._mode, self._documents_state, self._next_index = "document", start["documents"], start["next_index"]
        self._read_before = {"slots": len(old), "positions": [(s["epoch"], s["next_index"]) for s in old]}

    def _already_read(self, index: int) -> bool:
        if self._read_before is None:
            return False
        epoch, position = self._read_before["positions"][index % self._read_before["slots"]]
        return epoch > self._epoch or (epoch == self._epoch and index < position)

    # -- iteration
    def __iter__(self) -> Iterator[Example]:
        if not self._started or torch.utils.data.get_worker_info() is not None:
            self._start()  # a worker holds a copy of the stream: set it up there
        builder = ExampleBuilder(self.tokenizer, self.config.max_seq_length, self._rng)
        builder.target_length = self._target_length
        while True:
            fresh = self._next_index == 0 and self._read_before is None and self._mode != "carry"
            produced = bool(self._pending or self._buffer)
            yield from self._drain(self.config.shuffle_buffer)  # what a resumed state still holds comes first
            for text in self._own_documents():
                self._pending.extend(builder.document_examples(text))
                self._target_length = builder.target_length
                produced = produced or bool(self._pending)
                yield from self._drain(self.config.shuffle_buffer)
            if fresh and not produced:
                raise ValueError(
                    f"data: the sources yielded no examples for slot {self.slot} of {self.slots} "
                    "(every file empty or skipped, or fewer documents than processes x workers)"
                )
            yield from self._drain(0)  # end of epoch: empty the buffer before the next pass
            self._epoch += 1
            self._documents_state, self._next_index, self._mode = None, 0, None
            if self._read_before is not None and self._epoch > max(e for e, _ in self._read_before["positions"]):
                self._read_before = None
            if self._carry is not None:
                if self._epoch > max(s["epoch"] for s in self._carry["old"]):
                    self._carry = None
                else:
                    self._mode, self._carry = "carry", {**self._carry, "shard": 0, "documents": None, "next": 0}
            log.info("data: slot %d of %d starts epoch %d", self.slot, self.slots, self._epoch)

    def documents_to_read(self) -> Iterator[str]:
        """The documents this slot tokenizes in its current epoch, without building examples (for measuring what a
        slot reads); a slot built by file reads only these, a slot built by document reads every document."""
        if not self._started:
            self._start()
        yield from self._own_documents()

    def _own_documents(self) -> Iterator[str]:
        """This slot's documents of the epoch, in order, from its position on. The position is updated before a
        document is handed out: its examples are built before the next yield, so a state taken there is exact."""
        docs = self.documents(self._epoch)
        if self._mode is None:
            self._mode = "file" if shards_by_file(docs.num_shards, self.slots, self.config.shard_files) else "document"
        if self._mode == "carry":
            yield from self._carried_documents()
            return
        if self._mode == "file":
            docs = docs.shard(num_shards=self.slots, index=self.slot, contiguous=False)
        if self._documents_state is not None:
            docs.load_state_dict(self._documents_state)
        # iter() rather than a for loop over the dataset: datasets would split its files among the dataloader
        # workers, whereas the slots split them (or the documents) themselves.
        for index, row in enumerate(docs.iter(batch_size=1), start=self._next_index):
            if self._mode == "document" and (index % self.slots != self.slot or self._already_read(index)):
                continue
            self._documents_state, self._next_index = docs.state_dict(), index + 1
            yield row["text"][0]

    def _carried_documents(self) -> Iterator[str]:
        """An epoch another layout read by file: each old slot's shard from where that slot stopped, its documents
        dealt among the new slots by their count from there."""
        carry = self._carry
        assert carry is not None
        old = carry["old"]
        while carry["shard"] < len(old):
            before = old[carry["shard"]]
            if before["epoch"] <= self._epoch:  # a slot already past this epoch read all of its shard
                docs = self.documents(self._epoch).shard(num_shards=len(old), index=carry["shard"], contiguous=False)
                position = carry["documents"] or (before["documents"] if before["epoch"] == self._epoch else None)
                if position is not None:
                    docs.load_state_dict(position)
                for count, row in enumerate(docs.iter(batch_size=1), start=carry["next"]):
                    if count % self.slots == self.slot:
                        carry["documents"], carry["next"] = docs.state_dict(), count + 1
                        yield row["text"][0]
            carry["shard"], carry["documents"], carry["next"] = carry["shard"] + 1, None, 0

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


def stream_states(loader_state: dict) -> list[dict]:
    """The slot states inside a `StatefulDataLoader` state (one per worker, or one without workers), in slot
    order, as of the loader's last snapshot."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            if "slot" in value and "slots" in value:
                found.append(value)
            else:
                for item in value.values():
                    walk(item)

    walk(loader_state)
    return sorted(found, key=lambda state: state["slot"])


def current_slot_states(loader_state: dict, batch_size: int, advance: Callable[[dict, int], dict]) -> list[dict]:
    """The slot states as of the last batch the loader handed out. With workers, the loader's state holds each
    worker's state at its last snapshot and how many batches followed; those batches came from the workers in
    turn, starting after the last one that yielded before the snapshot (as the loader replays them itself), so each
    worker's state is advanced by its share of them. Without workers the state is already current."""
    states = stream_states(loader_state)
    snapshot = loader_state.get("_snapshot")
    since = int(loader_state.get("_steps_since_snapshot", 0) or 0)
    if not snapshot or not since:
        return states
    workers = len(states)
    following = (int(snapshot["_last_yielded_worker_id"]) + 1) % workers
    batches = [0] * workers
    for k in range(since):
        batches[(following + k) % workers] += 1
    return [advance(state, count * batch_size) if count else state for state, count in zip(states, batches)]


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
            token_type_ids[row, example.num_first : n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def shut_down_workers(iterator: object) -> None:
    """Stop the workers of a dataloader iterator now (the regular way: they finish and exit)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


# Workers ignore SIGTERM (below), so the terminate() that multiprocessing sends its daemonic children at exit would
# not end them and its join would wait on them forever (an exception with workers alive hung the run). At exit a
# daemonic child is about to be terminated anyway; the ones still running here are data workers with nothing to
# save: kill them first (atexit runs this before multiprocessing's own handler, registered earlier). The test is
# `daemon`: multiprocessing drops a started process's target, so what a child runs cannot be told from here.
@atexit.register
def _kill_workers_at_exit() -> None:
    daemons = [child for child in multiprocessing.active_children() if child.daemon]
    if daemons and hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would report each kill as a worker failure
    for child in daemons:
        child.kill()
        child.join(timeout=5)


def ignore_stop_signals(worker_id: int) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


# Workers send their stream state with every SNAPSHOT_EVERY-th batch (packing a 1000-example shuffle buffer for every
# batch cost 15-20% of the data path); a state taken between snapshots records how many batches followed the last
# one, and a resumed loader rebuilds and drops those, so resume stays exact.
SNAPSHOT_EVERY = 32


def default_num_workers(device: torch.device) -> int:
    """Workers per process when data.num_workers is not set: none on CPU (they would take cores from the step);
    on a GPU, the process's share of the cores less one for the training loop (a worker builds about 0.24 M
    tokens/s, so ELECTRA-Small's several million tokens/s on an H100 want every core there is)."""
    if device.type == "cpu":
        return 0
    per_process = usable_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, per_process - 1)


def usable_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: its affinity, capped by a container's CPU quota (cgroup v2 cpu.max, or v1
    cpu.cfs_quota_us / cpu.cfs_period_us), which the affinity does not show."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota(os.path.join(cgroup, "cpu.max"))
    if quota is None:
        quota = _cgroup_quota(
            os.path.join(cgroup, "cpu", "cpu.cfs_quota_us"), os.path.join(cgroup, "cpu", "cpu.cfs_period_us")
        )
    return max(1, min(cores, int(quota))) if quota else cores


def _cgroup_quota(limit_file: str, period_file: str | None = None) -> float | None:
    """CPUs a cgroup's quota allows: v2 "limit period" in one file ("max": none), or v1 in two (-1: none)."""
    try:
        with open(limit_file) as f:
            fields = f.read().split()
        if period_file is not None:
            with open(period_file) as f:
                fields = [fields[0], f.read().strip()]
        if fields[0] in ("max", "-1"):
            return None
        return int(fields[0]) / int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def make_dataloader(
    dataset: torch.utils.data.IterableDataset,
    batch_size: int | None,
    collate_fn: Callable | None,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
) -> StatefulDataLoader:
    """A `StatefulDataLoader`: its `state_dict()` holds every worker's slot state as of its last snapshot, and how
    many batches followed, so a resumed run gets exactly the next batch. `batch_size=None` for a dataset that
    yields whole batches (prepared examples)."""
    # A private generator: starting an iterator draws a seed from it, which must not advance the global RNG that a
    # resumed run restores (dropout and masking would then differ from an uninterrupted run).
    loader = StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_fn if collate_fn is not None else _whole_batch,
        worker_init_fn=ignore_stop_signals,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if num_workers else None,
        snapshot_every_n_steps=SNAPSHOT_EVERY,
    )
    return loader


def _whole_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


def example_dataloader(
    stream: ExampleStream, batch_size: int, pad_token_id: int, num_workers: int = 0, **kwargs
) -> StatefulDataLoader:
    """The on-the-fly stream's loader: examples collated into padded batches."""
    return make_dataloader(
        stream,
        batch_size,
        Collator(stream.config.max_seq_length, pad_token_id),
        stream.config.seed,
        num_workers,
        **kwargs,
    )
