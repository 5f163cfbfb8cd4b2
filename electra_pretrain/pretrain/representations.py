"""Is an encoder's representation collapsing? Two numbers over a set of token states (N, H).

- `effective_rank` (Roy and Vetterli, 2007): exp of the entropy of the normalised singular values of the state
  matrix; between 1 (every state on one line) and min(N, H). A collapsed encoder, whose states all point one way,
  scores near 1-2; a healthy one uses a good share of its width.
- `mean_cosine`: the mean cosine similarity over all pairs of distinct states; near 1 when they all point one way,
  near 0 for unrelated directions.
"""

from __future__ import annotations

import torch


def effective_rank(states: torch.Tensor) -> float:
    """exp(H(p)), p = singular values / their sum, of the (N, H) matrix (uncentred: a shared direction counts)."""
    singular = torch.linalg.svdvals(states.double())
    p = singular / singular.sum().clamp(min=1e-300)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def mean_cosine(states: torch.Tensor) -> float:
    """Mean of cos(s_i, s_j) over the N (N - 1) ordered pairs i != j, in O(N H)."""
    n = states.shape[0]
    if n < 2:
        return float("nan")
    unit = torch.nn.functional.normalize(states.double(), dim=-1)
    total = unit.sum(0)
    return float(((total @ total) - n) / (n * (n - 1)))
