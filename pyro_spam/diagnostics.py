"""How good is the mean-field approximation? PSIS k̂ of q, PSIS-LOO, and NUTS as the gold standard.

* **k̂ of q** (Yao et al. 2018, "Yes, but did it work?"): importance ratios
  ``log p(w, y) − log q(w)`` over the guide's draws, Pareto-smoothed with ``az.psislw``. The
  fitted shape k̂ says how heavy the ratios' tail is: < 0.5 good, 0.5–0.7 usable, > 0.7 the
  approximation cannot be trusted (nor corrected by reweighting). k̂ is itself noisy (about
  ±0.2 at 2000 draws for a true k near 0.8); with NUTS draws, :func:`gaussian_khat` gives the
  value a Gaussian posterior of NUTS's covariance implies, as a check. We use ``az.psislw`` rather
  than Pyro's ``psis_diagnostic`` because the run already holds every draw's full-data
  log-likelihood (no model re-execution), because it returns the smoothed weights needed for
  the reweighted means as well as k̂, and because it is the same estimator ``az.loo`` uses, so
  the two k̂ readings are comparable; it also takes plain arrays, which lets the tests feed it a
  conjugate toy whose answer is known.
* **PSIS-LOO** (``az.loo``) on the variational draws, with ArviZ's Pareto-k warnings captured
  and reported instead of printed.
* **NUTS** (``pyro.infer.MCMC(NUTS(model))``) on the same Pyro model and features, chains run
  one after another (each with its own seed), r̂ and ESS from ArviZ, and a per-coefficient
  comparison with the guide.

Stages for the run directory live at the bottom (:func:`stage_arviz`, :func:`diagnose_run_dir`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from scipy.stats import norm

from .errors import ConfigError, ModelFileError
from .evaluate import lppd_pointwise
from .inference_data import (
    W,
    az,
    draws_as_inference_data,
    load_netcdf,
    nuts_to_inference_data,
    save_netcdf,
    to_inference_data,
)
from .posterior import Draws, draw_weights, predict_draws
from .types import ElboHistory, FitResult

if TYPE_CHECKING:
    from .pipeline import RunContext

log = logging.getLogger(__name__)

KHAT_GOOD = 0.5
KHAT_OK = 0.7
HDI_PROB = 0.94
# Log ratios closer than this (nats) are constant: q is the posterior up to its normaliser and the
# Pareto fit is undefined (ArviZ returns k̂ = inf for an exactly flat tail).
CONSTANT_RATIO_TOL = 1e-9


# --------------------------------------------------------------------------------------------
# PSIS k̂ of the variational approximation
# --------------------------------------------------------------------------------------------


def khat_reading(khat: float) -> str:
    """The usual reading of a Pareto k̂: ``"good"``, ``"usable"`` or ``"unreliable"``."""
    if not khat < KHAT_OK:  # NaN reads as unreliable
        return "unreliable"
    return "good" if khat < KHAT_GOOD else "usable"


def pareto_khat(log_p: np.ndarray, log_q: np.ndarray) -> tuple[float, np.ndarray]:
    """Pareto k̂ of the importance ratios p/q and the smoothed, normalised log weights.

    log_p : ndarray of shape (n_draws,)
        Unnormalised log target at each draw (e.g. ``log p(w, y)``).
    log_q : ndarray of shape (n_draws,)
        Log density of the proposal at the same draws (e.g. ``log q(w)``).

    Returns ``(khat, log_weights)`` with ``logsumexp(log_weights) == 0``. When the ratios are
    constant (q equals the target up to its normaliser) k̂ is ``-inf`` and the weights uniform.
    """
    log_ratio = np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)
    if log_ratio.ndim != 1 or log_ratio.size < 2:
        raise ValueError(f"need a 1-D array of at least 2 log ratios, got shape {log_ratio.shape}")
    if not np.all(np.isfinite(log_ratio)):
        raise ValueError("log ratios must be finite")
    if np.ptp(log_ratio) <= CONSTANT_RATIO_TOL * max(1.0, float(np.max(np.abs(log_ratio)))):
        return float("-inf"), np.full(log_ratio.size, -np.log(log_ratio.size))
    log_weights, khat = az.psislw(log_ratio, reff=1.0)
    return float(khat), np.asarray(log_weights)


def log_prior(w: np.ndarray, prior_scale: float = 1.0) -> np.ndarray:
    """log N(w; 0, prior_scale² I) per draw, shape (n_draws,)."""
    return norm.logpdf(w, 0.0, prior_scale).sum(axis=-1)


def log_q(w: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """log N(w; loc, diag(scale²)) per draw, shape (n_draws,)."""
    return norm.logpdf(w, loc, scale).sum(axis=-1)


@dataclass(frozen=True)
class KhatResult:
    """PSIS diagnostic of q as an importance-sampling proposal for the posterior.

    khat : float
        Pareto shape of the ratio tail (``-inf``: constant ratios).
    reading : str
        ``"good"`` (k̂ < 0.5), ``"usable"`` (< 0.7) or ``"unreliable"``.
    log_weights : ndarray of shape (n_draws,)
        Pareto-smoothed normalised log importance weights.
    ess : float
        Importance-sampling effective sample size ``1 / Σ w²`` of the smoothed weights.
    mean_q, sd_q : ndarray of shape (K+1,)
        Moments of the draws under q (unweighted).
    mean_is, sd_is : ndarray of shape (K+1,) or None
        Importance-reweighted moments (only when k̂ < 0.7: beyond it the estimate is not trusted).
    """

    khat: float
    reading: str
    log_weights: np.ndarray
    ess: float
    mean_q: np.ndarray
    sd_q: np.ndarray
    mean_is: np.ndarray | None
    sd_is: np.ndarray | None

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        """JSON-ready numbers (no weights)."""
        out: dict[str, Any] = {"khat": self.khat, "reading": self.reading, "ess": self.ess,
                               "n_draws": int(self.log_weights.size)}
        if self.mean_is is not None:
            out["reweighted"] = [
                {"name": n, "mean_q": float(a), "mean_is": float(b), "sd_q": float(c), "sd_is": float(d)}
                for n, a, b, c, d in zip(names, self.mean_q, self.mean_is, self.sd_q, self.sd_is)
            ]
        else:
            out["reweighted"] = None
        return out


def vi_khat(w: np.ndarray, loglik: np.ndarray, loc: np.ndarray, scale: np.ndarray, prior_scale: float = 1.0) -> KhatResult:
    """k̂ of q(w) = N(loc, diag(scale²)) from its draws ``w`` (n_draws, K+1).

    loglik : ndarray of shape (n_draws, n) or (n_draws,)
        Pointwise (or already summed) training log-likelihood at each draw.
    """
    w = np.asarray(w, dtype=np.float64)
    ll = np.asarray(loglik, dtype=np.float64)
    ll_sum = ll.sum(axis=1) if ll.ndim == 2 else ll
    khat, lw = pareto_khat(ll_sum + log_prior(w, prior_scale), log_q(w, loc, scale))
    wt = np.exp(lw)
    mean_q, sd_q = w.mean(axis=0), w.std(axis=0, ddof=1)
    mean_is = sd_is = None
    if khat < KHAT_OK:
        mean_is = wt @ w
        sd_is = np.sqrt(np.maximum(wt @ (w - mean_is) ** 2, 0.0))
    return KhatResult(khat=khat, reading=khat_reading(khat), log_weights=lw, ess=float(1.0 / np.sum(wt**2)),
                      mean_q=mean_q, sd_q=sd_q, mean_is=mean_is, sd_is=sd_is)


# --------------------------------------------------------------------------------------------
# PSIS-LOO
# --------------------------------------------------------------------------------------------


def loo_summary(idata: az.InferenceData) -> dict[str, Any]:
    """``az.loo`` of an InferenceData with a ``log_likelihood`` group, as JSON-ready numbers.

    ArviZ's warnings (Pareto k above its threshold, too few draws) are captured and returned
    in ``warning_messages``; ``warning`` is ArviZ's own flag.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = az.loo(idata, pointwise=True)
    k = np.asarray(res.pareto_k)
    good_k = float(getattr(res, "good_k", KHAT_OK))
    n = int(res.n_data_points)
    return {
        "elpd": float(res.elpd_loo),
        "se": float(res.se),
        "p_loo": float(res.p_loo),
        "elpd_per_message": float(res.elpd_loo) / n,
        "warning": bool(res.warning),
        "warning_messages": sorted({str(w.message).split(". ")[0] for w in caught}),
        "n_obs": n,
        "n_draws": int(res.n_samples),
        "good_k": good_k,
        "k_max": float(np.max(k)),
        "pareto_k_counts": {
            f"k<={good_k:.2f}": int(np.sum(k <= good_k)),
            f"{good_k:.2f}<k<=1": int(np.sum((k > good_k) & (k <= 1))),
            "k>1": int(np.sum(k > 1)),
        },
    }


