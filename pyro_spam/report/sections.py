"""Section content of the run report, built from the typed summary (:class:`~pyro_spam.summary.Summary`).

Every sentence that states a result is generated from this run's numbers. Sections whose data
are absent (no cross-check, no diagnostics, ``pyro-spam compare`` not run yet) are left out or
replaced by a one-line note, so older and partial run directories still render. The blocks are
the document model of :mod:`.document`; rendering lives there too.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import LEGACY_TRAIN, RunConfig
from ..io.run_reader import summary_value
from ..summary import EvaluationSection, Summary, elbo_label, primary_fit
from .diagnostics import diagnostics_sections, flatten
from .document import Block, Bullets, Figure, Para, Section, Table, code_list, f, g, pct, short_value, word_count
from .estimators import estimator_headline, estimator_insight, estimator_sections

__all__ = ["build_sections", "follow_up_commands", "reproduce_args", "reproduce_command", "unflagged_settings", "writeup"]


# ---------------------------------------------------------------- sections


def _described_fit(s: Summary) -> str | None:
    """The fit the report describes: the one the evaluation used, else :func:`~pyro_spam.summary.primary_fit`
    (``None`` without fits)."""
    fits = s.get("fits") or {}
    if not fits:
        return None
    ev_fit = summary_value(s, "evaluation/fit")
    return ev_fit if ev_fit in fits else primary_fit(fits)


def _key_findings(s: Summary) -> list[str]:
    """The bullets opening the report: one sentence per headline number."""
    out = []
    kind = _described_fit(s)
    if kind:
        t = s["fits"][kind]["test"]
        out.append(
            f"Held-out lppd **{f(t['lppd_per_message'], 4)}** nats/message against "
            f"{f(t['intercept_only_lppd_per_message'], 4)} for the constant spam rate; accuracy {pct(t['accuracy'])} "
            f"(always-ham: {pct(1 - s['data']['spam_rate'])}), ROC AUC {f(t['roc_auc'])}."
        )
    ev = s.get("evaluation")
    if ev:
        w, u, c = ev["weights"], ev["uncertainty"], ev["calibration"]["models"]
        out.append(f"{w['n_left']} of {len(w['rows'])} coefficients left the prior; total KL(q‖p) "
                   f"{f(w['kl_total'], 1)} nats.")
        out.append(
            f"Only {pct(u['all']['epistemic_share'])} of the predictive entropy is epistemic: the uncertainty is in "
            f"the messages, not in the weights. Wrong predictions carry {f(u['wrong_to_correct_total'], 1)}× the "
            "entropy of correct ones."
        )
        vi = c["vi"]
        out.append(
            f"ECE {f(vi['ece'], 4)} (a perfectly calibrated predictor would show up to {f(vi['ece_null']['q95'], 4)} "
            "here by chance); deferring the 10 % most uncertain messages lifts accuracy to "
            f"{pct(ev['selective']['total']['accuracy_at']['0.90'])}."
        )
    est = s.get("estimators")
    head = estimator_headline(est) if est and est.get("table") else None
    if head:
        out.append(head)
    cmp_ = s.get("compare")
    if cmp_:
        ms = cmp_["model_size"]["kinds"]
        parts = [f"{k} terms best at K = {v['best_k']} (lppd {f(max(v['lppd']), 4)})" for k, v in ms.items()]
        out.append("Model size: " + "; ".join(parts) + ".")
    return out


def _data_section(s: Summary) -> Section:
    """Data set and features (``summary["data"]``)."""
    d = s["data"]
    requested = ""
    if d.get("components_requested") != d["components"]:
        capped = ", capped" if d.get("components_capped") else ""
        requested = f" (requested {d['components_requested']}{capped})"
    per_component = ", ".join(pct(v) for v in d.get("explained_variance_ratio", []))
    rows = [
        ["source", f"{d.get('source')}" + (f" (embedder {d['embedder']})" if d.get("embedder") else "")],
        ["messages", f"{d['n']:,} ({d['n_spam']:,} spam, {pct(d['spam_rate'])})"],
        ["embedding dimension", str(d["dim"])],
        ["train / test (stratified)", f"{d['n_train']:,} / {d['n_test']:,}"],
        ["PCA components K", f"{d['components']}" + requested],
        ["explained variance", f"{pct(d['explained_variance'])} (per component: {per_component})"],
        ["terms", f"{d['feature_kind']}: {', '.join(d.get('terms', []))} (each standardised on train)"],
    ]
    return Section("data", "Data", [Table(["fact", "value"], rows)])


def _worst(v: Any, high: bool = True) -> float | None:
    """Largest (or smallest) entry of a number or a list of numbers; None when absent."""
    vals = [x for x in (v if isinstance(v, list) else [v]) if isinstance(x, (int, float))]
    return (max(vals) if high else min(vals)) if vals else None


def _convergence_text(kind: str, fi: Mapping[str, Any]) -> str:
    """One sentence per fit on why it stopped (``fits[elbo]["convergence"]``)."""
    ev = fi.get("convergence") or {}
    if not ev:
        return ""
    label = elbo_label(kind)
    if ev.get("criterion") == "lbfgs_gradient":
        return (f"{label}: **{fi['stop_reason']}** after {ev.get('iterations')} L-BFGS iterations "
                f"({ev.get('evaluations')} evaluations of the exact quadrature ELBO, {ev.get('quad_nodes')} Gauss–Hermite nodes); "
                f"largest gradient component {g(ev.get('grad_max'))} against the tolerance {g(ev.get('grad_tol'))} "
                "(no Monte Carlo error: the returned guide is the optimum itself).")
    if ev.get("criterion") == "plateau":
        return (f"{label}: stopped by the ELBO-plateau rule ({fi['stop_reason']} after {fi['steps']} steps), which does "
                "not check that the parameters have stopped moving.")
    fc = ev.get("final_check") or {}
    th = ev.get("thresholds") or {}
    window = ev.get("averaging_window")
    decays = ev.get("lr_decays") or []
    parts = [f"{label}: **{fi['stop_reason']}** after {fi['steps']} steps"]
    if window:
        parts.append(f"the returned guide averages the iterates of steps {window[0]}–{window[1] - 1}")
    nums = []
    rhat = fc.get("rhat_max") if "rhat_max" in fc else _worst(fc.get("rhat"))
    ess, mcse = _worst(fc.get("ess"), high=False), _worst(fc.get("mcse_rel"))
    if rhat is not None:
        nums.append(f"max split-R̂ {f(rhat, 3)} over the parameters whose window moved by more than "
                    f"{g(th.get('drift_tol'))} sd (threshold {g(th.get('rhat_max'))})")
    if ess is not None:
        nums.append(f"min ESS {f(ess, 0)}")
    if mcse is not None:
        nums.append(f"max MCSE {f(mcse, 3)} posterior sd (threshold {g(th.get('mcse_rel_max'))})")
    if nums:
        parts.append("final window: " + ", ".join(nums))
    if decays:
        parts.append("learning rate decayed at step" + ("s " if len(decays) > 1 else " ")
                     + ", ".join(str(d.get("step")) for d in decays) + f" to {g(ev.get('lr_final'))}")
    return "; ".join(parts) + "."


def _fits_section(s: Summary) -> Section:
    """One row per fitted ELBO, the coefficients and their agreement (``summary["fits"]``)."""
    fits = s.get("fits") or {}
    sec = Section("fits", "Fits")
    if not fits:
        sec.blocks.append(Para("No fits in this run."))
        return sec
    header = ["ELBO", "engine", "steps (stop)", "time (s)", "ELBO train (nats)", "ELBO test (nats/msg)",
              "lppd test (nats/msg)", "accuracy", "ROC AUC", "Brier", "ECE"]
    rows = []
    for kind, fi in fits.items():
        t = fi["test"]
        engine = fi["engine"] + (" (L-BFGS)" if fi.get("optimizer") == "lbfgs" else "")
        rows.append([elbo_label(kind), engine, f"{fi['steps']} ({fi['stop_reason']})", f(fi["seconds"], 1),
                     f(fi["elbo_train"], 1), f(fi["elbo_test_per_message"], 4), f(t["lppd_per_message"], 4),
                     pct(t["accuracy"]), f(t["roc_auc"]), f(t["brier"], 4), f(t["ece"], 4)])
    first = next(iter(fits.values()))
    baseline = f(first["test"]["intercept_only_lppd_per_message"], 4)
    sec.blocks.append(Table(header, rows, caption=f"Baseline: the constant train spam rate scores lppd {baseline} "
                                                  "nats/message on test."))
    names = first["coef_names"]
    crow = [[n] + [f"{fi['loc'][j]:+.3f} ± {fi['scale'][j]:.3f}" for fi in fits.values()] for j, n in enumerate(names)]
    sec.blocks.append(Table(["coefficient"] + [f"{elbo_label(k)}: mean ± sd" for k in fits], crow))
    if len(fits) >= 2:
        (k1, a), (k2, b) = list(fits.items())[:2]
        dl = max(abs(x - y) for x, y in zip(a["loc"], b["loc"], strict=False))
        ds = max(abs(x - y) for x, y in zip(a["scale"], b["scale"], strict=False))
        sec.blocks.append(Para(
            f"The two ELBO estimators reach the same optimum: the guides differ by at most {g(dl, 2)} in a mean and "
            f"{g(ds, 2)} in an sd (posterior sds are {f(min(a['scale']), 3)}–{f(max(a['scale']), 3)}), and the "
            f"training ELBOs by {g(abs(a['elbo_train'] - b['elbo_train']), 2)} nats (both fits use the same seed, "
            "hence the same noise)."
        ))
    conv = [p for p in (_convergence_text(k, fi) for k, fi in fits.items()) if p]
    if conv:
        sec.blocks.append(Para("When is a stochastic fit done? " + " ".join(conv)))
    for name, cap in (("elbo_history.png", "Training ELBO and its two parts per step; the shaded band is the "
                                           "averaging window of the returned guide, dotted lines mark learning-rate decays."),
                      ("weights.png", "Posterior mean ± sd of every coefficient under each fitted guide, with the "
                                      "prior's ±1 sd band.")):
        sec.blocks.append(Figure(name, cap))
    return sec


def _crosscheck_section(s: Summary) -> Section | None:
    """Pyro against the hand-written ELBO (``summary["crosscheck"]``); ``None`` when absent."""
    cc = s.get("crosscheck")
    if not cc:
        return None
    rows_in = cc.get("rows", []) if isinstance(cc, Mapping) else cc
    sec = Section("crosscheck", "Cross-check: Pyro against the hand-written ELBO")
    n_ok = sum(bool(r.get("agree")) for r in rows_in)
    sec.blocks.append(Para(f"**{n_ok} of {len(rows_in)}** comparisons agree within their tolerance (exact rows: same "
                           "noise, relative 1e-5; statistical rows: 4 Monte Carlo standard errors)."))
    rows = [[str(r.get("name", "")), g(r.get("pyro"), 7), g(r.get("manual"), 7), g(r.get("abs_diff"), 2),
             g(r.get("tolerance"), 2), "yes" if r.get("agree") else "**NO**"] for r in rows_in]
    sec.blocks.append(Table(["check", "Pyro / reference", "manual", "|difference|", "tolerance", "agree"], rows))
    if isinstance(cc, Mapping):
        extra = {k: v for k, v in cc.items() if k != "rows"}
        if extra:
            sec.blocks.append(Table(["quantity", "value"], [[k, short_value(v)] for k, v in flatten(extra)]))
    info = s.get("crosscheck_info")
    if isinstance(info, Mapping) and info.get("mc_kl_slope") is not None:
        sec.blocks.append(Para("The Monte Carlo KL converges to the closed form at the rate "
                               f"S^{f(info['mc_kl_slope'], 3)} (theory S^−0.5), measured at the "
                               f"`{info.get('guide', '')}` guide."))
    for name in s.get("figures", []):
        if "crosscheck" in str(name):
            sec.blocks.append(Figure(str(name), "(a) ELBO estimate of each implementation at the fitted guide (mean ± "
                                                "2 SE); (b) error of the Monte Carlo KL against the closed form versus "
                                                "the number of draws."))
    return sec


def _weights_block(ev: EvaluationSection) -> Section:
    """Evaluation 1: posterior weights against the prior."""
    w = ev["weights"]
    rows = w["rows"]
    kept_zero = [r for r in rows if r["left_prior"] and not r["excludes_zero"]]
    big = max(rows, key=lambda r: r["kl"])
    stay = [r["name"] for r in rows if not r["left_prior"]]
    pct_i = int(round(100 * w["interval"]))
    text = (
        f"**{w['n_left']} of {len(rows)} coefficients left the prior** (posterior sd below {w['threshold']:g} × the "
        f"prior sd {w['prior_scale']:g}): "
        f"{code_list(w['left'])}." + (f" {code_list(stay)} stayed close to the prior." if stay else "")
        + f" The posterior sds are {f(min(r['sd_ratio'] for r in rows), 3)}–{f(max(r['sd_ratio'] for r in rows), 3)} "
          "of the prior's, "
        "so the data removed "
        f"{pct(1 - max(r['sd_ratio'] for r in rows) ** 2, 0)}–{pct(1 - min(r['sd_ratio'] for r in rows) ** 2, 0)} of "
        f"the prior variance. {len(w['excludes_zero'])} have a {pct_i} % credible interval that excludes zero "
        f"({code_list(w['excludes_zero'])})."
    )
    if kept_zero:
        text += (" " + ", ".join(f"`{r['name']}` ({r['mean']:+.2f} ± {r['sd']:.2f})" for r in kept_zero)
                 + (" was" if len(kept_zero) == 1 else " were") + " pinned down near zero: the data learned that "
                 + ("this term does" if len(kept_zero) == 1 else "these terms do")
                 + " not matter, which is information too.")
    text += (f" The largest information gain is in `{big['name']}`: {f(big['kl'], 1)} of {f(w['kl_total'], 1)} nats of "
             f"KL(q‖p), its mean {big['mean']:+.2f} lying {f(abs(big['mean']) / w['prior_scale'], 1)} prior sds from "
             "0.")
    table = Table(["coefficient", "mean", "sd", f"{pct_i} % interval", "sd / prior sd", "KL (nats)", "left prior"],
                  [[r["name"], f"{r['mean']:+.3f}", f(r["sd"], 3), f"[{r['lo']:+.3f}, {r['hi']:+.3f}]",
                    f(r["sd_ratio"], 3), f(r["kl"], 2), "yes" if r["left_prior"] else "no"] for r in rows])
    return Section("eval-weights", "1. Posterior weights against the prior", [
        Para(text), Figure("eval_weights.png", "(a) Posterior mean and credible interval against the prior's; (b) "
                                               "posterior-to-prior sd ratio (log scale; below the dashed line = left "
                                               "the prior); (c) KL divergence per coefficient."),
        table], level=3)


def _uncertainty_block(ev: EvaluationSection, s: Summary) -> Section:
    """Evaluation 2: aleatoric and epistemic predictive uncertainty."""
    u = ev["uncertainty"]
    a, c, w = u["all"], u["correct"], u["wrong"]
    n = a["n"]
    pct_i = int(round(100 * u["interval"]))
    text = (
        f"Across the {n:,} test messages the mean predictive entropy is {f(a['total_mean'], 3)} nats (a coin flip has "
        f"ln 2 = 0.693). Of this, **{pct(a['epistemic_share'])} is epistemic** (mutual information between label and "
        f"weights, mean {g(a['epistemic_mean'], 2)} nats) and the rest aleatoric: with {s['data']['n_train']:,} "
        f"training messages and {len(ev['weights']['rows'])} coefficients the posterior is narrow, so almost all "
        f"uncertainty comes from messages the {s['data']['components']} features cannot separate; more data of the "
        "same kind would barely reduce it, richer features could."
    )
    if w["n"]:
        nan = float("nan")
        epi_ratio = w["epistemic_mean"] / c["epistemic_mean"] if c["epistemic_mean"] else nan
        width_ratio = w["interval_width_mean"] / c["interval_width_mean"] if c["interval_width_mean"] else nan
        text += (
            f" Wrong predictions ({w['n']}) carry **{f(u['wrong_to_correct_total'], 1)}×** the entropy of correct ones "
            f"({f(w['total_mean'], 3)} vs {f(c['total_mean'], 3)} nats) and {f(epi_ratio, 1)}× the epistemic part; "
            f"their {pct_i} % intervals are {f(width_ratio, 1)}× as wide. Ranking messages by entropy puts a wrong "
            f"prediction above a correct one with probability {f(u['error_auroc_total'], 3)} (AUROC; by the epistemic "
            f"part alone {f(u['error_auroc_epistemic'], 3)})."
        )
    text += (f" {u['n_straddle']} messages ({pct(u['n_straddle'] / n)}) have a {pct_i} % credible interval containing "
             "0.5: their decision could flip under the posterior.")
    table = Table(["group", "messages", "total entropy", "aleatoric", "epistemic (MI)", "epistemic share",
                   f"{pct_i} % interval width"],
                  [[lab, str(grp["n"]), f(grp["total_mean"], 4), f(grp["aleatoric_mean"], 4),
                    g(grp["epistemic_mean"], 3), pct(grp["epistemic_share"], 2), f(grp["interval_width_mean"], 4)]
                   for lab, grp in (("all", a), ("correct", c), ("wrong", w))],
                  caption="Means over messages, nats.")
    return Section("eval-uncertainty", "2. Posterior predictive uncertainty per message", [
        Para(text), Figure("eval_uncertainty.png", f"(a) Posterior mean p(spam) and {pct_i} % credible interval of "
                                                   "every test message, sorted; ticks mark the true label. (b) Total "
                                                   "entropy against its epistemic part. (c) Mean entropy split into "
                                                   "aleatoric and epistemic parts."),
        table], level=3)


def _verdicts(vi: str, lr: str) -> str:
    """The calibration verdicts of the posterior predictive and the MAP in one clause, the verdict
    said once when both share it."""
    if vi == lr:
        return f"both the posterior predictive and the MAP are {vi}"
    return f"the posterior predictive is {vi}, while the MAP is {lr}"


def _calibration_block(ev: EvaluationSection, s: Summary) -> Section:
    """Evaluation 3: calibration against label noise and the MAP logistic regression."""
    cal = ev["calibration"]
    vi, lr = cal["models"]["vi"], cal["models"]["sklearn"]
    ps = s.get("meta", {}).get("config", {}).get("train", {}).get("prior_scale", 1.0)

    def verdict(m: Mapping[str, Any]) -> str:
        if m["ece"] <= m["ece_null"]["q95"]:
            return "within what label noise alone produces"
        if m["ece"] <= m["ece_null"]["q99"]:
            return "slightly above the 95th percentile of label noise (below the 99th)"
        return "above what label noise explains: miscalibrated"

    counts = vi["count"]
    worst = max((i for i in range(len(counts)) if counts[i] > 0), key=lambda i: abs(vi["freq"][i] - vi["mean_p"][i]))
    text = (
        f"The variational posterior predictive has **ECE {f(vi['ece'], 4)}**; scikit-learn's `LogisticRegression` on "
        f"the same features (C = s² = {g(ps, 3)}, i.e. the MAP estimate of the same model) has ECE {f(lr['ece'], 4)}. "
        f"A perfectly calibrated predictor with these probabilities would show ECE {f(vi['ece_null']['mean'], 4)} on "
        f"average and up to {f(vi['ece_null']['q95'], 4)} (95th percentile of {vi['ece_null']['n_sim']} simulations) "
        f"from the randomness of {sum(counts):,} test labels, so {_verdicts(verdict(vi), verdict(lr))}. The largest bin "
        f"gap ({f(abs(vi['freq'][worst] - vi['mean_p'][worst]), 3)}) is in the "
        f"bin {f(vi['edges'][worst], 1)}–{f(vi['edges'][worst + 1], 1)}, which holds only {counts[worst]} messages. "
        f"The two predictors differ by at most {f(cal['max_abs_diff_p'], 3)} in p(spam) on any message, and score "
        f"held-out lppd {f(vi['lppd_per_message'], 4)} vs {f(lr['lppd_per_message'], 4)} and Brier {f(vi['brier'], 4)} "
        f"vs {f(lr['brier'], 4)}: with a posterior this narrow, averaging over it changes the probabilities little."
    )
    table = Table(["predictor", "ECE", "ECE under perfect calibration (mean / 95th pct)", "largest bin gap",
                   "lppd (nats/msg)", "Brier", "accuracy", "ROC AUC"],
                  [[lab, f(m["ece"], 4), f"{f(m['ece_null']['mean'], 4)} / {f(m['ece_null']['q95'], 4)}",
                    f(m["mce"], 3), f(m["lppd_per_message"], 4), f(m["brier"], 4), pct(m["accuracy"]),
                    f(m["roc_auc"], 4)]
                   for lab, m in (("variational posterior predictive", vi), ("scikit-learn LogisticRegression", lr))])
    return Section("eval-calibration", "3. Calibration", [
        Para(text), Figure("eval_calibration.png", "(a) Reliability diagram: observed spam fraction against mean "
                                                   "predicted p(spam) per bin (the diagonal is perfect calibration). "
                                                   "(b) Messages per bin (log scale)."),
        table], level=3)


def _selective_block(ev: EvaluationSection) -> Section:
    """Evaluation 4: accuracy when the most uncertain messages are deferred."""
    sel = ev["selective"]
    t, e, o = sel["total"], sel["epistemic"], sel.get("oracle")
    full = t["full_accuracy"]
    a90, a80 = t["accuracy_at"]["0.90"], t["accuracy_at"]["0.80"]
    err_red = 1 - (1 - a90) / (1 - full) if full < 1 else float("nan")
    text = (
        f"Deciding every test message gives accuracy {pct(full)}. Deferring the 10 % with the highest predictive "
        f"entropy to a human lifts accuracy on the other 90 % to **{pct(a90)}** (the error rate falls from "
        f"{pct(1 - full)} to {pct(1 - a90)}, {pct(err_red, 0)} fewer errors); at 80 % coverage it is {pct(a80)}. "
        f"Deferring by the epistemic part alone gives {pct(e['accuracy_at']['0.90'])} at 90 % coverage: "
        + ("worse than total entropy, since most of the uncertainty (and most errors) is aleatoric."
           if e["accuracy_at"]["0.90"] < a90 else "as good as total entropy or better.")
        + (f" The oracle, deferring exactly the errors, reaches {pct(o['accuracy_at']['0.90'])}: the room left for a "
           "better uncertainty score." if o else "")
        + f" Area under the accuracy–coverage curve: {f(t['area'], 4)} (entropy), {f(e['area'], 4)} (epistemic)"
        + (f", {f(o['area'], 4)} (oracle)." if o else ".")
    )
    rows = [[lab, pct(cur["accuracy_at"]["0.80"]), pct(cur["accuracy_at"]["0.90"]), pct(cur["accuracy_at"]["0.95"]),
             pct(cur["full_accuracy"]), f(cur["area"], 4)]
            for lab, cur in (("total entropy", t), ("epistemic (MI)", e)) + ((("oracle", o),) if o else ())]
    return Section("eval-selective", "4. Selective prediction", [
        Para(text), Figure("eval_selective.png", "Accuracy on the messages decided automatically when the most "
                                                 "uncertain ones are deferred, against the share decided (coverage)."),
        Table(["defer by", "accuracy at 80 %", "at 90 %", "at 95 %", "at 100 %", "area"], rows)], level=3)


def _qualitative_block(ev: EvaluationSection) -> Section:
    """Evaluation 5: the most uncertain and the most confidently wrong messages."""
    q = ev["qualitative"]
    mu, cw = q["most_uncertain"], q["confidently_wrong"]
    parts = []
    if mu:
        n_spam = sum(r["label"] == "spam" for r in mu)
        parts.append(
            f"The {len(mu)} most uncertain messages have p(spam) between {f(min(r['p_mean'] for r in mu), 3)} and "
            f"{f(max(r['p_mean'] for r in mu), 3)} (entropy up to {f(max(r['total'] for r in mu), 4)} nats) and are "
            f"{n_spam} spam / {len(mu) - n_spam} ham: mostly short, informal texts whose embedding sits between the "
            "classes."
        )
    if cw:
        fn = sum(r["label"] == "spam" for r in cw)
        parts.append(
            f"The {len(cw)} most confidently wrong are {fn} spam called ham and {len(cw) - fn} ham called spam; the "
            f"worst has p(spam) = {g(cw[0]['p_mean'], 3)} for a true {cw[0]['label']}, with a 90 % interval "
            f"[{g(cw[0]['p_lo'], 3)}, {g(cw[0]['p_hi'], 3)}] that is narrow: the posterior is certain and wrong, "
            "because the error lies in what the features capture, not in the weights. Epistemic uncertainty cannot "
            "flag these."
        )
    else:
        parts.append("No test message is misclassified.")

    def table(rows: Sequence[Mapping[str, Any]], caption: str) -> Table:
        return Table(["row", "true", "p(spam)", "90 % interval", "entropy (nats)", "message"],
                     [[str(r["row"]), r["label"], f(r["p_mean"], 4), f"[{f(r['p_lo'], 4)}, {f(r['p_hi'], 4)}]",
                       f(r["total"], 4), r["text"]] for r in rows], caption=caption)

    blocks: list[Block] = [Para(" ".join(parts)), Figure("eval_examples.png", "Posterior mean p(spam) (dot) and 90 % "
                                                                              "credible interval (bar) "
                                                                           "of the listed messages, on a logit axis.")]
    if mu:
        blocks.append(table(mu, "Most uncertain test messages (row = index in the data set)."))
    if cw:
        blocks.append(table(cw, "Most confidently wrong test messages."))
    return Section("eval-examples", "5. The messages behind the numbers", blocks, level=3)


def _compare_sections(s: Summary) -> list[Section]:
    """Prior-sensitivity and model-size sweeps (``summary["compare"]``), or a note on how to add them."""
    cmp_ = s.get("compare")
    if not cmp_:
        return [Section("sweeps", "Prior sensitivity and model size", [Para(
            "Not computed yet: run `pyro-spam compare RUN_DIR` on this directory to add the prior-sensitivity and "
            "model-size sweeps and the ELBO-estimator comparison to this report.")])]
    st = cmp_["settings"]
    prior, size = cmp_["prior_sensitivity"], cmp_["model_size"]
    if st.get("sweep_optimizer", "adam") == "lbfgs":
        fitted = ("L-BFGS on the exact quadrature ELBO (deterministic: each fit is the optimum of its mean-field ELBO, "
                  "gradient below the run's `--grad-tol`)")
    else:
        fitted = (f"Adam with {'Pyro SVI' if st.get('sweep_engine', 'svi') == 'svi' else 'the manual engine'} and the "
                  f"analytic KL, S = {st['sweep_particles']} particles, full batches, learning rate {st['sweep_lr']:g}, "
                  f"the run's stop rule (at most {st['sweep_max_steps']} steps)")
    settings_text = (
        f"Sweep settings: {fitted}, warm starts, held-out lppd from {st['sweep_draws']} guide draws"
        + (" (quick mode)." if cmp_.get("quick") else ".")
    )
    rows = prior["rows"]
    by = {r["prior_scale"]: r for r in rows}
    per_scale = ", ".join(f"s = {r['prior_scale']:g}: {f(r['lppd'], 4)} ± {f(r['se'], 4)}" for r in rows)
    ptext = "Held-out lppd per message: " + per_scale + ". "
    if 1.0 in by:
        others = [r for r in rows if r["prior_scale"] != 1.0 and "diff_vs_1" in r]
        for r in others:
            z = abs(r["diff_vs_1"]) / r["diff_se"] if r["diff_se"] > 0 else float("inf")
            effect = ("a real loss" if r["diff_vs_1"] < 0 and z > 2 else "a real gain" if r["diff_vs_1"] > 0 and z > 2
                      else "no detectable change")
            ptext += (f"Against s = 1, s = {r['prior_scale']:g} changes lppd by {r['diff_vs_1']:+.4f} ± "
                      f"{f(r['diff_se'], 4)} (paired SE; {f(z, 1)} SE: {effect}). ")
        small = min(rows, key=lambda r: r["prior_scale"])
        if small["prior_scale"] < 1 and prior.get("coef_names"):
            j = max(range(len(small["loc"])), key=lambda i: abs(by[1.0]["loc"][i]))
            ptext += (f"The tight prior shrinks `{prior['coef_names'][j]}` from {by[1.0]['loc'][j]:+.2f} to "
                      f"{small['loc'][j]:+.2f}. ")
        ptext += (f"With {s['data']['n_train']:,} training messages the likelihood outweighs any prior that is not "
                  "much tighter than the scale of the effects.")
    sec6 = Section("prior", "6. Prior sensitivity", [
        Para(ptext), Figure("compare_prior_sensitivity.png", "(a) Held-out lppd (± 1 SE) per prior scale; (b) "
                                                             "posterior weights under each prior."),
        Table(["prior sd", "lppd (nats/msg)", "SE", "Δ vs s = 1 (paired)", "KL(q‖p) (nats)", "steps", "time (s)"],
              [[f"{r['prior_scale']:g}", f(r["lppd"], 4), f(r["se"], 4),
                f"{r['diff_vs_1']:+.4f} ± {f(r['diff_se'], 4)}" if "diff_vs_1" in r else "n/a", f(r["kl_total"], 1),
                str(r["steps"]), f(r["seconds"], 1)]
               for r in rows]), Para(settings_text)], level=3)

    kinds = size["kinds"]
    ks = size["ks"]
    mtext = []
    for kind, res in kinds.items():
        mtext.append(f"{kind.capitalize()} terms: best K = {res['best_k']} (lppd {f(max(res['lppd']), 4)}); the "
                     f"smallest K within one paired SE of the best is {res['one_se_k']}")
    text = "; ".join(mtext) + "."
    if "polynomial" in kinds and "linear" in kinds:
        p, li = kinds["polynomial"], kinds["linear"]
        if ks and ks[0] == 1:
            text += (f" At K = 1 both use the same single term x1 ({f(p['lppd'][0], 4)} vs {f(li['lppd'][0], 4)}), a "
                     "check on the sweep.")
        rk = size.get("run_k")
        if rk in ks:
            i = ks.index(rk)
            text += (f" At this run's K = {rk}, linear terms score {f(li['lppd'][i], 4)} against {f(p['lppd'][i], 4)} "
                     f"for polynomial terms ({li['lppd'][i] - p['lppd'][i]:+.4f} nats/message).")
        better = "linear" if max(li["lppd"]) > max(p["lppd"]) else "polynomial"
        gap = max(li["lppd"]) - max(p["lppd"])
        text += (f" Overall the {better} terms predict better ({gap:+.4f} nats/message between the two best models)"
                 + (": a plausible reason, not tested here, is that x_j^j for large j is dominated by a few extreme "
                    "messages, so the extra components add little through it." if better == "linear" else "."))
    text += f" The intercept-only model scores {f(size['intercept_only'], 4)}."
    rows7 = [[str(k)] + [f"{f(kinds[kd]['lppd'][i], 4)} ± {f(kinds[kd]['se'][i], 4)}" for kd in kinds]
             for i, k in enumerate(ks)]
    sec7 = Section("size", "7. Model size: K and the kind of terms", [
        Para(text), Figure("compare_model_size.png", "Held-out lppd per message against the number of PCA components "
                                                     "K, "
                                                    "polynomial versus linear terms (band ± 1 SE; star = best)."),
        Table(["K"] + [f"{kd} lppd ± SE" for kd in kinds], rows7), Para(settings_text)], level=3)
    return [sec6, sec7]


def _calibration_insight(vi: Mapping[str, Any], lr: Mapping[str, Any] | None) -> str:
    """The write-up's calibration sentence: the posterior predictive against label noise, and the MAP
    logistic regression beside it (when the summary has it)."""
    good = vi["ece"] <= vi["ece_null"]["q95"]
    text = (f"Calibration is good (ECE {f(vi['ece'], 3)}, within label noise up to {f(vi['ece_null']['q95'], 3)})" if good
            else f"Calibration is imperfect (ECE {f(vi['ece'], 3)} above the noise level {f(vi['ece_null']['q95'], 3)})")
    if not lr or "ece_null" not in lr:
        return text + "."
    lr_good = lr["ece"] <= lr["ece_null"]["q95"]
    if good and lr_good:
        return (text + f", and so is the MAP logistic regression's (ECE {f(lr['ece'], 3)}): with this much data, posterior "
                "averaging changes little.")
    if good:
        return text + f", better than the MAP logistic regression's (ECE {f(lr['ece'], 3)}, above its noise level)."
    if lr_good:
        return text + f", while the MAP logistic regression's is within label noise (ECE {f(lr['ece'], 3)})."
    return text + f", and so is the MAP logistic regression's (ECE {f(lr['ece'], 3)})."


def writeup(s: Summary) -> str:
    """The 100–500-word write-up (motivation, implementation, insights) from this run's numbers, as Markdown."""
    d = s["data"]
    ev = s.get("evaluation")
    kind = _described_fit(s)
    t = s["fits"][kind]["test"] if kind else {}
    motivation = (
        f"**Motivation.** Accuracy says little here: {pct(1 - d['spam_rate'])} of the messages are ham, so always "
        f"answering ham scores {pct(1 - d['spam_rate'])} against the model's {pct(t.get('accuracy'))}. A variational "
        "posterior gives more than a label: a distribution over weights and, for every message, a distribution over "
        "p(spam). We ask what the data taught the model, where its uncertainty comes from, whether its probabilities "
        "can be trusted, and whether the uncertainty is useful in practice."
    )
    impl = (
        f"**Implementation.** From {ev['n_draws'] if ev else 'the'} draws of the fitted mean-field guide we compute "
        "each coefficient's posterior-to-prior sd ratio and KL; per message the posterior mean and 90 % interval of "
        "p(spam), and the entropy decomposition H[E p] = E H[p] + I(y; w) into aleatoric and epistemic parts; a "
        "reliability diagram with ECE, judged against ECEs simulated under perfect calibration and against "
        "scikit-learn's MAP logistic regression; and accuracy versus coverage when the most uncertain messages are "
        "deferred."
    )
    cmp_ = s.get("compare")
    est = s.get("estimators")
    has_est = bool(est and est.get("table"))
    if cmp_ and has_est:
        impl += (" Refits, warm-started, vary the prior scale and the model size; repeated ELBO evaluations at fixed "
                 "guide parameters measure estimator variance.")
    elif cmp_:
        impl += " Refits, warm-started, vary the prior scale and the model size."
    elif has_est:
        impl += " Repeated ELBO evaluations at fixed guide parameters measure estimator variance."
    if not cmp_ or not has_est:
        missing = [what for what, done in (("the prior-scale and model-size sweeps", cmp_),
                                           ("the ELBO-estimator comparison", has_est)) if not done]
        what = " and ".join(missing)
        verb = "is" if missing == ["the ELBO-estimator comparison"] else "are"
        impl += f" {what[0].upper() + what[1:]} {verb} not computed yet (`pyro-spam compare` adds {'it' if verb == 'is' else 'them'})."
    ins = ["**Insights.**"]
    if ev:
        w, u, c = ev["weights"], ev["uncertainty"], ev["calibration"]["models"]["vi"]
        ins.append(f"{w['n_left']} of {len(w['rows'])} coefficients left the prior, yet only "
                   f"{pct(u['all']['epistemic_share'])} of the predictive entropy is epistemic: the weights are well "
                   "determined and the remaining uncertainty lives in the messages.")
        ins.append(f"Errors have {f(u['wrong_to_correct_total'], 1)}× the entropy of correct predictions, and "
                   "deferring the 10 % most uncertain messages raises accuracy from "
                   f"{pct(ev['selective']['total']['full_accuracy'])} to "
                   f"{pct(ev['selective']['total']['accuracy_at']['0.90'])}.")
        ins.append(_calibration_insight(c, ev["calibration"]["models"].get("sklearn")))
        cw = ev["qualitative"]["confidently_wrong"]
        if cw:
            ins.append("The confidently wrong messages have narrow intervals: the remaining errors come from the "
                       "features, not the weights.")
    if cmp_:
        kinds = cmp_["model_size"]["kinds"]
        if "linear" in kinds and "polynomial" in kinds:
            ins.append(f"Linear terms reach lppd {f(max(kinds['linear']['lppd']), 3)} (K = "
                       f"{kinds['linear']['best_k']}) against {f(max(kinds['polynomial']['lppd']), 3)} for the "
                       f"course's polynomial terms (K = {kinds['polynomial']['best_k']}).")
        rows = cmp_["prior_sensitivity"]["rows"]
        cost = next((f"{-r['diff_vs_1']:.3f}" for r in rows if r["prior_scale"] == 0.1 and "diff_vs_1" in r), "n/a")
        ins.append("Prior scales of 1 and 10 predict alike; 0.1 shrinks the weights and costs " + cost
                   + " nats per message.")
    insight = estimator_insight(est) if has_est else None
    if insight:
        ins.append(insight)
    return "\n\n".join([motivation, impl, " ".join(ins)])


