"""Training from prepared examples (`electra-pretrain prepare`, then `data=prepared data.path=DIR`).

The folder holds the examples the stream would build, as token ids padded to max_seq_length in memory-mapped
shards, so a run reads them instead of tokenizing:

  manifest.json          format and version, the tokenizer's fingerprint, the builder's settings, the sources,
                         and each shard's example and token counts
  checksums.json         sha256 of every file (verified when a run opens the folder, unless told not to)
  tokenizer/             the tokenizer the ids belong to (a run uses it unless tokenizer.path names another)
  shard_<k>.ids          uint16 (or int32 for vocabularies over 65535) rows of max_seq_length ids, [PAD]-padded
  shard_<k>.meta         int32 pairs per row: the example's length and the length of [CLS] A [SEP]
  held_out.jsonl         the held-out documents' text ({"text": ...} per line), when a share was held out

Dealing: the run's examples form one endless sequence, epoch after epoch; position g holds example
perm_e(g mod n) of epoch e = g // n, where perm_e is a seeded permutation of all n examples (a global shuffle per
epoch, computed rather than stored: permutation.py). Reader ("slot") s of S takes the positions of the sequence
of positions still to deal that are s modulo S, a batch at a time, so a slot reads only its own examples. Its
state is how many it has taken: a resume on the same layout continues exactly; on another layout the positions
the old slots took are worked out from their states and skipped, so no example is repeated or left out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from electra_pretrain.pretrain.permutation import Permutation

MANIFEST = "manifest.json"
FORMAT = "electra-pretrain prepared examples"
VERSION = 1
HELD_OUT_FILE = "held_out.jsonl"
TOKENIZER_FOLDER = "tokenizer"
AHEAD = 32  # batches whose example indices are worked out together


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """sha256 of what decides the ids: the vocabulary, the normaliser and the pre-tokeniser."""
    serialised = json.loads(tokenizer.to_str())
    content = {
        "vocab": sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]),
        "normalizer": serialised.get("normalizer"),
        "pre_tokenizer": serialised.get("pre_tokenizer"),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def shard_files(index: int) -> tuple[str, str]:
    return f"shard_{index:05d}.ids", f"shard_{index:05d}.meta"


def id_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "int32"


@dataclass
class Manifest:
    folder: Path
    content: dict

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {MANIFEST}; not a folder written by `electra-pretrain prepare`")
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
        if content.get("format") != FORMAT or content.get("version") != VERSION:
            raise ValueError(
                f"{path}: format {content.get('format')!r} version {content.get('version')!r}; this version reads "
                f"{FORMAT!r} version {VERSION}"
            )
        return cls(folder, content)

    @property
    def max_seq_length(self) -> int:
        return int(self.content["builder"]["max_seq_length"])

    @property
    def held_out_share(self) -> float:
        return float(self.content["builder"]["held_out_share"])

    @property
    def examples(self) -> int:
        return int(self.content["examples"])

    def check_matches(self, tokenizer: Tokenizer, tokenizer_name: str, max_seq_length: int, eval_share: float) -> None:
        """Refuse a run whose tokenizer or settings differ from those the examples were built with, naming both."""
        made_with = self.content["tokenizer"]["fingerprint"]
        if tokenizer_fingerprint(tokenizer) != made_with:
            raise ValueError(
                f"data.path={self.folder}: its examples were built with another tokenizer (fingerprint "
                f"{made_with[:12]}, {self.folder / TOKENIZER_FOLDER}) than the run's ({tokenizer_name}, fingerprint "
                f"{tokenizer_fingerprint(tokenizer)[:12]}); leave tokenizer.path unset to use the folder's, or "
                "prepare again with this tokenizer"
            )
        if max_seq_length != self.max_seq_length:
            raise ValueError(
                f"data.path={self.folder}: its examples are {self.max_seq_length} tokens long, the run's "
                f"data.max_seq_length is {max_seq_length}; set it to {self.max_seq_length} or prepare again"
            )
        if eval_share and eval_share != self.held_out_share:
            raise ValueError(
                f"data.path={self.folder}: held out {self.held_out_share} of the documents when it was prepared, the "
                f"run asks data.eval_share={eval_share}; set it to {self.held_out_share} (or 0) or prepare again"
            )


class PreparedExamples:
    """The shards of a prepared folder, memory-mapped; rows gathered by global example index."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        content = manifest.content
        self.length = manifest.max_seq_length
        self.dtype = np.dtype(content["id_dtype"])
        self.pad_id = int(content["tokenizer"]["pad_id"])
        self.counts = [int(shard["examples"]) for shard in content["shards"]]
        self.starts = np.cumsum([0, *self.counts])
        self._maps: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _open(self) -> list[tuple[np.ndarray, np.ndarray]]:
        maps = []
        for index, count in enumerate(self.counts):
            ids_name, meta_name = shard_files(index)
            folder = self.manifest.folder
            if count == 0:
                maps.append((np.zeros((0, self.length), self.dtype), np.zeros((0, 2), np.int32)))
                continue
            ids = np.memmap(folder / ids_name, dtype=self.dtype, mode="r", shape=(count, self.length))
            meta = np.memmap(folder / meta_name, dtype=np.int32, mode="r", shape=(count, 2))
            maps.append((np.asarray(ids), np.asarray(meta)))  # plain views of the maps: indexing skips memmap's hooks
        return maps

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """The examples at `indices`, packed: one row each of max_seq_length ids, then the example's length and the
        length of its [CLS] A [SEP] (`unpack` makes the collator's tensors of it)."""
        if self._maps is None:  # opened where it is used: in the process or dataloader worker that reads
            self._maps = self._open()
        shards = np.searchsorted(self.starts, indices, side="right") - 1
        rows = indices - self.starts[shards]
        packed = np.empty((len(indices), self.length + 2), dtype=self.dtype)
        for shard in np.unique(shards):
            where = shards == shard
            shard_ids, shard_meta = self._maps[shard]
            packed[where, : self.length] = shard_ids[rows[where]]
            packed[where, self.length :] = shard_meta[rows[where]]
        return packed


