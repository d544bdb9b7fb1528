"""The training loop both engines share: batches, guards, bookkeeping, stop rule, progress, Ctrl-C.

An engine supplies a :class:`Stepper` (one optimiser step on one mini-batch, its parameters and
its learning rate); :func:`run_steps` drives it and keeps the per-step record. So a step, its
guards and its bookkeeping are each readable on their own, and both engines stop for the same
reasons in the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..errors import ConfigError, TrainingError
from ..types import ElboHistory, FitResult, TrainState
from .batching import minibatches
from .guards import Params, check_params, quiet_nan_warnings, sigint_deferred
from .stopping import StopRule

log = logging.getLogger(__name__)


class Stepper(Protocol):
    """One engine's optimiser step."""

    def step(self, step: int, idx: torch.Tensor | None, last: Params | None) -> tuple[float, float]:
        """Update the parameters from the mini-batch ``idx`` (None: full batch); return the ELBO estimate
        the update used and its log-likelihood part. Raises ``TrainingError`` for a non-finite ELBO."""

    def params(self) -> Params:
        """Copies of the current (loc, scale): the guide's mean and marginal sds."""

    def raw(self) -> np.ndarray | None:
        """The guide's unconstrained parameters when (loc, scale) do not determine it (full and low-rank
        guides), else None. The iterate rule averages them over its window."""

    def from_raw(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(loc, scale, scale_tril)`` of the guide with unconstrained parameters ``raw``."""

    def set_lr(self, lr: float) -> None:
        """Use learning rate ``lr`` from the next step on."""


@dataclass
class LoopResult:
    """How a run of :func:`run_steps` ended.

    history : ElboHistory
        Every completed step, the resumed ones included.
    last : tuple of ndarray or None
        (loc, scale) after the last completed step (None if no step completed).
    steps : int
        Completed steps, the resumed ones included.
    stop_reason : str
        ``"converged"``, ``"budget"`` or ``"interrupted"``.
    at_boundary : bool
        The engine's state is exactly at the end of step ``steps`` (an exact resume can start there).
    """

    history: ElboHistory
    last: Params | None
    steps: int
    stop_reason: str
    at_boundary: bool
    last_raw: np.ndarray | None = None


def run_steps(
    stepper: Stepper,
    rule: StopRule,
    batches: Iterator[torch.Tensor | None],
    *,
    total: int,
    previous: ElboHistory | None,
    progress: bool,
    desc: str,
) -> LoopResult:
    """Step until the stop rule says converged, ``total`` steps are done, or Ctrl-C.

    Ctrl-C is deferred to the end of the running step (see :func:`~.guards.sigint_deferred`); a
    second press interrupts at once and keeps the last completed step.
    """
    start = len(previous) if previous is not None else 0
    elbos = np.empty(total, dtype=np.float64)
    lrs = np.empty(total, dtype=np.float64)
    logliks: list[float] = []
    if previous is not None:
        elbos[:start] = previous.elbo
        lrs[:start] = previous.lr
    last: Params | None = None
    last_raw: np.ndarray | None = None
    stop_reason = "budget"
    done = start
    at_boundary = True
    bar = tqdm(total=total, initial=start, desc=desc, disable=not progress, leave=False, unit="step")
    try:
        with sigint_deferred() as sigint, quiet_nan_warnings():
            for step in range(start, total):
                idx = next(batches)
                at_boundary = False
                elbo, ll = stepper.step(step, idx, last)
                snap = stepper.params()  # per step: bad parameters are caught at once, the last finite ones kept
                check_params(step, -elbo, ll, snap, last)
                elbos[step] = elbo
                lrs[step] = rule.lr
                logliks.append(ll)
                raw = stepper.raw()
                last, last_raw, done = snap, raw, step + 1
                bar.update(1)
                verdict = rule.observe(step, elbos, *snap, raw=raw)
                if verdict == "decay":
                    stepper.set_lr(rule.lr)
                at_boundary = True
                if verdict == "converged":
                    stop_reason = "converged"
                    break
                if sigint.requested:
                    stop_reason = "interrupted"
                    log.warning("training interrupted after step %d of %d; stopping with a consistent state", done, total)
                    break
    except KeyboardInterrupt:  # a second Ctrl-C, or one raised where the handler could not be installed
        stop_reason = "interrupted"
        log.warning("training interrupted at step %d; keeping the last completed step", done)
    finally:
        bar.close()
    if last is None and previous is None:
        raise TrainingError("training was interrupted before the first step finished")
    ll_new = np.asarray(logliks[: done - start], dtype=np.float64)
    ll_all = np.concatenate([previous.loglik, ll_new]) if previous is not None else ll_new
    hist = ElboHistory(elbo=elbos[:done].copy(), loglik=ll_all, kl=ll_all - elbos[:done], lr=lrs[:done].copy())
    return LoopResult(history=hist, last=last, steps=done, stop_reason=stop_reason, at_boundary=at_boundary, last_raw=last_raw)


def check_batch_size(cfg: TrainConfig, n: int) -> None:
    """Refuse a batch larger than the training set (both engines)."""
    if cfg.batch_size is not None and cfg.batch_size > n:
        raise ConfigError(
            f"batch size {cfg.batch_size} exceeds the {n} training messages; "
            f"pass --batch-size {n} or less, or 'full'"
        )


def batch_stream(n: int, cfg: TrainConfig, start: int) -> Iterator[torch.Tensor | None]:
    """The mini-batch stream of a fit, replayed to step ``start`` (it is a function of (seed, step) alone)."""
    batches = minibatches(n, cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    for _ in range(start):
        next(batches)
    return batches


def train_state(out: LoopResult, rule: StopRule, resume: TrainState | None, seconds: float,
                from_raw: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]] | None = None) -> TrainState:
    """Where the fit stands after :func:`run_steps`: the last iterate, history and the rule's state
    (the engine adds its optimiser and RNG states when it has them). ``from_raw``: the stepper's
    :meth:`Stepper.from_raw`, for guides whose unconstrained parameters the rule averages."""
    last = out.last if out.last is not None else (resume.loc, resume.scale)
    state = TrainState(loc=last[0], scale=last[1], history=out.history, lr=rule.lr, decays_done=0, seconds=seconds)
    if out.last_raw is not None and from_raw is not None:
        state.scale_tril = from_raw(out.last_raw)[2]
    elif resume is not None:
        state.scale_tril = resume.scale_tril
    rule.save(state)
    avg_raw = rule.result_raw(out.last_raw)
    if avg_raw is not None and from_raw is not None:
        state.fit_loc, state.fit_scale, state.fit_scale_tril = from_raw(avg_raw)
        return state
    fit_loc, fit_scale = rule.result(last)
    if fit_loc is not last[0]:
        state.fit_loc, state.fit_scale = fit_loc, fit_scale
    return state


def fit_result(cfg: TrainConfig, engine: str, out: LoopResult, rule: StopRule, resume: TrainState | None,
               seconds: float, state: TrainState) -> FitResult:
    """The :class:`FitResult` both engines return: the rule's guide (for the iterate rule, the
    Polyak–Ruppert average), the history, how training ended and the rule's evidence."""
    last = out.last if out.last is not None else (resume.loc, resume.scale)
    loc, scale = (state.fit_loc, state.fit_scale) if state.fit_loc is not None else last  # see train_state
    tril = state.fit_scale_tril if state.fit_loc is not None else state.scale_tril
    evidence = rule.evidence()
    decays = evidence.get("decays") or evidence.get("lr_decays") or []
    return FitResult(
        elbo=cfg.elbo,
        engine=engine,
        loc=np.asarray(loc, dtype=np.float64),
        scale=np.asarray(scale, dtype=np.float64),
        history=out.history,
        steps=out.steps,
        seconds=seconds,
        stop_reason=out.stop_reason,
        extra={"lr_final": rule.lr, "decays_done": len(decays), "lr_events": list(getattr(rule, "events", decays)),
               "convergence": evidence},
        state=state,
        guide=cfg.guide,
        scale_tril=None if tril is None else np.asarray(tril, dtype=np.float64),
    )