_NOT_CONVERGED = {
    "budget": ("used its whole step budget without meeting the convergence criterion, so its guide is the best average "
               "so far, not a verified optimum",
               "Try more steps (`--steps`), more particles (`-S`) or a larger `--batch-size`."),
    "stalled": ("stopped because the L-BFGS line search found no further decrease before the gradient tolerance was met "
                "(rounding in float64 on extreme data), so its guide is close to, not verified at, the optimum",
                "Try a larger `--grad-tol`."),
}
"""Stop reasons that get a banner at the top of the report: what happened, and what to try."""


# Every `pyro-spam run` option that sets part of the run's configuration, in the order the Reproduce
# command lists them: (flag, section of ``RunConfig.to_dict()`` ("" = top level), field, shown when).
# "shown when" names the options printed even at their default value (the run's headline settings, and
# the options its optimiser, guide or stop rule reads); every other option is printed when it differs
# from the default. tests/test_reproduce.py checks this table against the parser (every option that
# sets a RunConfig field is here) and parses the printed command back to the same RunConfig.
_ALWAYS = "always"
_RUN_OPTIONS: tuple[tuple[str, str, str, str | None], ...] = (
    ("--data", "", "data", None),
    ("-K", "features", "components", _ALWAYS),
    ("--variance-target", "features", "variance_target", "auto"),
    ("--features", "features", "kind", _ALWAYS),
    ("--test-size", "features", "test_size", _ALWAYS),
    ("--elbo", "", "elbos", _ALWAYS),
    ("--optimizer", "train", "optimizer", "lbfgs"),
    ("--grad-tol", "train", "grad_tol", "lbfgs"),
    ("--guide", "train", "guide", None),
    ("--rank", "train", "rank", "lowrank"),
    ("--engine", "train", "engine", _ALWAYS),
    ("-S", "train", "particles", _ALWAYS),
    ("--batch-size", "train", "batch_size", _ALWAYS),
    ("--stop", "train", "stop", _ALWAYS),
    ("--window", "train", "window", "plateau"),
    ("--tol", "train", "tol", "plateau"),
    ("--steps", "train", "max_steps", _ALWAYS),
    ("--lr", "train", "lr", _ALWAYS),
    ("--prior-scale", "train", "prior_scale", _ALWAYS),
    ("--seed", "train", "seed", _ALWAYS),
    ("--draws", "", "num_draws", _ALWAYS),
)
# A field missing from an older summary means the value the run used, not today's default:
# pyro-spam 0.1.0 stopped at an ELBO plateau (its summaries have no ``stop``); settings added later
# have the value older runs used (config.LEGACY_TRAIN).
_LEGACY_VALUES = {("train", "stop"): "plateau", **{("train", k): v for k, v in LEGACY_TRAIN.items()}}
# Derived, not chosen: each fit's ELBO comes from ``elbos`` (RunConfig.train_for).
_DERIVED_FIELDS = {("train", "elbo")}


