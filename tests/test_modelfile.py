"""Model files: pickle-free round trip, versioning, corruption, atomic writes, the run stage."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from pyro_spam.config import FeatureConfig, RunConfig, TrainConfig
from pyro_spam.errors import ModelFileError
from pyro_spam.estimator import VariationalSpamClassifier, load_model, save_model
from pyro_spam.io.modelfile import FORMAT_VERSION
from pyro_spam.pipeline.run import run
from pyro_spam.posterior import predict_draws, run_draws

from .conftest import make_dataset


@pytest.fixture(scope="module")
def data():
    """Synthetic embeddings (shared)."""
    ds = make_dataset(n=300, dim=10, seed=4)
    return ds.X, ds.y


@pytest.fixture(scope="module")
def fitted(data):
    """One estimator fitted with a short budget (fitting is the slow part, so it is shared)."""
    X, y = data
    return VariationalSpamClassifier(components=4, steps=150, particles=4, num_draws=300, seed=7).fit(X, y)


@pytest.fixture
def saved(tmp_path, fitted):
    """The fitted estimator saved to a fresh file."""
    return save_model(fitted, tmp_path / "m.npz", embedding={"embedder": "minilm", "max_length": 256, "normalize": True})


def _rewrite(path, header_change=None, array_change=None):
    """Rewrite a model file with a modified header and/or arrays (to simulate other versions)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays.pop("header")))
    if header_change:
        header_change(header)
    if array_change:
        array_change(arrays)
    np.savez(path, header=np.array(json.dumps(header)), **arrays)


def test_round_trip_gives_identical_predictions(data, fitted, saved):
    """save → load → predict_proba, intervals and draws are bit-identical; parameters and state too."""
    X, _ = data
    loaded = load_model(saved)
    est = loaded.estimator
    np.testing.assert_array_equal(est.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(est.predict_interval(X), fitted.predict_interval(X))
    np.testing.assert_array_equal(est.predictive_draws(X), fitted.predictive_draws(X))
    np.testing.assert_array_equal(est.predict(X), fitted.predict(X))
    assert est.get_params() == fitted.get_params()
    np.testing.assert_array_equal(est.classes_, fitted.classes_)
    assert est.coef_names_ == fitted.coef_names_ and est.n_iter_ == fitted.n_iter_
    np.testing.assert_array_equal(est.history_.elbo, fitted.history_.elbo)
    assert loaded.embedder == "minilm" and loaded.embedding["max_length"] == 256


def test_classmethod_load_and_string_classes(tmp_path, data):
    """VariationalSpamClassifier.save/load keep string labels and their dtype."""
    X, y = data
    est = VariationalSpamClassifier(components=2, steps=40, particles=2, num_draws=50).fit(X, np.where(y > 0, "spam", "ham"))
    path = est.save(tmp_path / "s.npz")
    back = VariationalSpamClassifier.load(path)
    assert back.classes_.dtype == est.classes_.dtype and list(back.classes_) == ["ham", "spam"]
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    assert load_model(path).embedder is None


def test_file_holds_plain_arrays_and_a_versioned_header(saved):
    """Every entry loads with allow_pickle=False; the header names the format and its version."""
    with np.load(saved, allow_pickle=False) as npz:
        kinds = {k: npz[k].dtype.kind for k in npz.files}
        header = json.loads(str(npz["header"]))
    assert set(kinds.values()) <= {"f", "U"}
    assert header["format"] == "pyro-spam-model" and header["format_version"] == FORMAT_VERSION
    assert header["params"]["components"] == 4 and header["fit"]["coef_names"][0] == "w0 (bias)"


def test_newer_version_is_refused_clearly(saved):
    """A file from a newer format version names both versions and says to upgrade."""
    _rewrite(saved, header_change=lambda h: h.update(format_version=FORMAT_VERSION + 1, pyro_spam_version="9.9"))
    with pytest.raises(ModelFileError, match=rf"format version {FORMAT_VERSION + 1} \(written by pyro-spam 9.9\).*upgrade"):
        load_model(saved)


def test_older_version_is_refused_clearly(saved):
    """A file from an older format version says to re-create the model."""
    _rewrite(saved, header_change=lambda h: h.update(format_version=0))
    with pytest.raises(ModelFileError, match="re-create"):
        load_model(saved)


def test_changed_array_fails_the_checksum(saved):
    """A silently altered parameter is caught by the header's checksum."""
    def bump(arrays):
        arrays["guide.loc"] = arrays["guide.loc"] + 1e-9

    _rewrite(saved, array_change=bump)
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(saved)


def test_missing_array_is_a_mismatch(saved):
    """A file lacking an array its header lists is reported as not matching its header."""
    _rewrite(saved, array_change=lambda a: a.pop("guide.scale"))
    with pytest.raises(ModelFileError, match="missing arrays \\['guide.scale'\\]"):
        load_model(saved)


def test_unknown_parameter_is_a_mismatch(saved):
    """A header with parameters this version does not know is refused, naming them."""
    _rewrite(saved, header_change=lambda h: h["params"].update(temperature=1.0))
    with pytest.raises(ModelFileError, match="temperature"):
        load_model(saved)


def test_file_from_0_1_without_the_stop_parameter_loads(data, saved):
    """A model file written by pyro-spam 0.1.0 (no ``stop`` parameter: it fitted with the ELBO-plateau
    rule) loads, says so, and predicts exactly as before."""
    before = load_model(saved).estimator.predict_proba(data[0][:50])
    _rewrite(saved, header_change=lambda h: h["params"].pop("stop"))
    est = load_model(saved).estimator
    assert est.stop == "plateau"
    np.testing.assert_array_equal(est.predict_proba(data[0][:50]), before)


def test_truncated_file_is_corrupt(saved):
    """A truncated file gives ModelFileError, not a zipfile traceback."""
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="corrupt|not a readable"):
        load_model(saved)


