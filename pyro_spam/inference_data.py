"""The only module that builds ArviZ objects: a fitted guide (or NUTS draws) as ``InferenceData``.

ArviZ's converters (``az.from_pyro``) accept MCMC runs only, so the variational posterior is
assembled with ``az.from_dict`` from the guide's draws and what they imply. Layout of the
InferenceData of one fit:

========================  =========================================================================
group                     variables (dimensions)
========================  =========================================================================
``posterior``             ``w`` (chain=1, draw, coef): draws of q(w); ``coef`` names each term
``prior``                 ``w`` (chain=1, draw, coef): draws of the N(0, prior_scale²) prior
``posterior_predictive``  ``y`` (chain, draw, obs_train), ``y_test`` (chain, draw, obs_test): 0/1
``log_likelihood``        ``y`` (chain, draw, obs_train): log p(y_i | x_i, w) as float32, for ``az.loo``
``observed_data``         ``y`` (obs_train), ``y_test`` (obs_test)
``constant_data``         ``X_train`` (obs_train, term), ``X_test`` (obs_test, term),
                          ``guide_cov`` (coef, coef_col): the covariance of q
========================  =========================================================================

In memory the ``log_likelihood`` group is present (``az.loo(idata)`` needs no ``var_name``; only
the training labels have one, the held-out score is the lppd in ``summary.json``). On disk it is
left out by default: its float32 draws × n_train values (18 MB at 1000 draws × 4459 messages)
have random mantissas that zlib cannot shrink (measured: 15 %), and they follow exactly from
``posterior.w``, ``constant_data.X_train`` and ``observed_data.y``: ``pyro_spam.load_inference_data``
rebuilds the group bit for bit (the file's ``log_likelihood`` attribute says so); ``save_netcdf(...,
log_likelihood=True)`` stores it anyway.
Every variable is zlib-compressed (the 0/1 replicated labels about 10x). Attributes (on every group)
record the ELBO type, engine, guide family (``guide``: ``"meanfield"``, ``"fullrank"``,
``"lowrank"``), the guide's mean and marginal sds (``guide_loc``, ``guide_scale``), particles S,
steps, seeds, prior scale and package versions; the full covariance is the ``guide_cov`` variable
(netCDF attributes hold 1-D values only). The posterior draws are the ones given: for a full- or
low-rank guide they must come from its full covariance (``draw_weights(..., scale_tril=fit.scale_tril)``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFileError
from .io.rundir import atomic_path
from .types import Draws, FitResult

with warnings.catch_warnings():
    # ArviZ 0.23 announces its 1.0 refactor with a FutureWarning at import time.
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

LoglikFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
LogitFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(w, X) -> logits`` of shape (draws, n)."""
"""``(w, X, y) -> log p(y_i | x_i, w_s)`` of shape (draws, n): what rebuilds a left-out log-likelihood group."""

W = "w"
Y = "y"
Y_TEST = "y_test"
COEF = "coef"
COEF_COL = "coef_col"
GUIDE_COV = "guide_cov"
TERM = "term"
OBS_TRAIN = "obs_train"
OBS_TEST = "obs_test"
LOG_LIKELIHOOD_ATTR = "log_likelihood"
"""Root attribute of a file written without its log-likelihood group: how to get it back."""
_REBUILT = "omitted; rebuilt from posterior.w, constant_data.X_train and observed_data.y by pyro_spam.load_inference_data"
GROUPS = ("posterior", "prior", "posterior_predictive", "log_likelihood", "observed_data", "constant_data")


_LABEL_CHUNK = 100
"""Draws per block in :func:`posterior_predictive_labels` (float64 temporaries of a block only)."""


