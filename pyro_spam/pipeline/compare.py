"""``pyro-spam compare RUN_DIR [--quick]``: the studies of :mod:`pyro_spam.studies` run on a finished
run and written into its directory.

Reads the run with :func:`pyro_spam.io.run_reader.read_run`, refits around its primary fit
(:func:`pyro_spam.summary.primary_fit`), adds ``summary["compare"]`` and ``summary["estimators"]``,
``estimator_curves.npz`` and four figures, and re-renders the report.

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
from ..io.run_reader import read_run, read_summary
from ..io.rundir import SUMMARY, save_figure, to_jsonable, write_json, write_npz
from ..report import render_report
from ..studies import (
    ESTIMATORS,
    FULL,
    QUICK,
    CompareSettings,
    estimator_variance,
    model_size_sweep,
    prior_sensitivity,
    training_curves,
)
from ..summary import primary_fit

COMPARE_FIGURES = (
    "compare_prior_sensitivity.png", "compare_model_size.png", "estimators_variance.png", "estimators_training.png",
)
"""The figures ``compare`` draws, in the order the report shows them."""


def _primary_guide(summary: Mapping[str, Any]) -> tuple[str, np.ndarray, np.ndarray]:
    """The primary fit of a run and its guide's ``(loc, scale)`` as stored in ``summary.json``."""
    fits = summary.get("fits") or {}
    if not fits:
        raise PyroSpamError("the run has no fits to compare")
    kind = primary_fit(fits)
    return kind, np.asarray(fits[kind]["loc"], dtype=np.float64), np.asarray(fits[kind]["scale"], dtype=np.float64)


def draw_compare_figures(run_dir: str | Path, summary: Mapping[str, Any] | None = None) -> list[str]:
    """(Re)draw the four comparison figures from ``summary.json`` and ``estimator_curves.npz``."""
    from ..plots.estimators import plot_estimator_variance, plot_training_curves
    from ..plots.evaluation import plot_model_size, plot_prior_sensitivity

    run_dir = Path(run_dir)
    s = summary if summary is not None else read_summary(run_dir)
    c, est = s["compare"], s["estimators"]
    with np.load(run_dir / "estimator_curves.npz", allow_pickle=False) as z:
        labels = [str(v) for v in z["labels"]]
        curves = {lab: {"elbo": z[f"elbo_{i}"], "seconds": float(z["seconds"][i])} for i, lab in enumerate(labels)}
    figs = {
        COMPARE_FIGURES[0]: plot_prior_sensitivity(c["prior_sensitivity"])[0].figure,
        COMPARE_FIGURES[1]: plot_model_size(c["model_size"]).figure,
        COMPARE_FIGURES[2]: plot_estimator_variance(est),
        COMPARE_FIGURES[3]: plot_training_curves(curves)[0].figure,
    }
    for name, fig in figs.items():
        save_figure(fig, run_dir / name)
    return list(figs)


def run_compare(run_dir: str | Path, *, quick: bool = False, settings: CompareSettings | None = None,
                optimizer: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the sweeps and the estimator comparison on the run in ``run_dir`` and add them to it.

    ``optimizer`` overrides the settings' ``sweep_optimizer`` (``"lbfgs"``, the default, or ``"adam"``).
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

    t = time.perf_counter()
    k1 = loc.size
    guides = {"initial": (np.zeros(k1), np.full(k1, base.init_scale)), "fitted": (loc, scale)}
    est = estimator_variance(feats["X_train"], feats["y_train"], guides, s.est_S, s.est_reps,
                             prior_scale=base.prior_scale, seed=base.seed, n_boot=s.bootstrap, progress=progress)
    est["fitted_from"] = kind
    timings["estimator_variance"] = time.perf_counter() - t

    t = time.perf_counter()
    curve_cfg = dataclasses.replace(base, particles=s.curve_particles or base.particles,
                                    max_steps=s.curve_max_steps or base.max_steps)
    curves = training_curves(feats["X_train"], feats["y_train"], curve_cfg, progress=progress)
    timings["training_curves"] = time.perf_counter() - t
    est["curves"] = {k: {kk: vv for kk, vv in v.items() if kk != "elbo"} for k, v in curves.items()}
    est["curve_config"] = {"particles": curve_cfg.particles, "max_steps": curve_cfg.max_steps, "lr": curve_cfg.lr,
                           "batch_size": curve_cfg.batch_size, "seed": curve_cfg.seed}
    elbos = {f"elbo_{i}": curves[lab]["elbo"] for i, (lab, _, _) in enumerate(ESTIMATORS)}
    write_npz(run_dir / "estimator_curves.npz", **elbos,
              labels=np.array([lab for lab, _, _ in ESTIMATORS], dtype=str),
              seconds=np.array([curves[lab]["seconds"] for lab, _, _ in ESTIMATORS]))

    timings["total"] = time.perf_counter() - t_all
    summary["compare"] = {"settings": dataclasses.asdict(s), "quick": bool(quick), "prior_sensitivity": prior,
                          "model_size": size, "seconds": timings, "figures": list(COMPARE_FIGURES)}
    summary["estimators"] = est
    figures = summary.setdefault("figures", [])
    figures.extend(n for n in COMPARE_FIGURES if n not in figures)
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
    for r in est["ratios"]:
        if r["pair"] == "pyro" and r["S"] == 64:
            lines.append(f"gradient variance Trace_ELBO / TraceMeanField_ELBO at S=64, {r['guide']} guide: "
                         f"{r['grad_ratio']:.3f} [95% CI {r['grad_lo']:.3f}, {r['grad_hi']:.3f}]")
    lines.append(f"compare took {c['seconds']['total']:.0f} s; report: {Path(run_dir) / 'report.html'}")
    return "\n".join(lines)
