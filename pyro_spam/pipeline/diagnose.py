"""``pyro-spam diagnose RUN_DIR [--nuts]`` and the ArviZ stage of ``pyro-spam run``: the diagnostics
of :mod:`pyro_spam.diagnostics` written into a run directory.

Per fit: the InferenceData (``posterior_<elbo>.nc``), ``az.summary`` tables, k̂ of q and PSIS-LOO;
with NUTS (``nuts.nc``): r̂/ESS and the VI-vs-NUTS tables; the three ArviZ figures and
``diagnostics.md``. The numbers go into ``summary["diagnostics"]`` (:class:`~pyro_spam.summary.DiagnosticsSection`).
:func:`diagnose_run_dir` reads a finished run with :func:`pyro_spam.io.run_reader.read_run`, adds
what is missing and re-renders the report.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import SbcSettings
from ..diagnostics.nuts import (
    COMPARISON_COLUMNS,
    HDI_PROB,
    NutsOptions,
    compare_vi_nuts,
    comparison_verdict,
    nuts_inference_data,
    run_nuts,
    strongest_correlation,
)
from ..diagnostics.psis import gaussian_khat, khat_repeats, log_prior, log_q, loo_summary, vi_corrected_loo, vi_khat
from ..errors import ModelFileError
from ..evaluate import lppd_pointwise
from ..inference_data import W, az, draws_as_inference_data, load_netcdf, save_netcdf, to_inference_data
from ..io.run_reader import RunDirectory, read_run
from ..io.rundir import SUMMARY, atomic_write_text, save_figure, write_json
from ..posterior import loglik_matrix, loglik_sum, predict_draws, run_draws
from ..report import render_report
from ..runtime import release_freed_memory
from ..summary import draw_seed, fit_label, primary_fit
from ..training.engines import torch_threads
from ..types import Draws, FitResult
from .calibrate import SBC_KEYS, draw_sbc_figures, sbc_diagnostics, sbc_text
from .guides import REFERENCE_KHAT_DRAWS, draw_guides_figure, fit_covariances, guides_section
from .lrvb import linear_response_section

__all__ = [
    "NutsOptions",
    "RunInputs",
    "SbcSettings",
    "az_summary_table",
    "diagnose_run_dir",
    "diagnostics_markdown",
    "draw_figures",
    "format_diagnostics",
    "guide_leaderboard",
    "nuts_diagnostics",
    "vi_diagnostics",
]

log = logging.getLogger(__name__)

DEFAULT_NUTS = NutsOptions()
"""NUTS settings of ``pyro-spam diagnose --nuts`` without further options."""


# --------------------------------------------------------------------------------------------
# Tables for the report
# --------------------------------------------------------------------------------------------


def _markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats to 4 significant digits, None as ``n/a``."""

    def cell(v: Any) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, (float, np.floating)):
            if not np.isfinite(v):
                return "nan"
            return f"{v:.0f}" if float(v).is_integer() else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _write_table(out: Path, stem: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """``<stem>.csv`` and ``<stem>.md`` (atomic); returns the two file names."""
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(header)
    wr.writerows([[f"{v:.6g}" if isinstance(v, (float, np.floating)) else v for v in r] for r in rows])
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    atomic_write_text(out / f"{stem}.md", _markdown(header, rows))
    return [f"{stem}.csv", f"{stem}.md"]


def az_summary_table(idata: az.InferenceData, out: Path, stem: str, *, kind: str) -> tuple[Any, list[str]]:
    """``az.summary`` of ``w`` (94 % HDI) as ``<stem>.csv``/``.md``; returns (DataFrame, file names).

    ``kind="stats"`` for independent guide draws (r̂ and ESS are for Markov chains), ``"all"`` for NUTS.
    """
    df = az.summary(idata, var_names=[W], kind=kind, hdi_prob=HDI_PROB)
    names = [str(n) for n in idata.posterior[W].coords["coef"].values]
    header = ["coefficient"] + [str(c) for c in df.columns]
    rows = [[n] + [float(v) for v in df.iloc[i].values] for i, n in enumerate(names)]
    return df, _write_table(out, stem, header, rows)


# --------------------------------------------------------------------------------------------
# Run-directory stages
# --------------------------------------------------------------------------------------------


@dataclass
class RunInputs:
    """What the diagnostics need from a run (held by a RunContext, or read back from a run directory)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    coef_names: tuple[str, ...]
    prior_scale: float
    seed: int
    particles: int
    num_draws: int
    versions: dict[str, str] = field(default_factory=dict)
    lppd_test: dict[str, float] = field(default_factory=dict)


def run_inputs(run: RunDirectory) -> RunInputs:
    """The diagnostics' inputs read back from a finished run directory."""
    cfg, summary, f = run.config, run.summary, run.features
    return RunInputs(
        x_train=f["X_train"], y_train=f["y_train"], x_test=f["X_test"], y_test=f["y_test"],
        coef_names=run.coef_names, prior_scale=cfg.train.prior_scale, seed=cfg.train.seed,
        particles=cfg.train.particles, num_draws=cfg.num_draws, versions=dict(summary["meta"].get("versions", {})),
        lppd_test={k: s["test"]["lppd_per_message"] for k, s in summary["fits"].items() if "test" in s},
    )


def vi_diagnostics(inp: RunInputs, fits: Mapping[str, FitResult], out: Path) -> tuple[dict[str, Any], dict[str, az.InferenceData]]:
    """InferenceData (netCDF), k̂, LOO and ``az.summary`` per fit, written into ``out``.

    Each fit's draws are made as the run made them (:func:`~pyro_spam.summary.draw_seed`), one fit
    at a time, and dropped when its numbers are done: the returned InferenceData keep everything
    but the log-likelihood (draws × n_train), which only the numbers here need.
    Returns the ``diagnostics`` section of ``summary.json`` and the InferenceData per fit.
    Files: ``posterior_<elbo>.nc``, ``az_summary_<elbo>.csv``/``.md``.
    """
    with torch_threads(1):  # the repeated-draw log-likelihoods are small matmuls: one thread is faster
        return _vi_diagnostics(inp, fits, out)


def _vi_diagnostics(inp: RunInputs, fits: Mapping[str, FitResult], out: Path) -> tuple[dict[str, Any], dict[str, az.InferenceData]]:
    t0 = time.perf_counter()
    per_fit: dict[str, Any] = {}
    idatas: dict[str, az.InferenceData] = {}
    files: list[str] = []
    for kind, fr in fits.items():
        w = run_draws(fr, inp.num_draws, inp.seed)
        # no draws × n_train logit matrix (the replicated labels take the logits block by block), and
        # the log-likelihood matrix only once the InferenceData is built: one large matrix at a time
        idata = to_inference_data(fr, inp.coef_names, inp.x_train, inp.y_train, inp.x_test, inp.y_test,
                                  Draws(w=w, logit=None, loglik=None), predict_draws(w, inp.x_test),
                                  seed=inp.seed, prior_scale=inp.prior_scale, particles=inp.particles,
                                  versions=inp.versions, logit_fn=_logits, log_likelihood=False)
        save_netcdf(idata, out / f"posterior_{kind}.nc")
        idatas[kind] = idata
        ll = loglik_matrix(w, inp.x_train, inp.y_train)
        cov = None if fr.scale_tril is None else fr.cov  # full and low-rank guides: q's own covariance
        kh = vi_khat(w, ll, fr.loc, fr.scale, inp.prior_scale, cov)
        log_ratio = ll.sum(axis=1) + log_prior(w, inp.prior_scale) - log_q(w, fr.loc, fr.scale, cov)
        loo_corrected = vi_corrected_loo(ll, log_ratio)
        del ll  # the LOO's float32 matrix is made afresh once this one is freed, not beside it (18 MB off the peak)
        release_freed_memory()
        loo = loo_summary(loglik_matrix(w, inp.x_train, inp.y_train, np.float32))  # as az.loo of the file's (rebuilt) float32 group
        if kind in inp.lppd_test:
            loo["lppd_test_per_message"] = inp.lppd_test[kind]
        _, tables = az_summary_table(idata, out, f"az_summary_{kind}", kind="stats")
        reps = khat_repeats(lambda w: loglik_sum(w, inp.x_train, inp.y_train), fr.loc, fr.scale, cov=cov, prior_scale=inp.prior_scale,
                            n_draws=inp.num_draws, seed=draw_seed(inp.seed))
        per_fit[kind] = {"khat": kh.khat, "khat_reading": kh.reading, "khat_median": reps["median"],
                         "khat_range": [reps["min"], reps["max"]], "khat_repeats": reps, "psis": kh.to_dict(inp.coef_names),
                         "loo": loo, "loo_corrected": loo_corrected,
                         "netcdf": f"posterior_{kind}.nc", "az_summary": tables}
        release_freed_memory()
        files += [f"posterior_{kind}.nc", *tables]
    main = primary_fit(list(fits))
    release_freed_memory()
    lr_section = linear_response_section(fits[main], main, inp.x_train, inp.y_train, inp.x_test, inp.y_test, inp.coef_names,
                                         prior_scale=inp.prior_scale, n_draws=inp.num_draws, seed=draw_seed(inp.seed))
    section = {
        "primary": main,
        "khat": per_fit[main]["khat"],
        "khat_reading": per_fit[main]["khat_reading"],
        "khat_median": per_fit[main]["khat_median"],
        "khat_range": per_fit[main]["khat_range"],
        "loo": per_fit[main]["loo"],
        "per_fit": per_fit,
        # the exact model's PSIS-LOO from the best proposal the run has: mean-field's own importance
        # ratios are heavy-tailed (k̂ ≈ 0.7), the linear-response Gaussian's are not (k̂ ≈ 0.5)
        "loo_corrected": {**lr_section["loo_corrected"], "proposal": "linear_response",
                          "proposal_khat_median": lr_section["khat_median"]},
        "linear_response": lr_section,
        "files": files,
        "seconds": {"vi": time.perf_counter() - t0, "linear_response": lr_section["seconds"]},
    }
    return section, idatas


def _logits(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return predict_draws(w, x).logit


def nuts_diagnostics(inp: RunInputs, fits: Mapping[str, FitResult], idatas: Mapping[str, az.InferenceData],
                     nuts_idata: az.InferenceData, out: Path, vi_section: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """r̂/ESS of the NUTS reference and the VI-vs-NUTS comparison per fit, written into ``out``.

    Files: ``az_summary_nuts.csv``/``.md``, ``vi_vs_nuts_<elbo>.csv``/``.md``. With the VI section
    (``vi_section``), also NUTS's PSIS-LOO against each fit's naive and corrected LOO and the
    linear-response sds against NUTS's.
    """
    vi_sections = (vi_section or {}).get("per_fit", {})
    lr = (vi_section or {}).get("linear_response")
    df, tables = az_summary_table(nuts_idata, out, "az_summary_nuts", kind="all")
    w_nuts = nuts_idata.posterior[W].values
    flat = w_nuts.reshape(-1, w_nuts.shape[-1])
    attrs = nuts_idata.posterior.attrs
    n_div = int(nuts_idata.sample_stats["diverging"].values.sum()) if "sample_stats" in nuts_idata.groups() else 0
    corr = strongest_correlation(flat, inp.coef_names)
    per_fit: dict[str, Any] = {}
    for kind, fr in fits.items():
        rows = compare_vi_nuts(idatas[kind].posterior[W].values[0], w_nuts, inp.coef_names, fr.loc, fr.scale)
        tables += _write_table(out, f"vi_vs_nuts_{kind}", COMPARISON_COLUMNS,
                               [[r[c] for c in COMPARISON_COLUMNS] for r in rows])
        per_fit[kind] = {"per_coef": rows, "verdict": comparison_verdict(rows, corr),
                         "khat_gaussian_theory": gaussian_khat(np.cov(flat, rowvar=False), fr.scale)}
    main = primary_fit(list(fits))
    lppd_nuts = float(lppd_pointwise(predict_draws(flat, inp.x_test, inp.y_test).loglik).mean())
    ll_nuts = predict_draws(flat, inp.x_train, inp.y_train).loglik
    loo_nuts = vi_corrected_loo(ll_nuts, np.zeros(ll_nuts.shape[0]))  # no correction: NUTS draws are the posterior
    del ll_nuts
    sd_nuts, mean_nuts = flat.std(axis=0, ddof=1), flat.mean(axis=0)
    loo_compare = {f"{kind}_naive": per_fit_loo["loo"]["elpd"] - loo_nuts["elpd"] for kind, per_fit_loo in vi_sections.items()}
    loo_compare.update({f"{kind}_corrected": d["loo_corrected"]["elpd"] - loo_nuts["elpd"] for kind, d in vi_sections.items()})
    lr_rows = []
    if lr is not None:
        loo_compare["linear_response_corrected"] = lr["loo_corrected"]["elpd"] - loo_nuts["elpd"]
        loo_compare["linear_response_naive"] = lr["loo_naive"]["elpd"] - loo_nuts["elpd"]
        lr_rows = [{"name": n, "sd_lr": float(a), "sd_nuts": float(b), "sd_ratio": float(a / b),
                    "mean_shift_in_sd": float(abs(m - mn) / b)}
                   for n, a, b, m, mn in zip(inp.coef_names, lr["scale"], sd_nuts, lr["loc"], mean_nuts, strict=True)]
    return {
        "elpd_loo": loo_nuts,
        "loo_minus_nuts": loo_compare,
        "linear_response": lr_rows,
        "rhat_max": float(df["r_hat"].max()),
        "ess_bulk_min": float(df["ess_bulk"].min()),
        "ess_tail_min": float(df["ess_tail"].min()),
        "divergences": n_div,
        "chains": int(w_nuts.shape[0]),
        "draws_per_chain": int(w_nuts.shape[1]),
        "warmup": int(attrs.get("warmup", -1)),
        "seed": int(attrs.get("seed", -1)),
        "full_mass": bool(attrs.get("full_mass", 0)),
        "step_size": np.atleast_1d(attrs.get("step_size", [])).tolist(),
        "seconds_per_chain": np.atleast_1d(attrs.get("seconds", [])).tolist(),
        "strongest_correlation": corr,
        "lppd_test_per_message": lppd_nuts,
        "compared_fit": main,
        "khat_gaussian_theory": per_fit[main]["khat_gaussian_theory"],
        "per_coef": per_fit[main]["per_coef"],
        "verdict": per_fit[main]["verdict"],
        "per_fit": per_fit,
        "netcdf": "nuts.nc",
        "files": ["nuts.nc", *tables],
    }


def guide_leaderboard(inp: RunInputs, fits: Mapping[str, FitResult], section: dict[str, Any], out: Path, *,
                      covs: Mapping[str, np.ndarray] | None = None, nuts_idata: az.InferenceData | None = None) -> list[str]:
    """``section["guides"]`` (the leaderboard, with NUTS columns when ``nuts_idata`` is given, and then k̂ from
    sets of :data:`~pyro_spam.pipeline.guides.REFERENCE_KHAT_DRAWS` draws) and ``guides_pair.png`` in ``out``;
    returns the figure's name. Its cost goes into ``section["seconds"]["guides"]``."""
    t0 = time.perf_counter()
    nuts_draws = nuts_seconds = None
    if nuts_idata is not None:
        nuts_draws = nuts_idata.posterior[W].values
        secs = np.atleast_1d(nuts_idata.posterior.attrs.get("seconds", []))
        nuts_seconds = float(np.sum(secs)) if secs.size else None
    with torch_threads(1):  # small matmuls, as in vi_diagnostics
        section["guides"] = guides_section(fits, section, inp.x_train, inp.y_train, inp.x_test, inp.y_test, inp.coef_names,
                                           prior_scale=inp.prior_scale, n_draws=inp.num_draws, seed=draw_seed(inp.seed),
                                           covs=covs, nuts_draws=nuts_draws, nuts_seconds=nuts_seconds,
                                           khat_draws=REFERENCE_KHAT_DRAWS if nuts_draws is not None else None)
    figures = draw_guides_figure(section["guides"], out, nuts_draws)
    section.setdefault("seconds", {})["guides"] = time.perf_counter() - t0
    return figures


def draw_figures(inp: RunInputs, idatas: Mapping[str, az.InferenceData], out: Path,
                 nuts_idata: az.InferenceData | None = None) -> list[str]:
    """ArviZ figures: forest (VI fits and NUTS), posterior densities with the prior, spam-rate PPC."""
    from ..plots.arviz_plots import plot_forest_compare, plot_posterior_prior, plot_ppc_rate

    main = primary_fit(list(idatas))
    models = {fit_label(k): idatas[k] for k in idatas}
    if nuts_idata is not None:
        models["NUTS (reference)"] = nuts_idata
    ref = nuts_idata if nuts_idata is not None else idatas[main]
    ref_label = "NUTS" if nuts_idata is not None else fit_label(main)
    w_ref = ref.posterior[W].values.reshape(-1, len(inp.coef_names))
    centre, spread = w_ref.mean(axis=0), w_ref.std(axis=0, ddof=1)
    # A second, standardised panel only helps when there is something to compare with the reference.
    standardised = ({label: _standardise(m, centre, spread) for label, m in models.items()}
                    if len(models) > 1 else None)
    axes = plot_forest_compare(models, standardised, reference=ref_label, hdi_prob=HDI_PROB)
    save_figure(axes[0].figure, out / "arviz_forest.png")
    axes = plot_posterior_prior(idatas[main], inp.prior_scale, label=fit_label(main),
                                reference=nuts_idata, hdi_prob=HDI_PROB)
    save_figure(axes.flat[0].figure, out / "arviz_posterior.png")
    axes = plot_ppc_rate(idatas[main], label=fit_label(main))
    save_figure(axes[0].figure, out / "arviz_ppc.png")
    return ["arviz_forest.png", "arviz_posterior.png", "arviz_ppc.png"]


def _standardise(idata: az.InferenceData, centre: np.ndarray, spread: np.ndarray) -> az.InferenceData:
    w = idata.posterior[W].values
    return draws_as_inference_data((w - centre) / spread, list(idata.posterior[W].coords["coef"].values))


def _write_markdown(section: dict[str, Any], out: Path) -> None:
    """``diagnostics.md`` into ``out``, named in the section."""
    section["markdown"] = "diagnostics.md"
    atomic_write_text(out / "diagnostics.md", diagnostics_markdown(section))


# --------------------------------------------------------------------------------------------
# pyro-spam diagnose RUN_DIR [--nuts]
# --------------------------------------------------------------------------------------------


def _reuse(path: Path) -> az.InferenceData | None:
    """An earlier InferenceData file, or None (with a log message) when it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return load_netcdf(path)
    except ModelFileError as exc:
        log.warning("%s; recomputing it", exc)
        return None


def _reuse_vi(summary: Mapping[str, Any], run_dir: Path,
              fits: Mapping[str, FitResult]) -> dict[str, az.InferenceData] | None:
    """The run's InferenceData per fit when its diagnostics are complete and every file reads back."""
    dg = summary.get("diagnostics", {})
    if set(dg.get("per_fit", {})) != set(fits) or "linear_response" not in dg:
        return None  # absent, or written before k̂ repeats, corrected LOO and linear response existed
    if "loo_corrected" not in dg or any("loo_corrected" not in d for d in dg["per_fit"].values()):
        return None
    idatas = {k: _reuse(run_dir / f"posterior_{k}.nc") for k in fits}
    return None if any(v is None for v in idatas.values()) else idatas  # type: ignore[return-value]


def diagnose_run_dir(run_dir: str | Path, *, nuts: bool = False, options: NutsOptions = DEFAULT_NUTS,
                     sbc: Sequence[str] = (), sbc_settings: SbcSettings | None = None,
                     progress: bool = False) -> dict[str, Any]:
    """Add the ArviZ diagnostics (and with ``nuts`` the NUTS reference) to an existing run directory.

    The VI part is computed only when the run lacks it or its files do not read back (draws
    regenerated exactly as the run made them, with :func:`~pyro_spam.summary.draw_seed`); an earlier
    ``nuts.nc`` is reused unless ``nuts`` asks for a fresh one. Everything is computed into a hidden
    staging folder first and moved in only when complete; ``summary.json`` is replaced last.
    ``sbc`` names the simulation-based calibration studies to run (``"prior"``, ``"posterior"``;
    :mod:`pyro_spam.pipeline.calibrate`, resumable, with ``sbc_settings``); earlier SBC results stay.
    Returns the ``diagnostics`` section. A folder without a run raises
    :class:`~pyro_spam.errors.ModelFileError` (from :func:`~pyro_spam.io.run_reader.read_run`).
    """
    run = read_run(run_dir)
    run_dir, summary = run.path, run.summary
    inp, fits = run_inputs(run), run.fits()
    stage = Path(tempfile.mkdtemp(prefix=".diagnose-", dir=run_dir))
    try:
        idatas = _reuse_vi(summary, run_dir, fits)
        if idatas is not None:
            section = dict(summary["diagnostics"])
        else:
            section, idatas = vi_diagnostics(inp, fits, stage)
        nuts_idata = None
        if nuts:
            res = run_nuts(inp.x_train, inp.y_train, prior_scale=inp.prior_scale, options=options, seed=inp.seed,
                           progress=progress)
            nuts_idata = nuts_inference_data(res, inp.coef_names, inp.prior_scale)
            save_netcdf(nuts_idata, stage / "nuts.nc")
        else:
            nuts_idata = _reuse(run_dir / "nuts.nc")
        if nuts_idata is not None:
            section["nuts"] = nuts_diagnostics(inp, fits, idatas, nuts_idata, stage, section)
            if nuts:
                for name in os.listdir(stage):  # the NUTS reference is new: posterior SBC must use it
                    if name == "nuts.nc":
                        os.replace(stage / name, run_dir / name)
        for key in SBC_KEYS.values():  # calibration results survive a recomputation of the VI part
            if key in summary.get("diagnostics", {}) and key not in section:
                section[key] = summary["diagnostics"][key]
        if sbc:
            t0 = time.perf_counter()
            settings = sbc_settings or SbcSettings()
            if settings.seed is None:
                settings = dataclasses.replace(settings, seed=inp.seed)
            section.update(sbc_diagnostics(run, sbc, settings, progress=progress))
            section.setdefault("seconds", {})["sbc"] = time.perf_counter() - t0
        guide_figures = guide_leaderboard(inp, fits, section, stage, covs=fit_covariances(fits, summary.get("fits")),
                                          nuts_idata=nuts_idata)
        t0 = time.perf_counter()
        section["figures"] = draw_figures(inp, idatas, stage, nuts_idata) + guide_figures
        section["figures"] += draw_sbc_figures(section, inp.coef_names, stage)
        section.setdefault("seconds", {})["figures"] = time.perf_counter() - t0
        _write_markdown(section, stage)
        for name in sorted(os.listdir(stage)):
            os.replace(stage / name, run_dir / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    summary["diagnostics"] = section
    figs = summary.setdefault("figures", [])
    figs.extend(f for f in section["figures"] if f not in figs)
    write_json(run_dir / SUMMARY, summary)
    render_report(run_dir, summary)
    return section


def _n_good(loo: Mapping[str, Any]) -> int:
    return int(next(v for k, v in loo["pareto_k_counts"].items() if k.startswith("k<=")))


def _n(v: Any, spec: str) -> str:
    """``format(v, spec)``, or ``n/a`` for a missing or non-finite number (JSON stores them as null)."""
    return format(v, spec) if isinstance(v, (int, float)) and np.isfinite(v) else "n/a"


def _pareto_k_text(lo: Mapping[str, Any]) -> str:
    bad = lo["n_obs"] - _n_good(lo)
    return f"{bad} of {lo['n_obs']} above {_n(lo['good_k'], '.2f')} (max {_n(lo['k_max'], '.2f')})"


def _nuts_text(n: Mapping[str, Any]) -> str:
    secs = sum(n["seconds_per_chain"]) if n["seconds_per_chain"] else float("nan")
    return (f"{n['chains']} chains × {n['draws_per_chain']} draws after {n['warmup']} warmup ({_n(secs, '.0f')} s): "
            f"r̂ max {_n(n['rhat_max'], '.3f')}, ESS bulk min {_n(n['ess_bulk_min'], '.0f')}, "
            f"ESS tail min {_n(n['ess_tail_min'], '.0f')}, {n['divergences']} divergences; "
            f"held-out lppd with NUTS draws {_n(n['lppd_test_per_message'], '.4f')} per message")


def _theory_text(section: Mapping[str, Any]) -> str:
    return (f"If the posterior were Gaussian with NUTS's covariance, this q would have k = "
            f"{_n(section['nuts']['khat_gaussian_theory'], '.2f')}; PSIS found {_n(section['khat'], '.2f')}.")


def _guides_table(lb: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the guide leaderboard for ``diagnostics.md`` and the terminal."""
    nuts = lb.get("reference") == "nuts"
    header = ["approximation", "ELBO", "k̂ median", "k̂ min", "k̂ max", "k̂ pooled"]
    header += ["sd/NUTS min", "sd/NUTS max", "max |Δmean|/sd", "max W1/sd"] if nuts else []
    header += ["ρ pair", "lppd/msg", "seconds"]
    rows = []
    for r in lb["rows"]:
        if r.get("key") == "nuts":  # the reference itself: no ELBO, no k̂, nothing to compare it with
            rows.append([r["name"], "reference", "—", "—", "—", "—"] + ["—"] * 4
                        + [r.get("pair_rho"), r.get("lppd_test_per_message"), r.get("seconds")])
            continue
        kr = r.get("khat_range") or [None, None]
        row = [r["name"], r.get("elbo"), r.get("khat_median"), kr[0], kr[1], r.get("khat_pooled")]
        row += [r.get("sd_ratio_min"), r.get("sd_ratio_max"), r.get("mean_shift_max_in_sd"), r.get("w1_max_in_sd")] if nuts else []
        rows.append(row + [r.get("pair_rho"), r.get("lppd_test_per_message"), r.get("seconds")])
    return header, rows


def diagnostics_markdown(section: Mapping[str, Any]) -> str:
    """The diagnostics as a Markdown fragment (``diagnostics.md``) that a report can include as is."""
    rows = []
    for kind, d in section["per_fit"].items():
        lo = d["loo"]
        kr = d.get("khat_range") or [None, None]
        rows.append([kind, d["khat"], d.get("khat_median"), kr[0], kr[1], d["khat_reading"], lo["elpd"], lo["se"], lo["p_loo"],
                     (d.get("loo_corrected") or {}).get("elpd"), lo["elpd_per_message"], lo.get("lppd_test_per_message"),
                     _pareto_k_text(lo)])
    lines = [
        "### How good is the mean-field approximation?", "",
        _markdown(["fit", "PSIS k̂ of q", "k̂ median", "k̂ min", "k̂ max", "reading", "elpd_loo", "se", "p_loo",
                   "elpd_loo corrected", "elpd_loo / msg", "held-out lppd / msg", "LOO Pareto k"], rows),
        "k̂ < 0.5 good, 0.5–0.7 usable, > 0.7 unreliable (Yao et al. 2018): it measures how far q(w) is from the "
        "posterior as an importance-sampling proposal. elpd_loo is PSIS-LOO on the guide's draws; the held-out lppd "
        "is the same quantity on the test split.",
    ]
    lr = section.get("linear_response")
    if lr:
        lines += ["", f"Linear-response covariance of the {lr['fitted_from']} fit: k̂ median {_n(lr['khat_median'], '.2f')} "
                  f"(range {_n(lr['khat_range'][0], '.2f')}–{_n(lr['khat_range'][1], '.2f')}), corrected elpd_loo "
                  f"{_n(lr['loo_corrected']['elpd'], '.1f')}.", "",
                  _markdown(["coefficient", "mean", "sd mean-field", "sd linear response"],
                            [[n, m, a, b] for n, m, a, b in zip(lr["coef_names"], lr["loc"], lr["meanfield_scale"], lr["scale"],
                                                                  strict=True)])]
    if section.get("guides"):
        lines += ["", "### Which approximation to trust?", "", _markdown(*_guides_table(section["guides"]))]
    main = section["per_fit"][section["primary"]]
    rw = main["psis"].get("reweighted")
    if rw:
        lines += ["", f"Importance-reweighted moments ({section['primary']}, k̂ = {_n(main['khat'], '.2f')}):", "",
                  _markdown(["coefficient", "mean q", "mean reweighted", "sd q", "sd reweighted"],
                            [[r["name"], r["mean_q"], r["mean_is"], r["sd_q"], r["sd_is"]] for r in rw])]
    n = section.get("nuts")
    if n:
        cols = ("name", "mean_vi", "mean_nuts", "sd_vi", "sd_nuts", "mean_shift_in_sd", "sd_ratio")
        table = [[r[c] for c in cols] for r in n["per_coef"]]
        lines += ["", "### NUTS reference", "", _nuts_text(n) + ".", "",
                  _markdown(["coefficient", "mean VI", "mean NUTS", "sd VI", "sd NUTS", "abs Δmean / sd NUTS",
                             "sd VI / sd NUTS"], table),
                  f"VI = the {n['compared_fit']} fit. {n['verdict']} {_theory_text(section)}"]
    return "\n".join(lines) + "\n"


def format_diagnostics(section: Mapping[str, Any], run_dir: str | Path | None = None) -> str:
    """A few lines for the terminal: k̂ and LOO per fit; r̂, ESS and the VI-vs-NUTS table when present."""
    lines = []
    for kind, d in section["per_fit"].items():
        lo = d["loo"]
        warn = f"; ArviZ warns: {'; '.join(lo['warning_messages'])}" if lo["warning"] else ""
        held = lo.get("lppd_test_per_message")
        held_txt = "" if held is None else f" vs held-out lppd {_n(held, '.4f')}/msg"
        kr = d.get("khat_range")
        spread = f", median {_n(d['khat_median'], '.2f')} over repeats, range {_n(kr[0], '.2f')}–{_n(kr[1], '.2f')}" if kr else ""
        corrected = d.get("loo_corrected")
        corr_txt = f" | corrected elpd_loo {_n(corrected['elpd'], '.1f')}" if corrected else ""
        lines.append(f"{kind:>9}: PSIS k̂ of q = {_n(d['khat'], '.2f')} ({d['khat_reading']}{spread}) | "
                     f"elpd_loo {_n(lo['elpd'], '.1f')} ± {_n(lo['se'], '.1f')} (p_loo {_n(lo['p_loo'], '.1f')}; "
                     f"{_n(lo['elpd_per_message'], '.4f')}/msg{held_txt}){corr_txt}{warn}")
    lr = section.get("linear_response")
    if lr:
        kr = lr["khat_range"]
        lines.append(f"linear response ({lr['fitted_from']}): sd {', '.join(_n(v, '.3f') for v in lr['scale'])} (mean-field "
                     f"{', '.join(_n(v, '.3f') for v in lr['meanfield_scale'])}) | k̂ median {_n(lr['khat_median'], '.2f')} "
                     f"(range {_n(kr[0], '.2f')}–{_n(kr[1], '.2f')}) | corrected elpd_loo {_n(lr['loo_corrected']['elpd'], '.1f')}")
    n = section.get("nuts")
    if n:
        lines.append("NUTS: " + _nuts_text(n))
        lines.append(f"{'coefficient':>12} {'mean_vi':>8} {'mean_nuts':>9} {'sd_vi':>6} {'sd_nuts':>7} {'|Δ|/sd':>7} "
                     f"{'sd ratio':>8}   (VI = {n['compared_fit']})")
        for r in n["per_coef"]:
            lines.append(f"{r['name']:>12} {_n(r['mean_vi'], '>8.3f')} {_n(r['mean_nuts'], '>9.3f')} "
                         f"{_n(r['sd_vi'], '>6.3f')} {_n(r['sd_nuts'], '>7.3f')} "
                         f"{_n(r['mean_shift_in_sd'], '>7.2f')} {_n(r['sd_ratio'], '>8.2f')}")
        lines += [n["verdict"], _theory_text(section)]
        if n.get("loo_minus_nuts"):
            lines.append(f"NUTS elpd_loo {_n(n['elpd_loo']['elpd'], '.2f')}; LOO minus NUTS (nats): "
                         + ", ".join(f"{k} {v:+.2f}" for k, v in n["loo_minus_nuts"].items()))
        if n.get("linear_response"):
            lines.append("linear-response sd / NUTS sd: " + ", ".join(f"{r['name']} {r['sd_ratio']:.3f}" for r in n["linear_response"]))
    lb = section.get("guides")
    if lb:
        pn = lb.get("pair_names") or ["", ""]
        lines.append(f"guide leaderboard (ρ on {pn[0]}, {pn[1]}; k̂ median [min–max] of {lb.get('repeats')} sets of "
                     f"{lb.get('khat_draws') or lb.get('n_draws')} draws, pooled = all of them at once"
                     + ("; sd / NUTS sd min–max; max W1 in NUTS sd" if lb.get("reference") == "nuts" else "") + "):")
        for r in lb["rows"]:
            tail = (f"ρ {_n(r.get('pair_rho'), '+.2f')} | lppd {_n(r.get('lppd_test_per_message'), '.4f')}/msg | "
                    f"{_n(r.get('seconds'), '.2f')} s")
            if r.get("key") == "nuts":  # the reference: no ELBO, no k̂, nothing to compare with
                lines.append(f"  {r['name']:>34}: reference (no ELBO or k̂) | {tail}")
                continue
            kr = r.get("khat_range") or [None, None]
            cmp_txt = (f" | sd ratio {_n(r.get('sd_ratio_min'), '.2f')}–{_n(r.get('sd_ratio_max'), '.2f')} | W1 {_n(r.get('w1_max_in_sd'), '.2f')}"
                       if r.get("sd_ratio_min") is not None else "")
            elbo = "—" if r.get("elbo") is None and r.get("gaussian") is False else _n(r.get("elbo"), ".2f")
            pooled = f", pooled {_n(r.get('khat_pooled'), '.2f')}" if r.get("khat_pooled") is not None else ""
            lines.append(f"  {r['name']:>34}: ELBO {elbo} | k̂ {_n(r.get('khat_median'), '.2f')} "
                         f"[{_n(kr[0], '.2f')}–{_n(kr[1], '.2f')}]{pooled}{cmp_txt} | {tail}")
    lines += sbc_text(section, section.get("linear_response", {}).get("coef_names") or [])
    if run_dir is not None:
        lines.append(f"diagnostics written to {run_dir} ({', '.join(section['figures'])})")
    return "\n".join(lines)