# --------------------------------------------------------------------------------------------
# NUTS reference
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NutsOptions:
    """How the NUTS reference is run.

    chains : int, default=2
    warmup : int, default=500
        Adaptation steps per chain (step size and mass matrix).
    draws : int, default=1000
        Kept draws per chain.
    seed : int or None, default=None
        Seed of chain c is ``seed + c``; ``None`` uses the run's training seed.
    full_mass : bool, default=True
        Adapt a dense mass matrix: the coefficients are correlated (bias with the strongest term),
        and a dense metric takes 1.7x longer steps and gives 1.5x the ESS per CPU second on the
        default data (``benchmarks/bench_diagnostics.py``).
    jit : bool, default=True
        Trace the potential energy with TorchScript: 4.3x cheaper gradients (same benchmark).
    """

    chains: int = 2
    warmup: int = 500
    draws: int = 1000
    seed: int | None = None
    full_mass: bool = True
    jit: bool = True

    def __post_init__(self) -> None:
        for name in ("chains", "warmup", "draws"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"NUTS {name} must be a whole number >= 1 (got {v!r})")
        if self.chains < 2:
            raise ConfigError(f"NUTS needs at least 2 chains for r̂ (got {self.chains})")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(f"NUTS seed must be a whole number >= 0 (got {self.seed!r})")


@dataclass(frozen=True)
class NutsResult:
    """Draws of w from NUTS and how the sampler behaved.

    samples : ndarray of shape (chains, draws, K+1)
    diverging : ndarray of bool, shape (chains, draws)
    step_size : ndarray of shape (chains,)
        Adapted step size of each chain.
    seconds : ndarray of shape (chains,)
        Wall time of each chain (warmup included).
    options : NutsOptions
    seed : int
    """

    samples: np.ndarray
    diverging: np.ndarray
    step_size: np.ndarray
    seconds: np.ndarray
    options: NutsOptions
    seed: int


