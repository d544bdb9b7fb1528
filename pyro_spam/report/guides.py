"""The report's "Which approximation to trust?" section, from ``summary["diagnostics"]["guides"]``.

The guide leaderboard (:func:`pyro_spam.diagnostics.guides.leaderboard`) as a table, its figure
(``guides_pair.png``) and generated text: which approximation's sds match NUTS best, how far
mean-field underestimates the sds of the most correlated pair, what each k̂ says, and the warning
that PSIS-resampled draws are unreliable when k̂ > 0.7. Every number comes from the summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .document import Figure, Para, Section, Table, f

__all__ = ["GUIDES_FIGURE", "NA", "guides_section", "guides_text"]

GUIDES_FIGURE = "guides_pair.png"
_KHAT_WORDS = "k̂ < 0.5 good, 0.5–0.7 usable, > 0.7 unreliable"
NA = "—"
"""A leaderboard cell that does not apply to its row (as opposed to ``n/a``: a value that is missing)."""


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _worst_log_ratio(r: Mapping[str, Any]) -> float:
    """Largest |log(sd / NUTS sd)| over the coefficients: 0 when every marginal sd matches."""
    vals = [abs(math.log(x)) for x in r.get("sd_ratio") or [] if _num(x) and x > 0]
    return max(vals) if vals else math.inf


def _range(r: Mapping[str, Any], lo: str, hi: str, d: int = 2) -> str:
    a, b = _num(r.get(lo)), _num(r.get(hi))
    return "n/a" if a is None or b is None else f"{f(a, d)}–{f(b, d)}"


def _no_elbo(r: Mapping[str, Any]) -> bool:
    """Whether the exact ELBO does not apply to a row (draws, not a Gaussian: NUTS, PSIS resampling)."""
    return r.get("key") == "nuts" or (r.get("gaussian") is False and _num(r.get("elbo")) is None)


def _khat_cell(r: Mapping[str, Any]) -> str:
    rng = r.get("khat_range")
    return f"{f(rng[0], 2)}–{f(rng[1], 2)}" if rng else "n/a"


def _khat_draws_text(lb: Mapping[str, Any], pooled: bool) -> str:
    """``10 sets of 1000 draws, …: one k̂ varies by about ±0.1``, or for larger sets (the NUTS-referenced
    leaderboard) why they are larger."""
    n, kd = lb.get("n_draws"), lb.get("khat_draws") or lb.get("n_draws")
    head = f"{lb.get('repeats')} sets of {kd:,} draws" if isinstance(kd, int) else f"{lb.get('repeats')} sets of {kd} draws"
    head += ", and k̂ of all those draws pooled" if pooled else ""
    if isinstance(kd, int) and isinstance(n, int) and kd > n:
        return f"{head}; sets of the run's {n:,} draws overstate a k̂ near 0.5"
    return f"{head}; one k̂ from {kd} draws varies by about ±0.1"


def guides_text(lb: Mapping[str, Any]) -> list[str]:
    """The section's paragraphs, generated from the leaderboard's numbers."""
    rows = [r for r in lb.get("rows") or [] if isinstance(r, Mapping)]
    approx = [r for r in rows if r.get("key") != "nuts"]
    if not approx:
        return []
    names = list(lb.get("coef_names") or [])
    pair = list(lb.get("pair") or [0, 1])
    pn = list(lb.get("pair_names") or [names[k] if k < len(names) else str(k) for k in pair])
    nuts = next((r for r in rows if r.get("key") == "nuts"), None)
    main = next((r for r in approx if r.get("key") == f"fit:{lb.get('primary')}"), approx[0])
    out = []
    n = len(approx)
    what = f"{n} approximation{'s' if n != 1 else ''} of the posterior"
    if nuts is not None:
        what += f" and the NUTS reference {'they are' if n != 1 else 'it is'} judged against"
    intro = (f"{what}, one row each, on the same numbers: exact ELBO (Gauss–Hermite, no Monte Carlo "
             "error; Gaussian rows only), PSIS k̂ as an importance sampler (median and range over "
             + _khat_draws_text(lb, any(_num(r.get("khat_pooled")) is not None for r in approx))
             + "), held-out lppd from draws and wall time.")
    if nuts is None:
        intro += (f" Without a NUTS reference the most correlated pair comes from {lb.get('pair_source') or 'the first rows'}; "
                  "`pyro-spam diagnose RUN --nuts` adds NUTS and the columns that compare with it (sd ratio, mean shift and "
                  "1-Wasserstein distance per coefficient, in NUTS sd).")
    out.append(intro)
    if nuts is not None:
        ranked = sorted(approx, key=_worst_log_ratio)
        best, worst = ranked[0], ranked[-1]
        by_w1 = min(approx, key=lambda r: _num(r.get("w1_max_in_sd")) or math.inf)
        text = (f"Against NUTS, **{best['name']}** matches the marginal sds best (sd / NUTS sd {_range(best, 'sd_ratio_min', 'sd_ratio_max')}, "
                f"means within {f(best.get('mean_shift_max_in_sd'), 2)} NUTS sd); {worst['name']} is furthest off "
                f"({_range(worst, 'sd_ratio_min', 'sd_ratio_max')}). ")
        text += (f"The closest marginals overall, by 1-Wasserstein distance, are {by_w1['name']}'s (at most "
                 f"{f(by_w1.get('w1_max_in_sd'), 2)} NUTS sd; two halves of the NUTS draws differ by up to "
                 f"{f(lb.get('w1_floor_in_sd'), 2)}, the resolution of that column).")
        out.append(text)
        ratios = main.get("sd_ratio") or []
        if len(ratios) > max(pair):
            out.append(f"The {main['name']} fit underestimates the sds of the most correlated pair, {pn[0]} and {pn[1]} "
                       f"(ρ = {f(nuts.get('pair_rho'), 2)} under NUTS): its sds are {f(ratios[pair[0]], 2)} and "
                       f"{f(ratios[pair[1]], 2)} of NUTS's, because a factorised q has ρ = {f(main.get('pair_rho'), 2)} and "
                       "must shrink along the correlated direction to keep KL(q‖p) small.")
    else:
        ref = next((r for r in approx if r.get("name") == lb.get("pair_source")), None)
        if ref is not None and ref is not main and len(ref.get("sd") or []) > max(pair):
            ms, rs = main["sd"], ref["sd"]
            out.append(f"The {main['name']} fit's sds of the most correlated pair, {pn[0]} and {pn[1]} (ρ = "
                       f"{f(ref.get('pair_rho'), 2)} under {ref['name']}), are {f(ms[pair[0]] / rs[pair[0]], 2)} and "
                       f"{f(ms[pair[1]] / rs[pair[1]], 2)} of {ref['name']}'s: a factorised q (ρ = {f(main.get('pair_rho'), 2)}) "
                       "shrinks along the correlated direction.")
    khats = [r for r in approx if _num(r.get("khat_median")) is not None]
    if khats:
        parts = [f"{r['name']} {f(r['khat_median'], 2)} ({r.get('khat_reading')})" for r in khats]
        best_k = min(khats, key=lambda r: r["khat_median"])
        out.append(f"k̂ median ({_KHAT_WORDS}; Yao et al. 2018): " + "; ".join(parts) + f". {best_k['name']} covers the "
                   "posterior's tails best as an importance proposal; an unreliable k̂ means its draws cannot be reweighted "
                   "into posterior draws.")
        split = [r for r in khats if _num(r.get("khat_pooled")) is not None
                 and any((r["khat_median"] < t) != (r["khat_pooled"] < t) for t in (0.5, 0.7))]
        if split:
            n = split[0].get("khat_pooled_draws")
            out.append("Borderline: " + "; ".join(f"{r['name']} reads {f(r['khat_median'], 2)} as a median of one-set "
                                                  f"estimates but {f(r['khat_pooled'], 2)} from all {n:,} draws pooled" for r in split)
                       + ". Both estimate the same tail, and near a threshold their difference is Monte Carlo error (either "
                       "can move by ±0.15 with other draws), so read these as on the threshold, not on one side of it.")
    for r in approx:
        if r.get("key") != "psis":
            continue
        k1, km = _num(r.get("khat")), _num(r.get("khat_median"))
        if (k1 is not None and k1 > 0.7) or (km is not None and km > 0.7) or r.get("reliable") is False:
            out.append(f"**Warning ({r['name']}):** k̂ = {f(k1, 2)} for the draw set resampled here (median {f(km, 2)} over "
                       f"repeated sets; ESS of the smoothed weights {f(r.get('ess'), 0)} of {lb.get('n_draws')}). k̂ > 0.7 makes "
                       "PSIS resampling unreliable: the weights are dominated by a few draws, so its moments can be far off "
                       "even when they look plausible.")
    elbos = [r for r in approx if _num(r.get("elbo")) is not None]
    if len(elbos) > 1:
        top = max(elbos, key=lambda r: r["elbo"])
        gap = top["elbo"] - main["elbo"] if _num(main.get("elbo")) is not None else None
        out.append(f"Highest ELBO: {top['name']} ({f(top['elbo'], 2)} nats" + (f", {f(gap, 2)} above {main['name']}" if gap else "")
                   + "). The ELBO is log p(y) − KL(q‖p): it ranks by a divergence that tolerates too-narrow marginals, so it "
                   "does not by itself say whose sds to trust.")
    return out


def guides_section(dg: Mapping[str, Any], figures: Sequence[str] = ()) -> Section | None:
    """The section, or None when the run has no leaderboard."""
    lb = dg.get("guides")
    if not isinstance(lb, Mapping) or not lb.get("rows"):
        return None
    sec = Section("guides", "Which approximation to trust?", level=3)
    sec.blocks.extend(Para(p) for p in guides_text(lb))
    rows = [r for r in lb["rows"] if isinstance(r, Mapping)]
    has_nuts = lb.get("reference") == "nuts"
    pn = lb.get("pair_names") or ["", ""]
    pooled_n = next((r.get("khat_pooled_draws") for r in rows if r.get("khat_pooled_draws")), None)
    header = ["approximation", "kind", "ELBO", "k̂ median", "k̂ range"]
    header += [f"k̂, {pooled_n:,} draws pooled"] if pooled_n else []
    header.append("reading")
    if has_nuts:
        header += ["sd / NUTS sd", "max |Δmean| / sd", "max W1 / sd"]
    header += [f"ρ({pn[0]}, {pn[1]})", "held-out lppd/msg", "time (s)"]
    table = []
    for r in rows:
        ref = r.get("key") == "nuts"
        elbo = NA if _no_elbo(r) else f(r.get("elbo"), 2)
        cells = [str(r.get("name")), str(r.get("kind")), elbo]
        cells += [NA, NA] if ref else [f(r.get("khat_median"), 2), _khat_cell(r)]
        cells += ([NA if ref else f(r.get("khat_pooled"), 2)] if pooled_n else [])
        cells.append("reference" if ref else str(r.get("khat_reading") or "n/a"))
        if has_nuts:
            cells += [NA] * 3 if ref else [_range(r, "sd_ratio_min", "sd_ratio_max"), f(r.get("mean_shift_max_in_sd"), 2),
                                           f(r.get("w1_max_in_sd"), 2)]
        cells += [f(r.get("pair_rho"), 2), f(r.get("lppd_test_per_message"), 4), f(r.get("seconds"), 2)]
        table.append(cells)
    why = (["the exact ELBO is defined for Gaussian rows only"] if any(_no_elbo(r) for r in rows) else []) + (
        ["NUTS, the reference, has no density to compute k̂ from and is not compared with itself"]
        if any(r.get("key") == "nuts" for r in rows) else [])
    sec.blocks.append(Table(header, table, caption=(
        "Gaussian rows use their exact mean and covariance; PSIS resampling and NUTS use their draws. Time: what it takes to "
        "obtain the approximation (a correction includes the fit it corrects)."
        + (f" {NA}: does not apply ({'; '.join(why)})." if why else ""))))
    if has_nuts:
        names = list(lb.get("coef_names") or [])
        approx = [r for r in rows if r.get("key") != "nuts" and r.get("sd_ratio")]
        per = [[n] + [f"{f(r['sd_ratio'][j], 2)} / {f(r['w1_in_sd'][j], 2)}" for r in approx] for j, n in enumerate(names)]
        sec.blocks.append(Table(["coefficient"] + [str(r["name"]) for r in approx], per,
                                caption="Per coefficient: sd / NUTS sd and 1-Wasserstein distance to NUTS in NUTS sd."))
    if GUIDES_FIGURE in figures:
        sec.blocks.append(Figure(GUIDES_FIGURE, f"Each approximation on the most correlated pair ({pn[0]}, {pn[1]}): 2-sd ellipses"
                                 + (" over the NUTS draws" if has_nuts else "") + "; right: mean ± 2 sd per coefficient, "
                                 "standardised by the reference."))
    return sec
