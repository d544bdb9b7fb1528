"""The report's "Did the variational fit work?" sections, from ``summary["diagnostics"]``.

k̂ of q with its spread over repeated draws, PSIS-LOO naive and corrected for the approximation,
the guide leaderboard (:mod:`.guides`), the linear-response correction, the NUTS reference, and
simulation-based calibration. Every
sentence that states a result is generated from the run's numbers; absent parts are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..io.run_reader import summary_value
from ..summary import Summary, elbo_label
from .document import Figure, Para, Section, Table, f, short_value
from .guides import GUIDES_FIGURE, guides_section

__all__ = ["diagnostics_sections", "flatten"]

_KNOWN = {"primary", "khat", "khat_reading", "khat_median", "khat_range", "loo", "loo_corrected", "per_fit", "files", "figures", "markdown",
          "seconds", "linear_response", "nuts", "sbc", "posterior_sbc", "guides"}
_SBC = (("sbc", "Prior SBC", "truth from the prior N(0, s² I), labels simulated on the training design, refit on them"),
        ("posterior_sbc", "Posterior SBC", "truth from the observed data's posterior, labels simulated on the training "
                                           "design, refit on the observed plus the replicated labels"))
_SBC_FIGURES = ("sbc_ranks.png", "sbc_coverage.png")


def flatten(d: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``(dotted.key, leaf)`` pairs of a nested mapping."""
    if isinstance(d, Mapping):
        for k, v in d.items():
            yield from flatten(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), d


def _khat_text(v: Mapping[str, Any]) -> str:
    """``0.75 (median of 10 × 1000 draws 0.78, range 0.44–1.03)``, or the single value for older runs."""
    single = f(v.get("khat"), 2)
    rng = v.get("khat_range")
    if v.get("khat_median") is None or not rng:
        return single
    reps = v.get("khat_repeats")
    if not isinstance(reps, Mapping):  # the diagnostics' top level repeats the primary fit's numbers
        reps = summary_value(v, f"per_fit/{v.get('primary')}/khat_repeats") or {}
    how = f"{reps['repeats']} sets of {reps['n_draws']} draws" if "repeats" in reps else "repeated draws"
    return f"{f(v['khat_median'], 2)} (median over {how}, range {f(rng[0], 2)}–{f(rng[1], 2)})"


def _overview(dg: Mapping[str, Any]) -> list[Any]:
    blocks: list[Any] = []
    text = []
    if dg.get("khat") is not None:
        text.append(f"PSIS k̂ of the {dg.get('primary', '')} guide as an importance sampler for the posterior: "
                    f"**{_khat_text(dg)}**, {dg.get('khat_reading', 'n/a')} on the run's own draws (below 0.5 the "
                    "guide covers the posterior well, above 0.7 importance reweighting of its draws is unreliable; one "
                    "k̂ from 1000 draws varies by about ±0.1, hence the median and range).")
    loo = dg.get("loo")
    if isinstance(loo, Mapping) and loo.get("elpd") is not None:
        text.append(f"PSIS-LOO on the training messages: elpd {f(loo['elpd'], 1)} ± {f(loo.get('se'), 1)} (p_loo "
                    f"{f(loo.get('p_loo'), 1)}), {f(loo.get('elpd_per_message'), 4)} per message against the held-out "
                    f"lppd {f(loo.get('lppd_test_per_message'), 4)}.")
        if loo.get("warning"):
            warnings = loo.get("warning_messages") or ["Pareto k above 0.7"]
            text.append("ArviZ warns: " + "; ".join(map(str, warnings)) + ".")
    lc = dg.get("loo_corrected")
    if isinstance(lc, Mapping) and lc.get("elpd") is not None:
        text.append(f"PSIS-LOO of the exact model, corrected for the approximation (Magnusson et al. 2019) from the "
                    f"linear-response Gaussian's draws (k̂ median {f(lc.get('proposal_khat_median'), 2)}): elpd "
                    f"{f(lc['elpd'], 1)} ± {f(lc.get('se'), 1)}, max Pareto k {f(lc.get('k_max'), 2)}. The same correction "
                    "from mean-field's own draws (table) is biased when its k̂ is near or above 0.7.")
    if text:
        blocks.append(Para(" ".join(text)))
    per_fit = dg.get("per_fit")
    if isinstance(per_fit, Mapping) and per_fit:
        cols = [("k̂ (one set of draws)", "khat", 2), ("k̂ median", "khat_median", 2), ("k̂ min", "khat_range/0", 2),
                ("k̂ max", "khat_range/1", 2), ("k̂, all draws pooled", "khat_repeats/pooled", 2),
                ("reading", "khat_reading", None), ("PSIS ESS", "psis/ess", 0),
                ("elpd_loo naive", "loo/elpd", 1), ("SE", "loo/se", 1), ("elpd_loo corrected", "loo_corrected/elpd", 1),
                ("p_loo", "loo/p_loo", 1), ("held-out lppd/msg", "loo/lppd_test_per_message", 4),
                ("max Pareto k (naive)", "loo/k_max", 2), ("max Pareto k (corrected)", "loo_corrected/k_max", 2)]
        cols = [c for c in cols if any(_value(v, c[1]) is not None for v in per_fit.values())]
        rows = [[elbo_label(k)] + [str(_value(v, p)) if d is None else f(_value(v, p), d) for _, p, d in cols]
                for k, v in per_fit.items()]
        blocks.append(Table(["fit"] + [c[0] for c in cols], rows, caption=(
            "Naive LOO treats the guide's draws as posterior draws; the corrected LOO (Magnusson et al. 2019) "
            "reweights them by p(w, y)/q(w) before leaving each message out, so it estimates the exact model's LOO "
            "when the correction's Pareto k stays below 0.7.")))
    return blocks


