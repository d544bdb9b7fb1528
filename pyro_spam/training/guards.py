"""Per-step guards shared by both engines: non-finite ELBO or parameters, deferred Ctrl-C.

Each check raises :class:`~pyro_spam.errors.TrainingError` at once, naming the step, the term or
parameter that failed and the last finite values, so a diverging fit never returns garbage.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..errors import TrainingError

Params = tuple[np.ndarray, np.ndarray]


def last_finite(last: tuple[np.ndarray, np.ndarray] | None) -> str:
    if last is None:
        return "no step had finished yet"
    loc, scale = ([round(float(v), 4) for v in a] for a in last)
    return f"last finite values: loc={loc}, scale={scale}"


def raise_nonfinite(step: int, loss: float, loglik: torch.Tensor | float, last) -> None:
    ll = float(loglik)
    term = "likelihood" if not math.isfinite(ll) else "KL"
    raise TrainingError(
        f"the ELBO became non-finite at step {step} (loss={loss}, log-likelihood={ll}); the {term} term failed; "
        f"{last_finite(last)}. Try a smaller learning rate or prior scale, or check the inputs for extreme values."
    )


def check_params(step: int, loss: float, loglik: torch.Tensor | float, snap: tuple[np.ndarray, np.ndarray], last) -> None:
    """Raise at once if the update of ``step`` left a non-finite loc or a scale that is not positive and finite."""
    loc, scale = snap
    bad_loc = ~np.isfinite(loc)
    bad_scale = ~(np.isfinite(scale) & (scale > 0))
    if not (bad_loc.any() or bad_scale.any()):
        return
    parts = []
    if bad_loc.any():
        parts.append(f"loc at coefficient(s) {np.nonzero(bad_loc)[0].tolist()} = {loc[bad_loc].tolist()}")
    if bad_scale.any():
        parts.append(f"scale at coefficient(s) {np.nonzero(bad_scale)[0].tolist()} = {scale[bad_scale].tolist()}")
    raise TrainingError(
        f"the parameters became non-finite in the update of step {step} ({'; '.join(parts)}) although the ELBO "
        f"was finite (loss={loss}, log-likelihood={float(loglik)}): the optimiser step overflowed; {last_finite(last)}. "
        "Try a smaller learning rate."
    )


def raise_invalid(step: int, exc: ValueError, last) -> None:
    text = str(exc)
    if "Expected parameter" not in text and "Expected value argument" not in text:
        raise exc
    term = "likelihood" if "Bernoulli" in text.split("\n", 1)[0] else "KL (guide or prior)"
    raise TrainingError(
        f"a non-finite or invalid value reached the {term} term at step {step} ({text.splitlines()[0][:200]}); "
        f"{last_finite(last)}. Try a smaller learning rate or prior scale, or check the inputs for extreme values."
    ) from None


class StopRequest:
    requested: bool = False


@contextlib.contextmanager
def sigint_deferred() -> Iterator[StopRequest]:
    """Turn the first Ctrl-C into a request to stop after the running step.

    A ``KeyboardInterrupt`` raised inside ``svi.step`` could leave one parameter updated and the
    other not; deferring it keeps the saved state consistent. The first press restores the
    previous handler, so a second press interrupts at once. Installed only in the main thread
    and only over Python's default handler (elsewhere Ctrl-C arrives as an exception, as before).
    """
    req = StopRequest()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield req
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        req.requested = True  # no logging here: the loop reports it at the step boundary
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield req
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def quiet_nan_warnings() -> Iterator[None]:
    """Silence Pyro's "Encountered NaN/inf" warnings: every step is checked and reported as a TrainingError."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Encountered (NaN|[+-]?inf)", category=UserWarning)
        yield

