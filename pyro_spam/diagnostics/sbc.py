"""Simulation-based calibration (SBC) of a posterior approximation: the maths only (numpy/scipy).

The simulation loop (draw a true coefficient vector, simulate data, refit the approximation, draw
from it) lives elsewhere and calls these functions with, per simulation s = 1..n_sims,

* ``truth[s]`` (shape ``(n_sims, P)``): the coefficient vector the data were simulated from, and
* ``draws[s]`` (shape ``(n_sims, L, P)``): L draws from the approximation fitted to those data.

If the approximation were the exact posterior, the truth would be just another posterior draw
(Talts et al. 2018), so for every coefficient

* its **rank** among the L draws is uniform on 0..L (:func:`sbc_ranks`, :func:`rank_uniformity_p`);
* the fraction of draws below it, Yao et al.'s (2018, §3) **VSBC** probability, is uniform on
  [0, 1] and in particular symmetric about 0.5; an approximation whose *mean* is biased
  shifts it to one side (:func:`vsbc_probabilities`, :func:`vsbc_ks_p`);
* a central ``level`` interval of the draws contains it in a fraction ``level`` of the
  simulations, up to binomial noise (:func:`interval_coverage`, :func:`binomial_band`).

:func:`sbc_summary` gathers all of it into a JSON-friendly dict (ranks included, so the figures of
:mod:`pyro_spam.plots.sbc` can be redrawn from ``summary.json``) and :func:`sbc_verdict` turns a
summary into a sentence for the report.

References
----------
Talts, Betancourt, Simpson, Vehtari & Gelman (2018), "Validating Bayesian inference algorithms
with simulation-based calibration", arXiv:1804.06788.
Yao, Vehtari, Simpson & Gelman (2018), "Yes, but did it work?: Evaluating variational inference",
ICML, §3 (VSBC).
Säilynoja, Bürkner & Vehtari (2022), "Graphical test for discrete uniformity and its applications
in goodness-of-fit evaluation and multiple sample comparison", Statistics and Computing 32(32):
the simultaneous ECDF bands drawn by :func:`pyro_spam.plots.sbc.plot_rank_ecdf`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats

#: Largest number of bins of the chi-square rank test, and the smallest expected count per bin.
MAX_RANK_BINS = 20
MIN_EXPECTED_PER_BIN = 5
#: Defaults of :func:`sbc_summary`: confidence of the coverage bands and level of the rank and VSBC tests.
FLAG_CONF = 0.99
FLAG_ALPHA = 0.01


# --------------------------------------------------------------------------------------------
# input checks


def _check(truth: Any, draws: Any) -> tuple[np.ndarray, np.ndarray]:
    """``truth`` as float (n_sims, P) and ``draws`` as float (n_sims, L, P), or a ValueError saying what is wrong."""
    truth = np.asarray(truth, dtype=float)
    draws = np.asarray(draws, dtype=float)
    if truth.ndim != 2:
        raise ValueError(f"truth must have shape (n_sims, P), got an array of shape {truth.shape}")
    if draws.ndim != 3:
        raise ValueError(f"draws must have shape (n_sims, L, P), got an array of shape {draws.shape}")
    if draws.shape[0] != truth.shape[0] or draws.shape[2] != truth.shape[1]:
        raise ValueError(
            f"draws of shape {draws.shape} do not match truth of shape {truth.shape}: "
            "expected draws of shape (n_sims, L, P) with n_sims and P as in truth"
        )
    if truth.shape[0] < 1 or truth.shape[1] < 1 or draws.shape[1] < 1:
        raise ValueError(f"need at least one simulation, one draw and one coefficient; got truth {truth.shape}, draws {draws.shape}")
    if not (np.isfinite(truth).all() and np.isfinite(draws).all()):
        raise ValueError("truth and draws must be finite (found NaN or inf)")
    return truth, draws


def _check_level(level: float, what: str = "level") -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"{what} must lie strictly between 0 and 1, got {level}")
    return level


# --------------------------------------------------------------------------------------------
# ranks (Talts et al. 2018)


def sbc_ranks(truth: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SBC rank of each true coefficient among the approximation's draws (Talts et al. 2018).

    rank = number of draws strictly below the truth, plus a uniform random share of the draws
    equal to it (ties broken uniformly at random with ``rng``): under a calibrated approximation
    the rank is then exactly uniform on 0..L even when the draws are discrete.

    Parameters
    ----------
    truth : (n_sims, P) array
    draws : (n_sims, L, P) array
    rng : numpy.random.Generator
        Used only to break ties.

    Returns
    -------
    (n_sims, P) int array with values in 0..L.
    """
    truth, draws = _check(truth, draws)
    below = (draws < truth[:, None, :]).sum(axis=1)
    ties = (draws == truth[:, None, :]).sum(axis=1)
    # integers(0, ties + 1) is uniform on 0..ties: the truth's position among the tied draws.
    return (below + rng.integers(0, ties + 1)).astype(int)


