"""Full- and low-rank guides through the estimator, model files (format 2, version-1 files), predict and InferenceData."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit
from sklearn.base import clone

from pyro_spam.config import FeatureConfig, RunConfig, TrainConfig
from pyro_spam.errors import ModelFileError
from pyro_spam.estimator import VariationalSpamClassifier, load_model, save_model
from pyro_spam.inference_data import GUIDE_COV, load_netcdf, save_netcdf, to_inference_data
from pyro_spam.io.modelfile import FORMAT_VERSION, read_model_file, write_model_file
from pyro_spam.pipeline.run import evaluate_fits, fit_all, prepare
from pyro_spam.pipeline.stages import stage_model_files
from pyro_spam.posterior import draw_weights, predict_draws, run_draws
from pyro_spam.predict import format_table, predict_embeddings
from pyro_spam.summary import draw_seed
from pyro_spam.types import ElboHistory, FitResult

from .conftest import make_dataset

FAST = dict(components=3, steps=60, particles=4, num_draws=300, seed=2)
RANK = 2


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic embeddings (shared)."""
    ds = make_dataset(n=300, dim=8, seed=5)
    return ds.X, ds.y


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, VariationalSpamClassifier]:
    """One short fit per guide family (fitting is the slow part, so it is shared)."""
    X, y = data
    return {g: VariationalSpamClassifier(guide=g, rank=RANK, **FAST).fit(X, y) for g in ("meanfield", "fullrank", "lowrank")}


def _rewrite(path, header_change=None, array_change=None) -> None:
    """Rewrite a model file's header and/or arrays as they are (the header's checksum is kept)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays.pop("header")))
    if header_change:
        header_change(header)
    if array_change:
        array_change(arrays)
    np.savez(path, header=np.array(json.dumps(header)), **arrays)


def _as_version_1(header: dict) -> None:
    """What format version 1 wrote: no guide/rank parameters, no guide in ``fit``."""
    header["format_version"] = 1
    header["pyro_spam_version"] = "0.3.0"
    header["params"].pop("guide")
    header["params"].pop("rank")
    header["fit"].pop("guide")


@pytest.mark.parametrize("guide", ["fullrank", "lowrank"])
def test_fitted_attributes_carry_the_covariance(fitted, guide):
    """loc_, marginal scale_, cov_ = L Lᵀ, and weight_draws_ drawn from N(loc_, cov_) with the run's seed."""
    est = fitted[guide]
    L = est.scale_tril_
    assert L.shape == (4, 4) and np.all(np.triu(L, 1) == 0) and np.all(np.diag(L) > 0)
    np.testing.assert_allclose(est.cov_, L @ L.T, rtol=1e-12)
    np.testing.assert_allclose(est.scale_, np.sqrt(np.diag(est.cov_)), rtol=1e-5)
    assert np.any(est.cov_[~np.eye(4, dtype=bool)] != 0)
    expected = draw_weights(est.loc_, est.scale_, 300, seed=draw_seed(2), scale_tril=L)
    np.testing.assert_array_equal(est.weight_draws_, expected)


def test_meanfield_attributes_unchanged(fitted):
    """Mean-field: no Cholesky factor, a diagonal cov_, and the same draws as before full covariances existed."""
    est = fitted["meanfield"]
    assert est.scale_tril_ is None
    np.testing.assert_array_equal(est.cov_, np.diag(est.scale_**2))
    np.testing.assert_array_equal(est.weight_draws_, draw_weights(est.loc_, est.scale_, 300, seed=draw_seed(2)))


def test_params_include_guide_and_rank(fitted):
    """guide and rank are constructor parameters: get_params, clone, set_params and the TrainConfig see them."""
    est = fitted["lowrank"]
    p = est.get_params()
    assert p["guide"] == "lowrank" and p["rank"] == RANK
    c = clone(est)
    assert c.get_params() == p and not hasattr(c, "cov_")
    assert c.set_params(guide="fullrank", rank=1).train_config().guide == "fullrank"
    assert VariationalSpamClassifier().get_params()["guide"] == "meanfield"
    cfg = RunConfig(train=TrainConfig(guide="lowrank", rank=3))
    assert {"guide": "lowrank", "rank": 3}.items() <= VariationalSpamClassifier.params_from_run_config(cfg, "meanfield").items()


