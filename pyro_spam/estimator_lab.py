"""The estimator lab: how noisy, how costly and how fast to converge is each ELBO estimator.

Numbers only (no run-directory I/O, no figures); ``pyro-spam compare RUN_DIR``
(:func:`pyro_spam.pipeline.compare.run_compare`) runs it on a finished run and writes it into it.

* :func:`estimator_variance`: at fixed guides (initial and fitted), ``reps`` independent ELBO
  estimates and gradients from every estimator of :data:`ESTIMATORS` for each S: the variance of
  one gradient estimate w.r.t. loc and log-scale (total and per coefficient), the gradient
  signal-to-noise ratio (Rainforth et al. 2018), the sd of one ELBO estimate, the cost of one
  estimate, and how far the mean gradient is from the exact one (unbiasedness, in standard errors);
  plus each estimator's variance ratio to ``trace`` with bootstrap intervals.
* :func:`minibatch_split`: with mini-batches, the gradient variance split by the law of total
  variance into the Monte Carlo part ``E_batch Var(g | batch)`` and the subsampling part
  ``Var_batch E(g | batch)``, from pairs of estimates that share a batch.
* :func:`training_runs`: one full training run per estimator under the run's settings and stop
  rule: steps, seconds, stop reason and distance to the exact optimum.

The estimates come from the plain-torch module :mod:`pyro_spam.elbo_manual`, which
:mod:`pyro_spam.crosscheck` shows equal to the Pyro estimators (:mod:`pyro_spam.training.elbos`)
with the same noise to 1e-5; training runs use Pyro (the SVI engine), as ``pyro-spam run`` does.
Estimators that can share noise do (common random numbers): trace, meanfield, stl, iwae and score
see the same ε in each replicate; rqmc draws its own scrambled Sobol points; quad needs none.

Python use::

    from pyro_spam.estimator_lab import estimator_variance
    est = estimator_variance(X_train, y_train, {"fitted": (loc, scale)}, S_values=(1, 16, 64), reps=64)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import elbo_manual as em
from .config import ELBO_TYPES, TrainConfig
from .training.engines import fit, torch_threads

__all__ = [
    "ESTIMATORS",
    "UNBIASED",
    "REACH_LOC_SD",
    "REACH_SCALE_REL",
    "exact_gradient",
    "estimator_draws",
    "estimator_variance",
    "minibatch_split",
    "optimum",
    "stl_floor",
    "training_runs",
]

ESTIMATORS: tuple[str, ...] = (*ELBO_TYPES, "score_nobaseline")
"""Every estimator, in the order tables show them. ``score`` is measured with its baseline settled
(the exact ELBO, where Pyro's decaying average ends up at fixed parameters), ``score_nobaseline``
with none (plain REINFORCE, as at the first training step, when the baseline is still 0)."""
UNBIASED = tuple(k for k in ESTIMATORS if k != "iwae")
"""Estimators whose mean gradient is the ELBO's gradient (IWAE's is that of a different bound)."""
REACH_LOC_SD = 0.3
REACH_SCALE_REL = 0.15
"""A training run "reaches the optimum" when every loc is within 0.3 posterior sd and every scale
within 15 % of the exact mean-field optimum."""


def _impl(kind: str) -> str:
    return "score" if kind == "score_nobaseline" else kind


def _t(a: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def exact_gradient(x: np.ndarray, y: np.ndarray, loc: np.ndarray, scale: np.ndarray, *,
                   prior_scale: float = 1.0) -> tuple[float, np.ndarray, np.ndarray]:
    """The exact ELBO and its gradient w.r.t. loc and log-scale (quadrature, float64): what every
    unbiased estimator's mean gradient equals."""
    xt, yt = _t(x, torch.float64), _t(y, torch.float64)
    lt, st = _t(loc, torch.float64), _t(scale, torch.float64)
    with torch_threads(1):
        (g_loc, g_scale), parts = em.elbo_grad("quad", lt, st, None, xt, yt, prior_scale=prior_scale)
    return float(parts.elbo), g_loc.numpy(), (g_scale * st).numpy()


def _draw_eps(kind: str, reps: int, S: int, k1: int, gen: torch.Generator, shared: torch.Tensor, dtype: torch.dtype) -> list:
    if kind == "rqmc":
        return [em.draw_noise("rqmc", S, k1, gen, dtype) for _ in range(reps)]
    if kind == "quad":
        return [None] * reps
    return list(shared)


