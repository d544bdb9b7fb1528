"""``pyro-spam compare RUN_DIR [--quick]``: the studies of :mod:`pyro_spam.studies` run on a finished
run and written into its directory.

Reads the run with :func:`pyro_spam.io.run_reader.read_run`, refits around its primary fit
(:func:`pyro_spam.summary.primary_fit`), adds ``summary["compare"]`` (the sweeps of
:mod:`pyro_spam.studies`) and ``summary["estimators"]`` (the estimator lab,
:mod:`pyro_spam.estimator_lab`), ``estimator_curves.npz`` and the figures, and re-renders the report.

Python use::

    from pyro_spam.pipeline.compare import run_compare
    summary = run_compare("runs/my-run", quick=True)
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..data import load_data
from ..errors import PyroSpamError
from ..estimator_lab import REACH_LOC_SD, REACH_SCALE_REL, estimator_variance, minibatch_split, optimum, stl_floor, training_runs
from ..io.run_reader import read_run, read_summary
from ..io.rundir import SUMMARY, save_figure, to_jsonable, write_json, write_npz
from ..report import render_report
from ..report.estimators import ranking_S
from ..studies import FULL, QUICK, CompareSettings, model_size_sweep, prior_sensitivity
from ..summary import primary_fit

COMPARE_FIGURES = (
    "compare_prior_sensitivity.png", "compare_model_size.png", "estimators_variance.png", "estimators_training.png",
)
"""The figures ``compare`` always draws, in the order the report shows them."""
SPLIT_FIGURE = "estimators_minibatch_split.png"
"""Drawn when the estimator lab has a mini-batch split (a ``--batch-size`` run, or ``compare --batch-size``)."""


def _primary_guide(summary: Mapping[str, Any]) -> tuple[str, np.ndarray, np.ndarray]:
    """The primary fit of a run and its guide's ``(loc, scale)`` as stored in ``summary.json``."""
    fits = summary.get("fits") or {}
    if not fits:
        raise PyroSpamError("the run has no fits to compare")
    kind = primary_fit(fits)
    return kind, np.asarray(fits[kind]["loc"], dtype=np.float64), np.asarray(fits[kind]["scale"], dtype=np.float64)


def draw_compare_figures(run_dir: str | Path, summary: Mapping[str, Any] | None = None) -> list[str]:
    """(Re)draw the comparison figures from ``summary.json`` and ``estimator_curves.npz``."""
    from ..plots.estimators import plot_estimator_variance, plot_minibatch_split, plot_training_runs
    from ..plots.evaluation import plot_model_size, plot_prior_sensitivity

    run_dir = Path(run_dir)
    s = summary if summary is not None else read_summary(run_dir)
    c, est = s["compare"], s["estimators"]
    with np.load(run_dir / "estimator_curves.npz", allow_pickle=False) as z:
        labels = [str(v) for v in z["labels"]]
        curves = {lab: {**est["runs"][lab], "elbo": z[f"elbo_{i}"]} for i, lab in enumerate(labels)}
    figs = {
        COMPARE_FIGURES[0]: plot_prior_sensitivity(c["prior_sensitivity"])[0].figure,
        COMPARE_FIGURES[1]: plot_model_size(c["model_size"]).figure,
        COMPARE_FIGURES[2]: plot_estimator_variance(est),
        COMPARE_FIGURES[3]: plot_training_runs(curves, reference_elbo=(est.get("exact") or {}).get("fitted", {}).get("elbo")),
    }
    if est.get("minibatch_split"):
        figs[SPLIT_FIGURE] = plot_minibatch_split(est["minibatch_split"])
    for name, fig in figs.items():
        save_figure(fig, run_dir / name)
    return list(figs)


