"""The report's Reproduce command (issue 17): it names every ``pyro-spam run`` option whose value
differs from the default, parses back to the very same RunConfig, and re-running it gives the
same fitted guides bit for bit."""

from __future__ import annotations

import argparse
import dataclasses
import doctest
import json
import shlex
import time
from pathlib import Path

import numpy as np
import pytest

from pyro_spam import cli
from pyro_spam.config import FeatureConfig, RunConfig, TrainConfig
from pyro_spam.pipeline import run as pipeline
from pyro_spam.report import sections
from pyro_spam.report.sections import reproduce_args, reproduce_command, unflagged_settings

from .conftest import make_dataset

# CLI options of `pyro-spam run` that do not set a RunConfig field.
NOT_CONFIG = {"help", "out", "overwrite", "resume", "quiet", "nuts"}

CASES = [
    [],
    ["--window", "30", "--tol", "0.3", "--batch-size", "200", "--prior-scale", "2", "-K", "3", "--steps", "300", "-S", "16"],
    ["--guide", "fullrank"],
    ["--guide", "lowrank", "--rank", "2", "--elbo", "stl,trace", "--variance-target", "0.5", "--lr", "0.03"],
    ["-K", "auto", "--variance-target", "0.4", "--features", "linear", "--test-size", "0.3", "--draws", "250"],
    ["--optimizer", "lbfgs", "--grad-tol", "1e-06", "--guide", "fullrank", "--data", "my data/sms spam.npz"],
    ["--engine", "manual", "--elbo", "meanfield", "--stop", "plateau", "--seed", "3", "--batch-size", "full"],
    ["--elbo", "all", "-S", "32", "--prior-scale", "0.5", "--stop", "plateau", "--window", "5", "--tol", "1e-3"],
]


def parse_run(argv: list[str]) -> argparse.Namespace:
    """``pyro-spam run ARGV`` as the CLI parses it."""
    return cli.build_parser().parse_args(["run", *argv])


def config_of(argv: list[str]) -> RunConfig:
    """The RunConfig ``pyro-spam run ARGV`` runs with."""
    return cli._run_config(parse_run(argv))


def command_argv(command: str) -> tuple[list[str], str]:
    """A printed ``pyro-spam run … --out DIR`` split into the arguments after ``run`` and DIR."""
    words = shlex.split(command)
    assert words[:2] == ["pyro-spam", "run"] and words[-2] == "--out", command
    return words[2:-2], words[-1]


def run_parser() -> argparse.ArgumentParser:
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_every_config_option_of_the_cli_is_in_the_table():
    """Each option of `pyro-spam run` either sets part of the RunConfig and has a row in the Reproduce
    table (one of its spellings), or is one of the output/behaviour options; and the table lists each
    config option once."""
    table = {flag for flag, *_ in sections._RUN_OPTIONS}
    config_dests = set()
    for action in run_parser()._actions:
        if action.dest in NOT_CONFIG:
            continue
        config_dests.add(action.dest)
        assert table & set(action.option_strings), f"{action.option_strings} is missing from the Reproduce command"
    assert config_dests == set(cli.CONFIG_OPTIONS)
    assert len(table) == len(sections._RUN_OPTIONS) == len(cli.CONFIG_OPTIONS)


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a) or "defaults")
def test_command_parses_back_to_the_same_config(argv):
    """The printed command, parsed by the CLI's own parser, builds a RunConfig equal to the run's
    (compared as dataclasses and as the dict summary.json stores)."""
    config = config_of(argv)
    stored = json.loads(json.dumps(config.to_dict()))  # as read back from summary.json
    args, out = command_argv(reproduce_command(stored, "runs/again"))
    assert out == "runs/again"
    again = config_of(args)
    assert again == config
    assert json.loads(json.dumps(again.to_dict())) == stored
    assert unflagged_settings(stored) == {}


def test_options_away_from_their_default_are_printed():
    """The known gaps: --window/--tol away from their defaults appear with the iterate rule, as do
    --variance-target with a fixed K, --rank, --grad-tol and --data; options at their default that
    the run's mode does not read are left out."""
    printed = reproduce_args(config_of(CASES[1]).to_dict())
    text = " ".join(printed)
    for part in ("--window 30", "--tol 0.3", "--batch-size 200", "--prior-scale 2.0", "-K 3", "--steps 300", "-S 16", "--stop iterates"):
        assert part in text
    text = " ".join(reproduce_args(config_of(["--variance-target", "0.5", "--rank", "2", "--grad-tol", "0.001"]).to_dict()))
    assert "--variance-target 0.5" in text and "--rank 2" in text and "--grad-tol 0.001" in text
    defaults = reproduce_args(RunConfig().to_dict())
    assert not {"--data", "--window", "--tol", "--optimizer", "--grad-tol", "--guide", "--rank", "--variance-target"} & set(defaults)
    # the options the run's optimiser, guide or stop rule reads are shown even at their defaults
    assert "--grad-tol" in reproduce_args(config_of(["--optimizer", "lbfgs"]).to_dict())
    assert "--rank" in reproduce_args(config_of(["--guide", "lowrank"]).to_dict())
    assert "--variance-target" in reproduce_args(config_of(["-K", "auto"]).to_dict())
    assert "--window" in reproduce_args(config_of(["--stop", "plateau"]).to_dict())