def _config_value(config: Mapping[str, Any], defaults: Mapping[str, Any], section: str, field: str) -> Any:
    part = (config.get(section) or {}) if section else config
    if field in part:
        return part[field]
    if (section, field) in _LEGACY_VALUES:
        return _LEGACY_VALUES[(section, field)]
    return (defaults[section] if section else defaults)[field]


def _run_defaults() -> dict[str, Any]:
    return RunConfig().to_dict()


def _option_text(field: str, value: Any) -> str:
    if field == "elbos":
        return "both" if list(value) in ([], ["trace", "meanfield"]) else ",".join(value)
    if field == "batch_size" and value is None:
        return "full"
    return str(value)


def reproduce_args(config: Mapping[str, Any]) -> list[str]:
    """The ``pyro-spam run`` arguments (after ``run``, without ``--out``) that rebuild the run
    configuration ``config`` (``RunConfig.to_dict()``, as in ``summary["meta"]["config"]``): the run's
    headline settings and every other option whose value differs from the default.

    >>> from pyro_spam.config import RunConfig, TrainConfig
    >>> args = reproduce_args(RunConfig(train=TrainConfig(stop="plateau", window=30)).to_dict())
    >>> args[args.index("--stop"):args.index("--steps")]
    ['--stop', 'plateau', '--window', '30', '--tol', '0.5']
    """
    defaults = _run_defaults()
    modes = {_config_value(config, defaults, "train", k) for k in ("optimizer", "guide", "stop")}
    modes.add(_config_value(config, defaults, "features", "components"))
    args: list[str] = []
    for flag, section, field, shown in _RUN_OPTIONS:
        value = _config_value(config, defaults, section, field)
        default = (defaults[section] if section else defaults)[field]
        if field == "elbos":
            default = list(default)
            value = list(value) or default
        if shown == _ALWAYS or shown in modes or value != default:
            args += [flag, _option_text(field, value)]
    return args


