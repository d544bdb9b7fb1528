"""Studies that refit the model on a run's data: prior sensitivity and model size (the ELBO
estimators have their own module, :mod:`pyro_spam.estimator_lab`).

Numbers only (no run-directory I/O, no figures, no report); ``pyro-spam compare RUN_DIR``
(:func:`pyro_spam.pipeline.compare.run_compare`) runs them on a finished run and writes them into it.

* **prior sensitivity** (:func:`prior_sensitivity`): held-out lppd and weights for prior scales
  0.1, 1 and 10 on the run's own features;
* **model size** (:func:`model_size_sweep`): held-out lppd for K = 1…15 with polynomial
  (``x_j^j``) versus linear (``x_j``) terms;

The sweeps refit the model tens of times, so by default they use the exact deterministic path:
L-BFGS on the quadrature ELBO (:mod:`pyro_spam.training.lbfgs`, ~0.1 s and the optimum itself per
fit), with warm starts (the fit for K+1 terms starts from the fit for K, since the first K
columns do not change; each prior scale starts from the run's fit). ``sweep_optimizer="adam"``
gives v0.2's path (Pyro SVI with the analytic-KL ELBO, few particles, the run's stop rule). :class:`CompareSettings` holds these
settings; they are written to ``summary.json`` and quoted in the report.

Python use::

    from pyro_spam.studies import QUICK, prior_sensitivity
    res = prior_sensitivity(X_train, y_train, X_test, y_test, TrainConfig(), QUICK)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .config import MAX_COMPONENTS, FeatureConfig, TrainConfig
from .errors import PyroSpamError
from .evaluate import intercept_only_lppd, lppd_pointwise
from .features import build_features
from .posterior import draw_weights, predict_draws
from .training.engines import fit, torch_threads
from .types import Dataset, ElboHistory, FitResult, TrainState

log = logging.getLogger(__name__)

__all__ = [
    "CompareSettings",
    "FULL",
    "QUICK",
    "heldout_lppd",
    "prior_sensitivity",
    "sweep_features",
    "model_size_sweep",
]

@dataclass(frozen=True)
class CompareSettings:
    """Budgets of the refitting studies.

    sweep_optimizer : {"lbfgs", "adam"}, default="lbfgs"
        ``"lbfgs"``: the exact quadrature ELBO maximised by L-BFGS (the engine, particle, step and
        learning-rate settings below do not apply). ``"adam"``: SVI with the settings below.
    sweep_engine : {"svi", "manual"}, default="svi"
        ``sweep_optimizer="adam"`` only: training engine of the sweeps (``"svi"`` uses the run's ``jit`` setting).
    sweep_particles : int, default=8
        Monte Carlo particles per step in the prior and model-size sweeps.
    sweep_max_steps : int, default=1500
    sweep_window, sweep_tol : int, float, default=20, 1.0
        Convergence window (steps) and plateau threshold (nats) of the sweeps (the run's default
        threshold is 0.5 nats).
    sweep_lr : float, default=0.05
    sweep_draws : int, default=1000
        Guide draws for each held-out lppd.
    prior_scales : tuple of float, default=(0.1, 1.0, 10.0)
    ks : tuple of int or None, default=None
        Model sizes K of the sweep; None means 1…min(15, dim).
    est_S : tuple of int, default=(1, 4, 16, 64, 256)
        Particle counts of the estimator lab (:mod:`pyro_spam.estimator_lab`).
    est_reps : int, default=64
        Independent estimates per (estimator, guide, S); a variance has a relative standard
        error of about sqrt(2 / (reps − 1)) (18 % at 64); ratios between estimators that share
        noise are much tighter (bootstrap interval).
    split_batch_size : int or None, default=None
        Mini-batch size of the Monte Carlo / subsampling split of the gradient variance; None uses
        the run's ``batch_size`` (no split for a full-batch run).
    curve_particles, curve_max_steps : int or None, default=None
        Particles and step budget of each estimator's training run; None uses the run's.
    bootstrap : int, default=1000
        Bootstrap resamples for the confidence interval of variance ratios.
    """

    sweep_optimizer: str = "lbfgs"
    sweep_engine: str = "svi"
    sweep_particles: int = 8
    sweep_max_steps: int = 1500
    sweep_window: int = 20
    sweep_tol: float = 1.0
    sweep_lr: float = 0.05
    sweep_draws: int = 1000
    prior_scales: tuple[float, ...] = (0.1, 1.0, 10.0)
    ks: tuple[int, ...] | None = None
    est_S: tuple[int, ...] = (1, 4, 16, 64, 256)
    est_reps: int = 64
    split_batch_size: int | None = None
    curve_particles: int | None = None
    curve_max_steps: int | None = None
    bootstrap: int = 1000


FULL = CompareSettings()
QUICK = CompareSettings(
    sweep_particles=4, sweep_max_steps=600, sweep_draws=500, ks=(1, 2, 3, 5, 8, 12, 15),
    est_reps=30, curve_particles=16, curve_max_steps=400, bootstrap=300,
)


# ---------------------------------------------------------------- helpers


def heldout_lppd(loc: np.ndarray, scale: np.ndarray, x: np.ndarray, y: np.ndarray, n_draws: int,
                 seed: int) -> dict[str, Any]:
    """Held-out log pointwise predictive density per message and its standard error.

    Returns ``lppd`` (mean over messages, nats), ``se`` (sd of the pointwise values / sqrt(n))
    and ``pointwise`` (n,), for paired comparisons between models on the same messages.
    """
    d = predict_draws(draw_weights(np.asarray(loc), np.asarray(scale), n_draws, seed), x, y)
    pw = lppd_pointwise(d.loglik)
    return {"lppd": float(pw.mean()), "se": float(pw.std(ddof=1) / math.sqrt(pw.size)), "pointwise": pw}


def _sweep_config(base: TrainConfig, s: CompareSettings, **over: Any) -> TrainConfig:
    if s.sweep_optimizer == "lbfgs":
        return dataclasses.replace(base, optimizer="lbfgs", elbo="quad", batch_size=None, **over)
    return dataclasses.replace(
        base, optimizer="adam", engine=s.sweep_engine, elbo="meanfield", particles=s.sweep_particles, batch_size=None,
        max_steps=s.sweep_max_steps, lr=s.sweep_lr, window=s.sweep_window, tol=s.sweep_tol, **over,
    )


def _warm(loc: np.ndarray, scale: np.ndarray, cfg: TrainConfig) -> TrainState:
    """A fresh fit (empty history, initial learning rate) that starts from ``(loc, scale)``."""
    empty = np.empty(0)
    return TrainState(loc=np.asarray(loc, dtype=np.float64), scale=np.asarray(scale, dtype=np.float64),
                      history=ElboHistory(empty, empty, empty, empty), lr=cfg.lr, decays_done=0)


def _fit_row(fr: FitResult, lp: Mapping[str, Any]) -> dict[str, Any]:
    """One sweep row: the held-out lppd and how the fit ended (ELBO: exact for L-BFGS, else the mean
    of the last tenth of the steps' estimates, the plateau)."""
    exact = fr.extra.get("optimizer") == "lbfgs"
    elbo = fr.extra["convergence"]["elbo"] if exact else float(np.mean(fr.history.elbo[-max(1, fr.steps // 10) :]))
    return {"lppd": lp["lppd"], "se": lp["se"], "elbo": float(elbo),
            "steps": fr.steps, "seconds": fr.seconds, "stop_reason": fr.stop_reason,
            "loc": fr.loc, "scale": fr.scale}


def _paired_se(a: np.ndarray, b: np.ndarray) -> float:
    d = a - b
    return float(d.std(ddof=1) / math.sqrt(d.size))


# ---------------------------------------------------------------- 6. prior sensitivity


def prior_sensitivity(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    base: TrainConfig,
    settings: CompareSettings = FULL,
    *,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    coef_names: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Refit with each prior scale in ``settings.prior_scales`` and score on the test set.

    Each fit starts from ``init`` (e.g. the run's guide) when given, else from the prior mean.

    Returns
    -------
    dict
        ``rows``: per scale ``prior_scale, lppd, se, elbo, steps, seconds, loc, scale, kl_total``
        and ``diff_vs_1`` / ``diff_se`` (paired lppd difference to scale 1, when 1 is swept);
        ``coef_names``; ``best`` (the scale with the largest lppd).
    """
    from .evaluate import kl_normal

    rows, pointwise = [], {}
    for ps in tqdm(settings.prior_scales, desc="prior scales", disable=not progress, leave=False):
        cfg = _sweep_config(base, settings, prior_scale=float(ps))
        with torch_threads(1):
            fr = fit(X_train, y_train, cfg, resume=_warm(*init, cfg) if init is not None else None)
        lp = heldout_lppd(fr.loc, fr.scale, X_test, y_test, settings.sweep_draws, seed=base.seed + 7)
        pointwise[float(ps)] = lp["pointwise"]
        kl_total = float(kl_normal(fr.loc, fr.scale, ps).sum())
        rows.append({"prior_scale": float(ps), **_fit_row(fr, lp), "kl_total": kl_total})
    if 1.0 in pointwise:
        for r in rows:
            r["diff_vs_1"] = float(np.mean(pointwise[r["prior_scale"]] - pointwise[1.0]))
            r["diff_se"] = _paired_se(pointwise[r["prior_scale"]], pointwise[1.0])
    best = max(rows, key=lambda r: r["lppd"])["prior_scale"]
    return {"rows": rows, "best": best, "coef_names": list(coef_names) if coef_names is not None else None}


# ---------------------------------------------------------------- 7. model size


def sweep_features(ds: Dataset, feature_config: FeatureConfig, k_max: int, *, seed: int):
    """The run's split and feature pipeline with ``k_max`` components, for every kind of term.

    Returns ``{kind: FeatureSet}``. The first K columns of a ``k_max`` feature set equal the
    features built with K components (PCA components, and each term's standardisation, do not
    depend on how many components are kept), so one pipeline per kind serves the whole sweep.
    """
    out = {}
    with threadpool_limits(limits=1):  # as in the run: BLAS on 2 threads of a busy 2-core machine made the PCA 25x slower
        for kind in ("polynomial", "linear"):
            cfg = dataclasses.replace(feature_config, components=int(k_max), kind=kind)
            out[kind], _ = build_features(ds, cfg, seed=seed)
    return out


def model_size_sweep(
    ds: Dataset,
    feature_config: FeatureConfig,
    base: TrainConfig,
    settings: CompareSettings = FULL,
    *,
    split_seed: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Held-out lppd versus K for polynomial and linear terms (same split as the run).

    K runs over ``settings.ks`` (default 1…min(15, dim, n_train − 1)). The fit for each K
    starts from the previous K's fit with the new coefficient at loc 0, scale ``base.init_scale``.

    Returns
    -------
    dict
        ``ks``; per kind under ``kinds``: lists ``lppd``, ``se``, ``steps``, ``seconds`` and
        ``best_k`` (largest lppd), ``one_se_k`` (smallest K whose lppd is within one paired SE
        of the best); ``intercept_only`` (lppd of the constant spam rate); ``run_k``.
    """
    n_train_est = int(round(ds.n * (1 - feature_config.test_size)))
    k_cap = min(MAX_COMPONENTS, ds.dim, n_train_est - 1)
    ks = sorted({int(k) for k in (settings.ks or range(1, k_cap + 1)) if 1 <= int(k) <= k_cap})
    if not ks:
        raise PyroSpamError(f"no model sizes to sweep (K must be between 1 and {k_cap})")
    seed = base.seed if split_seed is None else split_seed
    feats = sweep_features(ds, feature_config, max(ks), seed=seed)
    kinds: dict[str, Any] = {}
    bar = tqdm(total=2 * len(ks), desc="model size", disable=not progress, leave=False)
    for kind, fs in feats.items():
        cfg = _sweep_config(base, settings)
        prev: tuple[np.ndarray, np.ndarray] | None = None
        res: dict[str, list] = {"lppd": [], "se": [], "steps": [], "seconds": [], "elbo": []}
        pointwise = []
        for k in ks:
            init = None
            if prev is not None:
                grow = k + 1 - prev[0].size
                init = _warm(np.r_[prev[0], np.zeros(grow)], np.r_[prev[1], np.full(grow, cfg.init_scale)], cfg)
            with torch_threads(1):
                fr = fit(fs.X_train[:, :k], fs.y_train, cfg, resume=init)
            lp = heldout_lppd(fr.loc, fr.scale, fs.X_test[:, :k], fs.y_test, settings.sweep_draws, seed=base.seed + 7)
            row = _fit_row(fr, lp)
            for key in res:
                res[key].append(row[key])
            pointwise.append(lp["pointwise"])
            prev = (fr.loc, fr.scale)
            bar.update(1)
        best = int(np.argmax(res["lppd"]))
        within = [i for i in range(len(ks))
                  if res["lppd"][best] - res["lppd"][i] <= _paired_se(pointwise[best], pointwise[i])]
        kinds[kind] = {**res, "best_k": ks[best], "one_se_k": ks[min(within)], "terms": list(fs.names)}
    bar.close()
    fs = feats["polynomial"]
    return {
        "ks": ks,
        "kinds": kinds,
        "intercept_only": intercept_only_lppd(fs.y_train, fs.y_test),
        "n_test": int(fs.y_test.size),
    }
