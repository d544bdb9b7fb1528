"""The estimator lab in the report: ranking table, findings in words, training-run table.

Everything comes from ``summary["estimators"]`` (written by ``pyro-spam compare`` from
:mod:`pyro_spam.estimator_lab`). :func:`estimator_findings` returns the findings as Markdown
strings, so notebook 02 shows the same sentences as the report; :func:`estimator_sections` wraps
them, the tables and the figures into report sections. Imports no torch or Pyro.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .document import Block, Figure, Para, Section, Table, code_list, f, g, pct

__all__ = ["RANK_S", "ranking_S", "ranking_table", "stl_table", "runs_table", "estimator_findings", "estimator_headline",
           "estimator_insight", "estimator_sections"]

RANK_S = (16, 64)
"""The particle counts the ranking table shows (those the lab measured; else its largest S)."""
_BIASED_REF = "sample mean"
"""``snr_reference`` of an estimator whose mean gradient is not the ELBO's (iwae)."""


def _rows(est: Mapping[str, Any]) -> dict[tuple[str, str, int], Mapping[str, Any]]:
    return {(r["guide"], r["estimator"], int(r["S"])): r for r in est.get("table", [])}


def _ratios(est: Mapping[str, Any]) -> dict[tuple[str, str, int], Mapping[str, Any]]:
    return {(r["guide"], r["estimator"], int(r["S"])): r for r in est.get("ratios", [])}


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def ranking_S(est: Mapping[str, Any], wanted: Sequence[int] = RANK_S) -> list[int]:
    """The S values of the ranking: those of ``wanted`` the lab measured, else its largest S."""
    S = [int(s) for s in est.get("S", [])]
    return [s for s in wanted if s in S] or S[-1:]


def _main_S(est: Mapping[str, Any]) -> int:
    """The S the findings quote: the largest of the ranking's."""
    return max(ranking_S(est))


def _x(v: Any) -> str:
    """A variance ratio as ``0.299×``."""
    return f"{g(v, 2)}×"


def _ci(r: Mapping[str, Any] | None, what: str) -> str:
    """``ratio [lo, hi]`` of a ``ratios`` record (``n/a`` when absent)."""
    if not r:
        return "n/a"
    return f"{g(r[f'{what}_ratio'], 3)} [{g(r[f'{what}_lo'], 2)}, {g(r[f'{what}_hi'], 2)}]"


def _is_exact(row: Mapping[str, Any]) -> bool:
    return _num(row.get("grad_var_loc")) == 0 and _num(row.get("grad_var_log_scale")) == 0 and _num(row.get("elbo_sd")) == 0


def ranking_table(est: Mapping[str, Any], guide: str = "fitted", S_values: Sequence[int] | None = None) -> Table:
    """One row per estimator and S, ranked within each S by the variance of the loc gradient."""
    rows_by, rat = _rows(est), _ratios(est)
    kinds = est.get("estimators") or list(dict.fromkeys(k for _, k, _ in rows_by))
    out = []
    for S in S_values or ranking_S(est):
        recs = sorted((rows_by[(guide, k, S)] for k in kinds if (guide, k, S) in rows_by), key=lambda r: _num(r["grad_var_loc"]))
        for rank, r in enumerate(recs, 1):
            k, exact = r["estimator"], _is_exact(r)
            ra = rat.get((guide, k, S))
            biased = r.get("snr_reference") == _BIASED_REF
            snr = "∞ (exact)" if exact else g(r.get("snr"), 3) + (" †" if biased else "")
            out.append([str(S), str(rank), f"`{k}`", "0 (exact)" if exact else g(r["grad_var_loc"], 3),
                        "1" if k == "trace" else "0 (exact)" if exact else _ci(ra, "loc"),
                        "0 (exact)" if exact else g(r["grad_var_log_scale"], 3),
                        "1" if k == "trace" else "0 (exact)" if exact else _ci(ra, "log_scale"),
                        g(r["elbo_sd"], 3), snr, f(r.get("ms_per_step"), 2),
                        "exact" if exact else f(r.get("bias_z_max"), 1) + (" †" if biased else "")])
    header = ["S", "rank", "estimator", "Var ∂/∂loc", "÷ trace [95 % CI]", "Var ∂/∂log-scale", "÷ trace [95 % CI]",
              "ELBO sd (nats)", "SNR", "ms / estimate", "max bias (SE)"]
    cap = (f"Estimators at the {guide} guide ranked by the variance of one loc-gradient estimate (summed over the "
           f"coefficients; {est.get('reps')} replicates per cell). ÷ trace: variance ratio to `trace` with its 95 % "
           "bootstrap interval. SNR: ‖E g‖ / √(tr Var g) with E g the exact gradient († the sample mean: that estimator "
           "follows another bound's gradient); at an optimum the exact gradient is about 0, so the SNR is too. "
           "max bias: the largest |mean − exact| over gradient coordinates in standard errors (about 3 or less for an "
           "unbiased estimator; † biased for the ELBO's gradient by design). ms / estimate: one estimate and its gradient, plain torch, one thread.")
    return Table(header, out, caption=cap)