def unflagged_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Settings of ``config`` that differ from the default but that no ``pyro-spam run`` option sets
    (e.g. ``adam_beta2`` given to :func:`pyro_spam.run`): the command of :func:`reproduce_args` does
    not reproduce them.

    A setting the configuration lacks had its legacy value (a file from before the setting existed).

    >>> from pyro_spam.config import RunConfig, TrainConfig
    >>> unflagged_settings(RunConfig(train=TrainConfig(adam_beta2=0.95, lr=0.05)).to_dict())
    {'adam_beta2': 0.95}
    >>> unflagged_settings({"train": {"lr": 0.05}})  # saved before adam_beta1 existed
    {'adam_beta1': 0.9}
    """
    defaults = _run_defaults()
    flagged = {(section, field) for _, section, field, _ in _RUN_OPTIONS} | _DERIVED_FIELDS
    out: dict[str, Any] = {}
    for section in ("features", "train"):
        part = dict(config.get(section) or {})
        part.update({f: v for (sec, f), v in _LEGACY_VALUES.items() if sec == section and f not in part})
        for field, value in part.items():
            if (section, field) not in flagged and value != defaults[section].get(field):
                out[field] = value
    return out


def reproduce_command(config: Mapping[str, Any], out: str | Path) -> str:
    """The shell command that repeats a run with configuration ``config`` into the directory ``out``.

    >>> from pyro_spam.config import RunConfig, TrainConfig
    >>> print(reproduce_command(RunConfig(train=TrainConfig(guide="fullrank")).to_dict(), "runs/again"))  # doctest: +ELLIPSIS
    pyro-spam run -K 5 --features polynomial --test-size 0.2 --elbo both --guide fullrank --engine svi ... --out runs/again
    """
    return shlex.join(["pyro-spam", "run", *reproduce_args(config), "--out", str(out)])


# Defaults of the `pyro-spam diagnose` options the Reproduce section prints only when a run's recorded
# value differs (the report imports no CLI code; tests/test_report_wording.py checks them against the parser).
_DIAGNOSE_DEFAULTS = {"--chains": 2, "--warmup": 500, "--nuts-draws": 1000, "--sims": 200, "--sbc-draws": 1000,
                      "--sbc-optimizer": "lbfgs"}
# SBC settings no `pyro-spam diagnose` option sets, at their defaults (pyro_spam.calibration.SbcSettings).
_SBC_UNFLAGGED = {"levels": [0.5, 0.9], "max_redraws": 100, "grad_tol": 0.0001, "quad_nodes": 16}


def _flag(flag: str, value: Any) -> list[str]:
    """``[flag, value]`` when ``value`` is recorded and differs from the option's default, else ``[]``."""
    return [] if value is None or value == _DIAGNOSE_DEFAULTS[flag] else [flag, str(value)]


