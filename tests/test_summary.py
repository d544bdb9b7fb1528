"""``summary.json`` follows its written schema (pyro_spam.summary) and is read through the one reader."""

from __future__ import annotations

import json
import typing

import numpy as np
import pytest

from pyro_spam.cli import main
from pyro_spam.errors import ModelFileError
from pyro_spam.io.run_reader import read_run, read_summary, summary_value
from pyro_spam.summary import (
    SCHEMA_VERSION,
    DataSection,
    FitSection,
    MetaSection,
    Summary,
    draw_seed,
    elbo_label,
    primary_fit,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One small run shared by the tests below (fitting is the expensive part)."""
    from .conftest import make_dataset

    tmp = tmp_path_factory.mktemp("summary")
    ds = make_dataset(n=400, dim=12, seed=3)
    data = tmp / "course.npz"
    np.savez(data, X=ds.X, y=ds.y, msg=ds.msg)
    out = tmp / "run"
    assert main(["run", "--data", str(data), "-K", "2", "--steps", "300", "-S", "8", "--draws", "200", "--out", str(out), "-q"]) == 0
    return out


def _keys(record: type) -> set[str]:
    return set(typing.get_type_hints(record))


def test_every_key_a_run_writes_is_in_the_schema(run_dir):
    """Top-level keys and the data / fits / meta sections are exactly the documented records' keys
    (a key written but not documented, or documented but never written, fails)."""
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["schema_version"] == SCHEMA_VERSION
    assert set(s) <= _keys(Summary)
    assert set(s["data"]) == _keys(DataSection)
    assert set(s["meta"]) == _keys(MetaSection)
    for kind in ("trace", "meanfield"):
        assert set(s["fits"][kind]) == _keys(FitSection)


def test_reader_returns_what_was_written(run_dir):
    """read_run gives the summary, the configuration and the features the run wrote; the fits it
    rebuilds carry the summary's loc and scale exactly."""
    rd = read_run(run_dir)
    assert rd.summary == json.loads((run_dir / "summary.json").read_text())
    assert rd.config.train.particles == 8 and rd.config.features.components == 2
    assert rd.features["X_train"].shape == (rd.summary["data"]["n_train"], 2)
    for kind, fr in rd.fits().items():
        np.testing.assert_array_equal(fr.loc, rd.summary["fits"][kind]["loc"])
        np.testing.assert_array_equal(fr.scale, rd.summary["fits"][kind]["scale"])
    assert summary_value(rd.summary, "fits/meanfield/stop_reason") == rd.summary["fits"]["meanfield"]["stop_reason"]
    assert summary_value(rd.summary, "fits/nonexistent/steps", "absent") == "absent"


def test_reader_refuses_newer_schema_and_reads_v0_1(tmp_path, run_dir):
    """A summary from a newer schema is refused with advice; one without schema_version (0.1.0) reads."""
    s = json.loads((run_dir / "summary.json").read_text())
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "summary.json").write_text(json.dumps({**s, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ModelFileError, match="upgrade pyro-spam"):
        read_summary(newer)
    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({k: v for k, v in s.items() if k != "schema_version"}))
    assert read_summary(old)["fits"].keys() == s["fits"].keys()
    with pytest.raises(ModelFileError, match="not a pyro-spam run directory"):
        read_summary(tmp_path)


def test_shared_rules():
    """One home for the rules every reader shares: the primary fit, the draw seed, the ELBO labels."""
    assert primary_fit(["trace", "meanfield"]) == "meanfield"
    assert primary_fit({"trace": 1}) == "trace"
    with pytest.raises(ValueError):
        primary_fit([])
    assert draw_seed(0) == 1 and draw_seed(41) == 42
    assert elbo_label("meanfield") == "TraceMeanField_ELBO (analytic KL)" and elbo_label("other") == "other"
