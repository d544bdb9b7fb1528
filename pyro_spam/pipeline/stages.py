"""The stages of ``pyro-spam run``: thin adapters from the run context to a domain call, its files
and one section of ``summary.json``.

The evaluation stage feeds the posterior draws a run already has to :func:`pyro_spam.evaluate.advanced_evaluation`
(numbers), writes ``predictive_test.npz`` (per-message predictive summaries) and draws the five
figures with :mod:`pyro_spam.plots.evaluation`. Cheap: no refitting, well under a second of
arithmetic for 2,000 draws × 1,115 test messages.
"""

from __future__ import annotations

import time

import numpy as np

from ..embed import embedding_of_data
from ..estimator import VariationalSpamClassifier, save_model
from ..evaluate import advanced_evaluation
from ..io.checkpoint import CHECKPOINT_JSON, save_checkpoint
from ..io.modelfile import model_filename
from ..io.run_reader import guide_filename
from ..io.rundir import save_figure, write_json, write_npz
from ..posterior import predict_draws, run_draws
from ..report import render_report
from ..runtime import release_freed_memory
from ..summary import checkpoint_section, crosscheck_info, primary_fit
from .context import RunContext
from .diagnose import RunInputs, _write_markdown, draw_figures, guide_leaderboard, vi_diagnostics


def stage_evaluation(ctx: RunContext) -> None:
    """Evaluations 1–5 of the primary fit into ``ctx.summary["evaluation"]``, files into ``ctx.dir``."""
    from ..plots.evaluation import evaluation_figures

    t0, c0 = time.perf_counter(), time.process_time()
    kind = primary_fit(ctx.fits)
    fr, fs = ctx.fits[kind], ctx.features
    w = run_draws(fr, ctx.config.num_draws, ctx.config.train.seed)
    logit_test = predict_draws(w, fs.X_test).logit  # the draws evaluate_fits scored (same seed)
    summary, arrays = advanced_evaluation(
        loc=fr.loc, scale=fr.scale, coef_names=fs.coef_names, prior_scale=ctx.config.train.prior_scale,
        logit_test=logit_test, y_test=fs.y_test,
        X_train=fs.X_train, y_train=fs.y_train, X_test=fs.X_test,
        msg_test=fs.msg_test, row_test=fs.test_idx, seed=ctx.config.train.seed,
    )
    summary["fit"] = kind
    summary["n_draws"] = int(logit_test.shape[0])
    write_npz(ctx.dir / "predictive_test.npz", **{k: np.asarray(v) for k, v in arrays.items()}, row=fs.test_idx)
    del logit_test
    release_freed_memory()
    figs = evaluation_figures(summary, arrays)
    for name, fig in figs.items():
        save_figure(fig, ctx.dir / name)
    summary["seconds"] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    ctx.summary["evaluation"] = summary
    ctx.summary.setdefault("figures", []).extend(figs)


def stage_figures(ctx: RunContext) -> None:
    """Training curves and posterior weights as PNGs."""
    from ..plots.training import plot_elbo_history, plot_weights

    axes = plot_elbo_history(ctx.fits)
    save_figure(axes[0].figure, ctx.dir / "elbo_history.png")
    ax = plot_weights(ctx.fits, ctx.features.coef_names, ctx.config.train.prior_scale)
    save_figure(ax.figure, ctx.dir / "weights.png")
    ctx.summary.setdefault("figures", []).extend(["elbo_history.png", "weights.png"])


def stage_core_files(ctx: RunContext) -> None:
    """features.npz (exact model inputs), guide parameters and training histories."""
    fs, out = ctx.features, ctx.dir
    write_npz(
        out / "features.npz",
        X_train=fs.X_train, y_train=fs.y_train, X_test=fs.X_test, y_test=fs.y_test,
        train_idx=fs.train_idx, test_idx=fs.test_idx, names=np.array(fs.names, dtype=str),
    )
    for kind, fr in ctx.fits.items():
        write_json(out / guide_filename(kind), {
            "elbo": kind, "engine": fr.engine, "coef_names": list(fs.coef_names),
            "loc": fr.loc, "scale": fr.scale, "guide": fr.guide, "cov": fr.cov, "steps": fr.steps, "stop_reason": fr.stop_reason,
            "history": fr.history.to_dict(),
        })