def _run_seed(s: Summary) -> Any:
    meta = s.get("meta", {})
    return ((meta.get("config") or {}).get("train") or {}).get("seed", meta.get("seed"))


def _nuts_command(s: Summary, name: str) -> tuple[list[str], str] | None:
    """``pyro-spam diagnose NAME --nuts`` with the options the recorded NUTS run differs in; ``None``
    when the summary holds no NUTS run or does not record its settings."""
    n = (s.get("diagnostics") or {}).get("nuts")
    if not isinstance(n, Mapping) or not all(k in n for k in ("chains", "warmup", "draws_per_chain")):
        return None
    args = ["pyro-spam", "diagnose", name, "--nuts", *_flag("--chains", n["chains"]), *_flag("--warmup", n["warmup"]),
            *_flag("--nuts-draws", n["draws_per_chain"])]
    seed = n.get("seed")
    if isinstance(seed, int) and seed >= 0 and seed != _run_seed(s):
        args += ["--seed", str(seed)]
    note = "" if n.get("full_mass", True) else " (the run used a diagonal mass matrix, which no option sets)"
    return args, note


def _sbc_commands(s: Summary, name: str) -> list[tuple[list[str], str]]:
    """``pyro-spam diagnose NAME --sbc …`` for the recorded SBC studies (one command when both share
    their settings), each with a note on settings no option sets."""
    dg = s.get("diagnostics") or {}
    studies = {}
    for study, key in (("prior", "sbc"), ("posterior", "posterior_sbc")):
        st = summary_value(dg, f"{key}/info/settings") if isinstance(dg, Mapping) else None
        if isinstance(st, Mapping):
            studies[study] = st

    def options(st: Mapping[str, Any]) -> list[str]:
        out = [*_flag("--sims", st.get("sims")), *_flag("--sbc-draws", st.get("draws")),
               *_flag("--sbc-optimizer", st.get("optimizer"))]
        seed = st.get("seed")
        return out + (["--seed", str(seed)] if seed is not None and seed != _run_seed(s) else [])

    def note(st: Mapping[str, Any]) -> str:
        extra = {k: st[k] for k, v in _SBC_UNFLAGGED.items() if k in st and st[k] != v}
        return (" (it also set " + ", ".join(f"`{k} = {v!r}`" for k, v in extra.items())
                + ", which no option sets)") if extra else ""

    if len(studies) == 2 and options(studies["prior"]) == options(studies["posterior"]) and \
            note(studies["prior"]) == note(studies["posterior"]):
        st = studies["prior"]
        return [(["pyro-spam", "diagnose", name, "--sbc", *options(st)], note(st))]
    return [(["pyro-spam", "diagnose", name, "--sbc", study, *options(st)], note(st)) for study, st in studies.items()]


