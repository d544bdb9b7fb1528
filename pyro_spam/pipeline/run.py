"""The only module that chains the stages: data → features → fits → draws → evaluation → run dir."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

from threadpoolctl import threadpool_limits

from ..config import RunConfig
from ..data import data_facts, load_data
from ..evaluate import classification_scores, elbo_estimate, intercept_only_lppd, lppd_pointwise
from ..features import build_features
from ..io.checkpoint import Checkpoint, load_checkpoint
from ..io.rundir import SUMMARY, staged_run_dir, write_json
from ..posterior import loglik_matrix, predict_draws, run_draws
from ..runtime import imports_frozen, release_freed_memory
from ..summary import SCHEMA_VERSION, FitSection, data_section, fit_section, meta_section
from ..training.engines import fit
from .context import RunContext, versions
from .stages import (
    stage_arviz,
    stage_checkpoint,
    stage_core_files,
    stage_crosscheck,
    stage_evaluation,
    stage_figures,
    stage_model_files,
    stage_report,
)

log = logging.getLogger(__name__)


def prepare(config: RunConfig) -> RunContext:
    """Load the data and build the features (fit on train only)."""
    ds = load_data(config.data)
    with threadpool_limits(limits=1):  # BLAS on 2 threads of a busy 2-core machine: PCA 6–11 s instead of 0.25 s
        fs, pipe = build_features(ds, config.features, seed=config.train.seed)
    # The features hold the messages they need; the rest of the run reads only the data's facts. A
    # fixed-width str array is as wide as the longest message (4 bytes × 910 × 5,574 = 20 MB on the
    # shipped data): Python strings hold the same texts in 1 MB.
    ds = dataclasses.replace(ds, msg=ds.msg.astype(object))
    ctx = RunContext(config=config, dataset=ds, features=fs, feature_pipeline=pipe)
    ctx.summary["schema_version"] = SCHEMA_VERSION
    ctx.summary["data"] = data_section(
        data_facts(ds), n_train=fs.X_train.shape[0], n_test=fs.X_test.shape[0], components=fs.k,
        components_requested=config.features.components, components_capped=pipe.capped_,
        explained_variance_ratio=fs.explained_variance_ratio, feature_kind=config.features.kind, terms=fs.names,
    )
    return ctx


def fit_all(ctx: RunContext, *, progress: bool = False, resume: Checkpoint | None = None) -> None:
    """Fit one guide per requested ELBO type, continuing from ``resume``; stop after an interrupted fit."""
    for kind in ctx.config.elbos:
        saved = resume.fits.get(kind) if resume is not None else None
        if saved is not None and saved.complete:
            ctx.fits[kind] = saved.to_fit_result(ctx.config.train.guide)
            continue
        cfg = ctx.config.train_for(kind)
        ctx.fits[kind] = fit(ctx.features.X_train, ctx.features.y_train, cfg, progress=progress,
                             resume=None if saved is None else saved.state)
        if ctx.fits[kind].stop_reason == "interrupted":
            break


def evaluate_fits(ctx: RunContext) -> None:
    """Draws from each guide, the ELBO on train and test, and held-out predictive scores.

    No draws × messages matrix outlives its fit: later stages rebuild what they need (same seed,
    same numbers) one fit at a time.
    """
    fs, cfg = ctx.features, ctx.config
    baseline = intercept_only_lppd(fs.y_train, fs.y_test)
    fits_summary: dict[str, FitSection] = {}
    for kind, fr in ctx.fits.items():
        w = run_draws(fr, cfg.num_draws, cfg.train.seed)
        cov = None if fr.scale_tril is None else fr.cov
        ll_train = loglik_matrix(w, fs.X_train, fs.y_train)
        e_tr = elbo_estimate(ll_train, fr.loc, fr.scale, cfg.train.prior_scale, cov)
        lppd_train = float(lppd_pointwise(ll_train).mean())
        del ll_train
        te = predict_draws(w, fs.X_test, fs.y_test)
        e_te = elbo_estimate(te.loglik, fr.loc, fr.scale, cfg.train.prior_scale, cov)
        release_freed_memory()
        fits_summary[kind] = fit_section(
            fr, coef_names=fs.coef_names, elbo_train=e_tr, elbo_test=e_te,
            n_train=fs.X_train.shape[0], n_test=fs.X_test.shape[0],
            test={"lppd_per_message": float(lppd_pointwise(te.loglik).mean()), "intercept_only_lppd_per_message": baseline,
                  **classification_scores(te.mean_prob, fs.y_test)},
            train={"lppd_per_message": lppd_train},
        )
    ctx.summary["fits"] = fits_summary


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
    with imports_frozen(), staged_run_dir(Path(out), overwrite=overwrite) as stage:
        ctx = prepare(config)
        if resume is not None:
            resume.check_features(ctx.features)
        ctx.dir, ctx.name = stage, Path(out).name
        fit_all(ctx, progress=progress, resume=resume)
        evaluate_fits(ctx)
        ctx.summary["meta"] = meta_section(config.to_dict(), config.train.seed, versions())
        for stage_fn in RUN_STAGES:
            release_freed_memory()  # the draws × messages matrices come and go: keep RSS at what is in use
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
    from ..errors import ConfigError, DataError

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