def stage_crosscheck(ctx: RunContext) -> None:
    """Pyro versus the manual ELBO at the fitted guide: rows in summary["crosscheck"] + a figure."""
    from ..crosscheck import elbo_replicates, mc_kl_error_vs_s, run_crosscheck, summarize_replicates
    from ..plots.crosscheck import plot_crosscheck

    kind = primary_fit(ctx.fits)
    fr, cfg, fs = ctx.fits[kind], ctx.config.train, ctx.features
    common = dict(particles=cfg.particles, prior_scale=cfg.prior_scale, seed=cfg.seed)
    reps = elbo_replicates(fs.X_train, fs.y_train, fr.loc, fr.scale, n_rep=CROSSCHECK_REPLICATES, **common)
    kl_err = mc_kl_error_vs_s(fr.loc, fr.scale, reps=200, prior_scale=cfg.prior_scale, seed=cfg.seed)
    rows = run_crosscheck(fs.X_train, fs.y_train, fr.loc, fr.scale, replicates=reps, kl_error=kl_err,
                          n_batches=CROSSCHECK_BATCHES, scale_tril=fr.scale_tril, **common)
    ctx.summary["crosscheck"] = rows
    ctx.summary["crosscheck_info"] = crosscheck_info(kind, rows, kl_err.slope, kl_err.S, kl_err.rms)
    fig = plot_crosscheck(summarize_replicates(reps), kl_err)
    save_figure(fig, ctx.dir / "crosscheck.png")
    ctx.summary.setdefault("figures", []).append("crosscheck.png")


CROSSCHECK_REPLICATES = 30
CROSSCHECK_BATCHES = 60


def stage_model_files(ctx: RunContext) -> None:
    """Run stage: one ``model_<elbo>.npz`` per fit, loadable by ``pyro-spam predict``."""
    cfg, ds = ctx.config, ctx.dataset
    embedding = embedding_of_data(cfg.data, ds.embedder)
    training = {"source": ds.source, "n": ds.n, "dim": ds.dim, "n_train": int(ctx.features.X_train.shape[0])}
    files = {}
    for kind, fr in ctx.fits.items():
        est = VariationalSpamClassifier.from_fitted(
            VariationalSpamClassifier.params_from_run_config(cfg, kind), ctx.feature_pipeline, fr,
            classes=np.array([0.0, 1.0]), n_features_in=ds.dim,
        )
        name = model_filename(kind)
        save_model(est, ctx.dir / name, embedding=embedding, training_data=training)
        files[kind] = name
    ctx.summary["model_files"] = files


def stage_checkpoint(ctx: RunContext) -> None:
    """Run stage: the checkpoint of every fit (so an interrupted run can be resumed)."""
    versions = ctx.summary.get("meta", {}).get("versions")
    save_checkpoint(ctx.dir, ctx.config, ctx.fits, ctx.features, versions=versions)
    ctx.summary["checkpoint"] = checkpoint_section(CHECKPOINT_JSON, {k: f.stop_reason for k, f in ctx.fits.items()})


def _inputs_from_context(ctx: RunContext) -> RunInputs:
    fs, cfg = ctx.features, ctx.config
    return RunInputs(
        x_train=fs.X_train, y_train=fs.y_train, x_test=fs.X_test, y_test=fs.y_test, coef_names=fs.coef_names,
        prior_scale=cfg.train.prior_scale, seed=cfg.train.seed, particles=cfg.train.particles,
        num_draws=cfg.num_draws, versions=dict(ctx.summary.get("meta", {}).get("versions", {})),
        lppd_test={k: f["test"]["lppd_per_message"] for k, f in ctx.summary.get("fits", {}).items()},
    )


def stage_arviz(ctx: RunContext) -> None:
    """Run stage: InferenceData per fit, k̂, LOO, ``az.summary`` tables, the guide leaderboard and the figures.

    Adds ``summary["diagnostics"]`` (with ``guides``: the leaderboard's cheap rows) and the figure names; NUTS is not run here (see
    :func:`~pyro_spam.pipeline.diagnose.diagnose_run_dir`).
    """
    inp = _inputs_from_context(ctx)
    section, idatas = vi_diagnostics(inp, ctx.fits, ctx.dir)
    release_freed_memory()
    guide_figures = guide_leaderboard(inp, ctx.fits, section, ctx.dir)
    release_freed_memory()
    t0 = time.perf_counter()
    figures = draw_figures(inp, idatas, ctx.dir) + guide_figures
    section["seconds"]["figures"] = time.perf_counter() - t0
    section["figures"] = figures
    _write_markdown(section, ctx.dir)
    ctx.summary["diagnostics"] = section
    ctx.summary.setdefault("figures", []).extend(figures)


def stage_report(ctx: RunContext) -> None:
    """Last stage of ``pyro-spam run``: the report from everything the earlier stages added."""
    render_report(ctx.dir, ctx.summary, name=ctx.name)