def follow_up_commands(s: Summary, name: str) -> list[str]:
    """The commands that added NUTS, SBC and the compare results to the run directory ``name``, as
    Markdown (code spans plus notes), from what summary.json records about them; ``[]`` for a plain
    run. Posterior SBC follows NUTS when it used the NUTS draws as its reference, else precedes it."""
    cmds: list[tuple[list[str], str]] = []
    nuts = _nuts_command(s, name)
    sbc = _sbc_commands(s, name)
    reference = str(summary_value(s.get("diagnostics") or {}, "posterior_sbc/info/reference") or "")
    sbc_first = bool(sbc) and bool(reference) and not reference.startswith("the run's NUTS draws")
    cmds += sbc if sbc_first else []
    cmds += [nuts] if nuts else []
    cmds += [] if sbc_first else sbc
    cmp_ = s.get("compare")
    if cmp_:
        st = cmp_.get("settings", {})
        args = ["pyro-spam", "compare", name, *(["--quick"] if cmp_.get("quick") else []),
                "--optimizer", str(st.get("sweep_optimizer", "adam"))]
        if st.get("split_batch_size") is not None:
            args += ["--batch-size", str(st["split_batch_size"])]
        cmds.append((args, ""))
    return [f"`{shlex.join(args)}`{note}" for args, note in cmds]