def test_bad_guide_is_a_value_error(data):
    """An unknown family, or a full-rank guide with the manual engine, is refused like any bad parameter."""
    X, y = data
    with pytest.raises(ValueError, match="guide"):
        VariationalSpamClassifier(guide="diagonal", **FAST).fit(X, y)
    with pytest.raises(ValueError, match="manual engine"):
        VariationalSpamClassifier(guide="fullrank", engine="manual", **FAST).fit(X, y)


@pytest.mark.parametrize("guide", ["fullrank", "lowrank"])
def test_save_load_round_trip(tmp_path, data, fitted, guide):
    """save → load gives identical probabilities, intervals, covariance and parameters; the file is format 2."""
    X, _ = data
    est = fitted[guide]
    path = est.save(tmp_path / "m.npz")
    saved = load_model(path)
    back = saved.estimator
    assert saved.guide == guide and saved.format_version == FORMAT_VERSION == 2
    assert back.get_params() == est.get_params()
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(back.predict_interval(X), est.predict_interval(X))
    np.testing.assert_array_equal(back.scale_tril_, est.scale_tril_)
    np.testing.assert_array_equal(back.cov_, est.cov_)
    header, arrays = read_model_file(path)
    assert header["params"]["guide"] == guide and header["fit"]["guide"] == guide
    assert arrays["guide.scale_tril"].shape == (4, 4)


def test_meanfield_file_has_no_factor(tmp_path, fitted):
    """A mean-field file is format 2 with guide='meanfield' and no guide.scale_tril array."""
    header, arrays = read_model_file(fitted["meanfield"].save(tmp_path / "m.npz"))
    assert header["format_version"] == 2 and header["params"]["guide"] == "meanfield"
    assert "guide.scale_tril" not in arrays


def test_version_1_file_loads_as_meanfield(tmp_path, data, fitted):
    """A file of the previous format version (no guide, no rank) loads as mean-field and predicts as before."""
    X, _ = data
    path = fitted["meanfield"].save(tmp_path / "v1.npz")
    before = load_model(path).estimator.predict_proba(X)
    _rewrite(path, header_change=_as_version_1)
    saved = load_model(path)
    est = saved.estimator
    assert saved.format_version == 1 and saved.guide == "meanfield"
    assert est.guide == "meanfield" and est.rank == 1 and est.scale_tril_ is None
    np.testing.assert_array_equal(est.predict_proba(X), before)


def test_future_version_is_one_clear_error(tmp_path, fitted):
    """A file from a newer format version raises one ModelFileError line naming the version and the fix."""
    path = fitted["fullrank"].save(tmp_path / "f.npz")
    _rewrite(path, header_change=lambda h: h.update(format_version=FORMAT_VERSION + 1, pyro_spam_version="9.0"))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    msg = str(info.value)
    assert "\n" not in msg and f"format version {FORMAT_VERSION + 1}" in msg and "upgrade pyro-spam" in msg
    assert "reads versions 1, 2 only" in msg


def _rewrite_checked(path, change) -> None:
    """Rewrite a valid file through the writer (new checksum) after ``change(header, arrays)``."""
    header, arrays = read_model_file(path)
    for key in ("format", "format_version", "pyro_spam_version", "created", "arrays", "sha256"):
        header.pop(key)
    change(header, arrays)
    write_model_file(path, header, arrays)


def test_inconsistent_guide_arrays_are_refused(tmp_path, fitted):
    """A full-rank file without its factor, a mean-field one with a factor, a non-triangular factor or an
    unknown family is refused."""
    path = fitted["fullrank"].save(tmp_path / "a.npz")
    _rewrite_checked(path, lambda h, a: a.pop("guide.scale_tril"))
    with pytest.raises(ModelFileError, match="without its covariance factor"):
        load_model(path)
    path = fitted["meanfield"].save(tmp_path / "b.npz")
    _rewrite_checked(path, lambda h, a: a.update({"guide.scale_tril": np.diag(a["guide.scale"])}))
    with pytest.raises(ModelFileError, match="mean-field model with a covariance factor"):
        load_model(path)
    path = fitted["fullrank"].save(tmp_path / "c.npz")
    _rewrite_checked(path, lambda h, a: a.update({"guide.scale_tril": a["guide.scale_tril"].T.copy()}))
    with pytest.raises(ModelFileError, match="lower triangular"):
        load_model(path)
    path = fitted["fullrank"].save(tmp_path / "d.npz")
    _rewrite_checked(path, lambda h, a: h["params"].update(guide="diagonal"))
    with pytest.raises(ModelFileError, match="invalid parameters: guide must be one of"):
        load_model(path)


