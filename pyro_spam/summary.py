"""The written-down schema of ``summary.json``: one typed record per section, one builder each,
and the rules every reader shares (which fit is primary, the draw seed, the ELBO labels).

``summary.json`` is a public interface (users' scripts read it): keys are only ever added within
a schema version; renaming or removing one bumps :data:`SCHEMA_VERSION` with a note in README.
Readers go through :func:`pyro_spam.io.run_reader.read_summary`, which checks the version.

Top-level sections, in the order a run writes them:

========================  ==========================================  ==============================
key                       record                                      written by
========================  ==========================================  ==============================
``schema_version``        int (absent in files from pyro-spam 0.1.0)  ``pipeline.run``
``data``                  :class:`DataSection`                        :func:`data_section`
``fits``                  {elbo: :class:`FitSection`}                 :func:`fit_section`
``meta``                  :class:`MetaSection`                        :func:`meta_section`
``figures``               list of PNG names                           every stage that draws
``crosscheck``            list of :class:`CrosscheckRow`              :mod:`pyro_spam.crosscheck`
``crosscheck_info``       :class:`CrosscheckInfo`                     :func:`crosscheck_info`
``model_files``           {elbo: file name}                           the model-file stage
``checkpoint``            :class:`CheckpointSection`                  :func:`checkpoint_section`
``evaluation``            :class:`EvaluationSection`                  :func:`pyro_spam.evaluate.advanced_evaluation`
``diagnostics``           :class:`DiagnosticsSection`                 :func:`pyro_spam.pipeline.diagnose.vi_diagnostics`
``timings``               ``{"total_seconds": float}``                ``pipeline.run``
``compare``               :class:`CompareSection` (after ``compare``)  :func:`pyro_spam.pipeline.compare.run_compare`
``estimators``            dict (after ``compare``)                    :mod:`pyro_spam.estimator_lab` via ``run_compare``
========================  ==========================================  ==============================

This module imports numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

SCHEMA_VERSION = 3
"""Version of the layout below. Files written by pyro-spam 0.1.0 have no ``schema_version`` and are
version 1. Version 2: ``fits[elbo]["stop_reason"]`` says ``"budget"`` where version 1 said
``"max_steps"``, and every fit has a ``convergence`` block. Version 3 (0.4.0): ``estimators`` (written
by ``compare``) is the estimator lab: ``table`` records are keyed by estimator *name* (``trace``,
``meanfield``, ``stl``, …) with ``grad_var_loc``/``grad_var_log_scale`` (the old ``var_grad*`` and
``implementation`` fields are gone), ``ratios`` compare each estimator with ``trace``, and ``curves``
became ``runs``."""

ELBO_CLASS = {"trace": "Trace_ELBO", "meanfield": "TraceMeanField_ELBO", "stl": "StlELBO", "rqmc": "RqmcELBO",
              "quad": "QuadratureELBO", "iwae": "RenyiELBO(alpha=0)", "score": "TraceGraph_ELBO (score function)"}
"""The ELBO class behind each ELBO type (Pyro's, or this package's in ``training.elbos``)."""

ELBO_LABELS = {"trace": "Trace_ELBO (MC KL)", "meanfield": "TraceMeanField_ELBO (analytic KL)",
               "stl": "sticking the landing (path gradient)", "rqmc": "randomised QMC (Sobol, analytic KL)",
               "quad": "exact quadrature ELBO (Gauss–Hermite, analytic KL)", "iwae": "IWAE bound (RenyiELBO α=0)",
               "score": "score function (REINFORCE + baseline)", "score_nobaseline": "score function, no baseline (plain REINFORCE)"}
"""How tables, legends and the report name each ELBO type."""

FIT_LABELS = {k: f"VI, {v}" for k, v in ELBO_CLASS.items()}
"""How ArviZ figures name each fit (next to "NUTS")."""

DRAW_SEED_OFFSET = 1
"""Posterior draws use ``seed + 1`` (training uses ``seed``): a run, ``diagnose`` and the estimator agree."""


def elbo_label(kind: str) -> str:
    """Display name of an ELBO type (the type itself when unknown)."""
    return ELBO_LABELS.get(kind, kind)


def fit_label(kind: str) -> str:
    """Display name of a fit in ArviZ figures."""
    return FIT_LABELS.get(kind, kind)


def primary_fit(kinds: Sequence[str] | Mapping[str, Any]) -> str:
    """The fit that evaluations, diagnostics, the cross-check and ``compare`` describe: the
    analytic-KL (``meanfield``) one when present, else the first."""
    kinds = list(kinds)
    if not kinds:
        raise ValueError("no fits")
    return "meanfield" if "meanfield" in kinds else kinds[0]


def draw_seed(seed: int) -> int:
    """Seed of the posterior draws of a fit trained with ``seed``."""
    return int(seed) + DRAW_SEED_OFFSET


# -- records ---------------------------------------------------------------------------------


class DataSection(TypedDict):
    """``summary["data"]``: the data set and the features the model saw."""

    source: str
    embedder: str | None
    n: int
    dim: int
    n_spam: int
    spam_rate: float
    n_train: int
    n_test: int
    components: int
    components_requested: int | str
    components_capped: bool
    explained_variance: float
    explained_variance_ratio: list[float]
    feature_kind: str
    terms: list[str]


class ScoreSection(TypedDict, total=False):
    """Held-out (``test``) or training (``train``) scores of one fit."""

    lppd_per_message: float
    intercept_only_lppd_per_message: float
    accuracy: float
    roc_auc: float
    brier: float
    ece: float


class FitSection(TypedDict):
    """``summary["fits"][elbo]``: one fitted guide, its ELBO on train and test, and how training ended.

    ``stop_reason`` is ``"converged"``, ``"budget"`` (not converged), ``"interrupted"`` or, for
    L-BFGS, ``"stalled"`` (the line search found no decrease before the gradient tolerance: not
    converged); ``optimizer`` is ``"adam"`` or ``"lbfgs"``; ``convergence`` is the stop rule's
    evidence (Adam: criterion, thresholds, R̂/ESS/MCSE of the final window, averaging window,
    learning-rate decays, see :mod:`pyro_spam.training.convergence`; L-BFGS: the gradient
    tolerance, final gradient, iterations and function evaluations, see :mod:`pyro_spam.training.lbfgs`).
    ``guide`` is the Gaussian family (``"meanfield"``, ``"fullrank"``, ``"lowrank"``), ``scale`` the
    marginal sds and ``cov`` the (K+1)×(K+1) covariance of q (diagonal for the mean-field guide).
    """

    engine: str
    elbo_train: float
    elbo_train_parts: dict[str, float]
    elbo_train_per_message: float
    elbo_test_per_message: float
    elbo_test_parts: dict[str, float]
    coef_names: list[str]
    loc: list[float]
    scale: list[float]
    guide: str
    cov: list[list[float]]
    test: ScoreSection
    train: ScoreSection
    steps: int
    stop_reason: str
    seconds: float
    final_lr: float | None
    convergence: dict[str, Any]
    optimizer: str


class MetaSection(TypedDict):
    """``summary["meta"]``: what reproduces the run."""

    config: dict[str, Any]
    seed: int
    versions: dict[str, str]


class CrosscheckRow(TypedDict, total=False):
    """One row of ``summary["crosscheck"]`` (see :mod:`pyro_spam.crosscheck`)."""

    name: str
    pyro: float
    manual: float
    abs_diff: float
    tolerance: float
    agree: bool
    kind: str
    detail: str


class CrosscheckInfo(TypedDict):
    """``summary["crosscheck_info"]``."""

    guide: str
    all_agree: bool
    mc_kl_slope: float
    mc_kl_S: list[int]
    mc_kl_rms: list[float]


class CheckpointSection(TypedDict):
    """``summary["checkpoint"]``."""

    file: str
    interrupted: list[str]


class EvaluationSection(TypedDict, total=False):
    """``summary["evaluation"]``: evaluations 1–5 of the primary fit."""

    weights: dict[str, Any]
    uncertainty: dict[str, Any]
    calibration: dict[str, Any]
    selective: dict[str, Any]
    qualitative: dict[str, Any]
    fit: str
    n_draws: int
    seconds: dict[str, float]


class DiagnosticsSection(TypedDict, total=False):
    """``summary["diagnostics"]``: ArviZ diagnostics of every fit (and NUTS after ``diagnose --nuts``).

    ``khat`` is one k̂ from the run's draws; ``khat_median`` and ``khat_range`` ([min, max]) are over
    10 independent sets of draws (``per_fit[elbo]["khat_repeats"]``, whose ``pooled`` is k̂ of all those
    draws at once, ``pooled_draws`` of them: added in 0.6.0). ``per_fit[elbo]["loo_corrected"]``
    is PSIS-LOO corrected for q next to the naive ``loo``; the top-level ``loo_corrected`` is the exact
    model's LOO corrected from the linear-response Gaussian's draws (the most reliable proposal the run
    has). ``linear_response``: the LRVB covariance of
    the primary fit (``loc``, ``scale``, ``cov``, k̂ median/range, corrected and naive LOO).
    ``sbc`` / ``posterior_sbc`` (after ``diagnose --sbc``): per approximation (``meanfield``,
    ``linear_response``) ``sims``, ``coverage_50``, ``coverage_90``, ``ks_p_vsbc``, ``rank_p`` (lists
    in coefficient order), ``ranks``, ``flags``, ``settings``, ``reference``; plus ``info`` (how the
    study ran: sims, seconds, reference posterior, optimizer, verdicts).
    ``guides``: the guide leaderboard (:func:`pyro_spam.diagnostics.guides.leaderboard`): ``rows`` (one per
    approximation: every fit, ``linear response (LRVB)``, ``<guide> + PSIS resampling``, ``Laplace at the MAP``,
    and ``NUTS`` after ``diagnose --nuts``; each with ``name``, ``key``, ``kind``, ``elbo``, ``khat_median``,
    ``khat_range``, ``khat_pooled`` and ``khat_pooled_draws`` (0.6.0), ``mean``, ``sd``, ``pair_rho``,
    ``lppd_test_per_message``, ``seconds``, and with NUTS
    ``sd_ratio``, ``sd_ratio_min``/``max``, ``mean_shift_max_in_sd``, ``w1_in_sd``, ``w1_max_in_sd``),
    ``pair`` (indices of the most correlated pair), ``pair_names``, ``pair_source``, ``reference``
    (``"nuts"`` or None), ``n_draws``, ``repeats`` and ``khat_draws`` (draws per k̂ set: the run's
    ``n_draws``, or 16,000 against NUTS; 0.6.0).
    """

    primary: str
    khat: float
    khat_reading: str
    khat_median: float
    khat_range: list[float]
    loo: dict[str, Any]
    loo_corrected: dict[str, Any]
    per_fit: dict[str, dict[str, Any]]
    linear_response: dict[str, Any]
    files: list[str]
    seconds: dict[str, float]
    figures: list[str]
    markdown: str
    nuts: dict[str, Any]
    sbc: dict[str, Any]
    posterior_sbc: dict[str, Any]
    guides: dict[str, Any]


class CompareSection(TypedDict, total=False):
    """``summary["compare"]``: prior-sensitivity and model-size sweeps (``pyro-spam compare``)."""

    settings: dict[str, Any]
    quick: bool
    prior_sensitivity: dict[str, Any]
    model_size: dict[str, Any]
    seconds: dict[str, float]
    figures: list[str]


class Summary(TypedDict, total=False):
    """The whole ``summary.json``."""

    schema_version: int
    data: DataSection
    fits: dict[str, FitSection]
    meta: MetaSection
    figures: list[str]
    crosscheck: list[CrosscheckRow]
    crosscheck_info: CrosscheckInfo
    model_files: dict[str, str]
    checkpoint: CheckpointSection
    evaluation: EvaluationSection
    diagnostics: DiagnosticsSection
    timings: dict[str, float]
    compare: CompareSection
    estimators: dict[str, Any]


# -- builders --------------------------------------------------------------------------------


def data_section(facts: Mapping[str, Any], *, n_train: int, n_test: int, components: int,
                 components_requested: int | str, components_capped: bool, explained_variance_ratio: np.ndarray,
                 feature_kind: str, terms: Sequence[str]) -> DataSection:
    """``summary["data"]`` from the data set's facts (:func:`pyro_spam.data.data_facts`) and the features."""
    return DataSection(
        **facts,
        n_train=int(n_train),
        n_test=int(n_test),
        components=int(components),
        components_requested=components_requested,
        components_capped=bool(components_capped),
        explained_variance=float(np.sum(explained_variance_ratio)),
        explained_variance_ratio=explained_variance_ratio,
        feature_kind=feature_kind,
        terms=list(terms),
    )