def run_nuts(x: np.ndarray, y: np.ndarray, *, prior_scale: float = 1.0, options: NutsOptions = NutsOptions(),
             seed: int = 0, progress: bool = False) -> NutsResult:
    """NUTS on ``pyro_spam.model.model`` with inputs ``x`` (N, K) and labels ``y`` (N,), in float64.

    Chains run one after another, each a single-chain ``MCMC`` seeded ``seed + c``: Pyro only
    runs chains in parallel when ``cpu_count() - 1 >= chains`` (never on a 2-core machine, where
    it falls back to sequential with a warning), and separate runs keep every chain reproducible.
    """
    import pyro
    import torch
    from pyro.infer import MCMC, NUTS

    from .model import model
    from .train import torch_threads

    seed = options.seed if options.seed is not None else seed
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    samples, diverging, steps, secs = [], [], [], []
    with torch_threads(1), warnings.catch_warnings():
        # Pyro's jit_compile uses torch.jit.trace, which torch 2.13 marks deprecated; it still
        # works and makes a gradient 4x cheaper here. Silence exactly that notice.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace` is deprecated", category=DeprecationWarning)
        for c in range(options.chains):
            t0 = time.perf_counter()
            pyro.set_rng_seed(seed + c)
            kernel = NUTS(model, full_mass=options.full_mass, jit_compile=options.jit, ignore_jit_warnings=True)
            mcmc = MCMC(kernel, num_samples=options.draws, warmup_steps=options.warmup, num_chains=1,
                        disable_progbar=not progress)
            mcmc.run(xt, yt, None, prior_scale)
            samples.append(mcmc.get_samples()[W].numpy())
            div = np.zeros(options.draws, dtype=bool)
            idx = [i for i in mcmc.diagnostics()["divergences"]["chain 0"] if 0 <= i < options.draws]
            div[idx] = True
            diverging.append(div)
            steps.append(float(kernel.step_size))
            secs.append(time.perf_counter() - t0)
            log.info("NUTS chain %d: %.1f s, step size %.3f, %d divergences", c, secs[-1], steps[-1], int(div.sum()))
    return NutsResult(samples=np.stack(samples), diverging=np.stack(diverging), step_size=np.array(steps),
                      seconds=np.array(secs), options=options, seed=seed)


def nuts_inference_data(res: NutsResult, coef_names: Sequence[str], prior_scale: float = 1.0) -> az.InferenceData:
    """The NUTS draws as InferenceData (``sample_stats.diverging``; sampler settings as attributes)."""
    o = res.options
    return nuts_to_inference_data(
        res.samples, coef_names, sample_stats={"diverging": res.diverging},
        attrs={"chains": o.chains, "warmup": o.warmup, "draws": o.draws, "seed": res.seed, "full_mass": int(o.full_mass),
               "jit": int(o.jit), "step_size": res.step_size, "seconds": res.seconds, "prior_scale": float(prior_scale)},
    )


def _hdi(draws: np.ndarray, hdi_prob: float = HDI_PROB) -> np.ndarray:
    """HDI per column of ``draws`` (n, K+1) → (K+1, 2)."""
    return np.stack([az.hdi(draws[:, j], hdi_prob=hdi_prob) for j in range(draws.shape[1])])