def _rank_bins(n_sims: int, n_draws: int) -> tuple[int, np.ndarray]:
    """Number of bins B and the probability of each bin under uniform ranks on 0..L (L = ``n_draws``)."""
    n_values = n_draws + 1
    for b in range(min(MAX_RANK_BINS, n_values), 1, -1):
        sizes = np.bincount(np.arange(n_values) * b // n_values, minlength=b)
        if n_sims * sizes.min() / n_values >= MIN_EXPECTED_PER_BIN:
            return b, sizes / n_values
    return 1, np.ones(1)


def rank_uniformity_p(ranks: np.ndarray, n_draws: int) -> np.ndarray:
    """p-value, per coefficient, of a chi-square test that the SBC ranks are uniform on 0..L.

    The L + 1 possible ranks are grouped into B contiguous bins of as-equal-as-possible width (rank
    r goes to bin ``floor(r·B / (L+1))``, so bin widths differ by at most one rank when B does not
    divide L + 1; each bin's expected count is n_sims × its width / (L+1)). B is the largest number
    ≤ 20 for which every expected count is ≥ 5, the usual condition for the chi-square
    approximation (B − 1 degrees of freedom); binning pools the neighbouring ranks that a too narrow,
    too wide or shifted approximation pushes together, which gives the test its power. When even
    B = 2 would leave fewer than 5 expected per bin (below about 10 simulations) no test is
    possible and the p-values are NaN.

    Parameters
    ----------
    ranks : (n_sims, P) int array
        From :func:`sbc_ranks`.
    n_draws : int
        L, the number of draws each rank was computed from (ranks lie in 0..L).

    Returns
    -------
    (P,) float array of p-values.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(f"ranks must have shape (n_sims, P), got an array of shape {ranks.shape}")
    n_draws = int(n_draws)
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    if ranks.size and (ranks.min() < 0 or ranks.max() > n_draws or not np.array_equal(ranks, np.round(ranks))):
        raise ValueError(f"ranks must be integers in 0..{n_draws} (n_draws = {n_draws})")
    n_sims, n_coef = ranks.shape
    b, probs = _rank_bins(n_sims, n_draws)
    if b < 2:
        return np.full(n_coef, np.nan)
    bins = ranks.astype(int) * b // (n_draws + 1)
    counts = np.stack([np.bincount(bins[:, j], minlength=b) for j in range(n_coef)])
    return np.asarray(stats.chisquare(counts, f_exp=n_sims * probs, axis=1).pvalue, dtype=float)


# --------------------------------------------------------------------------------------------
# VSBC (Yao et al. 2018, §3)


def vsbc_probabilities(truth: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Yao et al.'s (2018, §3) VSBC probability p_s = Pr_q(θ < θ_true), estimated from the draws.

    The fraction of draws below the truth (draws equal to it count one half, which only matters
    for discrete draws). Under a calibrated approximation p is uniform on [0, 1]; if the
    approximation's *mean* is unbiased its distribution is at least symmetric about 0.5, which is
    what :func:`vsbc_ks_p` tests.

    Returns
    -------
    (n_sims, P) float array in [0, 1].
    """
    truth, draws = _check(truth, draws)
    t = truth[:, None, :]
    return (draws < t).mean(axis=1) + 0.5 * (draws == t).mean(axis=1)


def _sup_abs_brownian_sf(a: float) -> float:
    """P(sup_{0≤s≤1} |B(s)| ≥ a) for a standard Brownian motion B.

    Reflection series 4 Σ_k (−1)^k Φ̄((2k+1)a) for a ≥ 1 (accurate in the far tail), and the
    theta series 1 − (4/π) Σ_k (−1)^k/(2k+1) exp(−(2k+1)²π²/(8a²)) below (fast for small a).
    """
    if a <= 0.0:
        return 1.0
    k = np.arange(60)
    if a >= 1.0:
        p = 4.0 * np.sum((-1.0) ** k * stats.norm.sf((2 * k + 1) * a))
    else:
        p = 1.0 - 4.0 / np.pi * np.sum((-1.0) ** k / (2 * k + 1) * np.exp(-((2 * k + 1) ** 2) * np.pi**2 / (8.0 * a * a)))
    return float(min(max(p, 0.0), 1.0))


def vsbc_ks_p(probs: np.ndarray, *, null: Literal["mirror", "independent"] = "mirror") -> np.ndarray:
    """p-value, per coefficient, of the two-sample Kolmogorov–Smirnov test of p against 1 − p.

    Yao et al.'s (2018, §3) symmetry test: D = sup_x |F̂_p(x) − F̂_{1−p}(x)|, the KS distance
    between the VSBC probabilities and their mirror image (``scipy.stats.ks_2samp(p, 1 − p)``'s
    statistic). A small p-value says the probabilities are not symmetric about 0.5, i.e. the
    approximation's marginal mean is biased (it sits above the truth more often than below, or
    the reverse). The test is blind to a symmetric miscalibration such as a too narrow
    approximation, which the ranks and the coverage catch.

    The two samples are one sample and its mirror, not independent, so the usual two-sample null
    is wrong: for x < ½, F̂_p(x) − F̂_{1−p}(x) = (#{p ≤ x} − #{p ≥ 1 − x})/n has variance 2G(x)/n
    instead of 2G(x)(1 − G(x))/n, and √n·D tends to sup_{0≤s≤1} |B(s)| for a Brownian motion B
    (when p is symmetric with G(½⁻) = ½; an atom at ½ only makes this conservative) rather than to
    √2 times the Kolmogorov distribution. ``null="mirror"`` (default) uses that limit; it holds its
    level (checked by simulation with VSBC probabilities of exact posteriors, n_sims = 50 to 1000,
    4000 replicates each: 0.5–1.4 % of p-values below 0.01, at most 0.13 % below 0.001).
    ``null="independent"`` returns ``ks_2samp``'s own p-value, which in the same simulation falls
    below 0.01 in 2.6–4.2 % and below 0.001 in 0.7–1.5 % of replicates, i.e. it flags a calibrated
    approximation several times too often.

    Parameters
    ----------
    probs : (n_sims, P) array from :func:`vsbc_probabilities`.
    null : "mirror" or "independent", see above.

    Returns
    -------
    (P,) float array of p-values.
    """
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[0] < 1:
        raise ValueError(f"probs must have shape (n_sims, P) with n_sims ≥ 1, got an array of shape {probs.shape}")
    if null not in ("mirror", "independent"):
        raise ValueError(f"null must be 'mirror' or 'independent', got {null!r}")
    n_sims = probs.shape[0]
    out = np.empty(probs.shape[1])
    for j in range(probs.shape[1]):
        res = stats.ks_2samp(probs[:, j], 1.0 - probs[:, j])
        out[j] = res.pvalue if null == "independent" else _sup_abs_brownian_sf(np.sqrt(n_sims) * float(res.statistic))
    return out


# --------------------------------------------------------------------------------------------
# interval coverage


def interval_coverage(truth: np.ndarray, draws: np.ndarray, level: float) -> np.ndarray:
    """Fraction of simulations whose truth lies in the central ``level`` interval of the draws.

    The interval is equal-tailed: the (1 − level)/2 and (1 + level)/2 quantiles of the L draws of
    each simulation (numpy's default linear interpolation), endpoints included. A calibrated
    approximation covers a fraction ``level`` up to binomial noise (:func:`binomial_band`); a too
    narrow one covers less, a too wide one more.

    Returns
    -------
    (P,) float array in [0, 1].
    """
    truth, draws = _check(truth, draws)
    level = _check_level(level)
    lo, hi = np.quantile(draws, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=1)
    return ((lo <= truth) & (truth <= hi)).mean(axis=0)


def binomial_band(n_sims: int, level: float, conf: float = 0.95) -> tuple[float, float]:
    """Range of empirical coverage fractions consistent with the nominal ``level``.

    If each of ``n_sims`` independent simulations is covered with probability ``level``, the
    number covered is Binomial(n_sims, level); the band is its exact (1 − conf)/2 and
    (1 + conf)/2 quantiles (``scipy.stats.binom.ppf``) divided by n_sims. A calibrated
    approximation's coverage falls inside with probability at least ``conf``; outside it, the
    miscalibration is larger than Monte Carlo error.

    Returns
    -------
    (lo, hi) as floats.
    """
    n_sims = int(n_sims)
    if n_sims < 1:
        raise ValueError(f"n_sims must be at least 1, got {n_sims}")
    level = _check_level(level)
    conf = _check_level(conf, "conf")
    lo, hi = stats.binom.ppf([(1.0 - conf) / 2.0, (1.0 + conf) / 2.0], n_sims, level)
    return float(lo) / n_sims, float(hi) / n_sims


# --------------------------------------------------------------------------------------------
# summary and verdict


def _level_key(level: float) -> str:
    pct = 100.0 * level
    return f"{int(round(pct))}" if abs(pct - round(pct)) < 1e-9 else f"{pct:g}".replace(".", "_")


def summary_levels(summary: Mapping[str, Any]) -> list[str]:
    """The interval levels of a summary, as the suffixes of its ``coverage_<pct>`` keys (e.g. ``["50", "90"]``)."""
    keys = [m.group(1) for k in summary if (m := re.fullmatch(r"coverage_(\d+(?:_\d+)?)", k))]
    return sorted(keys, key=lambda s: float(s.replace("_", ".")))


def _fmt(x: float) -> str:
    """Short human-readable number: probabilities and p-values."""
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.2g}" if x < 0.01 else f"{x:.2f}"