def _reproduce_section(s: Summary, name: str) -> Section:
    """The command that reproduces the run (and what was added to it since), package versions and timings.

    summary.json does not record the path the run was written to, only the configuration: the
    command names the directory by ``name`` (the run directory's name) and says so.
    """
    meta = s.get("meta", {})
    cfg = meta.get("config", {})
    follow = follow_up_commands(s, name)
    also = " (and the commands after it)" if follow else ""
    blocks: list[Block] = [
        Para(f"Same seed, same numbers. The run's settings as a command; `{shlex.quote(name)}` is this run directory's "
             "name, not necessarily the path it was written to (summary.json does not record that), so give `--out`"
             f"{also} the path where the repeat should go:"),
        Para(f"`{reproduce_command(cfg, name)}`")]
    extra = unflagged_settings(cfg)
    if extra:
        settings = ", ".join(f"`{k} = {v!r}`" for k, v in extra.items())
        one = len(extra) == 1
        blocks.append(Para(f"It also set {settings}, which no option of the command sets, so the command does not repeat "
                           f"{'it' if one else 'them'}; in Python, `pyro_spam.run(out, config=summary['meta']['config'])` repeats the "
                           "whole configuration."))
    if len(follow) == 1:
        blocks.append(Para(f"followed by {follow[0]}."))
    elif follow:
        blocks += [Para("followed by:"), Bullets(follow)]
    vers = meta.get("versions", {})
    if vers:
        blocks.append(Table(["package", "version"], [[k, str(v)] for k, v in vers.items()]))
    times = []
    if s.get("timings"):
        times.append(["pyro-spam run, total", f(s["timings"].get("total_seconds"), 1)])
    ev_sec = (s.get("evaluation") or {}).get("seconds")
    if ev_sec:
        times.append([f"run: evaluations 1–5 with figures (CPU {f(ev_sec.get('cpu'), 1)} s)",
                      f(ev_sec.get("wall"), 1)])
    if s.get("compare"):
        times += [[f"compare: {k.replace('_', ' ')}", f(v, 1)] for k, v in s["compare"].get("seconds", {}).items()]
    if times:
        blocks.append(Table(["step", "wall-clock (s)"], times))
    return Section("reproduce", "Reproduce", blocks)


