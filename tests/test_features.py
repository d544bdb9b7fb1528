"""Feature pipeline: fit on train only, the auto-K rule, term construction."""

from __future__ import annotations

import numpy as np
import pytest

from pyro_spam.config import FeatureConfig
from pyro_spam.errors import ConfigError
from pyro_spam.features import FeaturePipeline, build_features, choose_k, term_names

from .conftest import make_dataset


def test_choose_k_is_the_smallest_reaching_target():
    """auto picks the first K whose cumulative variance reaches the target, or the cap."""
    cum = np.array([0.1, 0.25, 0.31, 0.5])
    assert choose_k(cum, 0.30) == (3, False)
    assert choose_k(cum, 0.25) == (2, False)
    assert choose_k(cum, 0.9, cap=4) == (4, True)


def test_auto_on_anisotropic_embedding_reaches_30_percent():
    """On an anisotropic embedding 'auto' stops at the smallest K with ≥ 30 % explained variance."""
    ds = make_dataset(n=500, dim=40)
    fs, pipe = build_features(ds, FeatureConfig(components="auto"), seed=0)
    cum = np.cumsum(pipe.explained_variance_ratio_)
    assert cum[-1] >= 0.30 and (fs.k == 1 or cum[-2] < 0.30)
    full = FeaturePipeline(FeatureConfig(components=15)).fit(ds.X[fs.train_idx])
    assert fs.k == int(np.searchsorted(np.cumsum(full.explained_variance_ratio_), 0.30) + 1)


def test_fit_uses_training_rows_only():
    """Changing test rows does not change the fitted pipeline or the training features."""
    ds = make_dataset(n=300, dim=10)
    fs, pipe = build_features(ds, FeatureConfig(components=3), seed=1)
    X2 = ds.X.copy()
    X2[fs.test_idx] += 100.0
    pipe2 = FeaturePipeline(FeatureConfig(components=3)).fit(X2[fs.train_idx])
    np.testing.assert_allclose(pipe.transform(ds.X[fs.train_idx]), pipe2.transform(X2[fs.train_idx]), atol=1e-5)


def test_terms_are_standardised_on_train_and_polynomial():
    """Each polynomial term x_j^j has mean 0, sd 1 on train; names say the power."""
    ds = make_dataset(n=400, dim=12)
    fs, _ = build_features(ds, FeatureConfig(components=4, kind="polynomial"), seed=0)
    np.testing.assert_allclose(fs.X_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(fs.X_train.std(0), 1, atol=1e-4)
    assert fs.names == ("x1", "x2^2", "x3^3", "x4^4") == term_names(4, "polynomial")
    assert fs.coef_names[0] == "w0 (bias)"
    lin, _ = build_features(ds, FeatureConfig(components=4, kind="linear"), seed=0)
    np.testing.assert_allclose(np.abs(lin.X_train[:, 0]), np.abs(fs.X_train[:, 0]), atol=1e-5)
    assert not np.allclose(np.abs(lin.X_train[:, 1]), np.abs(fs.X_train[:, 1]))


def test_round_trip_through_arrays():
    """to_arrays/from_arrays rebuild an identical transform (no pickle)."""
    ds = make_dataset(n=200, dim=9)
    pipe = FeaturePipeline(FeatureConfig(components=3)).fit(ds.X)
    arrays, meta = pipe.to_arrays()
    again = FeaturePipeline.from_arrays(arrays, meta)
    np.testing.assert_array_equal(pipe.transform(ds.X), again.transform(ds.X))


@pytest.mark.parametrize("k", [0, 16, -1])
def test_k_out_of_range(k):
    """K must be 1…15."""
    with pytest.raises(ConfigError, match="between 1 and 15"):
        FeatureConfig(components=k)


def test_k_above_embedding_dimension():
    """K larger than the embedding dimension is refused with the limit."""
    ds = make_dataset(n=100, dim=4)
    with pytest.raises(ConfigError, match="exceeds the embedding dimension 4"):
        build_features(ds, FeatureConfig(components=6))


def test_near_constant_columns_are_not_amplified():
    """A column of rounding noise (sd 1e-9) is not scaled up to unit variance."""
    ds = make_dataset(n=300, dim=8)
    X = ds.X.copy()
    X[:, 3] = 0.25 + 1e-9 * np.random.default_rng(0).normal(size=300)
    pipe = FeaturePipeline(FeatureConfig(components=2)).fit(X)
    assert pipe.in_std_[3] == 1.0
    X2 = X.copy()
    X2[:, 3] = 0.25
    np.testing.assert_allclose(pipe.transform(X), FeaturePipeline(FeatureConfig(components=2)).fit(X2).transform(X2), atol=1e-5)
