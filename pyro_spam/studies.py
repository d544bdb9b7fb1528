"""Studies that refit the model on a run's data: prior sensitivity, model size, ELBO estimators.

Numbers only (no run-directory I/O, no figures, no report); ``pyro-spam compare RUN_DIR``
(:func:`pyro_spam.pipeline.compare.run_compare`) runs them on a finished run and writes them into it.

* **prior sensitivity** (:func:`prior_sensitivity`): held-out lppd and weights for prior scales
  0.1, 1 and 10 on the run's own features;
* **model size** (:func:`model_size_sweep`): held-out lppd for K = 1…15 with polynomial
  (``x_j^j``) versus linear (``x_j``) terms;
* **ELBO estimators** (:func:`estimator_variance`, :func:`training_curves`): at fixed guide
  parameters (initial and fitted), the variance of the ELBO estimate and of its gradient for
  Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` and the hand-written
  :mod:`pyro_spam.elbo_manual` (both KL variants), for S = 1, 4, 16, 64, 256 particles; and the
  training curves of each.

The sweeps refit the model tens of times, so by default they use the exact deterministic path:
L-BFGS on the quadrature ELBO (:mod:`pyro_spam.training.lbfgs`, ~0.1 s and the optimum itself per
fit), with warm starts (the fit for K+1 terms starts from the fit for K, since the first K
columns do not change; each prior scale starts from the run's fit). ``sweep_optimizer="adam"``
gives v0.2's path (Pyro SVI with the analytic-KL ELBO, few particles, the run's stop rule). :class:`CompareSettings` holds these
settings; they are written to ``summary.json`` and quoted in the report.

Python use::

    from pyro_spam.studies import QUICK, estimator_variance
    est = estimator_variance(X_train, y_train, {"fitted": (loc, scale)}, QUICK.est_S, QUICK.est_reps)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from scipy.stats import bootstrap
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import elbo_manual as em
from .config import MAX_COMPONENTS, FeatureConfig, TrainConfig
from .errors import PyroSpamError
from .evaluate import intercept_only_lppd, lppd_pointwise
from .features import build_features
from .guide import LOC, SCALE, make_guide
from .model import model
from .posterior import draw_weights, predict_draws
from .training.elbos import make_elbo
from .training.engines import fit, torch_threads
from .types import Dataset, ElboHistory, FitResult, TrainState

log = logging.getLogger(__name__)

__all__ = [
    "CompareSettings",
    "FULL",
    "QUICK",
    "ESTIMATORS",
    "heldout_lppd",
    "prior_sensitivity",
    "sweep_features",
    "model_size_sweep",
    "estimator_draws",
    "estimator_variance",
    "training_curves",
]

#: The four ELBO estimators compared: (label, implementation, KL variant).
ESTIMATORS: tuple[tuple[str, str, str], ...] = (
    ("Pyro Trace_ELBO", "pyro", "trace"),
    ("Pyro TraceMeanField_ELBO", "pyro", "meanfield"),
    ("manual MC KL", "manual", "trace"),
    ("manual analytic KL", "manual", "meanfield"),
)


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
        Particle counts of the estimator-variance study.
    est_reps : int, default=64
        Independent estimates per (estimator, guide, S); a variance has a relative standard
        error of about sqrt(2 / (reps − 1)) (18 % at 64); ratios within a pair share noise and
        are much tighter (paired bootstrap interval).
    curve_particles, curve_max_steps : int or None, default=None
        Particles and step budget of the training curves; None uses the run's.
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


# ---------------------------------------------------------------- ELBO estimators: variance


def _pyro_value_and_grad(kind: str, x: torch.Tensor, y: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                         particles: int, prior_scale: float, seed: int) -> tuple[float, np.ndarray, np.ndarray]:
    """One Pyro ELBO estimate (the ELBO object training uses) and its gradient w.r.t. (loc, scale).

    Works for S = 1 too (Pyro does not vectorise a single particle, so ``w`` is (K+1,)). The
    gradient w.r.t. the positive ``scale`` comes from the unconstrained parameter
    ``u = log scale`` by the chain rule ``∂/∂scale = (∂/∂u) / scale``.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make_guide(init_loc=loc, init_scale_vec=scale)
    elbo = make_elbo(kind, particles)
    loss, _ = elbo.loss_and_loglik(model, guide, x, y, None, prior_scale)
    params = dict(pyro.get_param_store().named_parameters())
    g_loc, g_u = torch.autograd.grad(loss, [params[LOC], params[SCALE]])
    return -float(loss.detach()), (-g_loc).numpy().astype(np.float64), (-g_u / scale).numpy().astype(np.float64)