def sbc_summary(
    truth: np.ndarray,
    draws: np.ndarray,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    rng: np.random.Generator,
    conf: float = FLAG_CONF,
    alpha: float = FLAG_ALPHA,
) -> dict[str, Any]:
    """Every SBC number of one (study, approximation) pair, as a JSON-friendly dict.

    Parameters
    ----------
    truth : (n_sims, P) array
    draws : (n_sims, L, P) array
    levels : interval levels whose coverage is checked (keys ``coverage_<100·level>``)
    rng : numpy.random.Generator, breaks rank ties (:func:`sbc_ranks`)
    conf : confidence of the binomial coverage bands (:func:`binomial_band`)
    alpha : level below which a rank-uniformity or VSBC p-value is flagged

    Returns
    -------
    dict with plain Python lists, floats and ints:

    * ``sims``, ``n_draws`` (L), ``band_conf`` (conf), ``alpha``, ``rank_bins`` (B of the chi-square test);
    * ``coverage_<pct>`` (P floats) and ``coverage_band_<pct>`` ([lo, hi]) for each level, e.g.
      ``coverage_50``, ``coverage_90``, ``coverage_band_50``, ``coverage_band_90``;
    * ``rank_p``, ``ks_p_vsbc`` (P floats; NaN becomes None), ``vsbc_mean`` (P floats: mean VSBC probability,
      above 0.5 when the approximation tends to sit below the truth);
    * ``ranks`` (n_sims × P ints) and ``vsbc_p`` (n_sims × P floats), so that figures can be redrawn;
    * ``flags``: one ``{"coef": j, "check": ..., "why": ...}`` per coefficient j and failed check:
      ``"coverage_<pct>"`` outside its band, ``"rank"`` when rank_p < alpha, ``"vsbc"`` when
      ks_p_vsbc < alpha. Indices, not names: names are given to :func:`sbc_verdict`.

    With P coefficients and the defaults, a calibrated approximation still raises on average up to
    about P·(2·0.01 + 0.01 + 0.01) false flags (two coverage checks, the rank test and the VSBC test,
    each at about 1 %), e.g. about 0.6 for P = 16: a single isolated flag is weak evidence, the same
    flag on many coefficients (or a tiny p-value) is not.
    """
    truth, draws = _check(truth, draws)
    conf = _check_level(conf, "conf")
    alpha = _check_level(alpha, "alpha")
    levels = [_check_level(lv) for lv in levels]
    n_sims, n_draws, n_coef = draws.shape
    ranks = sbc_ranks(truth, draws, rng)
    rank_p = rank_uniformity_p(ranks, n_draws)
    vsbc = vsbc_probabilities(truth, draws)
    ks_p = vsbc_ks_p(vsbc)

    def floats(a: np.ndarray) -> list[float | None]:
        return [float(v) if np.isfinite(v) else None for v in np.asarray(a, dtype=float).ravel()]

    out: dict[str, Any] = {
        "sims": int(n_sims),
        "n_draws": int(n_draws),
        "band_conf": conf,
        "alpha": alpha,
        "rank_bins": int(_rank_bins(n_sims, n_draws)[0]),
    }
    flags: list[dict[str, Any]] = []
    coverage_flags: list[dict[str, Any]] = []
    for level in levels:
        key = _level_key(level)
        cov = interval_coverage(truth, draws, level)
        lo, hi = binomial_band(n_sims, level, conf)
        out[f"coverage_{key}"] = floats(cov)
        out[f"coverage_band_{key}"] = [lo, hi]
        for j, c in enumerate(cov):
            if c < lo or c > hi:
                side = "below" if c < lo else "above"
                coverage_flags.append({"coef": j, "check": f"coverage_{key}", "why": f"coverage_{key} {c:.2f} {side} [{lo:.2f}, {hi:.2f}]"})
    out["rank_p"] = floats(rank_p)
    out["ks_p_vsbc"] = floats(ks_p)
    out["vsbc_mean"] = floats(vsbc.mean(axis=0))
    out["ranks"] = ranks.tolist()
    out["vsbc_p"] = vsbc.tolist()
    flags.extend(coverage_flags)
    for j in range(n_coef):
        if np.isfinite(rank_p[j]) and rank_p[j] < alpha:
            flags.append({"coef": j, "check": "rank", "why": f"rank uniformity p {_fmt(rank_p[j])} < {alpha:g}"})
        if ks_p[j] < alpha:
            m = float(vsbc[:, j].mean())
            flags.append({"coef": j, "check": "vsbc", "why": f"VSBC symmetry KS p {_fmt(ks_p[j])} < {alpha:g} (mean VSBC probability {m:.2f})"})
    flags.sort(key=lambda f: f["coef"])
    out["flags"] = flags
    return out