def posterior_predictive_labels(logit: np.ndarray | LogitFn, seed: int, *, w: np.ndarray | None = None,
                                x: np.ndarray | None = None) -> np.ndarray:
    """Replicated labels y_rep ~ Bernoulli(sigmoid(logit)), one per draw and message, as int8.

    ``logit`` is the (draws, n) matrix, or a function ``(w_block, x) -> logits`` applied to blocks
    of the draws ``w`` on inputs ``x`` (no draws × n float matrix is kept). The uniforms are drawn
    block by block from one generator, so both forms give the same labels.
    """
    from scipy.special import expit

    rng = np.random.default_rng(seed)
    if not callable(logit):
        logit = np.asarray(logit)
        n_draws, n = logit.shape
        block = lambda lo: logit[lo : lo + _LABEL_CHUNK]  # noqa: E731
    else:
        if w is None or x is None:
            raise ValueError("a logit function needs the draws w and the inputs x")
        n_draws, n = np.shape(w)[0], np.shape(x)[0]
        fn = logit
        block = lambda lo: fn(w[lo : lo + _LABEL_CHUNK], x)  # noqa: E731
    out = np.empty((n_draws, n), dtype=np.int8)
    for lo in range(0, n_draws, _LABEL_CHUNK):
        z = block(lo)
        out[lo : lo + z.shape[0]] = rng.random(z.shape) < expit(z)
    return out


_GUIDE_LABELS = {"meanfield": "mean-field Normal", "fullrank": "full-rank multivariate Normal",
                 "lowrank": "low-rank multivariate Normal"}


def _attrs(fit: FitResult, *, seed: int, prior_scale: float, particles: int | None,
           versions: Mapping[str, str] | None) -> dict[str, Any]:
    guide = str(fit.guide)
    attrs: dict[str, Any] = {
        "inference": f"variational ({_GUIDE_LABELS.get(guide, guide)} guide)",
        "guide": guide,
        "elbo": fit.elbo,
        "engine": fit.engine,
        "particles_S": -1 if particles is None else int(particles),
        "steps": int(fit.steps),
        "stop_reason": fit.stop_reason,
        "seed": int(seed),
        "prior_scale": float(prior_scale),
        "guide_loc": np.asarray(fit.loc, dtype=np.float64),
        "guide_scale": np.asarray(fit.scale, dtype=np.float64),
        "versions": json.dumps(dict(versions or {}), sort_keys=True),
    }
    for pkg, ver in (versions or {}).items():
        attrs[f"version_{pkg.replace('-', '_')}"] = str(ver)
    return attrs