def _value(v: Mapping[str, Any], path: str) -> Any:
    head, _, tail = path.partition("/")
    if head == "khat_range" and tail in ("0", "1"):
        rng = v.get("khat_range")
        return rng[int(tail)] if rng else None
    return summary_value(v, path)


def _lr_strongest(lr: Mapping[str, Any]) -> tuple[list[str], float | None]:
    """The most correlated pair of the linear-response covariance and its correlation, computed from
    ``cov`` itself (the exact value the guide leaderboard quotes). Without ``cov`` (older runs):
    ``strongest_correlation``, which pipeline/lrvb.py estimates from draws."""
    cov = lr.get("cov")
    try:
        c = np.asarray(cov, dtype=float)
        sd = np.sqrt(np.diag(c))
        ok = c.ndim == 2 and c.shape[0] == c.shape[1] >= 2 and bool(np.all(sd > 0))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        corr = lr.get("strongest_correlation") or {}
        return list(corr.get("pair") or ["?", "?"]), corr.get("rho")
    r = c / np.outer(sd, sd)
    off = np.abs(r - np.diag(np.diag(r)))
    i, j = np.unravel_index(int(np.argmax(off)), off.shape)
    i, j = sorted((int(i), int(j)))
    names = list(lr.get("coef_names") or [])
    return [str(names[k]) if k < len(names) else str(k) for k in (i, j)], float(r[i, j])


def _lr_section(dg: Mapping[str, Any]) -> Section | None:
    lr = dg.get("linear_response")
    if not isinstance(lr, Mapping) or not lr.get("scale"):
        return None
    sec = Section("linear-response", "Linear-response correction of the mean-field fit", level=3)
    pair, rho = _lr_strongest(lr)
    nuts_rows = {r["name"]: r for r in summary_value(dg, "nuts/linear_response") or []}
    text = (f"Linear response (LRVB; Giordano, Broderick & Jordan 2018) turns the {lr.get('fitted_from')} fit's optimum into "
            "a full covariance, −[H⁻¹] of the exact ELBO's Hessian in (loc, log scale), at the cost of one small "
            f"Hessian (the fit was first polished to the exact optimum by L-BFGS, moving its means by at most "
            f"{f(summary_value(lr, 'polish/max_loc_shift_in_sd'), 3)} sd). It restores the correlation mean-field cannot "
            f"represent ({' and '.join(map(str, pair))}: ρ = {f(rho, 2)}); k̂ of the corrected Gaussian is "
            f"**{_khat_text(lr)}** against {_khat_text(dg)} for mean-field; held-out lppd "
            f"{f(lr.get('lppd_test_per_message'), 4)} per message; PSIS-LOO corrected {f(summary_value(lr, 'loo_corrected/elpd'), 1)}, "
            f"naive {f(summary_value(lr, 'loo_naive/elpd'), 1)}.")
    if nuts_rows:
        ratios = [r["sd_ratio"] for r in nuts_rows.values()]
        text += (f" Against NUTS its marginal sds are {f(min(ratios), 2)}–{f(max(ratios), 2)} of NUTS's (mean-field: "
                 f"{f(min(r['sd_ratio'] for r in summary_value(dg, 'nuts/per_coef')), 2)}–"
                 f"{f(max(r['sd_ratio'] for r in summary_value(dg, 'nuts/per_coef')), 2)}).")
    sec.blocks.append(Para(text))
    names = lr.get("coef_names") or [str(j) for j in range(len(lr["scale"]))]
    header = ["coefficient", "mean", "sd mean-field", "sd linear response"] + (["sd NUTS", "LR / NUTS"] if nuts_rows else [])
    rows = []
    for j, n in enumerate(names):
        row = [n, f"{lr['loc'][j]:+.3f}", f(lr["meanfield_scale"][j], 3), f(lr["scale"][j], 3)]
        if nuts_rows and n in nuts_rows:
            row += [f(nuts_rows[n]["sd_nuts"], 3), f(nuts_rows[n]["sd_ratio"], 3)]
        rows.append(row)
    sec.blocks.append(Table(header, rows))
    return sec