def _names_list(names: Sequence[str], idx: Sequence[int], limit: int = 6) -> str:
    shown = [str(names[j]) for j in idx[:limit]]
    more = len(idx) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _range(vals: Sequence[float]) -> str:
    lo, hi = min(vals), max(vals)
    return f"{lo:.2f}" if abs(hi - lo) < 0.005 else f"{lo:.2f}–{hi:.2f}"


def _pct(key: str) -> str:
    return key.replace("_", ".")


def _nominal(key: str) -> float:
    return float(key.replace("_", ".")) / 100.0


def sbc_verdict(summary: Mapping[str, Any], names: Sequence[str]) -> str:
    """One or two sentences, for a report, stating what the SBC numbers of ``summary`` say.

    A VSBC flag is read as a biased mean, its direction taken from the share of simulations whose
    VSBC probability is below 0.5 (the approximation's median above the truth); coverage below
    (above) the band on coefficients without a VSBC flag is read as too narrow (too wide); a rank
    flag with neither is reported as a non-uniform rank histogram. Without flags, the coverage
    ranges and the smallest p-values are quoted.

    Parameters
    ----------
    summary : output of :func:`sbc_summary` (or the same dict read back from JSON)
    names : the P coefficient names, in coefficient order
    """
    names = list(names)
    n_coef = len(summary["rank_p"])
    if len(names) != n_coef:
        raise ValueError(f"names has {len(names)} entries but the summary has {n_coef} coefficients")
    keys = summary_levels(summary)
    conf = float(summary.get("band_conf", FLAG_CONF))
    sims = int(summary["sims"])
    flags = list(summary.get("flags", []))

    def band(key: str) -> tuple[float, float]:
        lo, hi = summary[f"coverage_band_{key}"]
        return float(lo), float(hi)

    if not flags:
        covs = "; ".join(
            f"{_pct(k)} % intervals cover {_range(summary[f'coverage_{k}'])} of true values "
            f"(nominal {_nominal(k):.2f}, {100 * conf:g} % binomial band {band(k)[0]:.2f}–{band(k)[1]:.2f})"
            for k in keys
        )
        rank_ps = [p for p in summary["rank_p"] if p is not None]
        rank = f"smallest rank-uniformity p {_fmt(min(rank_ps))}" if rank_ps else "too few simulations for the rank test"
        return (
            f"Calibrated within Monte Carlo error over {sims} simulations and {n_coef} coefficients: {covs}. "
            f"Ranks are consistent with uniform ({rank}) and the VSBC symmetry test finds no biased mean "
            f"(smallest p {_fmt(min(summary['ks_p_vsbc']))})."
        )

    vsbc = np.asarray(summary["vsbc_p"], dtype=float).reshape(sims, n_coef)
    sentences: list[str] = []
    biased = sorted({f["coef"] for f in flags if f["check"] == "vsbc"})
    explained = set(biased)
    for key in reversed(keys):  # the widest interval first: the one a reader looks at
        lo, hi = band(key)
        cov = summary[f"coverage_{key}"]
        narrow = [j for j in range(n_coef) if j not in explained and cov[j] < lo]
        wide = [j for j in range(n_coef) if j not in explained and cov[j] > hi]
        groups = [(idx, word) for idx, word in ((narrow, "too narrow"), (wide, "too wide")) if idx]
        if not groups:
            continue
        covered = " and ".join(f"{_range([cov[j] for j in idx])}{' of true values' if g == 0 else ''} for {_names_list(names, idx)}"
                               for g, (idx, _) in enumerate(groups))
        reading = (f"the approximation is {groups[0][1]} there" if len(groups) == 1
                   else "the approximation is too narrow for the former and too wide for the latter")
        sentences.append(
            f"{_pct(key)} % intervals cover {covered} (nominal {_nominal(key):.2f}, {100 * conf:g} % binomial band "
            f"{lo:.2f}–{hi:.2f} over {sims} simulations): {reading}"
        )
        explained.update(narrow + wide)
    if biased:
        above = {j: float(np.mean(vsbc[:, j] < 0.5)) for j in biased}  # median of the draws above the truth
        parts = []
        for idx, where in (([j for j in biased if above[j] >= 0.5], "above"), ([j for j in biased if above[j] < 0.5], "below")):
            if idx:
                shares = [100 * (above[j] if where == "above" else 1 - above[j]) for j in idx]
                lo, hi = min(shares), max(shares)
                share = f"{lo:.0f} %" if round(lo) == round(hi) else f"{lo:.0f}–{hi:.0f} %"
                parts.append(f"{_names_list(names, idx)} (the approximation's median {where} the truth in {share} of simulations)")
        ps = [summary["ks_p_vsbc"][j] for j in biased]
        low_keys = [k for k in keys if any(summary[f"coverage_{k}"][j] < band(k)[0] for j in biased)]
        cost = ""
        if low_keys:
            k = low_keys[-1]
            low = [j for j in biased if summary[f"coverage_{k}"][j] < band(k)[0]]
            whose = ("its" if len(biased) == 1 else "their") if len(low) == len(biased) else f"the {_names_list(names, low)}"
            cost = f", which also pulls {whose} {_pct(k)} % coverage below the band"
        sentences.append(f"VSBC's symmetry test finds a biased mean (KS p ≤ {_fmt(max(ps))}) for " + " and ".join(parts) + cost)
    ranked = sorted({f["coef"] for f in flags if f["check"] == "rank"} - explained)
    if ranked:
        ps = [summary["rank_p"][j] for j in ranked]
        sentences.append(f"SBC ranks are not uniform for {_names_list(names, ranked)} (chi-square p ≤ {_fmt(max(ps))})")
    if not sentences:  # flags of an unknown kind (e.g. written by a newer version)
        sentences.append(f"{len(flags)} calibration checks failed: " + "; ".join(f"{names[f['coef']]}: {f['why']}" for f in flags[:6]))
    if len(sentences) > 2:
        sentences = [sentences[0], "; ".join(sentences[1:])]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)