def to_inference_data(
    fit: FitResult,
    coef_names: tuple[str, ...] | list[str],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    draws_train: Draws,
    draws_test: Draws,
    *,
    seed: int,
    prior_scale: float = 1.0,
    particles: int | None = None,
    versions: Mapping[str, str] | None = None,
    logit_fn: LogitFn | None = None,
    log_likelihood: bool = True,
) -> az.InferenceData:
    """InferenceData of one fitted guide: posterior, prior, predictive, log-likelihood, data.

    fit : FitResult
        The fitted guide (its family, loc/scale and training facts go into the attributes, its
        covariance into ``constant_data.guide_cov``).
    coef_names : sequence of str of length K+1
        Coefficient names, bias first (``FeatureSet.coef_names``).
    x_train, x_test : ndarray of shape (n, K)
        The exact model inputs.
    y_train, y_test : ndarray of shape (n,)
    draws_train, draws_test : Draws
        The same guide draws ``w`` evaluated on train and test (from ``posterior.predict_draws``);
        ``draws_train.loglik`` must be present. They become the posterior group as given, so for a
        full- or low-rank fit they must be drawn from its full covariance.
    seed : int
        Seed of the replicated labels and of the prior draws (same seed, same file).
    prior_scale : float, default=1.0
    particles : int or None
        Monte Carlo particles S used in training (recorded only).
    versions : mapping of str to str or None
        Package versions to record.
    logit_fn : callable or None
        ``(w, X) -> logits``: the training labels are replicated from it, block by block, instead
        of from ``draws_train.logit`` (which may then be None: no draws × n_train logit matrix).
    log_likelihood : bool, default=True
        False: no ``log_likelihood`` group in memory either (the caller has the matrix; the file
        never stores it): ``draws_train.loglik`` may be None and the InferenceData records how to
        rebuild it, as :func:`save_netcdf` does.
    """
    w = np.asarray(draws_train.w, dtype=np.float64)
    n_draws, k1 = w.shape
    names = [str(n) for n in coef_names]
    if len(names) != k1 or x_train.shape[1] != k1 - 1 or x_test.shape[1] != k1 - 1:
        raise ValueError(f"{k1} coefficients, {len(names)} names and {x_train.shape[1]} input columns do not match")
    if log_likelihood and draws_train.loglik is None:
        raise ValueError("draws_train has no log-likelihood: predict_draws must be given the labels")
    if not np.array_equal(draws_test.w, draws_train.w):
        raise ValueError("draws_train and draws_test must come from the same draws of w")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**31 - 1, size=3)
    prior_w = np.random.default_rng(seeds[0]).normal(0.0, prior_scale, size=(n_draws, k1))
    cov = np.asarray(fit.cov, dtype=np.float64)
    if cov.shape != (k1, k1):
        raise ValueError(f"the guide's covariance has shape {cov.shape}, the draws {k1} coefficients")
    coords = {
        COEF: names,
        COEF_COL: names,
        TERM: names[1:],
        OBS_TRAIN: np.arange(x_train.shape[0]),
        OBS_TEST: np.arange(x_test.shape[0]),
    }
    dims = {W: [COEF], Y: [OBS_TRAIN], Y_TEST: [OBS_TEST], "X_train": [OBS_TRAIN, TERM], "X_test": [OBS_TEST, TERM],
            GUIDE_COV: [COEF, COEF_COL]}
    idata = az.from_dict(
        posterior={W: w[None]},
        prior={W: prior_w[None]},
        posterior_predictive={
            Y: posterior_predictive_labels(draws_train.logit if logit_fn is None else logit_fn, seeds[1], w=w, x=x_train)[None],
            Y_TEST: posterior_predictive_labels(draws_test.logit, seeds[2])[None],
        },
        log_likelihood={Y: np.asarray(draws_train.loglik, dtype=np.float32)[None]} if log_likelihood else None,
        observed_data={Y: np.asarray(y_train).astype(np.int8), Y_TEST: np.asarray(y_test).astype(np.int8)},
        constant_data={"X_train": np.asarray(x_train), "X_test": np.asarray(x_test), GUIDE_COV: cov},
        coords=coords,
        dims=dims,
    )
    attrs = _attrs(fit, seed=seed, prior_scale=prior_scale, particles=particles, versions=versions)
    for group in idata.groups():
        idata[group].attrs.update(attrs)
    if not log_likelihood:
        idata.attrs[LOG_LIKELIHOOD_ATTR] = _REBUILT
    return idata


