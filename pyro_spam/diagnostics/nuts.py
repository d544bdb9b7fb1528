"""NUTS as the gold standard for the variational fit (maths and inference only, no run-directory I/O).

``pyro.infer.MCMC(NUTS(model))`` on the same Pyro model and features, chains run one after
another (each with its own seed), and a per-coefficient comparison with the guide: means, sds,
94 % HDIs and the two ratios the report quotes (:func:`compare_vi_nuts`, :func:`comparison_verdict`).
r̂ and ESS come from ArviZ via :func:`nuts_inference_data`. Writing the tables into a run
directory is :mod:`pyro_spam.pipeline.diagnose`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..inference_data import W, az, nuts_to_inference_data

log = logging.getLogger(__name__)

HDI_PROB = 0.94
"""Probability mass of the highest-density intervals in tables and figures."""

COMPARISON_COLUMNS = (
    "name", "mean_vi", "mean_nuts", "sd_vi", "sd_nuts", "mean_shift_in_sd", "sd_ratio", "mcse_mean_nuts",
)
"""Columns of the VI-vs-NUTS table (keys of each :func:`compare_vi_nuts` row)."""


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

    from ..model import model
    from ..training.engines import torch_threads

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
        attrs={"chains": o.chains, "warmup": o.warmup, "draws": o.draws, "seed": res.seed,
               "full_mass": int(o.full_mass), "jit": int(o.jit), "step_size": res.step_size, "seconds": res.seconds,
               "prior_scale": float(prior_scale)},
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
    ess = np.array([np.asarray(az.ess(nuts3[..., j], method="bulk"), dtype=np.float64).reshape(-1)[0] for j in range(flat.shape[1])])
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

