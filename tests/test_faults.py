"""Faults lose nothing: Ctrl-C and resume, non-finite values, crashes while writing."""

from __future__ import annotations

import json
import logging
import shutil
import signal
from pathlib import Path

import numpy as np
import pyro.optim
import pytest

from pyro_spam.cli import main
from pyro_spam.config import FeatureConfig, RunConfig, TrainConfig
from pyro_spam.errors import TrainingError
from pyro_spam.features import build_features
from pyro_spam.io import rundir
from pyro_spam.io.checkpoint import load_checkpoint, save_checkpoint
from pyro_spam.pipeline import run as pipeline
from pyro_spam.training import fit

from .conftest import make_dataset
from .faultinject import at_step, core_stages_only, ctrl_c_at, no_injection, without_timings

# 240 training messages in mini-batches of 64: 3 batches per epoch, so the interrupts below fall
# in the middle of an epoch and the resumed batch stream must pick up mid-permutation.
RUN_ARGS = ["-K", "2", "--steps", "70", "-S", "8", "--batch-size", "64", "--draws", "100", "-q"]


def cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    ds = make_dataset(n=300, dim=8, seed=1)
    path = tmp_path_factory.mktemp("faults") / "data.npz"
    np.savez(path, X=ds.X, y=ds.y, msg=ds.msg)
    return path


@pytest.fixture(autouse=True)
def _fast_runs(monkeypatch):
    """Core stages only: these tests are about fitting, resuming and writing (see faultinject)."""
    core_stages_only(monkeypatch)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """One uninterrupted run (both ELBOs) to compare interrupted and resumed runs with."""
    mp = pytest.MonkeyPatch()
    core_stages_only(mp)
    out = tmp_path_factory.mktemp("ref") / "run"
    try:
        assert cli(["run", "--data", str(data), *RUN_ARGS, "--out", str(out)]) == 0
    finally:
        mp.undo()
    return out


