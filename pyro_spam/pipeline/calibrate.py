"""``pyro-spam diagnose RUN_DIR --sbc [prior|posterior|both] [--sims N]``: simulation-based calibration
(:mod:`pyro_spam.calibration`) run on a finished run and written into its directory.

Each study keeps its progress in ``sbc_<study>.npz`` (written atomically every few simulations,
and on Ctrl-C), so rerunning the same command continues where it stopped; a finished study with
the same settings is reused. Results go to ``summary["diagnostics"]["sbc"]`` (prior SBC) and
``["posterior_sbc"]``: per approximation ``sims``, ``coverage_50``, ``coverage_90``, ``ks_p_vsbc``,
``rank_p`` (lists in coefficient order) and more, plus an ``info`` entry with the settings, the
reference posterior and the time taken. Figures: ``sbc_ranks.png`` and ``sbc_coverage.png``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import APPROX_LABELS, SbcSettings, new_state, run_sbc, sbc_results
from ..diagnostics.sbc import sbc_verdict
from ..errors import PyroSpamError
from ..inference_data import W, load_netcdf
from ..io.run_reader import RunDirectory
from ..io.rundir import save_figure, write_npz
from ..linear_response import lr_covariance
from ..training.engines import fit

__all__ = ["SBC_FIGURES", "SBC_KEYS", "sbc_diagnostics", "sbc_text"]

log = logging.getLogger(__name__)

SBC_KEYS = {"prior": "sbc", "posterior": "posterior_sbc"}
"""Where each study lands in ``summary["diagnostics"]``."""
SBC_FIGURES = ("sbc_ranks.png", "sbc_coverage.png")
_STATE_ARRAYS = ("truth", "loc", "scale", "lr_cov", "converged", "lr_ok")
_REFERENCE_DRAWS = 4000


def _state_path(run_dir: Path, study: str) -> Path:
    return run_dir / f"sbc_{study}.npz"


def _save_state(path: Path, st: Mapping[str, Any]) -> None:
    meta = {k: st[k] for k in ("study", "settings", "done", "redrawn", "seconds", "fit_seconds", "reference")}
    write_npz(path, meta=np.array(json.dumps(meta)), **{k: np.asarray(st[k]) for k in _STATE_ARRAYS})


def _load_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            st = json.loads(str(z["meta"]))
            st.update({k: np.array(z[k]) for k in _STATE_ARRAYS})
        return st
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s is unreadable (%s); starting that study afresh", path, exc)
        return None


def _reference(run_dir: Path, x: np.ndarray, y: np.ndarray, loc: np.ndarray, scale: np.ndarray, prior_scale: float,
               seed: int) -> tuple[np.ndarray, str]:
    """Posterior draws of the observed data: the run's NUTS draws, else the linear-response Gaussian."""
    nuts = run_dir / "nuts.nc"
    if nuts.is_file():
        w = np.asarray(load_netcdf(nuts).posterior[W].values, dtype=np.float64)
        return w.reshape(-1, w.shape[-1]), f"the run's NUTS draws (nuts.nc, {w.shape[0]}×{w.shape[1]})"
    lr = lr_covariance(x, y, loc, scale, prior_scale)
    eps = np.random.default_rng([seed, 5]).standard_normal((_REFERENCE_DRAWS, loc.size))
    return (loc + eps @ np.linalg.cholesky(lr.cov).T,
            "the linear-response Gaussian of the observed data (no NUTS draws in this run: `pyro-spam diagnose --nuts` adds them)")


