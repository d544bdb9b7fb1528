"""The top-level API (issue 17): ``from pyro_spam import VariationalSpamClassifier, run, load_model``
works, ``import pyro_spam`` stays cheap (the names load their modules on first use), every exported
name documents itself with an example that runs, and README's library section imports only them."""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyro_spam
from pyro_spam import api, cli
from pyro_spam.config import RunConfig
from pyro_spam.errors import ConfigError
from pyro_spam.pipeline import run as pipeline

from .conftest import make_dataset

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = {"VariationalSpamClassifier": "pyro_spam.estimator", "load_model": "pyro_spam.estimator",
            "load_default": "pyro_spam.data", "load_inference_data": "pyro_spam.api", "run": "pyro_spam",
            "predict_messages": "pyro_spam.predict"}


def test_import_is_cheap():
    """A fresh interpreter: `import pyro_spam` loads no torch, Pyro, ArviZ, matplotlib or scikit-learn;
    the first use of a name loads its module."""
    code = ("import sys, pyro_spam\n"
            "heavy = [m for m in ('torch', 'pyro', 'arviz', 'matplotlib', 'sklearn', 'pyro_spam.estimator') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert set(pyro_spam.__all__) <= set(dir(pyro_spam))\n"
            "from pyro_spam import VariationalSpamClassifier, load_model, run\n"
            "assert 'torch' in sys.modules and 'pyro_spam.estimator' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]


def test_exported_names():
    """Every name in __all__ resolves to the object its module defines, appears in dir(), and has a
    docstring with a doctest example; unknown names raise AttributeError, and submodules still import."""
    assert set(pyro_spam.__all__) == {*EXPORTED, "__version__"}
    for name, module in EXPORTED.items():
        obj = getattr(pyro_spam, name)
        assert obj is getattr(sys.modules[module], name)
        assert ">>> " in (obj.__doc__ or ""), f"{name} has no example"
        assert name in dir(pyro_spam)
    namespace: dict = {}
    exec("from pyro_spam import *", namespace)
    assert {*EXPORTED, "__version__"} <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        pyro_spam.nothing_here  # noqa: B018
    from pyro_spam import exact  # a submodule, not a lazy name

    assert exact.__name__ == "pyro_spam.exact"


def test_readme_library_section_imports_from_the_top_level():
    """README's "Use it as a library" code imports only names pyro_spam exports."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use it as a library", 1)[1].split("\n## ", 1)[0]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))
    compile(code, "README.md", "exec")
    imported = {n.strip() for names in re.findall(r"^from pyro_spam import (.+)$", code, flags=re.M) for n in names.split(",")}
    assert {"VariationalSpamClassifier", "run", "load_model"} <= imported <= set(pyro_spam.__all__)
    assert not re.search(r"^from pyro_spam\.", code, flags=re.M)


def _run_doctests(*objects, globs=None) -> doctest.DocTestRunner:
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for obj in objects:
        for test in finder.find(obj, globs=dict(globs or {})):
            runner.run(test)
    return runner


def test_estimator_and_data_examples_run():
    """The examples of VariationalSpamClassifier and load_default, on the shipped data (~1 s)."""
    runner = _run_doctests(pyro_spam.load_default, pyro_spam.VariationalSpamClassifier)
    assert runner.failures == 0 and runner.tries >= 6


@pytest.fixture
def tiny_default(tmp_path, monkeypatch):
    """The shipped data replaced by a small synthetic file, the working directory a temporary one and
    the run's stages reduced to the fits, the model files and the report: the examples run in ~2 s."""
    from pyro_spam import data

    ds = make_dataset(n=300, dim=8, seed=3)
    path = tmp_path / "default.npz"
    np.savez(path, X=ds.X, y=ds.y, msg=ds.msg)
    monkeypatch.setattr(data, "default_data_path", lambda: path)
    monkeypatch.chdir(tmp_path)
    keep = ("stage_core_files", "stage_model_files", "stage_checkpoint", "stage_report")
    monkeypatch.setattr(pipeline, "RUN_STAGES", [f for f in pipeline.RUN_STAGES if f.__name__ in keep])
    return tmp_path


def test_run_and_load_model_examples_run(tiny_default):
    """run's example writes runs/demo; load_model's example reads its model file (run twice: the
    example overwrites its own directory)."""
    runner = _run_doctests(pyro_spam.run, pyro_spam.run, pyro_spam.load_model)
    assert runner.failures == 0 and runner.tries >= 7
    assert (tiny_default / "runs" / "demo" / "report.md").exists()


def parse_config(*argv: str) -> RunConfig:
    return cli._run_config(cli.build_parser().parse_args(["run", *argv]))


@pytest.mark.parametrize(("options", "argv"), [
    ({}, ()),
    ({"optimizer": "lbfgs"}, ("--optimizer", "lbfgs")),
    ({"optimizer": "lbfgs", "guide": "fullrank", "grad_tol": 1e-6}, ("--optimizer", "lbfgs", "--guide", "fullrank", "--grad-tol", "1e-6")),
    ({"elbo": "all", "steps": 300, "features": "linear", "data": Path("x.npz"), "num_draws": 50},
     ("--elbo", "all", "--steps", "300", "--features", "linear", "--data", "x.npz", "--draws", "50")),
    ({"elbo": ["stl", "trace"], "components": "auto", "variance_target": 0.4, "batch_size": 100, "particles": 8, "stop": "plateau",
      "window": 30, "tol": 0.3, "prior_scale": 2.0, "seed": 5, "test_size": 0.3, "lr": 0.05, "engine": "svi", "guide": "lowrank", "rank": 2},
     ("--elbo", "stl,trace", "-K", "auto", "--variance-target", "0.4", "--batch-size", "100", "-S", "8", "--stop", "plateau",
      "--window", "30", "--tol", "0.3", "--prior-scale", "2", "--seed", "5", "--test-size", "0.3", "--lr", "0.05", "--guide", "lowrank",
      "--rank", "2")),
])
def test_run_options_build_the_cli_config(options, argv):
    """run(**options) with the estimator's parameter names configures the run exactly as the
    equivalent `pyro-spam run` options do."""
    assert api._run_config(None, options) == parse_config(*argv)


def test_run_config_argument(tmp_path):
    """config= takes a RunConfig or summary["meta"]["config"] (options apply on top); an unknown option
    is a TypeError naming the valid ones, an invalid value the library's ConfigError."""
    base = parse_config("--optimizer", "lbfgs", "-K", "3")
    stored = json.loads(json.dumps(base.to_dict()))
    assert api._run_config(stored, {}) == base == api._run_config(base, {})
    assert api._run_config(stored, {"optimizer": "adam"}) == parse_config("-K", "3")
    assert api._run_config(base, {"seed": 2}) == parse_config("--optimizer", "lbfgs", "-K", "3", "--seed", "2")
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'.*components"):
        api._run_config(None, {"colour": "red"})
    with pytest.raises(TypeError, match="config must be"):
        api._run_config("runs/x", {})
    with pytest.raises(ConfigError, match="components"):
        pyro_spam.run(tmp_path / "never-written", components=99)
    assert not (tmp_path / "never-written").exists()
