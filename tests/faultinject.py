"""Helpers for the robustness tests: a real Ctrl-C at a chosen training step, a recorder of file
writes, a fast pipeline with the core stages only, summaries without timings."""

from __future__ import annotations

import itertools
import os
import signal
import sys

import pytest

from pyro_spam.pipeline import run as pipeline
from pyro_spam.training import stopping

ORIGINAL_RULES = {"IterateStop": stopping.IterateStop, "PlateauStop": stopping.PlateauStop}

# Stages that write what fitting and resuming produce; the others (figures, evaluation, ArviZ,
# report) only read the fits and cost ~10 s per run on a busy 2-core machine.
CORE_STAGES = ("stage_core_files", "stage_model_files", "stage_checkpoint")
TIMING_WORDS = ("second", "time", "timing", "duration", "elapsed", "_ms", "ms_per")


def at_step(monkeypatch: pytest.MonkeyPatch, action) -> None:
    """Call ``action(step, fit_index)`` from inside the training loop after every step, whatever the
    stop rule: both rule classes are replaced by subclasses whose per-step ``observe`` calls it
    once the rule has seen the step. Fits are counted in the order they start (``--elbo both`` fits trace, then meanfield)."""
    counter = itertools.count()

    def wrap(base):
        class Injecting(base):
            def observe(self, step_, *args, **kwargs):
                if not hasattr(self, "_fit_index"):
                    self._fit_index = next(counter)
                verdict = super().observe(step_, *args, **kwargs)
                action(step_, self._fit_index)
                return verdict

        return Injecting

    monkeypatch.setattr(stopping, "IterateStop", wrap(ORIGINAL_RULES["IterateStop"]))
    monkeypatch.setattr(stopping, "PlateauStop", wrap(ORIGINAL_RULES["PlateauStop"]))


def no_injection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the real stop rules back (other patches of the same monkeypatch stay)."""
    for name, cls in ORIGINAL_RULES.items():
        monkeypatch.setattr(stopping, name, cls)


def ctrl_c_at(monkeypatch: pytest.MonkeyPatch, *, step: int, fit_index: int = 0) -> None:
    """Send SIGINT to this process while step ``step`` (0-based) of the ``fit_index``-th fit runs.

    The signal is raised from the stop rule's per-step call, i.e. from inside the training loop
    after the step's update, exactly as a user's Ctrl-C would arrive.
    """

    def press(step_: int, index: int) -> None:
        if index == fit_index and step_ == step:
            signal.raise_signal(signal.SIGINT)

    at_step(monkeypatch, press)


def core_stages_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run only the stages that write fits, model files and the checkpoint (fast runs)."""
    stages = [f for f in pipeline.RUN_STAGES if f.__name__ in CORE_STAGES]
    assert {f.__name__ for f in stages} == set(CORE_STAGES), "a core stage was renamed"
    monkeypatch.setattr(pipeline, "RUN_STAGES", stages)


def without_timings(obj):
    """A summary with every wall-clock entry removed (keys naming seconds, times or durations)."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if not any(w in k.lower() for w in TIMING_WORDS)}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


_WRITES: list[str] | None = None
_HOOKED = False


def _audit(event: str, args) -> None:
    if _WRITES is None or event != "open":
        return
    path, mode, flags = args
    if isinstance(path, int):
        return
    writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    )
    if writes:
        _WRITES.append(os.fsdecode(path))


class record_writes:
    """Collect every path opened for writing meanwhile (Python-level opens, ``os.open`` included),
    through an audit hook (``sys.addaudithook``)."""

    def __enter__(self) -> list[str]:
        global _WRITES, _HOOKED
        if not _HOOKED:  # audit hooks cannot be removed: install once, gate by _WRITES
            sys.addaudithook(_audit)
            _HOOKED = True
        _WRITES = []
        return _WRITES

    def __exit__(self, *exc) -> None:
        global _WRITES
        _WRITES = None