def nuts_to_inference_data(
    samples: np.ndarray,
    coef_names: tuple[str, ...] | list[str],
    *,
    sample_stats: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> az.InferenceData:
    """InferenceData of NUTS draws ``samples`` of shape (chains, draws, K+1), dimension ``coef``.

    sample_stats : mapping of str to ndarray of shape (chains, draws) or None
        Per-draw sampler statistics (e.g. ``diverging``).
    """
    samples = np.asarray(samples, dtype=np.float64)
    names = [str(n) for n in coef_names]
    if samples.ndim != 3 or samples.shape[-1] != len(names):
        raise ValueError(f"samples must have shape (chains, draws, {len(names)}), got {samples.shape}")
    idata = az.from_dict(
        posterior={W: samples},
        sample_stats=None if sample_stats is None else dict(sample_stats),
        coords={COEF: names},
        dims={W: [COEF]},
    )
    for group in idata.groups():
        idata[group].attrs.update({"inference": "NUTS (pyro.infer.MCMC)", **dict(attrs or {})})
    return idata


def draws_as_inference_data(w: np.ndarray, coef_names: tuple[str, ...] | list[str]) -> az.InferenceData:
    """Just a posterior group of draws ``w`` of shape (draws, K+1) or (chains, draws, K+1).

    For plotting derived draws (e.g. standardised ones) next to the full InferenceData.
    """
    w = np.asarray(w, dtype=np.float64)
    return az.from_dict(posterior={W: w[None] if w.ndim == 2 else w}, coords={COEF: list(coef_names)}, dims={W: [COEF]})




def _write_groups(idata: az.InferenceData, filename: str, *, log_likelihood: bool) -> None:
    """``InferenceData.to_netcdf`` with per-variable zlib: what it writes, ArviZ reads back.

    Same layout as ArviZ's writer (root attributes, one netCDF group per InferenceData group).
    """
    import xarray as xr

    groups = [g for g in idata.groups() if log_likelihood or g != "log_likelihood"]
    attrs = dict(idata.attrs)
    if "log_likelihood" in idata.groups() and not log_likelihood:
        attrs[LOG_LIKELIHOOD_ATTR] = _REBUILT
    xr.Dataset(attrs=attrs).to_netcdf(filename, mode="w", engine="h5netcdf", group="/")
    for group in groups:
        data = idata[group]
        encoding = {name: {"zlib": True, "shuffle": True, "complevel": 4} for name, var in data.variables.items()
                    if var.dtype.kind in "iubf"}
        data.to_netcdf(filename, mode="a", group=group, engine="h5netcdf", encoding=encoding)


def save_netcdf(idata: az.InferenceData, path: Path, *, log_likelihood: bool = False) -> Path:
    """Write ``idata`` to ``path`` atomically (a temporary file in the same folder, then a rename).

    The ``log_likelihood`` group is written only with ``log_likelihood=True``; otherwise
    :func:`load_netcdf` rebuilds it (see the module docstring).
    """
    with atomic_path(Path(path)) as tmp:
        _write_groups(idata, str(tmp), log_likelihood=log_likelihood)
    return Path(path)


def load_netcdf(path: Path, *, log_likelihood: LoglikFn | None = None) -> az.InferenceData:
    """Read an InferenceData written by :func:`save_netcdf` fully into memory (no open file left).

    A file written without its ``log_likelihood`` group gets it back when ``log_likelihood`` is
    given: ``(w (draws, K+1), X_train, y) -> log p(y_i | x_i, w_s)`` of shape (draws, n_train),
    cast to float32 as :func:`to_inference_data` stores it (``pyro_spam.load_inference_data``
    passes :func:`pyro_spam.posterior.predict_draws`'s, which made the original: the same numbers).
    This module imports no torch, so the function comes from the caller.

    Raises :class:`ModelFileError` when the file is missing or not an ArviZ netCDF file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no InferenceData file at {path}")
    try:
        with az.rc_context({"data.load": "eager"}):
            idata = az.from_netcdf(path, engine="h5netcdf")
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a readable ArviZ netCDF file: {exc}") from None
    if log_likelihood is not None and LOG_LIKELIHOOD_ATTR in idata.attrs and "log_likelihood" not in idata.groups():
        idata.add_groups(log_likelihood=_rebuilt_log_likelihood(idata, log_likelihood))
        del idata.attrs[LOG_LIKELIHOOD_ATTR]
    return idata


def _rebuilt_log_likelihood(idata: az.InferenceData, loglik: LoglikFn) -> Any:
    """The ``log_likelihood`` group :func:`to_inference_data` built, from ``loglik`` (see :func:`load_netcdf`)."""
    import xarray as xr

    w = idata.posterior[W].values  # (chain, draw, coef)
    x = idata.constant_data["X_train"].values
    y = idata.observed_data[Y].values
    ll = np.stack([np.asarray(loglik(w_c, x, y), dtype=np.float32) for w_c in w])
    coords = {"chain": idata.posterior.coords["chain"].values, "draw": idata.posterior.coords["draw"].values,
              OBS_TRAIN: idata.observed_data.coords[OBS_TRAIN].values}
    return xr.Dataset({Y: (("chain", "draw", OBS_TRAIN), ll)}, coords=coords, attrs=dict(idata.posterior.attrs))