def compare_vi_nuts(w_vi: np.ndarray, w_nuts: np.ndarray, names: Sequence[str],
                    loc: np.ndarray | None = None, scale: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per coefficient: VI and NUTS means, sds and 94 % HDIs, and the two comparison ratios.

    w_vi : ndarray of shape (n, K+1)
        Guide draws (for the HDI; and the moments when ``loc``/``scale`` are not given).
    w_nuts : ndarray of shape (chains, draws, K+1) or (n, K+1)
    loc, scale : ndarray of shape (K+1,) or None
        Exact moments of q; preferred over the draws' Monte Carlo moments.

    ``mean_shift_in_sd = |mean_vi − mean_nuts| / sd_nuts`` and ``sd_ratio = sd_vi / sd_nuts``;
    ``mcse_mean_nuts`` is NUTS's Monte Carlo error of its mean (sd / √ESS_bulk), the floor below
    which a mean difference is noise.
    """
    nuts3 = w_nuts if w_nuts.ndim == 3 else w_nuts[None]
    flat = nuts3.reshape(-1, nuts3.shape[-1])
    mean_vi = np.asarray(loc) if loc is not None else w_vi.mean(axis=0)
    sd_vi = np.asarray(scale) if scale is not None else w_vi.std(axis=0, ddof=1)
    mean_n, sd_n = flat.mean(axis=0), flat.std(axis=0, ddof=1)
    ess = np.array([float(az.ess(nuts3[..., j], method="bulk")) for j in range(flat.shape[1])])
    hdi_vi, hdi_n = _hdi(w_vi), _hdi(flat)
    rows = []
    for j, name in enumerate(names):
        rows.append({
            "name": str(name),
            "mean_vi": float(mean_vi[j]), "mean_nuts": float(mean_n[j]),
            "sd_vi": float(sd_vi[j]), "sd_nuts": float(sd_n[j]),
            "mean_shift_in_sd": float(abs(mean_vi[j] - mean_n[j]) / sd_n[j]),
            "sd_ratio": float(sd_vi[j] / sd_n[j]),
            "mcse_mean_nuts": float(sd_n[j] / np.sqrt(ess[j])),
            "hdi_vi": [float(v) for v in hdi_vi[j]], "hdi_nuts": [float(v) for v in hdi_n[j]],
        })
    return rows


def gaussian_khat(cov_p: np.ndarray, scale_q: np.ndarray) -> float:
    """k of the ratios p/q when p = N(m, cov_p) and q = N(m, diag(scale_q²)) exactly: ``1 − λ_min``.

    ``λ_min`` is the smallest eigenvalue of ``cov_p⁻¹ diag(scale_q²)``: along that direction q's sd
    is ``√λ_min`` times p's, and the log ratio under q grows like ``(1 − λ_min) χ²/2``, a Pareto
    tail with shape ``1 − λ_min``. A value ≤ 0 means bounded ratios. With a NUTS covariance this
    predicts what PSIS should find if the posterior were Gaussian: a check on a noisy k̂.
    """
    lam = np.linalg.eigvals(np.linalg.solve(np.asarray(cov_p, dtype=np.float64), np.diag(np.asarray(scale_q) ** 2)))
    return float(1.0 - np.min(lam.real))


def strongest_correlation(w: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """The most correlated pair of coefficients under draws ``w`` (n, K+1)."""
    c = np.corrcoef(w, rowvar=False)
    np.fill_diagonal(c, 0.0)
    i, j = np.unravel_index(np.argmax(np.abs(c)), c.shape)
    return {"pair": [str(names[min(i, j)]), str(names[max(i, j)])], "rho": float(c[i, j])}


def comparison_verdict(rows: Sequence[Mapping[str, Any]], corr: Mapping[str, Any] | None = None) -> str:
    """One or two sentences on what the VI-vs-NUTS table shows (read from the numbers)."""
    ratios = np.array([r["sd_ratio"] for r in rows])
    shifts = np.array([r["mean_shift_in_sd"] for r in rows])
    lo, hi, far = int(np.argmin(ratios)), int(np.argmax(ratios)), int(np.argmax(shifts))
    narrow = int(np.sum(ratios < 0.9))
    wide = int(np.sum(ratios > 1.1))
    if narrow and not wide:
        spread = f"Mean-field VI is narrower than NUTS for {narrow} of {len(rows)} coefficients"
    elif wide and not narrow:
        spread = f"Mean-field VI is wider than NUTS for {wide} of {len(rows)} coefficients"
    elif narrow or wide:
        spread = f"Mean-field VI is narrower than NUTS for {narrow} and wider for {wide} of {len(rows)} coefficients"
    else:
        spread = f"Mean-field VI matches NUTS's spread within 10 % for all {len(rows)} coefficients"
    text = (f"{spread} (sd_VI/sd_NUTS from {ratios[lo]:.2f} for {rows[lo]['name']} to {ratios[hi]:.2f} "
            f"for {rows[hi]['name']}); posterior means agree within {shifts[far]:.2f} NUTS sd "
            f"(largest gap: {rows[far]['name']}).")
    if corr is not None and narrow:
        text += (f" The factorised q cannot represent posterior correlation, and NUTS finds some: "
                 f"{corr['pair'][0]} vs {corr['pair'][1]} ρ = {corr['rho']:+.2f}.")
    return text


# --------------------------------------------------------------------------------------------
# Tables for the report
# --------------------------------------------------------------------------------------------


def _markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, (float, np.floating)):
            if not np.isfinite(v):
                return "nan"
            return f"{v:.0f}" if float(v).is_integer() else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _write_table(out: Path, stem: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """``<stem>.csv`` and ``<stem>.md`` (atomic); returns the two file names."""
    import csv
    import io

    from .rundir import atomic_write_text

    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(header)
    wr.writerows([[f"{v:.6g}" if isinstance(v, (float, np.floating)) else v for v in r] for r in rows])
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    atomic_write_text(out / f"{stem}.md", _markdown(header, rows))
    return [f"{stem}.csv", f"{stem}.md"]


def az_summary_table(idata: az.InferenceData, out: Path, stem: str, *, kind: str) -> tuple[Any, list[str]]:
    """``az.summary`` of ``w`` (94 % HDI) as ``<stem>.csv``/``.md``; returns (DataFrame, file names).

    ``kind="stats"`` for independent guide draws (r̂ and ESS are for Markov chains), ``"all"`` for NUTS.
    """
    df = az.summary(idata, var_names=[W], kind=kind, hdi_prob=HDI_PROB)
    names = [str(n) for n in idata.posterior[W].coords["coef"].values]
    header = ["coefficient"] + [str(c) for c in df.columns]
    rows = [[n] + [float(v) for v in df.iloc[i].values] for i, n in enumerate(names)]
    return df, _write_table(out, stem, header, rows)


COMPARISON_COLUMNS = ("name", "mean_vi", "mean_nuts", "sd_vi", "sd_nuts", "mean_shift_in_sd", "sd_ratio", "mcse_mean_nuts")


# --------------------------------------------------------------------------------------------
# Run-directory stages
# --------------------------------------------------------------------------------------------


@dataclass
class RunInputs:
    """What the diagnostics need from a run (held by a RunContext, or read back from a run directory)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    coef_names: tuple[str, ...]
    prior_scale: float
    seed: int
    particles: int
    num_draws: int
    versions: dict[str, str] = field(default_factory=dict)
    lppd_test: dict[str, float] = field(default_factory=dict)


def primary_fit(kinds: Sequence[str]) -> str:
    """The fit the top-level numbers describe: ``meanfield`` when present, else the first."""
    return "meanfield" if "meanfield" in kinds else list(kinds)[0]


def vi_diagnostics(inp: RunInputs, fits: Mapping[str, FitResult], draws_train: Mapping[str, Draws],
                   draws_test: Mapping[str, Draws], out: Path) -> tuple[dict[str, Any], dict[str, az.InferenceData]]:
    """InferenceData (netCDF), k̂, LOO and ``az.summary`` per fit, written into ``out``.

    Returns the ``diagnostics`` section of ``summary.json`` and the InferenceData per fit.
    Files: ``posterior_<elbo>.nc``, ``az_summary_<elbo>.csv``/``.md``.
    """
    t0 = time.perf_counter()
    per_fit: dict[str, Any] = {}
    idatas: dict[str, az.InferenceData] = {}
    files: list[str] = []
    for kind, fr in fits.items():
        tr, te = draws_train[kind], draws_test[kind]
        idata = to_inference_data(fr, inp.coef_names, inp.x_train, inp.y_train, inp.x_test, inp.y_test, tr, te,
                                  seed=inp.seed, prior_scale=inp.prior_scale, particles=inp.particles, versions=inp.versions)
        save_netcdf(idata, out / f"posterior_{kind}.nc")
        idatas[kind] = idata
        kh = vi_khat(tr.w, tr.loglik, fr.loc, fr.scale, inp.prior_scale)
        loo = loo_summary(idata)
        if kind in inp.lppd_test:
            loo["lppd_test_per_message"] = inp.lppd_test[kind]
        _, tables = az_summary_table(idata, out, f"az_summary_{kind}", kind="stats")
        per_fit[kind] = {"khat": kh.khat, "khat_reading": kh.reading, "psis": kh.to_dict(inp.coef_names),
                         "loo": loo, "netcdf": f"posterior_{kind}.nc", "az_summary": tables}
        files += [f"posterior_{kind}.nc", *tables]
    main = primary_fit(list(fits))
    section = {
        "primary": main,
        "khat": per_fit[main]["khat"],
        "khat_reading": per_fit[main]["khat_reading"],
        "loo": per_fit[main]["loo"],
        "per_fit": per_fit,
        "files": files,
        "seconds": {"vi": time.perf_counter() - t0},
    }
    return section, idatas


def nuts_diagnostics(inp: RunInputs, fits: Mapping[str, FitResult], idatas: Mapping[str, az.InferenceData],
                     nuts_idata: az.InferenceData, out: Path) -> dict[str, Any]:
    """r̂/ESS of the NUTS reference and the VI-vs-NUTS comparison per fit, written into ``out``.

    Files: ``az_summary_nuts.csv``/``.md``, ``vi_vs_nuts_<elbo>.csv``/``.md``.
    """
    df, tables = az_summary_table(nuts_idata, out, "az_summary_nuts", kind="all")
    w_nuts = nuts_idata.posterior[W].values
    flat = w_nuts.reshape(-1, w_nuts.shape[-1])
    attrs = nuts_idata.posterior.attrs
    n_div = int(nuts_idata.sample_stats["diverging"].values.sum()) if "sample_stats" in nuts_idata.groups() else 0
    corr = strongest_correlation(flat, inp.coef_names)
    per_fit: dict[str, Any] = {}
    for kind, fr in fits.items():
        rows = compare_vi_nuts(idatas[kind].posterior[W].values[0], w_nuts, inp.coef_names, fr.loc, fr.scale)
        tables += _write_table(out, f"vi_vs_nuts_{kind}", COMPARISON_COLUMNS,
                               [[r[c] for c in COMPARISON_COLUMNS] for r in rows])
        per_fit[kind] = {"per_coef": rows, "verdict": comparison_verdict(rows, corr),
                         "khat_gaussian_theory": gaussian_khat(np.cov(flat, rowvar=False), fr.scale)}
    main = primary_fit(list(fits))
    lppd_nuts = float(lppd_pointwise(predict_draws(flat, inp.x_test, inp.y_test).loglik).mean())
    return {
        "rhat_max": float(df["r_hat"].max()),
        "ess_bulk_min": float(df["ess_bulk"].min()),
        "ess_tail_min": float(df["ess_tail"].min()),
        "divergences": n_div,
        "chains": int(w_nuts.shape[0]),
        "draws_per_chain": int(w_nuts.shape[1]),
        "warmup": int(attrs.get("warmup", -1)),
        "seed": int(attrs.get("seed", -1)),
        "full_mass": bool(attrs.get("full_mass", 0)),
        "step_size": np.atleast_1d(attrs.get("step_size", [])).tolist(),
        "seconds_per_chain": np.atleast_1d(attrs.get("seconds", [])).tolist(),
        "strongest_correlation": corr,
        "lppd_test_per_message": lppd_nuts,
        "compared_fit": main,
        "khat_gaussian_theory": per_fit[main]["khat_gaussian_theory"],
        "per_coef": per_fit[main]["per_coef"],
        "verdict": per_fit[main]["verdict"],
        "per_fit": per_fit,
        "netcdf": "nuts.nc",
        "files": ["nuts.nc", *tables],
    }


def draw_figures(inp: RunInputs, idatas: Mapping[str, az.InferenceData], out: Path,
                 nuts_idata: az.InferenceData | None = None) -> list[str]:
    """ArviZ figures: forest (VI fits and NUTS), posterior densities with the prior, spam-rate PPC."""
    from .plots.arviz_plots import FIT_LABELS, plot_forest_compare, plot_posterior_prior, plot_ppc_rate
    from .rundir import save_figure

    main = primary_fit(list(idatas))
    models = {FIT_LABELS.get(k, k): idatas[k] for k in idatas}
    if nuts_idata is not None:
        models["NUTS (reference)"] = nuts_idata
    ref = nuts_idata if nuts_idata is not None else idatas[main]
    ref_label = "NUTS" if nuts_idata is not None else FIT_LABELS.get(main, main)
    w_ref = ref.posterior[W].values.reshape(-1, len(inp.coef_names))
    centre, spread = w_ref.mean(axis=0), w_ref.std(axis=0, ddof=1)
    # A second, standardised panel only helps when there is something to compare with the reference.
    standardised = ({label: _standardise(m, centre, spread) for label, m in models.items()}
                    if len(models) > 1 else None)
    axes = plot_forest_compare(models, standardised, reference=ref_label, hdi_prob=HDI_PROB)
    save_figure(axes[0].figure, out / "arviz_forest.png")
    axes = plot_posterior_prior(idatas[main], inp.prior_scale, label=FIT_LABELS.get(main, main),
                                reference=nuts_idata, hdi_prob=HDI_PROB)
    save_figure(axes.flat[0].figure, out / "arviz_posterior.png")
    axes = plot_ppc_rate(idatas[main], label=FIT_LABELS.get(main, main))
    save_figure(axes[0].figure, out / "arviz_ppc.png")
    return ["arviz_forest.png", "arviz_posterior.png", "arviz_ppc.png"]


def _standardise(idata: az.InferenceData, centre: np.ndarray, spread: np.ndarray) -> az.InferenceData:
    w = idata.posterior[W].values
    return draws_as_inference_data((w - centre) / spread, list(idata.posterior[W].coords["coef"].values))


def _write_markdown(section: dict[str, Any], out: Path) -> None:
    from .rundir import atomic_write_text

    section["markdown"] = "diagnostics.md"
    atomic_write_text(out / "diagnostics.md", diagnostics_markdown(section))


def _inputs_from_context(ctx: "RunContext") -> RunInputs:
    fs, cfg = ctx.features, ctx.config
    return RunInputs(
        x_train=fs.X_train, y_train=fs.y_train, x_test=fs.X_test, y_test=fs.y_test, coef_names=fs.coef_names,
        prior_scale=cfg.train.prior_scale, seed=cfg.train.seed, particles=cfg.train.particles,
        num_draws=cfg.num_draws, versions=dict(ctx.summary.get("meta", {}).get("versions", {})),
        lppd_test={k: f["test"]["lppd_per_message"] for k, f in ctx.summary.get("fits", {}).items()},
    )


def stage_arviz(ctx: "RunContext") -> None:
    """Run stage: InferenceData per fit, k̂, LOO, ``az.summary`` tables and the ArviZ figures.

    Adds ``summary["diagnostics"]`` and the figure names; NUTS is not run here (see
    :func:`diagnose_run_dir`).
    """
    inp = _inputs_from_context(ctx)
    section, idatas = vi_diagnostics(inp, ctx.fits, ctx.draws_train, ctx.draws_test, ctx.dir)
    t0 = time.perf_counter()
    figures = draw_figures(inp, idatas, ctx.dir)
    section["seconds"]["figures"] = time.perf_counter() - t0
    section["figures"] = figures
    _write_markdown(section, ctx.dir)
    ctx.summary["diagnostics"] = section
    ctx.summary.setdefault("figures", []).extend(figures)


# --------------------------------------------------------------------------------------------
# pyro-spam diagnose RUN_DIR [--nuts]
# --------------------------------------------------------------------------------------------


def load_run(run_dir: Path) -> tuple[dict[str, Any], RunInputs, dict[str, FitResult]]:
    """Read what the diagnostics need from a run directory: summary, inputs, fitted guides.

    Raises :class:`ModelFileError` naming the missing or inconsistent file.
    """
    from .config import RunConfig
    from .rundir import SUMMARY, read_json

    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY).is_file():
        raise ModelFileError(f"{run_dir} is not a pyro-spam run directory (no {SUMMARY})")
    try:
        summary = read_json(run_dir / SUMMARY)
        config = RunConfig.from_dict(summary["meta"]["config"])
        with np.load(run_dir / "features.npz", allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("X_train", "y_train", "X_test", "y_test", "names")}
    except FileNotFoundError as exc:
        raise ModelFileError(f"{run_dir} is incomplete: {Path(exc.filename).name} is missing") from None
    except (KeyError, ValueError, OSError) as exc:
        raise ModelFileError(f"cannot read the run in {run_dir}: {exc}") from None
    coef_names = ("w0 (bias)",) + tuple(str(n) for n in arrays["names"])
    fits: dict[str, FitResult] = {}
    for kind in summary.get("fits", {}):
        path = run_dir / f"guide_{kind}.json"
        try:
            g = read_json(path)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelFileError(f"cannot read {path}: {exc}") from None
        if list(g.get("coef_names", [])) != list(coef_names):
            raise ModelFileError(f"{path} names coefficients {g.get('coef_names')} but features.npz has {list(coef_names)}")
        h = {k: np.asarray(v, dtype=np.float64) for k, v in g.get("history", {}).items()}
        hist = ElboHistory(**{k: h.get(k, np.zeros(0)) for k in ("elbo", "loglik", "kl", "lr")})
        fits[kind] = FitResult(elbo=kind, engine=g.get("engine", "svi"), loc=np.asarray(g["loc"], dtype=np.float64),
                               scale=np.asarray(g["scale"], dtype=np.float64), history=hist, steps=int(g.get("steps", 0)),
                               seconds=float(summary["fits"][kind].get("seconds", 0.0)),
                               stop_reason=str(g.get("stop_reason", "")))
    if not fits:
        raise ModelFileError(f"{run_dir}/summary.json lists no fits")
    inp = RunInputs(
        x_train=arrays["X_train"], y_train=arrays["y_train"], x_test=arrays["X_test"], y_test=arrays["y_test"],
        coef_names=coef_names, prior_scale=config.train.prior_scale, seed=config.train.seed,
        particles=config.train.particles, num_draws=config.num_draws, versions=dict(summary["meta"].get("versions", {})),
        lppd_test={k: f["test"]["lppd_per_message"] for k, f in summary["fits"].items() if "test" in f},
    )
    return summary, inp, fits