def estimator_draws(
    x: np.ndarray,
    y: np.ndarray,
    loc: np.ndarray,
    scale: np.ndarray,
    S: int,
    reps: int,
    *,
    prior_scale: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, dict[str, np.ndarray]]:
    """``reps`` independent ELBO estimates and gradients with S particles from each of :data:`ESTIMATORS`.

    The two Pyro estimators share each replicate's noise (same seed: the guide draws first), and
    so do the two manual ones (a private generator seeded with ``seed + 1``), so differences
    within a pair are measured with common random numbers.

    Returns
    -------
    dict
        ``{label: {"elbo": (reps,), "grad_loc": (reps, K+1), "grad_scale": (reps, K+1), "seconds": float}}``.
    """
    xt, yt = torch.as_tensor(x, dtype=dtype), torch.as_tensor(y, dtype=dtype)
    lt, st = torch.as_tensor(loc, dtype=dtype), torch.as_tensor(scale, dtype=dtype)
    k1 = lt.shape[0]
    out: dict[str, dict[str, Any]] = {}
    store = pyro.get_param_store()
    with torch_threads(1), store.scope(), torch.random.fork_rng(devices=[]):
        for label, impl, kind in ESTIMATORS:
            if impl != "pyro":
                continue
            e, gl, gs = np.empty(reps), np.empty((reps, k1)), np.empty((reps, k1))
            t0 = time.perf_counter()
            for r in range(reps):
                e[r], gl[r], gs[r] = _pyro_value_and_grad(kind, xt, yt, lt, st, S, prior_scale, seed * 100_003 + r)
            out[label] = {"elbo": e, "grad_loc": gl, "grad_scale": gs, "seconds": (time.perf_counter() - t0) / reps}
        pyro.clear_param_store()
    gen = torch.Generator().manual_seed(seed + 1)
    eps_all = torch.randn((reps, S, k1), generator=gen, dtype=dtype)
    with torch_threads(1):
        for label, impl, kind in ESTIMATORS:
            if impl != "manual":
                continue
            e, gl, gs = np.empty(reps), np.empty((reps, k1)), np.empty((reps, k1))
            t0 = time.perf_counter()
            for r in range(reps):
                (g_loc, g_scale), parts = em.elbo_grad(kind, lt, st, eps_all[r], xt, yt, prior_scale=prior_scale)
                e[r], gl[r], gs[r] = float(parts.elbo), g_loc.numpy(), g_scale.numpy()
            out[label] = {"elbo": e, "grad_loc": gl, "grad_scale": gs, "seconds": (time.perf_counter() - t0) / reps}
    return {label: out[label] for label, _, _ in ESTIMATORS}


def _grad_var(d: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """Total gradient variance (trace of the covariance) of the loc and scale blocks."""
    return float(d["grad_loc"].var(axis=0, ddof=1).sum()), float(d["grad_scale"].var(axis=0, ddof=1).sum())


def _ratio_ci(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], what: str, n_boot: int,
              seed: int) -> tuple[float, float, float]:
    """Variance ratio var(a)/var(b) with a paired percentile-bootstrap 95 % interval over replicates."""

    def stat(idx: np.ndarray) -> float:
        if what == "elbo":
            va, vb = a["elbo"][idx].var(ddof=1), b["elbo"][idx].var(ddof=1)
        else:
            va = a["grad_loc"][idx].var(axis=0, ddof=1).sum() + a["grad_scale"][idx].var(axis=0, ddof=1).sum()
            vb = b["grad_loc"][idx].var(axis=0, ddof=1).sum() + b["grad_scale"][idx].var(axis=0, ddof=1).sum()
        return float(va / vb) if vb > 0 else float("nan")

    idx = np.arange(a["elbo"].size)
    # resampling replicate indices keeps each replicate's (a, b) pair together
    res = bootstrap((idx,), stat, n_resamples=n_boot, method="percentile", vectorized=False,
                    random_state=np.random.default_rng(seed))
    return stat(idx), float(res.confidence_interval.low), float(res.confidence_interval.high)