def unpack(packed: np.ndarray, pin_memory: bool = False) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and token_type_ids of packed rows, as the collator makes them."""
    length = packed.shape[1] - 2
    ids = torch.from_numpy(packed[:, :length].astype(np.int64))
    meta = torch.from_numpy(packed[:, length:].astype(np.int64))
    positions = torch.arange(length)
    attention = positions[None, :] < meta[:, :1]
    batch = {
        "input_ids": ids,
        "attention_mask": attention.long(),
        "token_type_ids": ((positions[None, :] >= meta[:, 1:2]) & attention).long(),
    }
    return {k: v.pin_memory() for k, v in batch.items()} if pin_memory else batch


class PreparedLoader:
    """The dataloader of prepared examples: readers hand over packed numpy rows (pickled through the workers' pipe:
    several times faster than tensors through shared memory, measured in docs/performance.md), unpacked here."""

    def __init__(self, loader, pin_memory: bool = False):
        self.loader, self.pin_memory = loader, pin_memory

    def __iter__(self) -> _Unpacking:
        return _Unpacking(iter(self.loader), self.pin_memory)

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)


class _Unpacking:
    def __init__(self, batches, pin_memory: bool):
        self.batches, self.pin_memory = batches, pin_memory

    def __next__(self) -> dict[str, torch.Tensor]:
        return unpack(next(self.batches), self.pin_memory)

    def __iter__(self) -> _Unpacking:
        return self

    def _shutdown_workers(self) -> None:  # stream.shut_down_workers stops a loader's workers through this
        shutdown = getattr(self.batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class PreparedStream(torch.utils.data.IterableDataset):
    """Endless batches of prepared examples for one slot (see the module docstring), packed (`unpack`); yields
    whole batches, so the dataloader runs with batch_size=None."""

    def __init__(self, examples: PreparedExamples, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__()
        if len(examples) == 0:
            raise ValueError(f"data.path={examples.manifest.folder}: holds no examples")
        self.examples = examples
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self._state: dict | None = None
        self._elsewhere: list[dict] | None = None
        self._started = False
        self._permutations: dict[int, Permutation] = {}

    # -- the slot's position
    def _start(self) -> None:
        worker = torch.utils.data.get_worker_info()
        if worker is None:
            self.slot, self.slots = self.rank, self.world_size
        else:
            self.slot, self.slots = self.rank * worker.num_workers + worker.id, self.world_size * worker.num_workers
        self.taken = 0  # examples this slot has taken
        self.dealing = Dealing.fresh()
        if self._state is not None:
            if (self._state["slot"], self._state["slots"]) != (self.slot, self.slots):
                raise ValueError(
                    f"data state of slot {self._state['slot']} of {self._state['slots']} cannot resume slot "
                    f"{self.slot} of {self.slots}; use resume_elsewhere for another layout"
                )
            self.taken = int(self._state["taken"])
            self.dealing = Dealing.from_state(self._state["dealing"])
        elif self._elsewhere is not None:
            self.dealing = Dealing.after(self._elsewhere)
        self._started = True

    def state_dict(self) -> dict:
        if not self._started:
            self._start()
        return {"slot": self.slot, "slots": self.slots, "taken": self.taken, "dealing": self.dealing.state()}

    def load_state_dict(self, state: dict) -> None:
        self._state, self._started = state, False

    def resume_elsewhere(self, old_states: list[dict]) -> None:
        """Continue where the slots of another layout stopped; `old_states` holds every old slot's state."""
        self._elsewhere, self._state, self._started = old_states, None, False

    @staticmethod
    def advance(state: dict, examples: int) -> dict:
        """The state of the same slot after `examples` more examples (batches a checkpoint had not caught up with)."""
        return {**state, "taken": int(state["taken"]) + examples}

    # -- iteration
    def __iter__(self):
        if not self._started or torch.utils.data.get_worker_info() is not None:
            self._start()
        while True:
            # The example indices of the next AHEAD batches in one go (the permutation's cost is per call); only
            # `taken` is state, so a resume recomputes them.
            first = self.taken
            indices = self._indices(first, AHEAD * self.batch_size)
            for _ in range(AHEAD):
                start = self.taken - first
                rows = indices[start : start + self.batch_size]
                self.taken += self.batch_size
                yield self.examples.gather(rows)

    def _indices(self, taken: int, count: int) -> np.ndarray:
        """The example indices of this slot's entries taken .. taken + count - 1."""
        dealt = self.slot + self.slots * np.arange(taken, taken + count, dtype=np.int64)
        epochs, within = np.divmod(self.dealing.position(dealt), len(self.examples))
        indices = np.empty_like(within)
        for epoch in np.unique(epochs):
            where = epochs == epoch
            indices[where] = self._permutation(int(epoch))(within[where])
        return indices

    def _permutation(self, epoch: int) -> Permutation:
        if epoch not in self._permutations:
            self._permutations = {epoch: Permutation(len(self.examples), f"{self.seed}:{epoch}")}
        return self._permutations[epoch]