def _nuts_section(dg: Mapping[str, Any]) -> Section | None:
    n = dg.get("nuts")
    if not isinstance(n, Mapping) or not n:
        return None
    sec = Section("nuts", "NUTS reference", level=3)
    secs = sum(n.get("seconds_per_chain") or []) or None
    text = (f"{n['chains']} chains × {n.get('draws_per_chain')} draws after {n.get('warmup')} warmup ({f(secs, 0)} s): "
            if "chains" in n else "")
    rhat = n.get("rhat_max", n.get("r_hat_max"))
    text += (f"r̂ max {f(rhat, 3)}, ESS bulk min {f(n.get('ess_bulk_min'), 0)}, {n.get('divergences', 'n/a')} divergences. "
             f"{n.get('verdict', '')}")
    loo = n.get("elpd_loo")
    diffs = n.get("loo_minus_nuts") or {}
    if isinstance(loo, Mapping) and diffs:
        parts = ", ".join(f"{k.replace('_', ' ')} {d:+.2f}" for k, d in diffs.items())
        text += (f" NUTS's PSIS-LOO elpd is {f(loo.get('elpd'), 2)}; each approximation's LOO minus it (nats): {parts}.")
    sec.blocks.append(Para(text))
    rows = n.get("per_coef") or []
    if rows:
        cols = ("name", "mean_vi", "mean_nuts", "sd_vi", "sd_nuts", "mean_shift_in_sd", "sd_ratio")
        sec.blocks.append(Table(["coefficient", "mean VI", "mean NUTS", "sd VI", "sd NUTS", "|Δmean| / sd NUTS", "sd VI / sd NUTS"],
                                [[str(r[c]) if c == "name" else f(r[c], 3) for c in cols] for r in rows],
                                caption=f"VI = the {n.get('compared_fit')} fit."))
    return sec


def _sbc_sections(dg: Mapping[str, Any], figures: Sequence[str]) -> list[Section]:
    out = []
    for key, title, how in _SBC:
        sec_d = dg.get(key)
        if not isinstance(sec_d, Mapping) or "info" not in sec_d:
            continue
        info = sec_d["info"]
        sec = Section(key.replace("_", "-"), f"{title}: would the intervals cover the truth?", level=3)
        sec.blocks.append(Para(
            f"{info.get('sims')} simulations ({how}); refits: {info.get('fit', 'the exact mean-field optimum')}; "
            f"{summary_value(info, 'settings/draws')} draws per approximation and simulation. "
            f"Reference posterior: {info.get('reference')}. {info.get('redrawn', 0)} one-class simulations redrawn, "
            f"{info.get('not_converged', 0)} refits not converged; {f(info.get('seconds'), 1)} s "
            f"({f(info.get('fit_seconds'), 1)} s in the mean-field refits)."))
        rows = []
        for a in info.get("approximations") or []:
            s = sec_d[a]
            rows.append([str(s.get("label", a)), f"{f(min(s['coverage_90']), 2)}–{f(max(s['coverage_90']), 2)}",
                         f"{f(s['coverage_band_90'][0], 2)}–{f(s['coverage_band_90'][1], 2)}",
                         f"{f(min(s['coverage_50']), 2)}–{f(max(s['coverage_50']), 2)}",
                         short_value(min((p for p in s["rank_p"] if p is not None), default=None)),
                         short_value(min((p for p in s["ks_p_vsbc"] if p is not None), default=None)),
                         str(len(s.get("flags") or []))])
        sec.blocks.append(Table(["approximation", "90 % coverage", "band", "50 % coverage", "min rank p", "min VSBC KS p",
                                 "flags"], rows))
        verdicts = info.get("verdicts") or {}
        if verdicts:
            sec.blocks.append(Para(" ".join(f"**{sec_d[a].get('label', a)}:** {v}" for a, v in verdicts.items())))
        out.append(sec)
    if out:
        for name in _SBC_FIGURES:
            if name in figures:
                out[-1].blocks.append(Figure(name, "Rank ECDF differences with simultaneous 95 % bands (SBC)"
                                             if name == _SBC_FIGURES[0] else "Interval coverage with binomial bands (SBC)"))
    return out


def diagnostics_sections(s: Summary) -> list[Section]:
    """The Diagnostics section and its subsections; empty without ``summary["diagnostics"]``."""
    dg = s.get("diagnostics")
    if not dg:
        return []
    sec = Section("diagnostics", "Diagnostics: did the variational fit work?")
    if not isinstance(dg, Mapping):
        sec.blocks.append(Para(short_value(dg)))
        return [sec]
    sec.blocks.extend(_overview(dg))
    rest = {k: v for k, v in dg.items() if k not in _KNOWN}
    if rest:
        sec.blocks.append(Table(["quantity", "value"], [[k, short_value(v)] for k, v in flatten(rest)]))
    files = [str(x) for x in (dg.get("files") or [])] + ([str(dg["markdown"])] if dg.get("markdown") else [])
    if files:
        sec.blocks.append(Para("Files in this run directory: " + ", ".join(f"`{x}`" for x in files) + "."))
    figures = [str(x) for x in dg.get("figures") or []]
    for name in figures:
        if name not in _SBC_FIGURES and name != GUIDES_FIGURE:
            sec.blocks.append(Figure(name, name))
    subs = [x for x in (guides_section(dg, figures), _lr_section(dg), _nuts_section(dg)) if x is not None] + _sbc_sections(dg, figures)
    return [sec, *subs]