def _correlated(est: VariationalSpamClassifier, guide: str, rho: float = -0.9) -> VariationalSpamClassifier:
    """``est``'s pipeline and mean with a hand-made q: sd 0.5 on the bias and x1 (correlation ``rho`` unless
    mean-field) and 0.05 elsewhere."""
    k1 = est.loc_.shape[0]
    scale = np.full(k1, 0.05)
    scale[:2] = 0.5
    cov = np.diag(scale**2)
    if guide != "meanfield":
        cov[0, 1] = cov[1, 0] = rho * 0.25
    tril = None if guide == "meanfield" else np.linalg.cholesky(cov)
    fr = FitResult(elbo="meanfield", engine="svi", loc=est.loc_, scale=scale, history=est.history_, steps=1, seconds=0.0,
                   stop_reason="budget", guide=guide, scale_tril=tril)
    params = {**est.get_params(), "guide": guide, "num_draws": 4000}
    return VariationalSpamClassifier.from_fitted(params, est.feature_pipeline_, fr, est.classes_, est.n_features_in_)


def test_intervals_follow_the_correlation(data, fitted):
    """With w0, w1 negatively correlated, intervals are narrower than mean-field's where x1 > 0 (the errors
    cancel) and wider where x1 < 0; and they are the quantiles of p(spam) under direct N(loc, cov) draws."""
    X, _ = data
    full, mf = _correlated(fitted["fullrank"], "fullrank"), _correlated(fitted["fullrank"], "meanfield")
    T = full.feature_pipeline_.transform(X)
    lo_hi_full, lo_hi_mf = full.predict_interval(X), mf.predict_interval(X)
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731 - widths on the logit scale, where q is Gaussian
    w_full = np.diff(logit(lo_hi_full), axis=1)[:, 0]
    w_mf = np.diff(logit(lo_hi_mf), axis=1)[:, 0]
    pos, neg = T[:, 0] > 1.0, T[:, 0] < -1.0
    assert pos.sum() > 5 and neg.sum() > 5
    assert np.all(w_full[pos] < w_mf[pos]) and np.all(w_full[neg] > w_mf[neg])
    # direct computation: draws of N(loc, cov) by numpy's own Cholesky, the same ε (same seed)
    gen_eps = draw_weights(np.zeros(4), np.ones(4), 4000, seed=draw_seed(2))
    w = full.loc_ + gen_eps @ np.linalg.cholesky(full.cov_).T
    p = expit(w[:, 0:1] + w[:, 1:] @ T.T)
    np.testing.assert_allclose(lo_hi_full, np.quantile(p, [0.05, 0.95], axis=0).T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(full.predict_proba(X)[:, 1], p.mean(axis=0), rtol=1e-9)


def test_predict_report_uses_the_full_covariance(tmp_path, data, fitted):
    """`pyro-spam predict`'s scoring of a saved full-rank model equals the estimator's, and names the guide."""
    X, _ = data
    est = fitted["fullrank"]
    saved = load_model(save_model(est, tmp_path / "m.npz"))
    rep = predict_embeddings(saved, X[:20], [f"m{i}" for i in range(20)], level=0.8)
    lo_hi = est.predict_interval(X[:20], level=0.8)
    np.testing.assert_array_equal([[r.lower, r.upper] for r in rep.predictions], lo_hi)
    np.testing.assert_array_equal([r.p_spam for r in rep.predictions], est.predict_proba(X[:20])[:, 1])
    assert rep.guide == "fullrank" and rep.to_dict()["guide"] == "fullrank"
    assert "fullrank guide" in format_table(rep).splitlines()[0]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The fit, evaluation and model-file stages of a `--guide fullrank` run on synthetic data."""
    tmp = tmp_path_factory.mktemp("guides_run")
    ds = make_dataset(n=300, dim=10, seed=6)
    data = tmp / "d.npz"
    np.savez(data, X=ds.X, y=ds.y, msg=ds.msg)
    cfg = RunConfig(data=str(data), features=FeatureConfig(components=3), elbos=("meanfield",),
                    train=TrainConfig(guide="fullrank", max_steps=60, particles=4), num_draws=250)
    ctx = prepare(cfg)
    fit_all(ctx)
    evaluate_fits(ctx)
    ctx.dir = tmp
    stage_model_files(ctx)
    return ctx, ds


def test_run_model_file_reloads_with_the_full_covariance(full_run):
    """A full-rank run's model file reloads to the run's own draws and held-out predictions."""
    ctx, ds = full_run
    fr = ctx.fits["meanfield"]
    assert fr.guide == "fullrank" and fr.scale_tril is not None
    saved = load_model(ctx.dir / "model_meanfield.npz")
    est = saved.estimator
    assert saved.guide == "fullrank" and est.guide == "fullrank"
    np.testing.assert_array_equal(est.scale_tril_, fr.scale_tril)
    te = _run_test_draws(ctx, "meanfield")
    np.testing.assert_array_equal(est.weight_draws_, te.w)
    p = est.predict_proba(ds.X[ctx.features.test_idx])[:, 1]
    np.testing.assert_allclose(p, te.mean_prob, rtol=1e-12, atol=1e-15)


def _run_test_draws(ctx, kind):
    """The held-out draws a run scored (same seed, same draws; runs do not keep them)."""
    fr = ctx.fits[kind]
    w = run_draws(fr, ctx.config.num_draws, ctx.config.train.seed)
    return predict_draws(w, ctx.features.X_test, ctx.features.y_test)


def test_inference_data_records_the_guide_and_round_trips(tmp_path, full_run):
    """The run's InferenceData holds its full-covariance draws, the family and the covariance, through netCDF."""
    import arviz as az

    ctx, _ = full_run
    fs, fr = ctx.features, ctx.fits["meanfield"]
    te = _run_test_draws(ctx, "meanfield")
    tr = predict_draws(te.w, fs.X_train, fs.y_train)
    idata = to_inference_data(fr, fs.coef_names, fs.X_train, fs.y_train, fs.X_test, fs.y_test, tr, te, seed=1)
    path = save_netcdf(idata, tmp_path / "posterior_meanfield.nc")
    for back in (load_netcdf(path), az.from_netcdf(path, engine="h5netcdf")):
        np.testing.assert_array_equal(back.posterior["w"].values[0], tr.w)
        assert back.posterior.attrs["guide"] == "fullrank" and "full-rank" in back.posterior.attrs["inference"]
        np.testing.assert_array_equal(back.posterior.attrs["guide_scale"], fr.scale)
        np.testing.assert_allclose(back.constant_data[GUIDE_COV].values, fr.cov, rtol=0, atol=0)
        assert list(back.constant_data[GUIDE_COV].coords["coef"].values) == list(fs.coef_names)
    # the draws are N(loc, cov)'s: their correlation matches cov's (1000 draws: se of r ≈ 0.03)
    corr = np.corrcoef(tr.w.T)
    c = fr.cov / np.sqrt(np.outer(np.diag(fr.cov), np.diag(fr.cov)))
    assert np.max(np.abs(corr - c)) < 0.2


def test_meanfield_inference_data_has_a_diagonal_cov(data, fitted):
    """A mean-field fit's InferenceData says so and stores diag(scale²)."""
    X, y = data
    est = fitted["meanfield"]
    T = est.feature_pipeline_.transform(X)
    fr = FitResult(elbo="meanfield", engine="svi", loc=est.loc_, scale=est.scale_,
                   history=ElboHistory(*(np.zeros(2) for _ in range(4))), steps=2, seconds=0.0, stop_reason="budget")
    d = predict_draws(est.weight_draws_, T, y)
    idata = to_inference_data(fr, est.coef_names_, T, y, T, y, d, d, seed=0)
    assert idata.posterior.attrs["guide"] == "meanfield"
    np.testing.assert_array_equal(idata.constant_data[GUIDE_COV].values, np.diag(est.scale_**2))