def estimator_draws(
    x: np.ndarray,
    y: np.ndarray,
    loc: np.ndarray,
    scale: np.ndarray,
    kind: str,
    eps: Sequence[torch.Tensor | None],
    *,
    batches: Sequence[np.ndarray] | None = None,
    prior_scale: float = 1.0,
    baseline: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """One ELBO estimate and gradient of ``kind`` per noise block in ``eps`` (each (S, K+1), or None for quad).

    ``batches``: row indices of a mini-batch per estimate (None: full data; estimates are scaled by
    N/B). ``baseline``: the score estimator's baseline (e.g. the exact ELBO, where a decaying average
    settles at fixed parameters). Returns ``elbo`` (R,), ``grad_loc`` and ``grad_log_scale`` (R, K+1)
    and ``seconds`` per estimate.
    """
    xt, yt = _t(x, dtype), _t(y, dtype)
    lt, st = _t(loc, dtype), _t(scale, dtype)
    n, k1 = xt.shape[0], lt.shape[0]
    reps = len(eps)
    e, gl, gs = np.empty(reps), np.empty((reps, k1)), np.empty((reps, k1))
    with torch_threads(1):
        t0 = time.perf_counter()
        for r in range(reps):
            xb, yb = (xt, yt) if batches is None else (xt[batches[r]], yt[batches[r]])
            (g_loc, g_scale), parts = em.elbo_grad(kind, lt, st, eps[r], xb, yb, n_total=n, prior_scale=prior_scale,
                                                   baseline=baseline)
            e[r], gl[r], gs[r] = float(parts.elbo), g_loc.numpy(), (g_scale * st).numpy()
        seconds = (time.perf_counter() - t0) / max(reps, 1)
    return {"elbo": e, "grad_loc": gl, "grad_log_scale": gs, "seconds": seconds}


def _row(kind: str, gname: str, S: int, d: Mapping[str, Any], exact: tuple[float, np.ndarray, np.ndarray]) -> dict[str, Any]:
    reps = d["elbo"].size
    v_loc, v_ls = d["grad_loc"].var(axis=0, ddof=1), d["grad_log_scale"].var(axis=0, ddof=1)
    g = np.concatenate([d["grad_loc"], d["grad_log_scale"]], axis=1)
    exact_g = np.r_[exact[1], exact[2]]
    mean = g.mean(axis=0)
    se = g.std(axis=0, ddof=1) / math.sqrt(reps)
    total = float(v_loc.sum() + v_ls.sum())
    signal = exact_g if kind in UNBIASED else mean
    row = {
        "estimator": kind, "S": int(S), "guide": gname, "reps": int(reps),
        "mean_elbo": float(d["elbo"].mean()), "elbo_sd": float(d["elbo"].std(ddof=1)),
        "grad_var_loc": float(v_loc.sum()), "grad_var_log_scale": float(v_ls.sum()),
        "grad_var_loc_per": v_loc.tolist(), "grad_var_log_scale_per": v_ls.tolist(),
        "snr": None, "snr_reference": "exact gradient" if kind in UNBIASED else "sample mean",
        "bias_z_max": None, "bias_abs_max": float(np.abs(mean - exact_g).max()),
        "ms_per_step": 1000.0 * d["seconds"],
    }
    if kind == "quad":  # no noise: SNR and z undefined; bias_abs_max is float32 rounding against the float64 exact gradient
        row["snr_reference"] = "deterministic (no noise)"
    else:
        row["snr"] = float(np.linalg.norm(signal) / math.sqrt(total))
        row["bias_z_max"] = float((np.abs(mean - exact_g) / se).max())
    return row


def _ratio_ci(num: np.ndarray, den: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """var(num)/var(den) summed over the last axis, with a percentile-bootstrap 95 % interval that
    resamples replicates (pairs kept together: paired when the two share noise, harmless when not)."""
    num, den = num.reshape(num.shape[0], -1), den.reshape(den.shape[0], -1)
    vd = den.var(axis=0, ddof=1).sum()
    ratio = float(num.var(axis=0, ddof=1).sum() / vd) if vd > 0 else float("nan")
    if n_boot <= 0 or vd <= 0:
        return ratio, float("nan"), float("nan")
    idx = rng.integers(0, num.shape[0], size=(n_boot, num.shape[0]))
    bn, bd = num[idx].var(axis=1, ddof=1).sum(-1), den[idx].var(axis=1, ddof=1).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = np.nanpercentile(bn / bd, [2.5, 97.5])
    return ratio, float(lo), float(hi)


def estimator_variance(
    x: np.ndarray,
    y: np.ndarray,
    guides: Mapping[str, tuple[np.ndarray, np.ndarray]],
    S_values: Sequence[int] = (1, 4, 16, 64, 256),
    reps: int = 64,
    *,
    estimators: Sequence[str] = ESTIMATORS,
    prior_scale: float = 1.0,
    seed: int = 0,
    n_boot: int = 1000,
    progress: bool = False,
) -> dict[str, Any]:
    """Variance, SNR and cost of one ELBO estimate and its gradient per (estimator, S, guide), full data.

    Parameters
    ----------
    x, y : ndarray
        Training inputs (N, K) and labels (N,).
    guides : mapping of name to (loc, scale)
        Fixed guide parameters, e.g. ``{"initial": …, "fitted": …}``.
    S_values : particle counts; rqmc skips those that are not a power of two.
    reps : independent estimates per cell. A variance has a relative standard error of about
        sqrt(2 / (reps − 1)) (18 % at 64); ratios between estimators that share noise are tighter.

    Returns
    -------
    dict
        ``table``: one record per (estimator, S, guide): ``grad_var_loc`` / ``grad_var_log_scale``
        (sum over coefficients of the variance of one estimate of ∂ELBO/∂loc and ∂ELBO/∂log-scale;
        the sign convention of −ELBO gives the same variances), ``grad_var_loc_per`` /
        ``grad_var_log_scale_per``, ``snr`` (‖E g‖ / sqrt(tr Var g) over the whole gradient, E g the
        exact gradient for unbiased estimators, the sample mean for iwae), ``elbo_sd``,
        ``mean_elbo``, ``bias_z_max`` (largest |mean − exact| / SE over coordinates) and
        ``bias_abs_max`` (largest |mean − exact|); quad, which has no noise, has ``snr`` and
        ``bias_z_max`` None,
        ``ms_per_step`` (one estimate and gradient, plain torch, one thread); ``ratios``: per
        (guide, S, estimator) the variance ratio to ``trace`` for loc, log-scale and the ELBO
        estimate, with 95 % bootstrap intervals; ``exact``: per guide the exact ELBO and gradient;
        ``S``, ``reps``, ``estimators``, ``guides``, ``score_baseline``.
    """
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimators {unknown}; choose from {', '.join(ESTIMATORS)}")
    k1 = np.asarray(x).shape[1] + 1
    table, ratios, exact = [], [], {}
    rng = np.random.default_rng(seed)
    tasks = [(g, int(s)) for g in guides for s in S_values]
    bar = tqdm(total=len(tasks) * len(estimators), desc="estimator variance", disable=not progress, leave=False)
    for i, (gname, S) in enumerate(tasks):
        loc, scale = (np.asarray(a, dtype=np.float64) for a in guides[gname])
        ex = exact.get(gname) or exact_gradient(x, y, loc, scale, prior_scale=prior_scale)
        exact[gname] = ex
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        shared = torch.randn((reps, S, k1), generator=gen)
        draws: dict[str, dict[str, Any]] = {}
        for kind in estimators:
            bar.update(1)
            if kind == "rqmc" and S & (S - 1):
                continue
            eps = _draw_eps(kind, reps, S, k1, gen, shared, torch.float32)
            draws[kind] = estimator_draws(x, y, loc, scale, _impl(kind), eps, prior_scale=prior_scale,
                                          baseline=ex[0] if kind == "score" else None)
            table.append(_row(kind, gname, S, draws[kind], ex))
        if "trace" in draws:
            for kind, d in draws.items():
                if kind == "trace":
                    continue
                row: dict[str, Any] = {"guide": gname, "S": S, "estimator": kind, "vs": "trace"}
                for what, key in (("loc", "grad_loc"), ("log_scale", "grad_log_scale"), ("elbo", "elbo")):
                    r, lo, hi = _ratio_ci(d[key], draws["trace"][key], n_boot, rng)
                    row[f"{what}_ratio"], row[f"{what}_lo"], row[f"{what}_hi"] = r, lo, hi
                ratios.append(row)
    bar.close()
    return {
        "S": [int(s) for s in S_values], "reps": int(reps), "estimators": list(estimators),
        "guides": {g: {"loc": np.asarray(lc).tolist(), "scale": np.asarray(sc).tolist()} for g, (lc, sc) in guides.items()},
        "exact": {g: {"elbo": e[0], "grad_loc": e[1].tolist(), "grad_log_scale": e[2].tolist()} for g, e in exact.items()},
        "score_baseline": "the exact ELBO at the guide (where the decaying-average baseline settles at fixed parameters)",
        "table": table, "ratios": ratios,
    }


def minibatch_split(
    x: np.ndarray,
    y: np.ndarray,
    loc: np.ndarray,
    scale: np.ndarray,
    batch_size: int,
    S_values: Sequence[int] = (1, 4, 16, 64, 256),
    reps: int = 64,
    *,
    estimators: Sequence[str] = ESTIMATORS,
    prior_scale: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Split the gradient variance under mini-batches of ``batch_size`` rows into its Monte Carlo and
    subsampling parts (law of total variance), per (estimator, S), at the guide ``(loc, scale)``.

    Each replicate draws a batch (uniformly, without replacement) and two independent noise blocks
    on it, giving ``g1``, ``g2``. Per coefficient, ``½ E(g1 − g2)²`` estimates the Monte Carlo part
    ``E_batch Var(g | batch)``. The subsampling part ``Var_batch E(g | batch)`` is, for every unbiased
    estimator, the variance over the same batches of the exact batch gradient (the quadrature ELBO's
    on that batch: no Monte Carlo noise, identical for all of them); for iwae, whose batch mean is not
    that gradient, it is ``Var((g1 + g2)/2) − MC/2``. ``total = MC + subsampling``.

    Returns ``batch_size``, ``n``, ``reps`` and ``rows`` with ``total_loc``, ``mc_loc``,
    ``subsampling_loc`` (summed over coefficients; ``_log_scale`` likewise) and
    ``subsampling_share_loc`` / ``_log_scale`` (subsampling / total).
    """
    n, k = np.asarray(x).shape
    if not 0 < batch_size < n:
        raise ValueError(f"batch_size must be between 1 and N − 1 = {n - 1} (got {batch_size})")
    k1 = k + 1
    rows = []
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 7)
    loc, scale = np.asarray(loc, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    elbo0 = exact_gradient(x, y, loc, scale, prior_scale=prior_scale)[0]
    bar = tqdm(total=len(S_values) * len(estimators), desc="mini-batch split", disable=not progress, leave=False)
    for S in (int(s) for s in S_values):
        batches = [torch.randperm(n, generator=gen)[:batch_size].numpy() for _ in range(reps)]
        shared = [torch.randn((reps, S, k1), generator=gen) for _ in range(2)]
        exact_b = estimator_draws(x, y, loc, scale, "quad", [None] * reps, batches=batches, prior_scale=prior_scale,
                                  dtype=torch.float64)
        for kind in estimators:
            bar.update(1)
            if kind == "rqmc" and S & (S - 1):
                continue
            pair = 1 if kind == "quad" else 2
            d = [estimator_draws(x, y, loc, scale, _impl(kind), _draw_eps(kind, reps, S, k1, gen, shared[j], torch.float32),
                                 batches=batches, prior_scale=prior_scale, baseline=elbo0 if kind == "score" else None)
                 for j in range(pair)]
            row: dict[str, Any] = {"estimator": kind, "S": S}
            for what, key in (("loc", "grad_loc"), ("log_scale", "grad_log_scale")):
                if kind == "quad":
                    mc = np.zeros(k1)
                else:
                    mc = 0.5 * np.mean((d[0][key] - d[1][key]) ** 2, axis=0)
                if kind in UNBIASED:
                    sub = exact_b[key].var(axis=0, ddof=1)
                else:
                    sub = np.maximum(((d[0][key] + d[1][key]) / 2).var(axis=0, ddof=1) - mc / 2, 0.0)
                total = float(mc.sum() + sub.sum())
                row[f"total_{what}"], row[f"mc_{what}"], row[f"subsampling_{what}"] = total, float(mc.sum()), float(sub.sum())
                row[f"subsampling_share_{what}"] = float(sub.sum() / total) if total > 0 else float("nan")
            rows.append(row)
    bar.close()
    return {"batch_size": int(batch_size), "n": int(n), "reps": int(reps), "rows": rows,
            "subsampling_method": "exact batch gradients (quadrature) for unbiased estimators; paired-noise estimate for iwae"}


def stl_floor(x: np.ndarray, y: np.ndarray, loc: np.ndarray, scale: np.ndarray, *, prior_scale: float = 1.0) -> dict[str, Any]:
    """Predicted STL ÷ trace ratio of the loc-gradient variance per coefficient, for a Gaussian posterior
    with precision ``Λ`` (the Hessian of −log p(w, y) at ``loc``) and the mean-field guide at its optimum.

    The trace (reparameterisation) loc gradient is ``∇ log p(w) = −Λ(w − μ)``; the STL one drops
    ``−∇ log q(w) = D(w − μ)`` with ``D = diag(Λ)``, leaving ``−(Λ − D)(w − μ)``: per coefficient
    ``Σ_{k≠j} Λ_jk² s_k² / Σ_k Λ_jk² s_k²``, which does not vanish with correlated coefficients (two
    coefficients with correlation ρ: ρ²/(1 + ρ²)). Returns ``loc_ratio_per`` and ``max_abs_corr``
    (the strongest correlation of Λ⁻¹) with its pair ``corr_pair``.
    """
    xt = np.c_[np.ones(len(x)), np.asarray(x, dtype=np.float64)]
    loc, scale = np.asarray(loc, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-(xt @ loc)))
    lam = (xt * (p * (1 - p))[:, None]).T @ xt + np.eye(loc.size) / prior_scale**2
    weighted = lam**2 * scale[None, :] ** 2
    off = weighted.sum(1) - np.diag(weighted)
    cov = np.linalg.inv(lam)
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    np.fill_diagonal(corr, 0.0)
    j, k = np.unravel_index(np.argmax(np.abs(corr)), corr.shape)
    return {"loc_ratio_per": (off / weighted.sum(1)).tolist(), "max_abs_corr": float(abs(corr[j, k])),
            "corr": float(corr[j, k]), "corr_pair": [int(min(j, k)), int(max(j, k))]}


def optimum(x: np.ndarray, y: np.ndarray, *, prior_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The exact mean-field optimum (L-BFGS on the quadrature ELBO, full data)."""
    fr = fit(x, y, TrainConfig(optimizer="lbfgs", prior_scale=prior_scale))
    return fr.loc, fr.scale


def _particles_for(kind: str, S: int) -> int:
    return 1 << (int(S).bit_length() - 1) if kind == "rqmc" else int(S)  # rqmc: the largest power of two <= S


def training_runs(
    x: np.ndarray,
    y: np.ndarray,
    base: TrainConfig,
    *,
    estimators: Sequence[str] = ELBO_TYPES,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """One training run per estimator with ``base``'s settings (Adam, its stop rule, particles, batch
    size, seed; the SVI engine), from the same start.

    Returns per estimator: ``elbo`` (the per-step ELBO estimates), ``steps``, ``seconds``,
    ``ms_per_step``, ``stop_reason``, ``particles`` (rqmc uses the largest power of two ≤ S), ``loc``,
    ``scale``, and against ``reference`` (default :func:`optimum`): ``dist_loc_sd`` (max |Δloc| in
    posterior sd), ``dist_scale_rel`` (max |scale/scale* − 1|) and ``reached`` (within
    :data:`REACH_LOC_SD` and :data:`REACH_SCALE_REL`; iwae targets a different optimum).
    """
    ref_loc, ref_scale = reference if reference is not None else optimum(x, y, prior_scale=base.prior_scale)
    out = {}
    for kind in tqdm(estimators, desc="training runs", disable=not progress, leave=False):
        cfg = dataclasses.replace(base, optimizer="adam", engine="svi", elbo=kind, particles=_particles_for(kind, base.particles))
        fr = fit(x, y, cfg)
        d_loc = float(np.max(np.abs(fr.loc - ref_loc) / ref_scale))
        d_scale = float(np.max(np.abs(fr.scale / ref_scale - 1.0)))
        out[kind] = {
            "elbo": fr.history.elbo, "steps": fr.steps, "seconds": fr.seconds, "ms_per_step": 1000 * fr.seconds / max(1, fr.steps),
            "stop_reason": fr.stop_reason, "particles": cfg.particles, "loc": fr.loc, "scale": fr.scale,
            "dist_loc_sd": d_loc, "dist_scale_rel": d_scale,
            "reached": bool(d_loc <= REACH_LOC_SD and d_scale <= REACH_SCALE_REL),
        }
    return out
