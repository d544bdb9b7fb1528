"""Mini-batch indices shared by both training engines (plain torch: the manual engine imports no Pyro)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def minibatches(n: int, batch_size: int | None, gen: torch.Generator) -> Iterator[Tensor | None]:
    """Endless mini-batch index tensors: a fresh permutation each epoch, sliced (None = full batch).

    Passing these indices to ``pyro.plate(subsample=…)`` keeps a step's cost flat in N, unlike
    ``subsample_size``, which draws ``randperm(N)`` every step. The sequence is a function of the
    generator state alone, so a resumed fit can replay it to the step it stopped at.
    """
    if batch_size is None or batch_size >= n:
        while True:
            yield None
    while True:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start : start + batch_size]