def run_compare(run_dir: str | Path, *, quick: bool = False, settings: CompareSettings | None = None,
                optimizer: str | None = None, batch_size: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the sweeps and the estimator lab on the run in ``run_dir`` and add them to it.

    ``optimizer`` overrides the settings' ``sweep_optimizer`` (``"lbfgs"``, the default, or ``"adam"``);
    ``batch_size`` the settings' ``split_batch_size`` (the mini-batch of the Monte Carlo /
    subsampling split; default: the run's batch size, none for a full-batch run).
    Writes ``summary["compare"]`` (prior sensitivity, model size, settings) and
    ``summary["estimators"]`` (variance table, ratios, training curves) to ``summary.json``
    atomically, the figures, ``estimator_curves.npz``, and re-renders ``report.md``/``report.html``.
    Returns the updated summary. A folder without a run raises :class:`~pyro_spam.errors.ModelFileError`
    (a :class:`~pyro_spam.errors.PyroSpamError`) from :func:`~pyro_spam.io.run_reader.read_run`.
    """
    t_all = time.perf_counter()
    s = settings or (QUICK if quick else FULL)
    if optimizer is not None:
        if optimizer not in ("lbfgs", "adam"):
            raise PyroSpamError(f"optimizer must be 'lbfgs' or 'adam' (got {optimizer!r})")
        s = dataclasses.replace(s, sweep_optimizer=optimizer)
    if batch_size is not None:
        s = dataclasses.replace(s, split_batch_size=int(batch_size))
    run = read_run(run_dir)
    run_dir, summary, config, feats = run.path, run.summary, run.config, run.features
    base = config.train
    kind, loc, scale = _primary_guide(summary)
    coef_names = summary["fits"][kind].get("coef_names")
    timings: dict[str, float] = {}

    t = time.perf_counter()
    prior = prior_sensitivity(feats["X_train"], feats["y_train"], feats["X_test"], feats["y_test"], base, s,
                              init=(loc, scale), coef_names=coef_names, progress=progress)
    prior["run_prior_scale"] = base.prior_scale
    timings["prior_sensitivity"] = time.perf_counter() - t

    t = time.perf_counter()
    ds = load_data(config.data)
    size = model_size_sweep(ds, config.features, base, s, progress=progress)
    size["run_k"] = int(summary.get("data", {}).get("components", feats["X_train"].shape[1]))
    size["run_kind"] = config.features.kind
    timings["model_size"] = time.perf_counter() - t

    x, y = feats["X_train"], feats["y_train"]
    split_b = s.split_batch_size if s.split_batch_size is not None else base.batch_size
    if split_b is not None and not 0 < split_b < len(y):
        raise PyroSpamError(f"--batch-size must be between 1 and {len(y) - 1} for this run's {len(y)} training rows (got {split_b})")
    t = time.perf_counter()
    ref = optimum(x, y, prior_scale=base.prior_scale)
    k1 = loc.size
    guides = {"initial": (np.zeros(k1), np.full(k1, base.init_scale)), "fitted": ref}
    est = estimator_variance(x, y, guides, s.est_S, s.est_reps, prior_scale=base.prior_scale, seed=base.seed,
                             n_boot=s.bootstrap, progress=progress)
    est["fitted_from"] = "exact optimum (L-BFGS on the quadrature ELBO)"
    est["stl_floor"] = stl_floor(x, y, *ref, prior_scale=base.prior_scale)
    est["coef_names"] = coef_names
    timings["estimator_variance"] = time.perf_counter() - t
    est["minibatch_split"] = None
    if split_b is not None:
        t = time.perf_counter()
        est["minibatch_split"] = minibatch_split(x, y, *ref, int(split_b), s.est_S, s.est_reps, prior_scale=base.prior_scale,
                                                 seed=base.seed, progress=progress)
        timings["minibatch_split"] = time.perf_counter() - t

    t = time.perf_counter()
    run_cfg = dataclasses.replace(base, particles=s.curve_particles or base.particles, max_steps=s.curve_max_steps or base.max_steps)
    runs = training_runs(x, y, run_cfg, reference=ref, progress=progress)
    timings["training_runs"] = time.perf_counter() - t
    est["optimum"] = {"loc": ref[0], "scale": ref[1]}
    est["runs"] = {k: {kk: vv for kk, vv in v.items() if kk != "elbo"} for k, v in runs.items()}
    est["reach"] = {"loc_sd": REACH_LOC_SD, "scale_rel": REACH_SCALE_REL}
    est["run_config"] = {"optimizer": "adam", "engine": "svi", "particles": run_cfg.particles, "max_steps": run_cfg.max_steps,
                         "lr": run_cfg.lr, "batch_size": run_cfg.batch_size, "stop": run_cfg.stop, "seed": run_cfg.seed}
    labels = list(runs)
    write_npz(run_dir / "estimator_curves.npz", **{f"elbo_{i}": runs[k]["elbo"] for i, k in enumerate(labels)},
              labels=np.array(labels, dtype=str), seconds=np.array([runs[k]["seconds"] for k in labels]))

    timings["total"] = time.perf_counter() - t_all
    summary["compare"] = {"settings": dataclasses.asdict(s), "quick": bool(quick), "prior_sensitivity": prior,
                          "model_size": size, "seconds": timings, "figures": list(COMPARE_FIGURES)}
    summary["estimators"] = est
    figures = summary.setdefault("figures", [])
    drawn = COMPARE_FIGURES + ((SPLIT_FIGURE,) if est["minibatch_split"] else ())
    figures.extend(n for n in drawn if n not in figures)
    summary["compare"]["figures"] = list(drawn)
    summary = json.loads(json.dumps(to_jsonable(summary)))
    write_json(run_dir / SUMMARY, summary)  # the expensive numbers first, then what is drawn from them
    draw_compare_figures(run_dir, summary)
    render_report(run_dir)
    return dict(read_summary(run_dir))


def format_compare_summary(summary: Mapping[str, Any], run_dir: str | Path) -> str:
    """A few lines for the terminal: the sweeps' best settings and the variance ratio at S = 64."""
    c, est = summary["compare"], summary["estimators"]
    lines = []
    for r in c["prior_sensitivity"]["rows"]:
        lines.append(f"prior sd {r['prior_scale']:>5g}: held-out lppd {r['lppd']:.4f} ± {r['se']:.4f} nats/msg")
    for kind, res in c["model_size"]["kinds"].items():
        lines.append(f"{kind:>10} terms: best K={res['best_k']} (lppd {max(res['lppd']):.4f}), "
                     f"one-SE K={res['one_se_k']}")
    S = max(ranking_S(est), default=None)  # the S the report ranks at: 64, else the largest measured
    for r in est["ratios"]:
        if r["guide"] == "fitted" and int(r["S"]) == S and r["estimator"] in ("stl", "rqmc", "score"):
            lines.append(f"gradient variance {r['estimator']} / trace at S={S}, fitted guide: loc {r['loc_ratio']:.3g} "
                         f"[{r['loc_lo']:.3g}, {r['loc_hi']:.3g}], log-scale {r['log_scale_ratio']:.3g} "
                         f"[{r['log_scale_lo']:.3g}, {r['log_scale_hi']:.3g}]")
    reached = [k for k, v in est["runs"].items() if v["reached"]]
    lines.append(f"training runs reaching the exact optimum (loc within 0.3 sd, scale within 15 %): {', '.join(reached) or 'none'}")
    lines.append(f"compare took {c['seconds']['total']:.0f} s; report: {Path(run_dir) / 'report.html'}")
    return "\n".join(lines)