def sbc_diagnostics(run: RunDirectory, studies: Sequence[str], settings: SbcSettings, *,
                    progress: bool = False) -> dict[str, dict[str, Any]]:
    """Run (or continue, or reuse) the requested SBC studies on ``run``; returns ``{summary key: section}``."""
    from ..config import TrainConfig

    cfg, f = run.config, run.features
    x, y = np.asarray(f["X_train"], dtype=np.float64), np.asarray(f["y_train"], dtype=np.float64)
    prior_scale = cfg.train.prior_scale
    obs = None
    if "posterior" in studies:  # the observed data's optimum: posterior SBC's warm start and fallback reference
        obs = fit(x, y, TrainConfig(optimizer="lbfgs", prior_scale=prior_scale, grad_tol=settings.grad_tol))
        if obs.stop_reason != "converged":
            raise PyroSpamError(f"the exact fit of the observed data did not converge ({obs.stop_reason}); posterior SBC needs it")
    out: dict[str, dict[str, Any]] = {}
    for study in studies:
        path = _state_path(run.path, study)
        reference_text = None
        ref = None
        if study == "posterior":
            assert obs is not None
            ref, reference_text = _reference(run.path, x, y, obs.loc, obs.scale, prior_scale, settings.seed)
        st = _load_state(path)
        fresh = new_state(study, x.shape[1] + 1, settings)
        if st is None or st.get("settings") != fresh["settings"] or st.get("reference") != reference_text:
            st = fresh
        st["reference"] = reference_text
        st = run_sbc(study, x, y, prior_scale=prior_scale, settings=settings, reference=ref,
                     start=(obs.loc, obs.scale) if obs is not None and study == "posterior" else None, state=st,
                     save=lambda s, p=path: _save_state(p, s), progress=progress)
        res = sbc_results(st, reference=reference_text)
        info = {k: v for k, v in res.items() if k != "approximations"}
        section: dict[str, Any] = {name: {**summ, "settings": res["settings"], "reference": res["reference"]}
                                   for name, summ in res["approximations"].items()}
        section["info"] = {**info, "file": path.name, "approximations": list(res["approximations"]),
                           "verdicts": {name: sbc_verdict(summ, list(run.coef_names))
                                        for name, summ in res["approximations"].items()}}
        out[SBC_KEYS[study]] = section
    return out


def draw_sbc_figures(diagnostics: Mapping[str, Any], names: Sequence[str], out: Path) -> list[str]:
    """The rank ECDF-difference grid and the coverage plot from the SBC sections present."""
    from ..plots.sbc import plot_coverage, plot_rank_ecdf

    results = {}
    for study, key in SBC_KEYS.items():
        sec = diagnostics.get(key)
        if sec:
            results[f"{study} SBC"] = {APPROX_LABELS.get(a, a): sec[a] for a in sec["info"]["approximations"]}
    if not results:
        return []
    save_figure(plot_rank_ecdf(results, list(names)), out / SBC_FIGURES[0])
    save_figure(plot_coverage(results, list(names)), out / SBC_FIGURES[1])
    return list(SBC_FIGURES)


def _min_p(ps: Sequence[float | None]) -> str:
    vals = [p for p in ps if p is not None]  # None: too few simulations for the test
    return f"{min(vals):.2g}" if vals else "n/a"


def sbc_text(diagnostics: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """One line per study and approximation for the terminal."""
    lines = []
    for study, key in SBC_KEYS.items():
        sec = diagnostics.get(key)
        if not sec:
            continue
        info = sec["info"]
        lines.append(f"{study} SBC: {info['sims']} simulations in {info['seconds']:.1f} s "
                     f"({info.get('fit_seconds', float('nan')):.1f} s in the mean-field refits; reference: {info['reference']}; "
                     f"{info['redrawn']} one-class simulations redrawn, {info['not_converged']} refits not converged)")
        for a in info["approximations"]:
            s = sec[a]
            lo90 = min(s["coverage_90"])
            worst = names[int(np.argmin(s["coverage_90"]))] if names else "?"
            lines.append(f"  {APPROX_LABELS.get(a, a):>24}: 90% coverage {lo90:.2f}–{max(s['coverage_90']):.2f} "
                         f"(lowest {worst}; band {s['coverage_band_90'][0]:.2f}–{s['coverage_band_90'][1]:.2f}), "
                         f"50% {min(s['coverage_50']):.2f}–{max(s['coverage_50']):.2f}, min rank p {_min_p(s['rank_p'])}, "
                         f"min VSBC KS p {_min_p(s['ks_p_vsbc'])}")
    return lines