def _guide(run: Path, kind: str) -> dict:
    return json.loads((run / f"guide_{kind}.json").read_text())


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_ctrl_c_twice_and_resume_equals_uninterrupted_run(reference, data, tmp_path, monkeypatch, capsys):
    """Ctrl-C at trace step 25, resume, Ctrl-C at meanfield step 40, resume: the final parameters,
    histories and every summary number equal the uninterrupted run's bit for bit (tolerance 0:
    the checkpoint restores the unconstrained parameters, Adam moments, schedule, torch/numpy/
    Python RNG states and the position in the mini-batch stream)."""
    out = tmp_path / "run"
    ctrl_c_at(monkeypatch, step=24, fit_index=0)
    assert cli(["run", "--data", str(data), *RUN_ARGS, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted: the trace fit stopped after 25 of 70 steps" in err and f"pyro-spam run --resume {out}" in err
    s = _summary(out)
    assert list(s["fits"]) == ["trace"] and s["fits"]["trace"]["stop_reason"] == "interrupted"
    assert len(_guide(out, "trace")["history"]["elbo"]) == 25
    assert load_checkpoint(out).interrupted == ["trace"]

    ctrl_c_at(monkeypatch, step=39, fit_index=1)  # fit 0 = the resumed trace fit, fit 1 = meanfield
    assert cli(["run", "--resume", str(out), "-q"]) == 130
    s = _summary(out)
    assert s["fits"]["trace"]["stop_reason"] == "budget" and s["fits"]["meanfield"]["steps"] == 40

    no_injection(monkeypatch)
    assert cli(["run", "--resume", str(out), "-q"]) == 0
    for kind in ("trace", "meanfield"):
        got, want = _guide(out, kind), _guide(reference, kind)
        assert got["loc"] == want["loc"] and got["scale"] == want["scale"]
        assert got["history"] == want["history"] and got["steps"] == 70
    assert without_timings(_summary(out)) == without_timings(_summary(reference))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def features():
    fs, _ = build_features(make_dataset(n=300, dim=8, seed=2), FeatureConfig(components=3), seed=0)
    return fs


def test_resume_from_checkpoint_files_is_exact_across_lr_decays(features, tmp_path, monkeypatch):
    """Plateau rule: interrupted after a learning-rate decay, saved, re-read and resumed: the same
    steps, decays, convergence stop, parameters and history as without the interrupt (exactly)."""
    cfg = TrainConfig(elbo="trace", particles=8, batch_size=64, max_steps=400, window=15, tol=50.0, stop="plateau")
    x, y = features.X_train, features.y_train
    full = fit(x, y, cfg)
    assert full.stop_reason == "converged" and len(full.extra["lr_events"]) == 3  # 2 decays, then converged
    cut = int(full.extra["lr_events"][0]["step"]) + 7  # a few steps after the first decay
    ctrl_c_at(monkeypatch, step=cut - 1)
    part = fit(x, y, cfg)
    no_injection(monkeypatch)
    assert part.stop_reason == "interrupted" and part.steps == cut and part.state.exact
    save_checkpoint(tmp_path, RunConfig(train=cfg, elbos=("trace",)), {"trace": part}, features)
    saved = load_checkpoint(tmp_path).fits["trace"]
    rest = fit(x, y, cfg, resume=saved.state)
    assert (rest.stop_reason, rest.steps, rest.extra["lr_events"]) == (full.stop_reason, full.steps, full.extra["lr_events"])
    for a, b in [(rest.loc, full.loc), (rest.scale, full.scale)] + [
        (getattr(rest.history, f), getattr(full.history, f)) for f in ("elbo", "loglik", "kl", "lr")
    ]:
        np.testing.assert_array_equal(a, b)


def test_iterate_rule_resume_is_exact_across_lr_decays(features, tmp_path, monkeypatch):
    """Iterate rule (the default): interrupted a few steps after a learning-rate decay, saved to
    checkpoint files, re-read and resumed: the same decays, stop reason, step count, averaged
    guide and history as the uninterrupted fit (exactly: the monitor's window of iterates and its
    phase bookkeeping are part of the checkpoint)."""
    cfg = TrainConfig(elbo="trace", particles=8, batch_size=32, max_steps=1500)
    x, y = features.X_train, features.y_train
    full = fit(x, y, cfg)
    decays = full.extra["convergence"]["lr_decays"]
    assert decays, "this setting is expected to decay the learning rate at least once"
    cut = int(decays[0]["step"]) + 7
    ctrl_c_at(monkeypatch, step=cut - 1)
    part = fit(x, y, cfg)
    no_injection(monkeypatch)
    assert part.stop_reason == "interrupted" and part.steps == cut and part.state.exact
    save_checkpoint(tmp_path, RunConfig(train=cfg, elbos=("trace",)), {"trace": part}, features)
    saved = load_checkpoint(tmp_path).fits["trace"]
    rest = fit(x, y, cfg, resume=saved.state)
    assert (rest.stop_reason, rest.steps) == (full.stop_reason, full.steps)
    assert rest.extra["convergence"]["lr_decays"] == decays
    for a, b in [(rest.loc, full.loc), (rest.scale, full.scale)] + [
        (getattr(rest.history, f), getattr(full.history, f)) for f in ("elbo", "loglik", "kl", "lr")
    ]:
        np.testing.assert_array_equal(a, b)


def test_hard_interrupt_inside_a_step_keeps_the_last_completed_step(features, monkeypatch, caplog):
    """A KeyboardInterrupt raised inside a step (right after the optimiser has moved the
    parameters, before the step is recorded) returns the previous step's parameters, not the
    half-finished ones; the state is marked inexact and a resume from it still completes the
    budget with finite parameters."""
    x, y = features.X_train, features.y_train
    cfg = TrainConfig(elbo="meanfield", particles=8, max_steps=40)
    calls = {"n": 0}
    real_update = pyro.optim.PyroOptim.__call__

    def update_then_interrupt(self, *args, **kwargs):
        real_update(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt

    monkeypatch.setattr(pyro.optim.PyroOptim, "__call__", update_then_interrupt)
    part = fit(x, y, cfg)
    monkeypatch.undo()
    first12 = fit(x, y, TrainConfig(elbo="meanfield", particles=8, max_steps=12))
    assert part.stop_reason == "interrupted" and part.steps == 12 and not part.state.exact
    np.testing.assert_array_equal(part.loc, first12.loc)
    np.testing.assert_array_equal(part.history.elbo, first12.history.elbo)
    with caplog.at_level(logging.WARNING, logger="pyro_spam.training.loop"):
        rest = fit(x, y, cfg, resume=part.state)
    assert "not identical" in caplog.text
    assert rest.steps == 40 and np.isfinite(rest.loc).all() and np.all(rest.scale > 0)
    np.testing.assert_array_equal(rest.history.elbo[:12], first12.history.elbo)


def test_second_ctrl_c_interrupts_at_once(features, monkeypatch):
    """The first Ctrl-C asks for a stop after the step; a second one is a plain KeyboardInterrupt,
    caught by the loop: still a clean 'interrupted' result with the completed steps."""

    def two_presses(step, fit_index):
        if step == 4:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    at_step(monkeypatch, two_presses)
    fr = fit(features.X_train, features.y_train, TrainConfig(particles=4, max_steps=30))
    assert fr.stop_reason == "interrupted" and fr.steps == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


# --- non-finite values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "1e6"], r"parameters became non-finite in the update of step 0 \(scale at coefficient\(s\) \[.*\] = \[.*(inf|0\.0).*\]\)"
                          r" although the ELBO was finite .*no step had finished yet\. Try a smaller learning rate"),
        (["--elbo", "meanfield", "--prior-scale", "1e30"],
         r"the ELBO became non-finite at step 0 \(loss=(inf|nan), log-likelihood=-?[0-9.]+\); the KL term failed"),
    ],
    ids=["huge-lr-parameters", "huge-prior-scale-kl"],
)
def test_nonfinite_training_stops_with_a_diagnostic(data, tmp_path, capsys, args, message):
    """A blow-up is caught at the step it happens: exit 2, the step, the term or parameter, and
    no run directory."""
    import re

    code = cli(["run", "--data", str(data), "-K", "2", "--steps", "20", "-S", "4", "--draws", "20", "-q",
                "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err), err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_nonfinite_likelihood_names_step_and_last_finite_values(features, monkeypatch):
    """An input turning infinite at step 20 stops the fit at step 21, blaming the likelihood and
    quoting the parameters after step 20 (equal to a 21-step run's, to the 4 printed decimals)."""
    x = features.X_train.copy()  # torch.as_tensor shares this memory: editing x edits the inputs
    y = features.y_train
    cfg = TrainConfig(elbo="trace", particles=8, max_steps=60)

    def corrupt_input(step, fit_index):
        if step == 20:
            x[5, 0] = np.inf

    at_step(monkeypatch, corrupt_input)
    with pytest.raises(TrainingError) as info:
        fit(x, y, cfg)
    monkeypatch.undo()
    msg = str(info.value)
    assert "at step 21" in msg and "likelihood" in msg
    ref = fit(features.X_train, y, TrainConfig(elbo="trace", particles=8, max_steps=21))
    assert f"loc={[round(float(v), 4) for v in ref.state.loc]}" in msg  # the last iterate (ref.loc is the average)


# --- atomic writes ---------------------------------------------------------------------------


def test_atomic_write_crash_keeps_the_old_file(tmp_path, monkeypatch):
    """A crash in the middle of writing (here: the disk fails at fsync) leaves the previous
    summary.json intact and no temporary file behind."""
    target = tmp_path / "summary.json"
    rundir.write_json(target, {"old": 1})

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        rundir.write_json(target, {"new": list(range(10_000))})
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_crash_while_writing_a_run_leaves_the_old_run_intact(reference, data, tmp_path, monkeypatch, capsys):
    """Ctrl-C while an --overwrite run writes its summary: exit 130, the previous run is untouched
    byte for byte, and no staging folder is left."""
    target = tmp_path / "run"
    shutil.copytree(reference, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    real = pipeline.write_json

    def crash_on_summary(path, obj):
        if Path(path).name == "summary.json":
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(pipeline, "write_json", crash_on_summary)
    code = cli(["run", "--data", str(data), *RUN_ARGS, "--steps", "5", "--out", str(target), "--overwrite"])
    assert code == 130 and "nothing was written" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
