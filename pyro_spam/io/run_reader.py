"""The one reader of a finished run directory: ``summary.json``, its configuration, ``features.npz``
and the fitted guides. ``diagnose``, ``compare``, the report and the tests all read runs through it.

Every way a run directory can be missing, incomplete or from a newer pyro-spam raises
:class:`~pyro_spam.errors.ModelFileError` with one line that says which file and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import ModelFileError
from ..summary import SCHEMA_VERSION, Summary
from ..types import ElboHistory, FitResult
from .rundir import SUMMARY, read_json

FEATURES = "features.npz"
FEATURE_ARRAYS = ("X_train", "y_train", "X_test", "y_test", "names")
HISTORY_FIELDS = ("elbo", "loglik", "kl", "lr")


def guide_filename(kind: str) -> str:
    """Name of a run's guide file for one ELBO type, e.g. ``guide_meanfield.json``."""
    return f"guide_{kind}.json"


@dataclass
class RunDirectory:
    """What a finished run left on disk.

    path : Path
    summary : Summary
        ``summary.json`` as written (schema checked).
    config : RunConfig
        The run's configuration (``summary["meta"]["config"]``).
    features : dict of str to ndarray
        ``features.npz``: ``X_train``, ``y_train``, ``X_test``, ``y_test``, ``names`` (and the row indices).
    """

    path: Path
    summary: Summary
    config: RunConfig
    features: dict[str, np.ndarray]

    @property
    def coef_names(self) -> tuple[str, ...]:
        """Names of the K+1 coefficients, bias first (as :attr:`FeatureSet.coef_names`)."""
        return ("w0 (bias)",) + tuple(str(n) for n in self.features["names"])

    def fits(self) -> dict[str, FitResult]:
        """The fitted guides (``guide_<elbo>.json``) of every fit the summary lists."""
        fits: dict[str, FitResult] = {}
        for kind in self.summary.get("fits", {}):
            path = self.path / guide_filename(kind)
            try:
                g = read_json(path)
            except (FileNotFoundError, ValueError) as exc:
                raise ModelFileError(f"cannot read {path}: {exc}") from None
            if list(g.get("coef_names", [])) != list(self.coef_names):
                raise ModelFileError(f"{path} names coefficients {g.get('coef_names')} but {FEATURES} has {list(self.coef_names)}")
            h = {k: np.asarray(v, dtype=np.float64) for k, v in g.get("history", {}).items()}
            hist = ElboHistory(**{k: h.get(k, np.zeros(0)) for k in HISTORY_FIELDS})
            guide = str(g.get("guide", "meanfield"))
            tril = np.linalg.cholesky(np.asarray(g["cov"], dtype=np.float64)) if guide != "meanfield" and "cov" in g else None
            fits[kind] = FitResult(
                elbo=kind, engine=g.get("engine", "svi"), loc=np.asarray(g["loc"], dtype=np.float64),
                scale=np.asarray(g["scale"], dtype=np.float64), history=hist, steps=int(g.get("steps", 0)),
                seconds=float(self.summary["fits"][kind].get("seconds", 0.0)), stop_reason=str(g.get("stop_reason", "")),
                guide=guide, scale_tril=tril,
            )
        if not fits:
            raise ModelFileError(f"{self.path / SUMMARY} lists no fits")
        return fits


def read_summary(run_dir: str | Path) -> Summary:
    """``summary.json`` of a run directory, refusing one from a newer schema version."""
    run_dir = Path(run_dir)
    path = run_dir / SUMMARY
    if not path.is_file():
        if run_dir.exists() and not run_dir.is_dir():
            raise ModelFileError(f"{run_dir} is a file, not a run directory; pass the folder `pyro-spam run --out DIR` wrote")
        raise ModelFileError(
            f"{run_dir} is not a pyro-spam run directory (no {SUMMARY}); make one with `pyro-spam run --out {run_dir}`"
        )
    try:
        summary = read_json(path)
    except ValueError as exc:
        raise ModelFileError(f"{path} is damaged ({exc}); rerun `pyro-spam run`") from None
    if not isinstance(summary, dict):
        raise ModelFileError(f"{path} is not a pyro-spam summary (a JSON object is expected)")
    version = summary.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ModelFileError(f"{path} has summary schema version {version!r}; this pyro-spam reads up to "
                             f"{SCHEMA_VERSION}: upgrade pyro-spam")
    return summary  # type: ignore[return-value]


def read_run(run_dir: str | Path) -> RunDirectory:
    """Summary, configuration and features of a finished run (fits on demand: :meth:`RunDirectory.fits`)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    try:
        config = RunConfig.from_saved(summary["meta"]["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{run_dir / SUMMARY} has no usable run configuration ({exc})") from None
    path = run_dir / FEATURES
    if not path.is_file():
        raise ModelFileError(f"{run_dir} is incomplete: {FEATURES} is missing; rerun `pyro-spam run` to recreate it")
    try:
        with np.load(path, allow_pickle=False) as f:
            features = {k: f[k] for k in f.files}
    except (ValueError, OSError) as exc:
        raise ModelFileError(f"cannot read {path}: {exc}") from None
    missing = [k for k in FEATURE_ARRAYS if k not in features]
    if missing:
        raise ModelFileError(f"{path} lacks {missing}; rerun `pyro-spam run` to recreate it")
    return RunDirectory(path=run_dir, summary=summary, config=config, features=features)


def summary_value(summary: Any, path: str, default: Any = None) -> Any:
    """``summary`` at a slash-separated ``path`` (``"fits/meanfield/steps"``), or ``default`` when absent."""
    cur = summary
    for part in path.split("/"):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur
