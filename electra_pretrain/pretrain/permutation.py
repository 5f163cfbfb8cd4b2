"""A seeded permutation of [0, n) that is computed, not stored: a 4-round Feistel network over the smallest
even-bit domain holding n, with cycle walking back into [0, n).

Why: a global shuffle of every prepared example each epoch, for tens of millions of examples, without holding an
n-long index array in every process and every dataloader worker. Any position's example is computed on its own,
so a reader (a process, a worker) deals out its own positions and a resume continues at any position.
"""

from __future__ import annotations

import hashlib

import numpy as np

ROUNDS = 4


class Permutation:
    def __init__(self, size: int, seed: str):
        if size < 1:
            raise ValueError(f"a permutation needs at least one element, got {size}")
        self.size = size
        bits = max(2, (size - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = np.uint64((1 << self.half) - 1)
        digest = hashlib.sha256(seed.encode()).digest()
        self.keys = [np.uint64(int.from_bytes(digest[8 * r : 8 * r + 8], "little")) for r in range(ROUNDS)]

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """The elements at `positions` (each in [0, size)), as int64."""
        values = np.asarray(positions, dtype=np.uint64)
        if values.size and int(values.max()) >= self.size:
            raise IndexError(f"position {int(values.max())} is outside a permutation of {self.size}")
        values = self._encrypt(values)
        outside = values >= self.size
        while outside.any():  # walk the cycle until it comes back inside [0, size): a bijection there
            values[outside] = self._encrypt(values[outside])
            outside = values >= self.size
        return values.astype(np.int64)

    def _encrypt(self, values: np.ndarray) -> np.ndarray:
        half = np.uint64(self.half)
        left, right = values >> half, values & self.mask
        with np.errstate(over="ignore"):  # the mixing multiplies modulo 2**64 on purpose
            for key in self.keys:
                left, right = right, left ^ (_mix(right ^ key) & self.mask)
        return (left << half) | right


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves about half of the output bits."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