@dataclass
class Dealing:
    """Which positions of the endless sequence are still to deal, in order: every position from `start` on, but
    those in `skip` (taken by the slots of an earlier layout ahead of the slowest of them)."""

    start: int
    skip: np.ndarray  # sorted, all >= start

    def __post_init__(self) -> None:
        end = int(self.skip[-1]) + 1 if len(self.skip) else self.start
        self._free = np.setdiff1d(np.arange(self.start, end, dtype=np.int64), self.skip)  # to deal, before `end`
        self._end = end

    @classmethod
    def fresh(cls) -> Dealing:
        return cls(0, np.zeros(0, dtype=np.int64))

    @classmethod
    def from_state(cls, state: dict) -> Dealing:
        return cls(int(state["start"]), np.asarray(state["skip"], dtype=np.int64))

    def state(self) -> dict:
        return {"start": self.start, "skip": torch.from_numpy(self.skip.copy())}

    def position(self, dealt: np.ndarray) -> np.ndarray:
        """The positions of the `dealt`-th entries of the sequence still to deal."""
        free = self._free
        if not len(free):
            return self._end + dealt
        return np.where(dealt < len(free), free[np.minimum(dealt, len(free) - 1)], self._end + dealt - len(free))

    @classmethod
    def after(cls, old_states: list[dict]) -> Dealing:
        """What is left to deal once every old slot has taken what its state says."""
        slots = int(old_states[0]["slots"])
        if sorted(int(s["slot"]) for s in old_states) != list(range(slots)):
            raise ValueError(f"data: resuming needs the state of every one of the {slots} old slots")
        old = cls.from_state(old_states[0]["dealing"])
        # Slot s took the dealt entries s, s + S, ..., s + S (taken - 1): entry m is taken iff m < next[m mod S].
        following = {int(s["slot"]): int(s["slot"]) + slots * int(s["taken"]) for s in old_states}
        first, last = min(following.values()), max(following.values())
        entries = np.arange(first, last, dtype=np.int64)
        taken = entries < np.array([following[int(m) % slots] for m in entries], dtype=np.int64)
        return cls(int(old.position(np.array([first]))[0]), old.position(entries[taken]))
