"""InferenceData of a fitted guide: groups, dimensions, names, values, attributes and the netCDF round trip."""

from __future__ import annotations

import numpy as np
import pytest

from pyro_spam.errors import ModelFileError
from pyro_spam.inference_data import (
    GROUPS,
    load_netcdf,
    nuts_to_inference_data,
    posterior_predictive_labels,
    save_netcdf,
    to_inference_data,
)
from pyro_spam.posterior import draw_weights, predict_draws
from pyro_spam.types import ElboHistory, FitResult

NAMES = ("w0 (bias)", "x1", "x2^2", "x3^3")
N_DRAWS = 400


def _toy(n_train: int = 150, n_test: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    x_tr = rng.normal(size=(n_train, 3)).astype(np.float32)
    x_te = rng.normal(size=(n_test, 3)).astype(np.float32)
    w_true = np.array([-1.0, 1.5, -0.5, 0.3])
    y_tr = (rng.random(n_train) < 1 / (1 + np.exp(-(w_true[0] + x_tr @ w_true[1:])))).astype(np.float32)
    y_te = (rng.random(n_test) < 1 / (1 + np.exp(-(w_true[0] + x_te @ w_true[1:])))).astype(np.float32)
    loc, scale = w_true + 0.05, np.array([0.2, 0.25, 0.2, 0.15])
    fit = FitResult(elbo="meanfield", engine="svi", loc=loc, scale=scale,
                    history=ElboHistory(*(np.zeros(3) for _ in range(4))), steps=321, seconds=1.0, stop_reason="converged")
    w = draw_weights(loc, scale, N_DRAWS, seed=7)
    return fit, x_tr, y_tr, x_te, y_te, predict_draws(w, x_tr, y_tr), predict_draws(w, x_te, y_te)


@pytest.fixture(scope="module")
def toy():
    """A small logistic problem, a guide and its draws (cheap; shared)."""
    return _toy()


@pytest.fixture(scope="module")
def idata(toy):
    """The InferenceData of the toy guide."""
    fit, x_tr, y_tr, x_te, y_te, tr, te = toy
    return to_inference_data(fit, NAMES, x_tr, y_tr, x_te, y_te, tr, te, seed=3, prior_scale=2.0, particles=16,
                             versions={"torch": "2.13.0", "pyro-ppl": "1.9.2"})


def test_groups_dimensions_and_coordinate_names(idata, toy):
    """All six groups; w is (1 chain, draws, coef) with the term names as coordinates."""
    fit, x_tr, y_tr, x_te, y_te, tr, te = toy
    assert set(GROUPS) <= set(idata.groups())
    w = idata.posterior["w"]
    assert w.dims == ("chain", "draw", "coef") and w.shape == (1, N_DRAWS, 4)
    assert list(w.coords["coef"].values) == list(NAMES)
    assert idata.prior["w"].shape == (1, N_DRAWS, 4)
    assert idata.posterior_predictive["y"].shape == (1, N_DRAWS, x_tr.shape[0])
    assert idata.posterior_predictive["y_test"].shape == (1, N_DRAWS, x_te.shape[0])
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "obs_train")
    assert list(idata.log_likelihood.data_vars) == ["y"]  # az.loo needs no var_name
    assert list(idata.constant_data["X_train"].coords["term"].values) == list(NAMES[1:])


def test_values_are_the_given_draws_and_data(idata, toy):
    """Posterior = the guide draws, log-likelihood = predict_draws' (as float32), data = the inputs."""
    fit, x_tr, y_tr, x_te, y_te, tr, te = toy
    np.testing.assert_array_equal(idata.posterior["w"].values[0], tr.w)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], tr.loglik, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(idata.observed_data["y"].values, y_tr)
    np.testing.assert_array_equal(idata.observed_data["y_test"].values, y_te)
    np.testing.assert_array_equal(idata.constant_data["X_test"].values, x_te)
    assert set(np.unique(idata.posterior_predictive["y"].values)) <= {0, 1}


def test_attributes_record_the_fit(idata):
    """ELBO type, engine, S, steps, seed, prior scale and package versions are on every group."""
    for group in GROUPS:
        a = idata[group].attrs
        assert a["elbo"] == "meanfield" and a["engine"] == "svi" and a["particles_S"] == 16
        assert a["steps"] == 321 and a["seed"] == 3 and a["prior_scale"] == 2.0
        assert a["version_torch"] == "2.13.0" and a["version_pyro_ppl"] == "1.9.2"


def test_prior_group_is_the_prior(idata):
    """Prior draws have mean 0 and sd = prior_scale (tolerance: 4 standard errors over 1600 values)."""
    v = idata.prior["w"].values.ravel()
    assert abs(v.mean()) < 4 * 2.0 / np.sqrt(v.size)
    assert abs(v.std() - 2.0) < 4 * 2.0 / np.sqrt(2 * v.size)


def test_replicated_labels_follow_the_predictive_probability(idata, toy):
    """Mean of y_rep over draws and messages ≈ mean p(spam) (tolerance: 4 binomial standard errors)."""
    tr = toy[5]
    rep = idata.posterior_predictive["y"].values[0]
    p = tr.prob.mean()
    assert abs(rep.mean() - p) < 4 * np.sqrt(p * (1 - p) / rep.size)


