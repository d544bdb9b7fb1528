"""Loader and format validation for course-format .npz files."""

from __future__ import annotations

import numpy as np
import pytest

from pyro_spam.data import load_default, load_npz, stratified_split
from pyro_spam.errors import DataError

from .conftest import make_dataset


def _save(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_default_data_is_the_sms_collection():
    """The shipped file holds the 5,574 SMS messages (747 spam) as 384-d MiniLM embeddings."""
    ds = load_default()
    assert ds.X.shape == (5574, 384) and ds.X.dtype == np.float32
    assert int(ds.y.sum()) == 747
    assert ds.msg.shape == (5574,)
    assert "MiniLM" in (ds.embedder or "")


@pytest.mark.parametrize("xdtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("ydtype", [np.int64, np.float64, np.bool_])
def test_course_format_dtypes_load(tmp_path, xdtype, ydtype):
    """float16/32/64 X and int, float or bool labels all load as float32."""
    ds = make_dataset(n=50, dim=7)
    path = _save(tmp_path, X=ds.X.astype(xdtype), y=ds.y.astype(ydtype), msg=ds.msg)
    got = load_npz(path)
    assert got.X.dtype == np.float32 and got.y.dtype == np.float32
    np.testing.assert_array_equal(got.y, ds.y)
    assert got.embedder is None


def test_string_labels_are_accepted(tmp_path):
    """'ham'/'spam' strings (any case) map to 0/1."""
    ds = make_dataset(n=50, dim=4)
    labels = np.where(ds.y > 0, "Spam", "ham")
    got = load_npz(_save(tmp_path, X=ds.X, y=labels, msg=ds.msg))
    np.testing.assert_array_equal(got.y, ds.y)


def test_object_arrays_are_refused_with_advice(tmp_path):
    """A pickled msg array is not unpickled; the error says how to re-save it."""
    ds = make_dataset(n=50, dim=4)
    path = _save(tmp_path, X=ds.X, y=ds.y, msg=ds.msg.astype(object))
    with pytest.raises(DataError, match="astype\\(str\\)"):
        load_npz(path)


def test_split_is_stratified_and_seeded():
    """The split keeps the spam rate and is a function of the seed."""
    y = np.r_[np.zeros(800), np.ones(200)]
    tr, te = stratified_split(y, test_size=0.2, seed=3)
    assert te.size == 200 and y[te].mean() == pytest.approx(0.2)
    assert np.intersect1d(tr, te).size == 0
    tr2, te2 = stratified_split(y, test_size=0.2, seed=3)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, stratified_split(y, test_size=0.2, seed=4)[1])