def _reuse(path: Path) -> az.InferenceData | None:
    """An earlier InferenceData file, or None (with a log message) when it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return load_netcdf(path)
    except ModelFileError as exc:
        log.warning("%s; recomputing it", exc)
        return None


def _reuse_vi(summary: Mapping[str, Any], run_dir: Path,
              fits: Mapping[str, FitResult]) -> dict[str, az.InferenceData] | None:
    """The run's InferenceData per fit when its diagnostics are complete and every file reads back."""
    if set(summary.get("diagnostics", {}).get("per_fit", {})) != set(fits):
        return None
    idatas = {k: _reuse(run_dir / f"posterior_{k}.nc") for k in fits}
    return None if any(v is None for v in idatas.values()) else idatas  # type: ignore[return-value]


def diagnose_run_dir(run_dir: Path, *, nuts: bool = False, options: NutsOptions = NutsOptions(),
                     progress: bool = False) -> dict[str, Any]:
    """Add the ArviZ diagnostics (and with ``nuts`` the NUTS reference) to an existing run directory.

    The VI part is computed only when the run lacks it or its files do not read back (draws
    regenerated exactly as the run made them: ``draw_weights(loc, scale, num_draws, seed + 1)``);
    an earlier ``nuts.nc`` is reused unless ``nuts`` asks for a fresh one. Everything is computed into a hidden staging folder
    first and moved in only when complete; ``summary.json`` is replaced last. Returns the
    ``diagnostics`` section.
    """
    from .rundir import SUMMARY, write_json

    run_dir = Path(run_dir)
    summary, inp, fits = load_run(run_dir)
    stage = Path(tempfile.mkdtemp(prefix=".diagnose-", dir=run_dir))
    try:
        idatas = _reuse_vi(summary, run_dir, fits)
        if idatas is not None:
            section = dict(summary["diagnostics"])
        else:
            tr, te = {}, {}
            for kind, fr in fits.items():
                w = draw_weights(fr.loc, fr.scale, inp.num_draws, seed=inp.seed + 1)
                tr[kind] = predict_draws(w, inp.x_train, inp.y_train)
                te[kind] = predict_draws(w, inp.x_test, inp.y_test)
            section, idatas = vi_diagnostics(inp, fits, tr, te, stage)
            del tr, te
        nuts_idata = None
        if nuts:
            res = run_nuts(inp.x_train, inp.y_train, prior_scale=inp.prior_scale, options=options, seed=inp.seed,
                           progress=progress)
            nuts_idata = nuts_inference_data(res, inp.coef_names, inp.prior_scale)
            save_netcdf(nuts_idata, stage / "nuts.nc")
        else:
            nuts_idata = _reuse(run_dir / "nuts.nc")
        if nuts_idata is not None:
            section["nuts"] = nuts_diagnostics(inp, fits, idatas, nuts_idata, stage)
        t0 = time.perf_counter()
        section["figures"] = draw_figures(inp, idatas, stage, nuts_idata)
        section.setdefault("seconds", {})["figures"] = time.perf_counter() - t0
        _write_markdown(section, stage)
        for name in sorted(os.listdir(stage)):
            os.replace(stage / name, run_dir / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    summary["diagnostics"] = section
    figs = summary.setdefault("figures", [])
    figs.extend(f for f in section["figures"] if f not in figs)
    write_json(run_dir / SUMMARY, summary)
    from .report import render_report

    render_report(run_dir, summary)
    return section


def _n_good(loo: Mapping[str, Any]) -> int:
    return int(next(v for k, v in loo["pareto_k_counts"].items() if k.startswith("k<=")))


def _n(v: Any, spec: str) -> str:
    """``format(v, spec)``, or ``n/a`` for a missing or non-finite number (JSON stores them as null)."""
    return format(v, spec) if isinstance(v, (int, float)) and np.isfinite(v) else "n/a"


def _pareto_k_text(lo: Mapping[str, Any]) -> str:
    bad = lo["n_obs"] - _n_good(lo)
    return f"{bad} of {lo['n_obs']} above {_n(lo['good_k'], '.2f')} (max {_n(lo['k_max'], '.2f')})"


def _nuts_text(n: Mapping[str, Any]) -> str:
    secs = sum(n["seconds_per_chain"]) if n["seconds_per_chain"] else float("nan")
    return (f"{n['chains']} chains × {n['draws_per_chain']} draws after {n['warmup']} warmup ({_n(secs, '.0f')} s): "
            f"r̂ max {_n(n['rhat_max'], '.3f')}, ESS bulk min {_n(n['ess_bulk_min'], '.0f')}, "
            f"ESS tail min {_n(n['ess_tail_min'], '.0f')}, {n['divergences']} divergences; "
            f"held-out lppd with NUTS draws {_n(n['lppd_test_per_message'], '.4f')} per message")


def _theory_text(section: Mapping[str, Any]) -> str:
    return (f"If the posterior were Gaussian with NUTS's covariance, this q would have k = "
            f"{_n(section['nuts']['khat_gaussian_theory'], '.2f')}; PSIS found {_n(section['khat'], '.2f')}.")


def diagnostics_markdown(section: Mapping[str, Any]) -> str:
    """The diagnostics as a Markdown fragment (``diagnostics.md``) that a report can include as is."""
    rows = []
    for kind, d in section["per_fit"].items():
        lo = d["loo"]
        rows.append([kind, d["khat"], d["khat_reading"], lo["elpd"], lo["se"], lo["p_loo"], lo["elpd_per_message"],
                     lo.get("lppd_test_per_message"), _pareto_k_text(lo)])
    lines = [
        "### How good is the mean-field approximation?", "",
        _markdown(["fit", "PSIS k̂ of q", "reading", "elpd_loo", "se", "p_loo", "elpd_loo / msg", "held-out lppd / msg",
                   "LOO Pareto k"], rows),
        "k̂ < 0.5 good, 0.5–0.7 usable, > 0.7 unreliable (Yao et al. 2018): it measures how far q(w) is from the "
        "posterior as an importance-sampling proposal. elpd_loo is PSIS-LOO on the guide's draws; the held-out lppd "
        "is the same quantity on the test split.",
    ]
    main = section["per_fit"][section["primary"]]
    rw = main["psis"].get("reweighted")
    if rw:
        lines += ["", f"Importance-reweighted moments ({section['primary']}, k̂ = {_n(main['khat'], '.2f')}):", "",
                  _markdown(["coefficient", "mean q", "mean reweighted", "sd q", "sd reweighted"],
                            [[r["name"], r["mean_q"], r["mean_is"], r["sd_q"], r["sd_is"]] for r in rw])]
    n = section.get("nuts")
    if n:
        table = [[r["name"], r["mean_vi"], r["mean_nuts"], r["sd_vi"], r["sd_nuts"], r["mean_shift_in_sd"], r["sd_ratio"]]
                 for r in n["per_coef"]]
        lines += ["", "### NUTS reference", "", _nuts_text(n) + ".", "",
                  _markdown(["coefficient", "mean VI", "mean NUTS", "sd VI", "sd NUTS", "abs Δmean / sd NUTS",
                             "sd VI / sd NUTS"], table),
                  f"VI = the {n['compared_fit']} fit. {n['verdict']} {_theory_text(section)}"]
    return "\n".join(lines) + "\n"


def format_diagnostics(section: Mapping[str, Any], run_dir: str | Path | None = None) -> str:
    """A few lines for the terminal: k̂ and LOO per fit; r̂, ESS and the VI-vs-NUTS table when present."""
    lines = []
    for kind, d in section["per_fit"].items():
        lo = d["loo"]
        warn = f"; ArviZ warns: {'; '.join(lo['warning_messages'])}" if lo["warning"] else ""
        held = lo.get("lppd_test_per_message")
        held_txt = "" if held is None else f" vs held-out lppd {_n(held, '.4f')}/msg"
        lines.append(f"{kind:>9}: PSIS k̂ of q = {_n(d['khat'], '.2f')} ({d['khat_reading']}) | "
                     f"elpd_loo {_n(lo['elpd'], '.1f')} ± {_n(lo['se'], '.1f')} (p_loo {_n(lo['p_loo'], '.1f')}; "
                     f"{_n(lo['elpd_per_message'], '.4f')}/msg{held_txt}){warn}")
    n = section.get("nuts")
    if n:
        lines.append("NUTS: " + _nuts_text(n))
        lines.append(f"{'coefficient':>12} {'mean_vi':>8} {'mean_nuts':>9} {'sd_vi':>6} {'sd_nuts':>7} {'|Δ|/sd':>7} "
                     f"{'sd ratio':>8}   (VI = {n['compared_fit']})")
        for r in n["per_coef"]:
            lines.append(f"{r['name']:>12} {_n(r['mean_vi'], '>8.3f')} {_n(r['mean_nuts'], '>9.3f')} {_n(r['sd_vi'], '>6.3f')} "
                         f"{_n(r['sd_nuts'], '>7.3f')} {_n(r['mean_shift_in_sd'], '>7.2f')} {_n(r['sd_ratio'], '>8.2f')}")
        lines += [n["verdict"], _theory_text(section)]
    if run_dir is not None:
        lines.append(f"diagnostics written to {run_dir} ({', '.join(section['figures'])})")
    return "\n".join(lines)
