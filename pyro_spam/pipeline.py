"""The only module that chains the stages: data → features → fits → draws → evaluation → run dir."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from . import __version__
from .checkpoint import Checkpoint, load_checkpoint, stage_checkpoint
from .config import RunConfig
from .data import data_facts, load_data
from .diagnostics import stage_arviz
from .evaluate import classification_scores, elbo_estimate, intercept_only_lppd, lppd_pointwise
from .evaluation_stage import stage_evaluation
from .features import FeaturePipeline, build_features
from .modelfile import stage_model_files
from .posterior import Draws, draw_weights, predict_draws
from .report import stage_report
from .rundir import SUMMARY, save_figure, staged_run_dir, write_json, write_npz
from .train import fit
from .types import Dataset, FeatureSet, FitResult

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Everything a run has computed so far; stages read it and add to it."""

    config: RunConfig
    dataset: Dataset
    features: FeatureSet
    feature_pipeline: FeaturePipeline
    fits: dict[str, FitResult] = field(default_factory=dict)
    draws_train: dict[str, Draws] = field(default_factory=dict)
    draws_test: dict[str, Draws] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    dir: Path | None = None
    name: str | None = None  # the run directory's final name (ctx.dir may be a staging folder)


def versions() -> dict[str, str]:
    """Versions of Python and the packages that shape the numbers."""
    out = {"python": platform.python_version(), "pyro_spam": __version__}
    for pkg in ("torch", "pyro-ppl", "numpy", "scikit-learn", "arviz"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def prepare(config: RunConfig) -> RunContext:
    """Load the data and build the features (fit on train only)."""
    ds = load_data(config.data)
    with threadpool_limits(limits=1):  # BLAS on 2 threads of a busy 2-core machine: PCA 6–11 s instead of 0.25 s
        fs, pipe = build_features(ds, config.features, seed=config.train.seed)
    ctx = RunContext(config=config, dataset=ds, features=fs, feature_pipeline=pipe)
    ctx.summary["data"] = {
        **data_facts(ds),
        "n_train": int(fs.X_train.shape[0]),
        "n_test": int(fs.X_test.shape[0]),
        "components": fs.k,
        "components_requested": config.features.components,
        "components_capped": bool(pipe.capped_),
        "explained_variance": fs.explained_variance,
        "explained_variance_ratio": fs.explained_variance_ratio,
        "feature_kind": config.features.kind,
        "terms": list(fs.names),
    }
    return ctx


def fit_all(ctx: RunContext, *, progress: bool = False, resume: Checkpoint | None = None) -> None:
    """Fit one guide per requested ELBO type, continuing from ``resume``; stop after an interrupted fit."""
    for kind in ctx.config.elbos:
        saved = resume.fits.get(kind) if resume is not None else None
        if saved is not None and saved.complete:
            ctx.fits[kind] = saved.to_fit_result()
            continue
        cfg = ctx.config.train_for(kind)
        ctx.fits[kind] = fit(ctx.features.X_train, ctx.features.y_train, cfg, progress=progress,
                             resume=None if saved is None else saved.state)
        if ctx.fits[kind].stop_reason == "interrupted":
            break


def evaluate_fits(ctx: RunContext) -> None:
    """Draws from each guide, the ELBO on train and test, and held-out predictive scores."""
    fs, cfg = ctx.features, ctx.config
    baseline = intercept_only_lppd(fs.y_train, fs.y_test)
    fits_summary: dict[str, Any] = {}
    for kind, fr in ctx.fits.items():
        w = draw_weights(fr.loc, fr.scale, cfg.num_draws, seed=cfg.train.seed + 1)
        tr = predict_draws(w, fs.X_train, fs.y_train)
        te = predict_draws(w, fs.X_test, fs.y_test)
        ctx.draws_train[kind], ctx.draws_test[kind] = tr, te
        e_tr = elbo_estimate(tr.loglik, fr.loc, fr.scale, cfg.train.prior_scale)
        e_te = elbo_estimate(te.loglik, fr.loc, fr.scale, cfg.train.prior_scale)
        n_te = fs.X_test.shape[0]
        fits_summary[kind] = {
            "engine": fr.engine,
            "elbo_train": e_tr["elbo"],
            "elbo_train_parts": e_tr,
            "elbo_train_per_message": e_tr["elbo"] / fs.X_train.shape[0],
            "elbo_test_per_message": e_te["elbo"] / n_te,
            "elbo_test_parts": e_te,
            "coef_names": list(fs.coef_names),
            "loc": fr.loc,
            "scale": fr.scale,
            "test": {
                "lppd_per_message": float(lppd_pointwise(te.loglik).mean()),
                "intercept_only_lppd_per_message": baseline,
                **classification_scores(te.mean_prob, fs.y_test),
            },
            "train": {"lppd_per_message": float(lppd_pointwise(tr.loglik).mean())},
            "steps": fr.steps,
            "stop_reason": fr.stop_reason,
            "seconds": fr.seconds,
            "final_lr": fr.extra.get("lr_final"),
        }
    ctx.summary["fits"] = fits_summary


def stage_figures(ctx: RunContext) -> None:
    """Training curves and posterior weights as PNGs."""
    from .plots.training import plot_elbo_history, plot_weights

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
        write_json(out / f"guide_{kind}.json", {
            "elbo": kind, "engine": fr.engine, "coef_names": list(fs.coef_names),
            "loc": fr.loc, "scale": fr.scale, "steps": fr.steps, "stop_reason": fr.stop_reason,
            "history": fr.history.to_dict(),
        })


def stage_crosscheck(ctx: RunContext) -> None:
    """Pyro versus the manual ELBO at the fitted guide: rows in summary["crosscheck"] + a figure."""
    from .crosscheck import elbo_replicates, mc_kl_error_vs_s, run_crosscheck, summarize_replicates
    from .plots.crosscheck import plot_crosscheck

    kind = "meanfield" if "meanfield" in ctx.fits else next(iter(ctx.fits))
    fr, cfg, fs = ctx.fits[kind], ctx.config.train, ctx.features
    common = dict(particles=cfg.particles, prior_scale=cfg.prior_scale, seed=cfg.seed)
    reps = elbo_replicates(fs.X_train, fs.y_train, fr.loc, fr.scale, n_rep=CROSSCHECK_REPLICATES, **common)
    kl_err = mc_kl_error_vs_s(fr.loc, fr.scale, reps=200, prior_scale=cfg.prior_scale, seed=cfg.seed)
    rows = run_crosscheck(fs.X_train, fs.y_train, fr.loc, fr.scale, replicates=reps, kl_error=kl_err,
                          n_batches=CROSSCHECK_BATCHES, **common)
    ctx.summary["crosscheck"] = rows
    ctx.summary["crosscheck_info"] = {
        "guide": kind, "all_agree": all(r["agree"] for r in rows), "mc_kl_slope": kl_err.slope,
        "mc_kl_S": kl_err.S, "mc_kl_rms": kl_err.rms,
    }
    fig = plot_crosscheck(summarize_replicates(reps), kl_err)
    save_figure(fig, ctx.dir / "crosscheck.png")
    ctx.summary.setdefault("figures", []).append("crosscheck.png")


CROSSCHECK_REPLICATES = 30
CROSSCHECK_BATCHES = 60


# Stages after fitting and evaluation, in order. Each takes the RunContext, writes its files into
# ctx.dir (atomically, via rundir helpers) and adds its numbers to ctx.summary. Add new stages here.
RUN_STAGES: list[Callable[[RunContext], None]] = [
    stage_figures,
    stage_core_files,
    stage_crosscheck,
    stage_model_files,
    stage_checkpoint,
    stage_evaluation,
    stage_arviz,
    stage_report,  # keep last: renders report.md/html from everything above
]


def run(
    config: RunConfig, out: Path, *, overwrite: bool = False, progress: bool = False, resume: Checkpoint | None = None
) -> RunContext:
    """A whole run into the directory ``out`` (created atomically: all files or none)."""
    t0 = time.perf_counter()
    with staged_run_dir(Path(out), overwrite=overwrite) as stage:
        ctx = prepare(config)
        if resume is not None:
            resume.check_features(ctx.features)
        ctx.dir, ctx.name = stage, Path(out).name
        fit_all(ctx, progress=progress, resume=resume)
        evaluate_fits(ctx)
        ctx.summary["meta"] = {"config": config.to_dict(), "seed": config.train.seed, "versions": versions()}
        for stage_fn in RUN_STAGES:
            stage_fn(ctx)
        ctx.summary["timings"] = {"total_seconds": time.perf_counter() - t0}
        write_json(stage / SUMMARY, ctx.summary)
    ctx.dir = Path(out)
    return ctx


def resume_run(run_dir: Path, out: Path | None = None, *, overwrite: bool = False, progress: bool = False) -> RunContext:
    """Continue an interrupted run from its checkpoint, with its saved configuration, to its full budget.

    The result replaces ``run_dir`` atomically (or goes to ``out``). Raises ``ModelFileError`` for a
    missing, corrupt or mismatched checkpoint and ``ConfigError`` when there is nothing to resume.
    """
    from .errors import ConfigError, DataError

    ckpt = load_checkpoint(run_dir)
    if ckpt.finished:
        done = ", ".join(f"{k}: {f.stop_reason} after {f.steps} steps" for k, f in ckpt.fits.items())
        raise ConfigError(f"run {run_dir} is complete ({done}); nothing to resume. Start a new run with --out NEW_DIR")
    data = ckpt.config.data
    if data is not None and not Path(data).exists():
        raise DataError(
            f"run {run_dir} was trained on {data}, which does not exist from {Path.cwd()}; "
            "resume from the directory the run was started in (or restore the file)"
        )
    out = Path(run_dir) if out is None else Path(out)
    same = out.resolve() == Path(run_dir).resolve()
    return run(ckpt.config, out, overwrite=same or overwrite, progress=progress, resume=ckpt)