def test_replicated_labels_are_seeded():
    """Same seed, same labels; another seed, other labels."""
    logit = np.linspace(-3, 3, 600).reshape(3, 200)
    a, b = posterior_predictive_labels(logit, 1), posterior_predictive_labels(logit, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, posterior_predictive_labels(logit, 2))


def test_replicated_labels_by_blocks_equal_the_one_shot_draw(toy):
    """Blocks of draws (from the matrix or from a logit function) give the labels of one draw of
    all uniforms at once, which is how they were made before (same seed, same file)."""
    from scipy.special import expit

    fit, x_tr, y_tr, x_te, y_te, tr, te = toy
    one_shot = (np.random.default_rng(5).random(tr.logit.shape) < expit(tr.logit)).astype(np.int8)
    np.testing.assert_array_equal(posterior_predictive_labels(tr.logit, 5), one_shot)
    by_fn = posterior_predictive_labels(lambda w, x: predict_draws(w, x).logit, 5, w=tr.w, x=x_tr)
    np.testing.assert_array_equal(by_fn, one_shot)


def test_netcdf_round_trip(idata, tmp_path):
    """save_netcdf → load_inference_data gives every group back with equal values and no temporary file left."""
    from pyro_spam import load_inference_data

    path = save_netcdf(idata, tmp_path / "posterior_meanfield.nc")
    back = load_inference_data(path)
    assert set(idata.groups()) == set(back.groups())
    for group in idata.groups():
        for name, var in idata[group].data_vars.items():
            np.testing.assert_array_equal(back[group][name].values, var.values)
    assert list(back.posterior["w"].coords["coef"].values) == list(NAMES)
    assert back.posterior.attrs["elbo"] == "meanfield"
    assert [p.name for p in tmp_path.iterdir()] == ["posterior_meanfield.nc"]


def test_file_leaves_out_the_log_likelihood_and_the_loader_rebuilds_it(idata, tmp_path):
    """By default the file has no log_likelihood group (ArviZ alone sees none) and is far smaller;
    pyro_spam.load_inference_data rebuilds it bit for bit; log_likelihood=True stores it."""
    import arviz as az

    from pyro_spam import load_inference_data

    lean = save_netcdf(idata, tmp_path / "lean.nc")
    full = save_netcdf(idata, tmp_path / "full.nc", log_likelihood=True)
    raw = az.from_netcdf(lean)
    assert "log_likelihood" not in raw.groups() and "pyro_spam.load_inference_data" in raw.attrs["log_likelihood"]
    assert "log_likelihood" in az.from_netcdf(full).groups()
    # 400 draws × 150 float32 values (240 kB) are most of the full file
    assert lean.stat().st_size < full.stat().st_size - 150_000
    assert "log_likelihood" not in load_netcdf(lean).groups()  # no loader given: nothing rebuilt
    for path in (lean, full):
        back = load_inference_data(path)
        assert back.log_likelihood["y"].dtype == np.float32
        np.testing.assert_array_equal(back.log_likelihood["y"].values, idata.log_likelihood["y"].values)
        assert back.log_likelihood["y"].dims == ("chain", "draw", "obs_train")
        assert "log_likelihood" not in back.attrs


def test_reloaded_file_works_with_arviz(idata, tmp_path):
    """The reloaded file feeds az.loo and az.summary directly (names, not indices, in the summary)."""
    import arviz as az

    from pyro_spam import load_inference_data

    back = load_inference_data(save_netcdf(idata, tmp_path / "p.nc"))
    loo = az.loo(back)
    assert np.isfinite(loo.elpd_loo) and loo.n_data_points == 150
    assert list(az.summary(back, var_names=["w"], kind="stats").index) == [f"w[{n}]" for n in NAMES]


def test_load_errors_are_user_errors(tmp_path):
    """A missing or non-netCDF file raises ModelFileError with the path."""
    with pytest.raises(ModelFileError, match="no InferenceData"):
        load_netcdf(tmp_path / "absent.nc")
    bad = tmp_path / "bad.nc"
    bad.write_text("not a netCDF file")
    with pytest.raises(ModelFileError, match="bad.nc"):
        load_netcdf(bad)


def test_mismatched_inputs_are_refused(toy):
    """Wrong number of names, or train/test draws from different w, raise ValueError."""
    fit, x_tr, y_tr, x_te, y_te, tr, te = toy
    with pytest.raises(ValueError, match="coefficients"):
        to_inference_data(fit, NAMES[:3], x_tr, y_tr, x_te, y_te, tr, te, seed=0)
    other = predict_draws(tr.w + 1.0, x_te, y_te)
    with pytest.raises(ValueError, match="same draws"):
        to_inference_data(fit, NAMES, x_tr, y_tr, x_te, y_te, tr, other, seed=0)


def test_nuts_inference_data_keeps_chains():
    """NUTS draws keep their (chains, draws, coef) layout and sampler statistics."""
    s = np.random.default_rng(0).normal(size=(2, 50, 4))
    idata = nuts_to_inference_data(s, NAMES, sample_stats={"diverging": np.zeros((2, 50), dtype=bool)}, attrs={"seed": 5})
    assert idata.posterior["w"].shape == (2, 50, 4)
    assert idata.sample_stats["diverging"].shape == (2, 50)
    assert idata.posterior.attrs["seed"] == 5
    with pytest.raises(ValueError):
        nuts_to_inference_data(s[0], NAMES)
