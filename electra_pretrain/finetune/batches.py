"""Encoded examples ("features") and dynamically padded batches, for fine-tuning.

A feature is what the model reads in one row: token ids, token types and its label in model terms. Most kinds
encode one feature per example; `example` points back to it. Batches are padded to their own longest feature
(dynamic padding); evaluation batches come in length order so that they barely pad.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100  # label of positions that are not scored (cross_entropy's ignore_index)


@dataclass
class Feature:
    index: int  # position in its split's features, to put outputs back in order
    example: int  # the example it was encoded from
    input_ids: list  # token ids (multiple choice: one list per choice)
    token_type_ids: list
    label: Any  # class id, value, or one id per token (IGNORE off first sub-tokens); None without a label
    truncated: bool = False  # tokens were cut off at max_length

    def __len__(self) -> int:
        return len(self.input_ids)


class EpochSampler(torch.utils.data.Sampler[int]):
    """This process's share of a seeded shuffle of the training examples, one order per epoch.

    The order of epoch e is a permutation drawn from (seed, e) alone, padded by wrapping around to a multiple of
    the process count, and process r takes every r-th index; so every process takes as many steps, and a stopped run
    resumes mid-epoch by `start` (indices of this epoch already taken) without replaying any random draw.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch, self.start = 1, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[: (-len(order)) % self.world]
        return order[self.rank :: self.world]

    def __len__(self) -> int:
        return len(self.order()) - self.start

    def __iter__(self):
        return iter(self.order()[self.start :])


class TaskDataset(torch.utils.data.Dataset):
    def __init__(self, features: list, by_length: bool = False):
        """`by_length`: longest first (evaluation: fewer pad tokens, and an out-of-memory error comes at once)."""
        self.features = sorted(features, key=lambda f: -len(f)) if by_length else features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int):
        return self.features[i]


def pad(rows: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """(len(rows), length) long tensor, each row left-aligned and padded with `value` (length: the longest row)."""
    length = max(len(row) for row in rows) if length is None else length
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


class Collate:
    """Pads Features to the batch's longest: input_ids, attention_mask, token_type_ids (B, L), index (B,), and labels
    (B,) or (B, L) when the features have them (`label_dtype`: long for classes, float for values)."""

    def __init__(self, pad_id: int, label_dtype: torch.dtype = torch.long):
        self.pad_id = pad_id
        self.label_dtype = label_dtype

    def __call__(self, batch: list[Feature]) -> dict[str, torch.Tensor]:
        ids = pad([f.input_ids for f in batch], self.pad_id)
        out = {
            "input_ids": ids,
            "attention_mask": pad([[1] * len(f) for f in batch], 0, ids.shape[1]),
            "token_type_ids": pad([f.token_type_ids for f in batch], 0, ids.shape[1]),
            "index": torch.tensor([f.index for f in batch]),
        }
        if all(f.label is not None for f in batch):
            if isinstance(batch[0].label, list):
                out["labels"] = pad([f.label for f in batch], IGNORE, ids.shape[1])
            else:
                out["labels"] = torch.tensor([f.label for f in batch], dtype=self.label_dtype)
        return out
