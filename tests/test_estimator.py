"""VariationalSpamClassifier: scikit-learn contract, equivalence with a run's fit, predictive API."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from pyro_spam.config import FeatureConfig, RunConfig, TrainConfig
from pyro_spam.errors import ConfigError, DataError
from pyro_spam.estimator import VariationalSpamClassifier
from pyro_spam.features import build_features
from pyro_spam.posterior import draw_weights, predict_draws
from pyro_spam.training.engines import fit as train_fit

from .conftest import make_dataset

# Tiny budgets: the checks fit dozens of times; 40 steps at lr 0.2 already separate the checks'
# blobs (they require training accuracy > 0.83), and the contract does not depend on convergence.
FAST = dict(steps=40, particles=2, num_draws=100, lr=0.2, window=20)

# Checks we expect to fail: none. (check_array_api_input is skipped by scikit-learn itself unless
# SCIPY_ARRAY_API=1: the model computes in torch/numpy, not through the array API.)
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [VariationalSpamClassifier(components=2, **FAST)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_checks(estimator, check):
    """scikit-learn's estimator checks (components=2: several checks use 2-3 features)."""
    check(estimator)


@pytest.fixture(scope="module")
def data():
    """Synthetic embeddings with a learnable spam direction (shared: fitting is the slow part)."""
    ds = make_dataset(n=400, dim=12, seed=3)
    return ds.X, ds.y


@pytest.fixture(scope="module")
def fitted(data):
    """One estimator fitted on the synthetic data with a short budget."""
    X, y = data
    return VariationalSpamClassifier(components=3, steps=300, particles=8, num_draws=400).fit(X, y)


def test_init_only_stores_parameters():
    """Constructor parameters come back from get_params unchanged; nothing is validated or fitted yet."""
    est = VariationalSpamClassifier(components="auto", elbo="trace", batch_size=32, steps=-1)
    p = est.get_params()
    assert p["components"] == "auto" and p["elbo"] == "trace" and p["batch_size"] == 32 and p["steps"] == -1
    assert not [k for k in vars(est) if k.endswith("_")]


def test_clone_gives_unfitted_copy_with_same_params(fitted):
    """clone() copies the parameters and none of the fitted state."""
    c = clone(fitted)
    assert c.get_params() == fitted.get_params()
    assert not hasattr(c, "loc_")


def test_same_seed_same_numbers(data, fitted):
    """Refitting with the same seed reproduces the probabilities exactly; another seed does not."""
    X, y = data
    again = clone(fitted).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    other = clone(fitted).set_params(seed=1).fit(X, y)
    assert not np.array_equal(other.loc_, fitted.loc_)


def test_fit_is_the_run_fit(data):
    """fit() on a run's training rows gives exactly the run's guide (same pipeline, same train.fit)."""
    X, y = data
    from pyro_spam.types import Dataset

    cfg = RunConfig(features=FeatureConfig(components=3), train=TrainConfig(max_steps=150, particles=4), num_draws=300)
    ds = Dataset(X=X, y=y, msg=np.array([str(i) for i in range(len(y))]), source="synthetic")
    fs, _ = build_features(ds, cfg.features, seed=cfg.train.seed)
    fr = train_fit(fs.X_train, fs.y_train, cfg.train_for("meanfield"))
    params = VariationalSpamClassifier.params_from_run_config(cfg, "meanfield")
    est = VariationalSpamClassifier(**params).fit(X[fs.train_idx], y[fs.train_idx])
    np.testing.assert_array_equal(est.loc_, fr.loc)
    np.testing.assert_array_equal(est.scale_, fr.scale)
    w = draw_weights(fr.loc, fr.scale, cfg.num_draws, seed=cfg.train.seed + 1)
    run_p = predict_draws(w, fs.X_test).mean_prob
    np.testing.assert_allclose(est.predict_proba(X[fs.test_idx])[:, 1], run_p, rtol=1e-12, atol=1e-15)


