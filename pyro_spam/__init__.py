"""pyro_spam: variational Bayesian SMS spam detection with Pyro.

Data flow: course ``.npz`` → features (scale → PCA → scale → terms) → Pyro model + hand-written
mean-field guide → SVI → posterior draws → evaluation → run directory.

The library in one import (``import pyro_spam`` itself loads no torch, Pyro or ArviZ: each name
below imports its module on first use)::

    from pyro_spam import VariationalSpamClassifier, load_default, load_inference_data, load_model, predict_messages, run

- :class:`VariationalSpamClassifier`: the scikit-learn estimator (``fit``, ``predict_proba``, ``predict_interval``).
- :func:`run`: ``pyro-spam run`` as a function: a whole run directory, its ``summary.json`` returned.
- :func:`load_model`: read a model file (``model_<elbo>.npz``) written by a run or by ``save``.
- :func:`predict_messages`: ``pyro-spam predict`` as a function: score raw texts with a run's model.
- :func:`load_default`: the shipped data set (MiniLM embeddings of the SMS Spam Collection).
- :func:`load_inference_data`: a run's ``posterior_<elbo>.nc`` as ArviZ InferenceData, with the
  log-likelihood group the file leaves out rebuilt (``az.loo`` needs it).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.6.0"

# Public name → the module defining it, imported on first access (PEP 562). The modules are named by
# string, not imported here: they import ``__version__`` from this package, which by then is complete.
_LAZY = {
    "VariationalSpamClassifier": "pyro_spam.estimator",
    "load_model": "pyro_spam.estimator",
    "load_default": "pyro_spam.data",
    "load_inference_data": "pyro_spam.api",
    "predict_messages": "pyro_spam.predict",
    "run": "pyro_spam.api",
}

__all__ = ["VariationalSpamClassifier", "__version__", "load_default", "load_inference_data", "load_model", "predict_messages",
           "run"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:  # AttributeError lets `from pyro_spam import exact` import the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