def test_older_summaries_and_settings_without_an_option():
    """A pyro-spam 0.1.0 configuration (no ``stop``: the plateau rule) prints --stop plateau with its
    window and tolerance; settings no option sets (given to pyro_spam.run) are named in the report."""
    old = {"data": "d.npz", "features": {"components": 2, "kind": "polynomial", "test_size": 0.2},
           "train": {"engine": "svi", "particles": 8, "batch_size": None, "max_steps": 500, "lr": 0.05, "prior_scale": 1.0, "seed": 0},
           "elbos": ["trace", "meanfield"], "num_draws": 400}
    args, _ = command_argv(reproduce_command(old, "r"))
    assert config_of(args) == RunConfig(data="d.npz", features=FeatureConfig(components=2),
                                        train=TrainConfig(elbo="trace", particles=8, max_steps=500, lr=0.05, stop="plateau"),
                                        num_draws=400)
    custom = RunConfig(train=TrainConfig(adam_beta2=0.95, init_scale=0.2, stop="plateau", lr_decays=1)).to_dict()
    assert unflagged_settings(custom) == {"adam_beta2": 0.95, "lr_decays": 1, "init_scale": 0.2}
    section = sections._reproduce_section({"meta": {"config": custom}}, "r")
    text = " ".join(getattr(b, "text", "") for b in section.blocks)
    assert "`adam_beta2 = 0.95`" in text and "`init_scale = 0.2`" in text and "pyro_spam.run(" in text


def test_docstring_examples():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for fn in (reproduce_args, reproduce_command, unflagged_settings):
        for test in finder.find(fn, globs=vars(sections)):
            runner.run(test)
    assert runner.failures == 0 and runner.tries >= 4


def _guides(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    return {k: (f["loc"], f["scale"], f["steps"], f["stop_reason"]) for k, f in s["fits"].items()}


def test_reproduce_command_repeats_the_run_bit_for_bit(tmp_path, monkeypatch):
    """End to end: a run with non-default options writes report.md; its Reproduce command, run into a
    second directory, gives the same configuration and identical fitted guides (loc, scale: exact
    float equality) and guide files byte for byte."""
    ds = make_dataset(n=300, dim=8, seed=11)
    data = tmp_path / "data.npz"
    np.savez(data, X=ds.X, y=ds.y, msg=ds.msg)
    fast = [f for f in pipeline.RUN_STAGES if f.__name__ in ("stage_core_files", "stage_model_files", "stage_checkpoint", "stage_report")]
    monkeypatch.setattr(pipeline, "RUN_STAGES", fast)
    first = tmp_path / "first"
    argv = ["--data", str(data), "--window", "30", "--tol", "0.3", "--batch-size", "200", "--prior-scale", "2", "-K", "3",
            "--steps", "300", "-S", "16", "--stop", "plateau", "--lr", "0.05", "--seed", "4", "--draws", "200"]
    t0 = time.perf_counter()
    assert cli.main(["run", *argv, "--out", str(first), "-q"]) == 0
    seconds = time.perf_counter() - t0
    line = next(ln for ln in (first / "report.md").read_text().splitlines() if ln.startswith("`pyro-spam run "))
    args, out = command_argv(line.strip("`"))
    assert out == "first"
    second = tmp_path / "second"
    assert cli.main(["run", *args, "--out", str(second), "-q"]) == 0
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (first, second))
    assert s1["meta"]["config"] == s2["meta"]["config"] == config_of(argv).to_dict() | {"elbos": ["trace", "meanfield"]}
    g1 = _guides(first)
    assert g1 == _guides(second) and set(g1) == {"trace", "meanfield"}
    assert all(reason == "converged" for *_, reason in g1.values()), g1  # the plateau rule (window, tol) decided
    for name in ("guide_trace.json", "guide_meanfield.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert seconds < 10, f"the first run took {seconds:.1f} s"
    assert dataclasses.asdict(config_of(args)) == dataclasses.asdict(config_of(argv))


def test_saved_configuration_without_adam_beta1_reads_back_as_the_09_it_used():
    """Runs saved before pyro-spam 0.6.0 used Adam β1 0.9 without recording it: reading their
    configuration back (diagnose, compare, --resume) keeps 0.9, a new configuration gets the 0.8
    default, and the report names the setting the reproduce command cannot set."""
    old = RunConfig().to_dict()
    del old["train"]["adam_beta1"]
    assert RunConfig.from_saved(old).train.adam_beta1 == 0.9
    assert RunConfig.from_dict(old).train.adam_beta1 == TrainConfig().adam_beta1 == 0.8
    assert RunConfig.from_saved(RunConfig(train=TrainConfig(adam_beta1=0.7)).to_dict()).train.adam_beta1 == 0.7
    assert unflagged_settings(old) == {"adam_beta1": 0.9}
    assert unflagged_settings(RunConfig().to_dict()) == {}


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, True, "0.8", float("nan")])
def test_adam_beta1_must_be_in_0_1(bad):
    from pyro_spam.errors import ConfigError

    with pytest.raises(ConfigError, match="adam_beta1 must be in"):
        TrainConfig(adam_beta1=bad)


def test_api_run_reads_a_mapping_as_a_saved_configuration():
    """``pyro_spam.run(out, config=old_summary_config)`` repeats the old run's β1 0.9."""
    from pyro_spam.api import _run_config

    old = RunConfig().to_dict()
    del old["train"]["adam_beta1"]
    assert _run_config(old, {}).train.adam_beta1 == 0.9
    assert _run_config(RunConfig().to_dict(), {}).train.adam_beta1 == 0.8
    assert _run_config(old, {"adam_beta1": 0.7}).train.adam_beta1 == 0.7