def test_predict_proba_is_mean_of_predictive_draws(data, fitted):
    """predict_proba[:, 1] is the mean over draws of p(spam); rows sum to 1; predict thresholds at 0.5."""
    X, _ = data
    proba = fitted.predict_proba(X)
    draws = fitted.predictive_draws(X)
    assert draws.shape == (400, X.shape[0])
    np.testing.assert_allclose(proba[:, 1], draws.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(fitted.predict(X), fitted.classes_[(proba[:, 1] > 0.5).astype(int)])
    np.testing.assert_allclose(fitted.predict_log_proba(X), np.log(proba), rtol=1e-10)


def test_predict_interval_brackets_the_draws(data, fitted):
    """The 90% interval holds the 5% and 95% quantiles of the per-draw p(spam); wider at 99%."""
    X, _ = data
    iv = fitted.predict_interval(X, level=0.9)
    draws = fitted.predictive_draws(X)
    np.testing.assert_allclose(iv[:, 0], np.quantile(draws, 0.05, axis=0))
    np.testing.assert_allclose(iv[:, 1], np.quantile(draws, 0.95, axis=0))
    inside = ((draws >= iv[:, 0]) & (draws <= iv[:, 1])).mean(axis=0)
    assert np.all(inside >= 0.9 - 1 / draws.shape[0])
    wide = fitted.predict_interval(X, level=0.99)
    assert np.all(wide[:, 0] <= iv[:, 0]) and np.all(wide[:, 1] >= iv[:, 1])
    with pytest.raises(ValueError, match="level"):
        fitted.predict_interval(X, level=1.5)


def test_extreme_inputs_stay_finite(data, fitted):
    """Far-out embeddings give finite log-probabilities and decision values (computed on logits)."""
    X, _ = data
    far = X[:5] * 1e3
    assert np.all(np.isfinite(fitted.predict_log_proba(far)))
    assert np.all(np.isfinite(fitted.decision_function(far)))


def test_string_labels(data):
    """Labels 'ham'/'spam' work: classes_ is sorted and predict returns those strings."""
    X, y = data
    labels = np.where(y > 0, "spam", "ham")
    est = VariationalSpamClassifier(components=3, **FAST).fit(X, labels)
    assert list(est.classes_) == ["ham", "spam"]
    assert set(est.predict(X)) <= {"ham", "spam"}


def test_pipeline_and_cross_val_score(data):
    """Works inside a Pipeline and cross_val_score; beats chance clearly on a learnable problem.

    The synthetic labels follow the first latent factor (signal 2.5): an AUC of 0.5 is chance, and
    a correct fit reaches about 0.9, so 0.8 separates working from broken with a wide margin.
    """
    X, y = data
    pipe = make_pipeline(StandardScaler(), VariationalSpamClassifier(components=3, steps=150, particles=4, num_draws=200))
    scores = cross_val_score(pipe, X, y, cv=3, scoring="roc_auc")
    assert scores.shape == (3,)
    assert scores.min() > 0.8


def test_errors_are_value_errors_and_package_errors(data):
    """Bad parameters or data raise errors that are both ValueError and the package's own types."""
    X, y = data
    with pytest.raises(ConfigError, match="components") as info:
        VariationalSpamClassifier(components=20).fit(X, y)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ConfigError, match="exceeds the 12 feature"):
        VariationalSpamClassifier(components=13).fit(X, y)
    with pytest.raises(ConfigError, match="elbo"):
        VariationalSpamClassifier(elbo="both").fit(X, y)
    with pytest.raises(ConfigError, match="num_draws"):
        VariationalSpamClassifier(num_draws=0).fit(X, y)
    with pytest.raises(DataError, match="Only binary classification"):
        VariationalSpamClassifier(components=3).fit(X, np.arange(len(y)) % 3)
    with pytest.raises(DataError, match="one class"):
        VariationalSpamClassifier(components=3).fit(X, np.zeros(len(y)))


def test_predict_checks_fitted_and_dimension(data, fitted):
    """predict before fit raises NotFittedError; a wrong embedding width raises ValueError."""
    from sklearn.exceptions import NotFittedError

    X, _ = data
    with pytest.raises(NotFittedError):
        VariationalSpamClassifier().predict(X)
    with pytest.raises(ValueError, match="features"):
        fitted.predict_proba(X[:, :5])
