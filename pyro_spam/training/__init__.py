"""Training: the SVI and manual engines, the exact L-BFGS fit, their shared loop, guards, optimiser and stopping rules.

``fit`` dispatches on ``TrainConfig.optimizer`` and ``TrainConfig.engine``. Names are imported lazily, so importing a numpy-only
submodule (e.g. ``training.schedule``) does not import Pyro.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "fit": ".engines",
    "torch_threads": ".engines",
    "fit_svi": ".svi",
    "fit_manual": ".manual",
    "fit_lbfgs": ".lbfgs",
    "make_elbo": ".elbos",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