def fit_section(fit: Any, *, coef_names: Sequence[str], elbo_train: Mapping[str, float], elbo_test: Mapping[str, float],
                n_train: int, n_test: int, test: Mapping[str, float], train: Mapping[str, float]) -> FitSection:
    """``summary["fits"][elbo]`` for one :class:`~pyro_spam.types.FitResult` and its scores."""
    return FitSection(
        engine=fit.engine,
        elbo_train=elbo_train["elbo"],
        elbo_train_parts=dict(elbo_train),
        elbo_train_per_message=elbo_train["elbo"] / n_train,
        elbo_test_per_message=elbo_test["elbo"] / n_test,
        elbo_test_parts=dict(elbo_test),
        coef_names=list(coef_names),
        loc=fit.loc,
        scale=fit.scale,
        guide=str(getattr(fit, "guide", "meanfield")),
        cov=fit.cov,
        test=ScoreSection(**test),
        train=ScoreSection(**train),
        steps=fit.steps,
        stop_reason=fit.stop_reason,
        seconds=fit.seconds,
        final_lr=fit.extra.get("lr_final"),
        convergence=dict(fit.extra.get("convergence") or {}),
        optimizer=str(fit.extra.get("optimizer", "adam")),
    )


def meta_section(config: Mapping[str, Any], seed: int, versions: Mapping[str, str]) -> MetaSection:
    """``summary["meta"]``."""
    return MetaSection(config=dict(config), seed=int(seed), versions=dict(versions))


def crosscheck_info(guide: str, rows: Sequence[Mapping[str, Any]], slope: float, S: Sequence[int],
                    rms: Sequence[float]) -> CrosscheckInfo:
    """``summary["crosscheck_info"]`` from the cross-check rows and the MC-KL error study."""
    return CrosscheckInfo(guide=guide, all_agree=all(r["agree"] for r in rows), mc_kl_slope=slope, mc_kl_S=S,
                          mc_kl_rms=rms)


def checkpoint_section(file: str, stop_reasons: Mapping[str, str]) -> CheckpointSection:
    """``summary["checkpoint"]``: the checkpoint file and the fits that were interrupted."""
    return CheckpointSection(file=file, interrupted=[k for k, r in stop_reasons.items() if r == "interrupted"])