def test_foreign_files_are_refused(tmp_path):
    """A course-format .npz, a pickled object array and a missing path each get their own message."""
    plain = tmp_path / "data.npz"
    np.savez(plain, X=np.zeros((2, 2)))
    with pytest.raises(ModelFileError, match="not a pyro-spam model file"):
        load_model(plain)
    pickled = tmp_path / "p.npz"
    np.savez(pickled, header=np.array([{"format": "pyro-spam-model"}], dtype=object))
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(pickled)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.npz")


def test_save_is_atomic(tmp_path, fitted, saved, monkeypatch):
    """A save failing mid-write leaves the previous file intact and no temporary file behind."""
    import os

    before = saved.read_bytes()

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        save_model(fitted, saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_save_refuses_unfitted_and_missing_folder(tmp_path, fitted):
    """Saving an unfitted estimator or into a missing folder fails with a clear error."""
    with pytest.raises(NotFittedError):
        save_model(VariationalSpamClassifier(), tmp_path / "x.npz")
    with pytest.raises(ModelFileError, match="does not exist"):
        save_model(fitted, tmp_path / "no" / "x.npz")


@pytest.fixture(scope="module")
def run_ctx(tmp_path_factory):
    """A small two-ELBO run on synthetic data recording an embedder (one run shared: fitting is slow)."""
    tmp = tmp_path_factory.mktemp("run")
    ds = make_dataset(n=300, dim=10, seed=6)
    data = tmp / "d.npz"
    np.savez(data, X=ds.X, y=ds.y, msg=ds.msg, embedder=np.array("my-encoder"))
    cfg = RunConfig(data=str(data), features=FeatureConfig(components=3),
                    train=TrainConfig(max_steps=120, particles=4), num_draws=250)
    return run(cfg, tmp / "run"), ds


def test_run_writes_one_model_per_fit_matching_its_predictions(run_ctx):
    """Each model_<elbo>.npz predicts exactly the run's held-out posterior predictive mean."""
    ctx, ds = run_ctx
    assert ctx.summary["model_files"] == {"trace": "model_trace.npz", "meanfield": "model_meanfield.npz"}
    for kind in ("trace", "meanfield"):
        loaded = load_model(ctx.dir / f"model_{kind}.npz")
        assert loaded.elbo == kind and loaded.embedder == "my-encoder"
        assert loaded.header["training_data"]["n"] == 300
        p = loaded.estimator.predict_proba(ds.X[ctx.features.test_idx])[:, 1]
        fr = ctx.fits[kind]  # the run's held-out draws (same seed; the run does not keep them)
        w = run_draws(fr, ctx.config.num_draws, ctx.config.train.seed)
        np.testing.assert_allclose(p, predict_draws(w, ctx.features.X_test).mean_prob, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(loaded.estimator.loc_, ctx.fits[kind].loc)


def test_zip_crc_guards_bytes(saved):
    """Flipping a byte inside an array's data is caught (zip CRC or checksum), never loaded silently."""
    raw = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("guide.loc.npy")
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    pos = info.header_offset + 30 + name_len + extra_len + info.file_size - 1  # last byte of the data
    raw[pos] ^= 0xFF
    saved.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError):
        load_model(saved)
