"""CLI smoke run: a complete run directory from a course-format .npz."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyro_spam.cli import main
from pyro_spam.evaluate import elbo_estimate, lppd_pointwise
from pyro_spam.posterior import draw_weights, predict_draws

_STDOUT: dict[str, str] = {}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One small CLI run shared by the tests below (fitting is the expensive part)."""
    import contextlib
    import io

    from .conftest import make_dataset

    tmp = tmp_path_factory.mktemp("cli")
    ds = make_dataset(n=500, dim=16, seed=5)
    data = tmp / "course.npz"
    np.savez(data, X=ds.X.astype(np.float16), y=ds.y.astype(np.int64), msg=ds.msg)
    out = tmp / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["run", "--data", str(data), "-K", "3", "--steps", "400", "-S", "16", "--draws", "500", "--out", str(out), "-q"])
    assert code == 0
    _STDOUT["run"] = buf.getvalue()
    return out


def test_run_ends_by_naming_the_report(run_dir):
    assert _STDOUT["run"].rstrip().splitlines()[-1] == f"report: {run_dir / 'report.html'}"
    assert (run_dir / "report.html").is_file()


def test_run_directory_contents(run_dir):
    """summary.json has the documented keys; features, guide parameters and figures exist."""
    s = json.loads((run_dir / "summary.json").read_text())
    assert {"n_train", "n_test", "dim", "components", "explained_variance"} <= set(s["data"])
    assert s["data"]["dim"] == 16 and s["data"]["components"] == 3
    for kind in ("trace", "meanfield"):
        f = s["fits"][kind]
        assert {"elbo_train", "elbo_test_per_message", "loc", "scale", "steps", "seconds"} <= set(f)
        assert {"lppd_per_message", "accuracy", "roc_auc", "brier", "ece"} <= set(f["test"])
        assert len(f["loc"]) == 4
    for name in ("features.npz", "guide_trace.json", "guide_meanfield.json", "elbo_history.png", "weights.png"):
        assert (run_dir / name).stat().st_size > 0
    assert not list(run_dir.parent.glob(".run.staging-*"))


def test_summary_reproducible_from_features_and_guide(run_dir):
    """An independent recomputation from features.npz and loc/scale matches summary.json.

    Tolerance: the held-out numbers are Monte Carlo averages over 500 draws; 4 standard errors.
    """
    s = json.loads((run_dir / "summary.json").read_text())
    f = np.load(run_dir / "features.npz")
    fit = s["fits"]["meanfield"]
    loc, scale = np.array(fit["loc"]), np.array(fit["scale"])
    d = predict_draws(draw_weights(loc, scale, 4000, seed=123), f["X_test"], f["y_test"])
    e = elbo_estimate(d.loglik, loc, scale)
    n_te = f["X_test"].shape[0]
    assert abs(e["elbo"] / n_te - fit["elbo_test_per_message"]) < 4 * e["mc_se"] * np.sqrt(1 + 4000 / 500) / n_te
    # Independent numpy logistic log-likelihood, not the package's helper.
    z = d.w[:, :1] + d.w[:, 1:] @ f["X_test"].T
    ll = -np.logaddexp(0, np.where(f["y_test"] > 0, -z, z))
    assert abs(lppd_pointwise(ll).mean() - fit["test"]["lppd_per_message"]) < 0.01


def test_existing_run_is_refused_without_overwrite(run_dir, capsys):
    """A second run into the same directory exits 2 with advice; nothing is changed."""
    before = (run_dir / "summary.json").read_bytes()
    code = main(["run", "--out", str(run_dir), "-q", "--steps", "10"])
    assert code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (run_dir / "summary.json").read_bytes() == before