def _coef_names(est: Mapping[str, Any], n: int) -> list[str]:
    names = est.get("coef_names") or []
    return list(names) if len(names) == n else [f"w{j}" for j in range(n)]


def _stl_measured(est: Mapping[str, Any], S: int, guide: str = "fitted") -> np.ndarray | None:
    """STL ÷ trace loc-gradient variance per coefficient (``None`` when either is missing)."""
    rows = _rows(est)
    a, b = rows.get((guide, "stl", S)), rows.get((guide, "trace", S))
    if not a or not b or not a.get("grad_var_loc_per") or not b.get("grad_var_loc_per"):
        return None
    num, den = np.asarray(a["grad_var_loc_per"], dtype=float), np.asarray(b["grad_var_loc_per"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def stl_table(est: Mapping[str, Any]) -> Table | None:
    """STL's measured loc-gradient variance ratio per coefficient next to the predicted floor."""
    S = _main_S(est)
    meas, fl = _stl_measured(est, S), est.get("stl_floor")
    if meas is None or not fl:
        return None
    pred = fl["loc_ratio_per"]
    names = _coef_names(est, len(pred))
    rows = [[f"`{n}`", f(m, 3), f(p, 3)] for n, m, p in zip(names, meas, pred, strict=False)]
    return Table(["coefficient", f"measured STL ÷ trace (S = {S})", "predicted floor"], rows,
                 caption="Variance of ∂ELBO/∂loc per coefficient at the fitted guide: STL over trace, measured and "
                         "predicted from the Gaussian approximation of the posterior.")


def runs_table(est: Mapping[str, Any]) -> Table | None:
    """One row per training run: steps, time, stop reason and distance to the exact optimum."""
    runs = est.get("runs")
    if not runs:
        return None
    rows = [[f"`{k}`", str(r.get("particles")), str(r.get("steps")), f(r.get("seconds"), 2), f(r.get("ms_per_step"), 1),
             str(r.get("stop_reason")), f(r.get("dist_loc_sd"), 3), pct(r.get("dist_scale_rel"), 1),
             "yes" if r.get("reached") else "**NO**"] for k, r in runs.items()]
    return Table(["estimator", "S", "steps", "seconds", "ms / step", "stop reason", "max |Δloc| (posterior sd)",
                  "max |scale ÷ scale* − 1|", "reached the optimum"], rows)


def _slope(rows: Sequence[Mapping[str, Any]], key: str, s_min: int = 1) -> float:
    """Log–log slope of ``key`` against S over the records with S ≥ ``s_min`` and a positive value."""
    pts = [(int(r["S"]), _num(r[key])) for r in rows if int(r["S"]) >= s_min and _num(r[key]) > 0]
    if len(pts) < 2:
        return float("nan")
    s, v = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(s, v, 1)[0])


def _series(est: Mapping[str, Any], guide: str, kind: str) -> list[Mapping[str, Any]]:
    return sorted((r for r in est.get("table", []) if r["guide"] == guide and r["estimator"] == kind), key=lambda r: r["S"])


def _measured(est: Mapping[str, Any]) -> str:
    S = est.get("S", [])
    reps = int(est.get("reps", 0))
    gi = (est.get("guides") or {}).get("initial")
    init = "the initial guide"
    if gi and not any(gi["loc"]) and len(set(gi["scale"])) == 1:
        init = f"the initial guide (loc 0, scale {g(gi['scale'][0], 2)})"
    rel = math.sqrt(2 / (reps - 1)) if reps > 1 else float("nan")
    kinds = est.get("estimators", [])
    text = (f"**What was measured.** {reps} independent estimates of the ELBO and of its gradient per estimator, guide "
            f"and S, at two fixed guides: {init} and the fitted guide, the {est.get('fitted_from', 'run’s fit')}; full "
            f"training set; S = {', '.join(map(str, S))} particles (`rqmc` only at powers of two). Estimators: "
            f"{code_list(kinds)}. The baseline of `score` is settled: {est.get('score_baseline', 'see summary.json')}")
    text += "; `score_nobaseline` has none." if "score_nobaseline" in kinds else "."
    text += (f" A variance from {reps} replicates has a relative standard error of about {pct(rel, 0)}; ratios to "
             "`trace` carry 95 % bootstrap intervals, tight where the two estimators share their noise.")
    return text


def _ranking(est: Mapping[str, Any]) -> str | None:
    S = _main_S(est)
    rows, rat = _rows(est), _ratios(est)
    recs = sorted((r for (gd, _, s), r in rows.items() if gd == "fitted" and s == S), key=lambda r: _num(r["grad_var_loc"]))
    if not recs:
        return None
    parts = []
    for r in recs:
        k = r["estimator"]
        if _is_exact(r):
            parts.append(f"`{k}` (0: no Monte Carlo noise, {f(r.get('ms_per_step'), 1)} ms per estimate at any S)")
        elif k == "trace":
            parts.append(f"`trace` (1×: variance {g(r['grad_var_loc'], 3)})")
        else:
            ra = rat.get(("fitted", k, S))
            parts.append(f"`{k}` ({_x(ra['loc_ratio']) if ra else g(r['grad_var_loc'], 3)})")
    text = (f"**Ranking.** At S = {S} on the fitted guide, from the least to the most loc-gradient variance (ratio to "
            f"`trace`): {', '.join(parts)}.")
    init = [r for (gd, _, s), r in rows.items() if gd == "initial" and s == S and not _is_exact(r) and r.get("snr_reference") != _BIASED_REF]
    if init:
        lo, hi = min(init, key=lambda r: _num(r["snr"])), max(init, key=lambda r: _num(r["snr"]))
        text += (f" At the fitted guide the exact gradient is about 0, so every SNR there is about 0; at the initial guide, "
                 f"where the gradient is large, the SNR at S = {S} runs from {g(lo['snr'], 3)} (`{lo['estimator']}`) to "
                 f"{g(hi['snr'], 3)} (`{hi['estimator']}`).")
    return text


def _rqmc(est: Mapping[str, Any]) -> str | None:
    rat = _ratios(est)
    rr = sorted((r for (gd, k, _), r in rat.items() if gd == "fitted" and k == "rqmc"), key=lambda r: r["S"])
    if not rr:
        return None
    S = _main_S(est)
    per_s = ", ".join(f"{_x(r['loc_ratio'])} at S = {r['S']}" for r in rr)
    sl_q, sl_t = _slope(_series(est, "fitted", "rqmc"), "grad_var_loc", 4), _slope(_series(est, "fitted", "trace"), "grad_var_loc", 4)
    vals = [_num(r["loc_ratio"]) for r in rr]
    growing = len(vals) > 2 and all(b < a for a, b in zip(vals, vals[1:], strict=False))
    head = "Randomised QMC gains more the more particles it gets." if growing else "Randomised QMC."
    text = f"**{head}** Its loc-gradient variance relative to `trace` (fitted guide) is {per_s}"
    if math.isfinite(sl_q) and math.isfinite(sl_t):
        text += f": it falls like S^{sl_q:.1f} against S^{sl_t:.1f} for `trace` (log–log slopes over S ≥ 4)"
    text += "."
    if rr[0]["S"] == 1:
        text += " A single scrambled Sobol point is a plain random draw, so at S = 1 there is nothing to gain."
    main = rat.get(("fitted", "rqmc", S))
    ini = rat.get(("initial", "rqmc", S))
    if main:
        text += f" At S = {S} the log-scale ratio is {_ci(main, 'log_scale')} and the ELBO-estimate ratio {_ci(main, 'elbo')}"
        text += f"; at the initial guide the loc ratio is {_ci(ini, 'loc')}." if ini else "."
    return text


def _stl(est: Mapping[str, Any]) -> str | None:
    S = _main_S(est)
    rat = _ratios(est)
    main = rat.get(("fitted", "stl", S))
    fl = est.get("stl_floor")
    meas = _stl_measured(est, S)
    if not main:
        return None
    head = ("Sticking the landing does not remove the loc-gradient noise here." if _num(main["loc_lo"]) > 0.05
            else "Sticking the landing.")
    text = (f"**{head}** STL drops the score term ∇ log q, "
            f"which would leave no variance at all if q were the exact posterior. At S = {S} on the fitted guide its "
            f"loc-gradient variance is {_ci(main, 'loc')} of `trace`'s and its log-scale variance {_ci(main, 'log_scale')}")
    if fl and meas is not None:
        pred = np.asarray(fl["loc_ratio_per"], dtype=float)
        names = _coef_names(est, pred.size)
        i, j = fl.get("corr_pair", [0, 1])
        rho = _num(fl.get("corr"))
        text += (f". Per coefficient the measured ratio is {f(np.nanmin(meas), 2)}–{f(np.nanmax(meas), 2)} against a "
                 f"predicted floor of {f(pred.min(), 2)}–{f(pred.max(), 2)} (Gaussian approximation; largest gap "
                 f"{f(np.nanmax(np.abs(meas - pred)), 2)}, see the table). The floor does not vanish because the mean-field "
                 f"q ignores the posterior's correlations: `{names[i]}` and `{names[j]}` have correlation ρ = {f(rho, 2)}, "
                 f"and two coefficients with correlation ρ alone leave ρ²/(1 + ρ²) = {f(rho**2 / (1 + rho**2), 2)} of the "
                 "variance")
    ini = rat.get(("initial", "stl", S))
    text += f". At the initial guide, far from the optimum, STL's loc ratio is {_ci(ini, 'loc')}." if ini else "."
    return text


def _score(est: Mapping[str, Any]) -> str | None:
    S = _main_S(est)
    rat = _ratios(est)
    sf, si = rat.get(("fitted", "score", S)), rat.get(("initial", "score", S))
    nf, ni = rat.get(("fitted", "score_nobaseline", S)), rat.get(("initial", "score_nobaseline", S))
    if not sf and not nf:
        return None
    text = f"**Score function.** At S = {S}, the loc-gradient variance relative to `trace`"
    if sf:
        text += (f" is {_ci(sf, 'loc')} with the baseline settled (fitted guide)"
                 + (f" and {_ci(si, 'loc')} at the initial guide" if si else ""))
    if nf:
        text += (f"; without a baseline (plain REINFORCE) it is {_ci(nf, 'loc')}"
                 + (f" and {_ci(ni, 'loc')}" if ni else ""))
        if sf and _num(sf["loc_ratio"]) > 0:
            text += f": the baseline removes a factor of {g(_num(nf['loc_ratio']) / _num(sf['loc_ratio']), 2)} at the fitted guide"
    text += ". Near the optimum log p(y, w) − log q(w) hardly varies, so a good baseline leaves little noise"
    others = [_num(r["loc_ratio"]) for (gd, k, s), r in rat.items() if gd == "initial" and s == S and not k.startswith("score")]
    if si and others and _num(si["loc_ratio"]) > max(others):
        text += "; far from it (initial guide) even the baselined score-function gradient is the noisiest unbiased one measured"
    text += "."
    run = (est.get("runs") or {}).get("score")
    if run:
        text += (f" Its training run (decaying-average baseline) stopped after {run.get('steps')} steps "
                 f"(`{run.get('stop_reason')}`) {f(run.get('dist_loc_sd'), 2)} posterior sd from the optimum.")
    return text


def _iwae(est: Mapping[str, Any]) -> str | None:
    S = _main_S(est)
    rows, rat = _rows(est), _ratios(est)
    r = rows.get(("fitted", "iwae", S))
    if not r:
        return None
    exact = _num(((est.get("exact") or {}).get("fitted") or {}).get("elbo"))
    gap = _num(r["mean_elbo"]) - exact
    z = {gd: _num(x["bias_z_max"]) for (gd, k, s), x in rows.items() if k == "iwae" and s == S}
    unb = [_num(x["bias_z_max"]) for (gd, k, s), x in rows.items()
           if s == S and x.get("snr_reference") != _BIASED_REF and not _is_exact(x)]
    text = (f"**IWAE is a different objective.** The importance-weighted bound is tighter than the ELBO for S > 1: at the "
            f"fitted guide and S = {S} its mean estimate is {f(abs(gap), 2)} nats {'above' if gap >= 0 else 'below'} the "
            "exact ELBO. Its mean gradient is the bound's, not the ELBO's: it misses the ELBO's by up to "
            + " and ".join(f"{f(v, 1)} standard errors at the {gd} guide" for gd, v in z.items()))
    if unb:
        text += f" (the unbiased estimators: at most {f(max(unb), 1)}"
        text += ")." if max(z.values()) > max(unb) else f"; {est.get('reps')} replicates do not resolve the difference)."
    ra = rat.get(("fitted", "iwae", S))
    if ra:
        text += f" Its loc-gradient variance is {_ci(ra, 'loc')} of `trace`'s."
    run = (est.get("runs") or {}).get("iwae")
    opt = est.get("optimum")
    if run:
        text += (f" Its training run ends {f(run.get('dist_loc_sd'), 2)} posterior sd (loc) and {pct(run.get('dist_scale_rel'), 0)} "
                 "(scale) from the ELBO's optimum")
        if opt and run.get("scale") is not None:
            ratio = np.asarray(run["scale"], dtype=float) / np.asarray(opt["scale"], dtype=float)
            text += f", with scales {f(ratio.min(), 2)}–{f(ratio.max(), 2)}× the ELBO optimum's"
        text += ": by design, not a failure; it maximises the IWAE bound, whose optimum is elsewhere."
    return text


def _split(est: Mapping[str, Any]) -> str | None:
    sp = est.get("minibatch_split")
    if not sp or not sp.get("rows"):
        return None
    S_avail = sorted({int(r["S"]) for r in sp["rows"]})
    S = _main_S(est) if _main_S(est) in S_avail else S_avail[-1]
    at = {r["estimator"]: r for r in sp["rows"] if int(r["S"]) == S}
    tr = at.get("trace")
    if not tr:
        return None
    high = {k: r for k, r in at.items() if _num(r["subsampling_share_loc"]) >= 0.5}
    low = {k: r for k, r in at.items() if k not in high}
    shares = [_num(r["subsampling_share_loc"]) for r in high.values()]
    text = (f"**With small mini-batches, subsampling noise sets a floor under every estimator's loc gradient.** With "
            f"batches of B = {sp['batch_size']} of N = {sp['n']:,} training messages ({sp['reps']} replicates), "
            f"subsampling makes up {pct(tr['subsampling_share_loc'])} of `trace`'s loc-gradient variance at S = {S} "
            f"({pct(min(shares))}–{pct(max(shares))} for {code_list(list(high))}). A better Monte Carlo estimator only "
            "shrinks the Monte Carlo part")
    rq = at.get("rqmc")
    full = _ratios(est).get(("fitted", "rqmc", S))
    if rq and _num(tr["total_loc"]) > 0:
        text += (f": `rqmc`'s total loc-gradient variance is {_x(_num(rq['total_loc']) / _num(tr['total_loc']))} `trace`'s "
                 "here" + (f", against {_x(full['loc_ratio'])} on full data" if full else ""))
    tr_rows = sorted((r for r in sp["rows"] if r["estimator"] == "trace"), key=lambda r: r["S"])
    text += (f". For the log-scale gradient the subsampling share of `trace` is only {pct(tr_rows[0]['subsampling_share_log_scale'])} "
             f"at S = {tr_rows[0]['S']} and {pct(tr['subsampling_share_log_scale'])} at S = {S}, so variance reduction "
             "still pays for the scales.")
    if low:
        one = len(low) == 1
        text += (f" {code_list(list(low))} {'stays' if one else 'stay'} Monte Carlo-dominated: {'its' if one else 'their'} own "
                 "noise exceeds the subsampling noise (subsampling "
                 + ", ".join(f"{pct(r['subsampling_share_loc'])} for `{k}`" for k, r in low.items()) + ").")
    return text


def _runs(est: Mapping[str, Any]) -> str | None:
    runs = est.get("runs")
    if not runs:
        return None
    rc = est.get("run_config") or {}
    conv = {k: r for k, r in runs.items() if r.get("stop_reason") == "converged"}
    budget = [k for k, r in runs.items() if r.get("stop_reason") != "converged"]
    reached = [k for k, r in runs.items() if r.get("reached")]
    missed = {k: r for k, r in runs.items() if not r.get("reached")}
    batch = "full batches" if rc.get("batch_size") is None else f"batches of {rc.get('batch_size')}"
    text = (f"**Time to a converged fit.** One run per estimator from the same start (optimiser `{rc.get('optimizer', 'adam')}`, "
            f"learning rate {rc.get('lr')}, S = {rc.get('particles')}, {batch}, stop rule `{rc.get('stop')}`, at most "
            f"{rc.get('max_steps')} steps, seed {rc.get('seed')}, Pyro SVI). {len(conv)} of {len(runs)} met the stop rule")
    if conv:
        fastest = min(conv.items(), key=lambda kv: _num(kv[1]["seconds"]))
        text += (": " + ", ".join(f"`{k}` in {f(r['seconds'], 1)} s ({r['steps']} steps)" for k, r in conv.items())
                 + f"; the fastest converged fit is `{fastest[0]}`")
    if budget:
        text += (f". {code_list(budget)} used the whole step budget ("
                 + ("its time is a lower bound)" if len(budget) == 1 else "their times are lower bounds)"))
    rr = est.get("reach") or {}
    crit = (f" (every loc within {g(rr['loc_sd'], 2)} posterior sd, every scale within {pct(rr['scale_rel'], 0)})"
            if "loc_sd" in rr and "scale_rel" in rr else "")
    text += f". Reached the exact optimum{crit}: {code_list(reached)}"
    if missed:
        text += "; not: " + ", ".join(f"`{k}` ({f(r.get('dist_loc_sd'), 2)} sd)" for k, r in missed.items())
    text += ". Timings are wall-clock on a shared machine: indicative, not a benchmark."
    return text


def estimator_findings(est: Mapping[str, Any]) -> dict[str, str]:
    """The lab's findings as Markdown paragraphs, keyed ``measured``, ``ranking``, ``rqmc``, ``stl``,
    ``score``, ``iwae``, ``split`` (with a mini-batch split) and ``runs`` (with training runs); a
    key whose data are absent is left out."""
    out = {"measured": _measured(est)}
    for key, fn in (("ranking", _ranking), ("rqmc", _rqmc), ("stl", _stl), ("score", _score), ("iwae", _iwae),
                    ("split", _split), ("runs", _runs)):
        text = fn(est)
        if text:
            out[key] = text
    return out


def estimator_headline(est: Mapping[str, Any]) -> str | None:
    """One key-findings bullet: loc-gradient variance ratios to trace at the fitted guide, and the
    subsampling share under mini-batches."""
    S = _main_S(est)
    rat = _ratios(est)
    parts = [f"`{k}` {g(rat[('fitted', k, S)]['loc_ratio'], 2)}" for k in ("rqmc", "stl", "meanfield") if ("fitted", k, S) in rat]
    if not parts:
        return None
    text = f"Loc-gradient variance ÷ Trace_ELBO's at S = {S} (fitted guide): " + ", ".join(parts)
    if ("fitted", "quad", S) in _rows(est):
        text += ", `quad` 0 (exact)"
    sp = est.get("minibatch_split")
    tr = [r for r in (sp or {}).get("rows", []) if r["estimator"] == "trace" and int(r["S"]) == S]
    if tr:
        text += f"; with mini-batches of {sp['batch_size']}, {pct(tr[0]['subsampling_share_loc'])} of it is subsampling noise"
    return text + "."


def estimator_insight(est: Mapping[str, Any]) -> str | None:
    """One sentence for the write-up's insights."""
    S = _main_S(est)
    rat = _ratios(est)
    q, st = rat.get(("fitted", "rqmc", S)), rat.get(("fitted", "stl", S))
    if not q or not st:
        return None
    text = (f"Among the ELBO estimators, randomised QMC cuts the loc-gradient variance of Trace_ELBO to "
            f"{g(q['loc_ratio'], 2)}× at S = {S}, sticking the landing only to {g(st['loc_ratio'], 2)}× (correlated "
            "coefficients set a floor)")
    sp = est.get("minibatch_split")
    tr = [r for r in (sp or {}).get("rows", []) if r["estimator"] == "trace" and int(r["S"]) == S]
    if tr:
        text += (f", and with mini-batches of {sp['batch_size']} subsampling is {pct(tr[0]['subsampling_share_loc'])} "
                 "of that variance anyway")
    return text + "."


def estimator_sections(est: Mapping[str, Any] | None) -> list[Section]:
    """The report's estimator sections, or one section with a note on how to add them."""
    sec = Section("estimators", "ELBO estimators: variance, cost and time to a fit")
    if not est or not est.get("table"):
        sec.blocks.append(Para("Not computed yet: run `pyro-spam compare RUN_DIR`."))
        return [sec]
    fnd = estimator_findings(est)
    blocks: list[Block] = [Para(fnd["measured"]), ranking_table(est)]
    blocks += [Para(fnd[k]) for k in ("ranking",) if k in fnd]
    blocks.append(Figure("estimators_variance.png",
                         "Variance of one gradient estimate w.r.t. loc (a) and log-scale (b), and sd of one ELBO estimate "
                         "(c), against S on log–log axes, at the initial guide (top) and the fitted guide (bottom); the "
                         "dotted line falls as 1/S (1/√S for the sd). quad has no Monte Carlo noise and is named in a note."))
    blocks += [Para(fnd[k]) for k in ("rqmc", "stl") if k in fnd]
    st = stl_table(est)
    if st:
        blocks.append(st)
    blocks += [Para(fnd[k]) for k in ("score", "iwae") if k in fnd]
    sec.blocks = blocks
    out = [sec]
    if "split" in fnd:
        sp = est["minibatch_split"]
        out.append(Section("estimators-split", "Mini-batches: Monte Carlo versus subsampling noise", [
            Para(fnd["split"]),
            Figure("estimators_minibatch_split.png",
                   f"Gradient variance with mini-batches of B = {sp['batch_size']}, split by the law of total variance "
                   "into the Monte Carlo part E_batch Var(g | batch) (solid) and the subsampling part Var_batch E(g | batch) "
                   "(dashed), for loc (a) and log-scale (b); (c) the subsampling share of the loc-gradient variance.")],
            level=3))
    if "runs" in fnd:
        blocks = [Para(fnd["runs"]),
                  Figure("estimators_training.png",
                         "One training run per estimator: ELBO estimate (running mean) against the step (a) and the "
                         "wall-clock time (b), dotted: the exact ELBO at the optimum; (c) time to the end of each run, "
                         "hatched where it ran out of steps, with whether it reached the exact optimum.")]
        rt = runs_table(est)
        if rt:
            blocks.append(rt)
        out.append(Section("estimators-runs", "Time to a converged fit", blocks, level=3))
    return out
