"""The stop rules a fit can use, behind the one interface the training loop drives.

* ``"iterates"`` (default): :class:`~.convergence.IterateConvergence` watches the parameter
  iterates, decays the learning rate and says "converged" only when the Polyak–Ruppert average is
  accurate; the fit returns that average.
* ``"plateau"``: v0.1's :class:`~.schedule.PlateauSchedule` on the ELBO trace, kept so the two can
  be compared (it stops noisy fits early: see ``benchmarks/bench_convergence.py``).

Each rule reports ``"continue"``, ``"decay"`` (the loop then sets :attr:`StopRule.lr`) or
``"converged"`` after every step, knows the guide the fit returns, the evidence that goes into
``summary.json`` and the state a checkpoint needs for an exact resume. numpy + ArviZ only.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ..config import TrainConfig
from ..types import TrainState
from .convergence import ConvergenceConfig, IterateConvergence
from .schedule import PlateauSchedule

Params = tuple[np.ndarray, np.ndarray]


class StopRule(Protocol):
    """What the training loop needs of a stop rule."""

    lr: float
    """Learning rate for the next step."""

    def observe(self, step: int, elbos: np.ndarray, loc: np.ndarray, scale: np.ndarray, raw: np.ndarray | None = None) -> str:
        """After step ``step``: the ELBO trace so far and the new iterate (mean, marginal sds and, for the
        full and low-rank guides, the unconstrained parameters ``raw``); "continue", "decay" or "converged"."""

    def result(self, last: Params) -> Params:
        """The guide the fit returns, given the last iterate."""

    def result_raw(self, last_raw: np.ndarray | None) -> np.ndarray | None:
        """The unconstrained parameters of the guide the fit returns (None when the stepper has none)."""

    def evidence(self) -> dict[str, Any]:
        """JSON-able record of why the rule decided what it decided (``summary.json``)."""

    def save(self, state: TrainState) -> None:
        """Write what an exact resume needs into ``state``."""


class PlateauStop(PlateauSchedule):
    """v0.1's windowed plateau test on the ELBO trace (see :class:`PlateauSchedule`)."""

    def observe(self, step: int, elbos: np.ndarray, loc: np.ndarray, scale: np.ndarray, raw: np.ndarray | None = None) -> str:
        return self.update(step, elbos)

    def result(self, last: Params) -> Params:
        return last

    def result_raw(self, last_raw: np.ndarray | None) -> np.ndarray | None:
        return last_raw

    def evidence(self) -> dict[str, Any]:
        return {
            "criterion": "plateau",
            "thresholds": {"window": self.window, "tol": self.tol, "decays": self.decays},
            "decays": [{"step": int(e["step"]), "lr": e["lr"]} for e in self.events[: self.decays_done]],
            "lr_final": self.lr,
            "note": "windowed ELBO-mean test: gradient noise can fake a plateau (use stop='iterates')",
        }

    def save(self, state: TrainState) -> None:
        state.lr, state.decays_done, state.events = self.lr, self.decays_done, list(self.events)


class IterateStop(IterateConvergence):
    """The iterate-based rule (:class:`IterateConvergence`); the fit returns its average."""

    def observe(self, step: int, elbos: np.ndarray, loc: np.ndarray, scale: np.ndarray, raw: np.ndarray | None = None) -> str:
        return self.update(step, loc, np.log(scale), extra=raw)

    def result(self, last: Params) -> Params:
        try:
            return self.average()
        except ValueError:  # no iterate since the last decay: nothing to average yet
            return last

    def result_raw(self, last_raw: np.ndarray | None) -> np.ndarray | None:
        if last_raw is None:
            return None
        avg = self.average_extra()
        return last_raw if avg is None or avg.size != last_raw.size else avg

    def save(self, state: TrainState) -> None:
        state.lr = self.lr
        state.stop_state = self.state_dict()


def stop_rule_for(cfg: TrainConfig, resume: TrainState | None) -> StopRule:
    """The rule ``cfg.stop`` names, carrying on from ``resume`` when given."""
    if cfg.stop == "plateau":
        rule = PlateauStop(lr=cfg.lr, window=cfg.window, tol=cfg.tol, decays=cfg.lr_decays)
        if resume is not None:
            rule.lr, rule.decays_done, rule.events = resume.lr, resume.decays_done, list(resume.events)
        return rule
    if resume is not None and resume.stop_state is not None:
        return IterateStop.from_state(resume.stop_state, ConvergenceConfig())
    if resume is not None:  # a warm start, or a state saved without the monitor: a fresh phase from here
        return IterateStop(resume.lr, ConvergenceConfig(), start_step=len(resume.history))
    return IterateStop(cfg.lr, ConvergenceConfig())
