"""The run stage of the advanced evaluation (evaluations 1–5 of the issue).

Feeds the posterior draws a run already has to :func:`pyro_spam.evaluate.advanced_evaluation`
(numbers), writes ``predictive_test.npz`` (per-message predictive summaries) and draws the five
figures with :mod:`pyro_spam.plots.evaluation`. Cheap: no refitting, well under a second of
arithmetic for 2,000 draws × 1,115 test messages.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .evaluate import advanced_evaluation
from .rundir import save_figure, write_npz

if TYPE_CHECKING:  # pipeline imports this module; only its type is needed here
    from .pipeline import RunContext


def primary_fit(fits: Mapping[str, object]) -> str:
    """The fit the evaluations describe: the analytic-KL one when present, else the first."""
    if not fits:
        raise ValueError("no fits to evaluate")
    return "meanfield" if "meanfield" in fits else next(iter(fits))


def stage_evaluation(ctx: "RunContext") -> None:
    """Evaluations 1–5 of the primary fit into ``ctx.summary["evaluation"]``, files into ``ctx.dir``."""
    from .plots.evaluation import evaluation_figures

    t0, c0 = time.perf_counter(), time.process_time()
    kind = primary_fit(ctx.fits)
    fr, fs = ctx.fits[kind], ctx.features
    summary, arrays = advanced_evaluation(
        loc=fr.loc, scale=fr.scale, coef_names=fs.coef_names, prior_scale=ctx.config.train.prior_scale,
        logit_test=ctx.draws_test[kind].logit, y_test=fs.y_test,
        X_train=fs.X_train, y_train=fs.y_train, X_test=fs.X_test,
        msg_test=fs.msg_test, row_test=fs.test_idx, seed=ctx.config.train.seed,
    )
    summary["fit"] = kind
    summary["n_draws"] = int(ctx.draws_test[kind].logit.shape[0])
    write_npz(ctx.dir / "predictive_test.npz", **{k: np.asarray(v) for k, v in arrays.items()}, row=fs.test_idx)
    figs = evaluation_figures(summary, arrays)
    for name, fig in figs.items():
        save_figure(fig, ctx.dir / name)
    summary["seconds"] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    ctx.summary["evaluation"] = summary
    ctx.summary.setdefault("figures", []).extend(figs)