def estimator_variance(
    x: np.ndarray,
    y: np.ndarray,
    guides: Mapping[str, tuple[np.ndarray, np.ndarray]],
    S_values: Sequence[int] = FULL.est_S,
    reps: int = FULL.est_reps,
    *,
    prior_scale: float = 1.0,
    seed: int = 0,
    n_boot: int = FULL.bootstrap,
    progress: bool = False,
) -> dict[str, Any]:
    """Variance of the ELBO estimate and of its gradient for each estimator, guide and S.

    Parameters
    ----------
    x, y : ndarray
        Training inputs (N, K) and labels (N,) (full data: no mini-batch noise).
    guides : mapping of name to (loc, scale)
        Fixed guide parameters, e.g. ``{"initial": …, "fitted": …}``.

    Returns
    -------
    dict
        ``table``: one row per (guide, estimator, S) with ``mean_elbo``, ``var_elbo``
        (nats²), ``var_grad`` (trace of the gradient covariance over loc and scale),
        ``var_grad_loc``, ``var_grad_scale`` and ``ms_per_eval``; ``ratios``: per guide and S
        the ratio Trace_ELBO / TraceMeanField_ELBO of the ELBO and gradient variances with
        paired bootstrap 95 % intervals (Pyro pair and manual pair); ``S``, ``reps``.
    """
    table, ratios = [], []
    tasks = [(g, int(s)) for g in guides for s in S_values]
    for i, (gname, S) in enumerate(tqdm(tasks, desc="estimator variance", disable=not progress, leave=False)):
        loc, scale = guides[gname]
        d = estimator_draws(x, y, loc, scale, S, reps, prior_scale=prior_scale, seed=seed + 1000 * i)
        for label, impl, kind in ESTIMATORS:
            v_loc, v_scale = _grad_var(d[label])
            table.append({
                "guide": gname, "estimator": label, "implementation": impl, "kl": kind, "S": S,
                "mean_elbo": float(d[label]["elbo"].mean()), "var_elbo": float(d[label]["elbo"].var(ddof=1)),
                "var_grad": v_loc + v_scale, "var_grad_loc": v_loc, "var_grad_scale": v_scale,
                "ms_per_eval": 1000 * d[label]["seconds"],
            })
        for pair, (num, den) in (("pyro", ESTIMATORS[:2]), ("manual", ESTIMATORS[2:])):
            row: dict[str, Any] = {"guide": gname, "S": S, "pair": pair, "numerator": num[0], "denominator": den[0]}
            for what in ("elbo", "grad"):
                r, lo, hi = _ratio_ci(d[num[0]], d[den[0]], what, n_boot, seed + i)
                row[f"{what}_ratio"], row[f"{what}_lo"], row[f"{what}_hi"] = r, lo, hi
            ratios.append(row)
    return {"S": [int(s) for s in S_values], "reps": int(reps),
            "guides": {g: {"loc": loc, "scale": scale} for g, (loc, scale) in guides.items()},
            "table": table, "ratios": ratios}


# ---------------------------------------------------------------- ELBO estimators: training curves


def training_curves(
    x: np.ndarray, y: np.ndarray, base: TrainConfig, *, progress: bool = False
) -> dict[str, dict[str, Any]]:
    """Fit with each estimator from the same start and seed; ELBO per step and wall-clock time.

    Pyro estimators use the SVI engine, manual ones the plain-torch engine; everything else is
    ``base``. The wall-clock axis spreads each fit's measured total time evenly over its steps
    (the per-step cost is constant: same data, same S).
    """
    out = {}
    for label, impl, kind in tqdm(ESTIMATORS, desc="training curves", disable=not progress, leave=False):
        cfg = dataclasses.replace(base, engine="svi" if impl == "pyro" else "manual", elbo=kind)
        fr = fit(x, y, cfg)
        out[label] = {
            "elbo": fr.history.elbo, "seconds": fr.seconds, "steps": fr.steps, "stop_reason": fr.stop_reason,
            "final_elbo": float(np.mean(fr.history.elbo[-min(100, fr.steps):])),
            "ms_per_step": 1000 * fr.seconds / max(1, fr.steps), "loc": fr.loc, "scale": fr.scale,
        }
    return out
