"""Pick the training engine a configuration names, on one torch thread."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from ..config import TrainConfig
from ..types import FitResult, TrainState


def fit(
    x: np.ndarray, y: np.ndarray, cfg: TrainConfig, *, progress: bool = False, resume: TrainState | None = None
) -> FitResult:
    """Fit with what ``cfg`` names: L-BFGS on the exact quadrature ELBO (``cfg.optimizer="lbfgs"``,
    plain torch), else Adam with the engine ``cfg.engine``: ``"svi"`` (Pyro) or ``"manual"``
    (plain torch, imports no Pyro)."""
    with torch_threads(1):
        if cfg.optimizer == "lbfgs":
            from .lbfgs import fit_lbfgs

            return fit_lbfgs(x, y, cfg, progress=progress, resume=resume)
        if cfg.engine == "manual":
            from .manual import fit_manual

            return fit_manual(x, y, cfg, progress=progress, resume=resume)
        from .svi import fit_svi

        return fit_svi(x, y, cfg, progress=progress, resume=resume)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch ops on ``n`` threads, restoring the previous setting afterwards.

    One step is a few MFLOP; with two intra-op threads the synchronisation costs more than the
    arithmetic (measured here: 14 ms/step on 1 thread vs 100 ms/step on 2 under load).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