def build_sections(summary: Summary, run_dir: Path, figures_available: Sequence[str] = (),
                   name: str | None = None) -> tuple[str, list[Section]]:
    """The report's title and sections (document model shared by the Markdown and HTML writers)."""
    s = summary
    d = s["data"]
    name = name or run_dir.name
    title = f"pyro-spam report: {name}"
    secs: list[Section] = []
    findings = _key_findings(s)
    intro = Para(f"Variational Bayesian logistic regression on {d['n']:,} messages ({d.get('source')}), "
                 f"{d['feature_kind']} terms of K = {d['components']} PCA components of {d['dim']}-dimensional "
                 "embeddings; mean-field Normal guide fitted with "
                 f"{', '.join(elbo_label(k) for k in (s.get('fits') or {}))}.")
    blocks: list[Block] = [intro]
    for reason, (what, advice) in _NOT_CONVERGED.items():
        kinds = [k for k, fi in (s.get("fits") or {}).items() if fi.get("stop_reason") == reason]
        if kinds:
            blocks.append(Para(f"**Not converged:** the {' and '.join(elbo_label(k) for k in kinds)} fit {what} (see Fits). {advice}"))
    secs.append(Section("summary", "Key findings", [*blocks, Bullets(findings)]))
    secs.append(_data_section(s))
    secs.append(_fits_section(s))
    cc = _crosscheck_section(s)
    if cc is not None:
        secs.append(cc)
    secs.extend(diagnostics_sections(s))
    ev = s.get("evaluation")
    evsec = Section("evaluation", "Advanced evaluation")
    if ev:
        evsec.blocks.append(Para(f"Evaluations 1–5 use the {ev.get('n_draws', '')} posterior draws of the "
                                 f"{elbo_label(ev['fit'])} fit on the {d['n_test']:,} held-out test messages."))
        secs.append(evsec)
        secs += [_weights_block(ev), _uncertainty_block(ev, s), _calibration_block(ev, s), _selective_block(ev),
                 _qualitative_block(ev)]
    else:
        evsec.blocks.append(Para("No evaluation in this run's summary."))
        secs.append(evsec)
    secs += _compare_sections(s)
    secs += estimator_sections(s.get("estimators"))
    wu = writeup(s)
    secs.append(Section("writeup", f"Write-up: advanced evaluation ({word_count(wu)} words)",
                        [Para(p) for p in wu.split("\n\n")]))
    secs.append(_reproduce_section(s, name))
    shown = {b.name for sec in secs for b in sec.blocks if isinstance(b, Figure)}
    extra = [n for n in figures_available if n not in shown]
    if extra:
        secs.append(Section("other-figures", "Other figures", [Figure(n, n) for n in extra]))
    # Drop figures that do not exist (e.g. a section's figure from an older run).
    avail = set(figures_available)
    for sec in secs:
        sec.blocks = [b for b in sec.blocks if not isinstance(b, Figure) or b.name in avail]
    return title, secs
