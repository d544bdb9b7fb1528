"""One file per fitted model: feature pipeline, guide parameters and configuration, no pickle.

Format (``FORMAT_VERSION`` 1): an uncompressed ``.npz`` holding only plain numeric arrays plus
one 0-d unicode array ``header`` with JSON. It loads with ``np.load(..., allow_pickle=False)``, so
opening a model file never runs code.

``header`` keys: ``format`` (``"pyro-spam-model"``), ``format_version``, ``pyro_spam_version``,
``created`` (UTC), ``params`` (the estimator's constructor parameters), ``classes``,
``n_features_in``, ``features`` (the pipeline's JSON metadata), ``fit`` (steps, stop reason, coef
names), ``embedding`` (how X was made: ``embedder``, ``max_length``, ``normalize``; ``embedder`` is
None when unknown), ``training_data`` (where the data came from), ``arrays`` (name → shape) and
``sha256`` (a digest of every array's bytes, checked on load).

Arrays: ``feature.<field>`` for each :attr:`FeaturePipeline.ARRAY_FIELDS`, ``guide.loc``,
``guide.scale`` (K+1,), ``history.{elbo,loglik,kl,lr}`` (steps,).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .errors import ModelFileError
from .estimator import VariationalSpamClassifier
from .features import FeaturePipeline
from .rundir import to_jsonable, atomic_write_bytes
from .types import ElboHistory, FitResult

if TYPE_CHECKING:
    from .pipeline import RunContext

FORMAT = "pyro-spam-model"
FORMAT_VERSION = 1
MODEL_EXT = ".npz"
HISTORY_FIELDS = ("elbo", "loglik", "kl", "lr")


def model_filename(elbo: str) -> str:
    """Name of a run's model file for one ELBO type, e.g. ``model_meanfield.npz``."""
    return f"model_{elbo}{MODEL_EXT}"


@dataclass(frozen=True)
class SavedModel:
    """A loaded model file.

    estimator : VariationalSpamClassifier
        Fitted, ready to predict.
    embedding : dict
        How the training embeddings were made (``embedder`` is None when unknown).
    header : dict
        The whole JSON header.
    path : Path
    """

    estimator: VariationalSpamClassifier
    embedding: dict[str, Any]
    header: dict[str, Any]
    path: Path

    @property
    def embedder(self) -> str | None:
        return self.embedding.get("embedder")

    @property
    def elbo(self) -> str:
        return str(self.estimator.elbo)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _arrays_of(est: VariationalSpamClassifier) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    feat, feat_meta = est.feature_pipeline_.to_arrays()
    arrays = {f"feature.{k}": np.asarray(v, dtype=np.float64) for k, v in feat.items()}
    arrays["guide.loc"] = np.asarray(est.loc_, dtype=np.float64)
    arrays["guide.scale"] = np.asarray(est.scale_, dtype=np.float64)
    for f in HISTORY_FIELDS:
        arrays[f"history.{f}"] = np.asarray(getattr(est.history_, f), dtype=np.float64)
    return arrays, feat_meta


def save_model(
    est: VariationalSpamClassifier,
    path: str | Path,
    *,
    embedding: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
) -> Path:
    """Write a fitted estimator to ``path`` atomically (temporary file + rename).

    Parameters
    ----------
    est : VariationalSpamClassifier
        Fitted.
    path : str or Path
        Destination; conventionally ends in ``.npz``.
    embedding : dict, optional
        How X was made; ``{"embedder": name, "max_length": int, "normalize": bool}``. Without
        it, ``pyro-spam predict`` can only use precomputed embeddings.
    training_data : dict, optional
        Facts about the training data (source, n, dim) kept for the record.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)
    arrays, feat_meta = _arrays_of(est)
    classes = np.asarray(est.classes_)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pyro_spam_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "params": est.get_params(deep=False),
        "classes": classes.tolist(),
        "classes_dtype": classes.dtype.str,
        "n_features_in": int(est.n_features_in_),
        "feature_names_in": list(map(str, getattr(est, "feature_names_in_", []))) or None,
        "features": feat_meta,
        "fit": {
            "elbo": est.elbo, "engine": est.engine, "steps": est.n_iter_, "stop_reason": est.stop_reason_,
            "coef_names": list(est.coef_names_),
        },
        "embedding": {"embedder": None, "max_length": None, "normalize": None, **(embedding or {})},
        "training_data": training_data or {},
        "arrays": {k: list(v.shape) for k, v in arrays.items()},
        "sha256": _digest(arrays),
    }
    text = json.dumps(to_jsonable(header), allow_nan=False, sort_keys=True)
    buf = io.BytesIO()
    np.savez(buf, header=np.array(text, dtype=str), **arrays)
    path = Path(path)
    if not path.parent.is_dir():
        raise ModelFileError(f"cannot write the model file {path}: folder {path.parent} does not exist")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory, not a model file (pass a run directory to `pyro-spam predict`)")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is corrupt or not a model file (not a complete .npz archive)")
    try:
        # Open the file ourselves: np.load leaks its handle when the zip is unreadable.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            if "header" not in npz.files:
                raise ModelFileError(
                    f"{path} is not a pyro-spam model file (no header); model files are written by "
                    "`pyro-spam run` (model_<elbo>.npz) or VariationalSpamClassifier.save"
                )
            header_text = str(npz["header"].item())
            arrays = {k: npz[k] for k in npz.files if k != "header"}
    except ModelFileError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise ModelFileError(f"{path} holds pickled Python objects; pyro-spam model files never do, so it will not be loaded") from None
        raise ModelFileError(f"{path} is not a readable model file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ModelFileError(f"{path} is corrupt or not a model file ({type(exc).__name__}: {exc})") from None
    try:
        header = json.loads(header_text)
    except ValueError as exc:
        raise ModelFileError(f"{path} has a damaged header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a pyro-spam model file (header format is {header.get('format') if isinstance(header, dict) else None!r})")
    return header, arrays


def _check_version(header: dict[str, Any], path: Path) -> None:
    version = header.get("format_version")
    written_by = header.get("pyro_spam_version", "unknown")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path} has no valid format_version; it is damaged or was not written by pyro-spam")
    if version != FORMAT_VERSION:
        newer = version > FORMAT_VERSION
        raise ModelFileError(
            f"{path} uses model-file format version {version} (written by pyro-spam {written_by}); this "
            f"pyro-spam {__version__} reads version {FORMAT_VERSION} only: "
            + ("upgrade pyro-spam" if newer else "re-create the model with `pyro-spam run` or fit() + save()")
        )


def _check_arrays(header: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> None:
    expected = header.get("arrays") or {}
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ModelFileError(f"{path} does not match its header: missing arrays {missing}, unexpected arrays {extra}")
    for name, shape in expected.items():
        if list(arrays[name].shape) != list(shape):
            raise ModelFileError(f"{path} does not match its header: {name} has shape {arrays[name].shape}, header says {tuple(shape)}")
    if _digest(arrays) != header.get("sha256"):
        raise ModelFileError(f"{path} is corrupt: its arrays do not match the checksum in its header")


def _build(header: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> VariationalSpamClassifier:
    params = dict(header["params"])
    known = set(VariationalSpamClassifier().get_params())
    if set(params) != known:
        raise ModelFileError(
            f"{path} does not match this version's estimator: parameters {sorted(set(params) ^ known)} differ"
        )
    feat_meta = header["features"]
    pipe = FeaturePipeline.from_arrays({f: arrays[f"feature.{f}"] for f in FeaturePipeline.ARRAY_FIELDS}, feat_meta)
    k, d = int(feat_meta["k"]), int(header["n_features_in"])
    loc, scale = arrays["guide.loc"], arrays["guide.scale"]
    if pipe.components_.shape != (k, d) or loc.shape != (k + 1,) or scale.shape != (k + 1,):
        raise ModelFileError(
            f"{path} is inconsistent: K={k} terms and dimension {d}, but the PCA components have shape "
            f"{pipe.components_.shape} and the guide {loc.shape[0]} coefficients"
        )
    if not (np.all(np.isfinite(loc)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ModelFileError(f"{path} holds non-finite guide parameters or a non-positive scale")
    history = ElboHistory(**{f: arrays[f"history.{f}"] for f in HISTORY_FIELDS})
    fit_info = header["fit"]
    fr = FitResult(
        elbo=params["elbo"], engine=params["engine"], loc=loc, scale=scale, history=history,
        steps=int(fit_info["steps"]), seconds=float("nan"), stop_reason=str(fit_info["stop_reason"]),
    )
    classes = np.asarray(header["classes"], dtype=np.dtype(header["classes_dtype"]))
    try:
        est = VariationalSpamClassifier.from_fitted(params, pipe, fr, classes, d)
    except ValueError as exc:
        raise ModelFileError(f"{path} holds invalid parameters: {exc}") from None
    if header.get("feature_names_in"):
        est.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
    return est


def load_model(path: str | Path) -> SavedModel:
    """Read a model file; raises :class:`ModelFileError` for a corrupt, foreign or incompatible file."""
    path = Path(path)
    header, arrays = _read(path)
    _check_version(header, path)
    _check_arrays(header, arrays, path)
    try:
        est = _build(header, arrays, path)
    except KeyError as exc:
        raise ModelFileError(f"{path} lacks the entry {exc} its format version requires; the file is damaged") from None
    embedding = {"embedder": None, "max_length": None, "normalize": None, **(header.get("embedding") or {})}
    return SavedModel(estimator=est, embedding=embedding, header=header, path=path)


def embedding_of_data(data_path: str | Path | None, embedder: str | None) -> dict[str, Any]:
    """How a course-format file's embeddings were made: its recorded embedder and, when the file
    holds ``meta`` (written by :mod:`pyro_spam.embed`), the max length and normalisation used."""
    from .data import default_data_path
    from .embed import read_meta

    path = default_data_path() if data_path is None else Path(data_path)
    out: dict[str, Any] = {"embedder": embedder, "max_length": None, "normalize": None}
    try:
        meta = read_meta(path)
    except (OSError, ValueError, zipfile.BadZipFile):
        meta = {}
    if isinstance(meta.get("max_length"), int):
        out["max_length"] = meta["max_length"]
    norm = meta.get("normalisation")
    if isinstance(norm, str):
        out["normalize"] = norm.lower().startswith("l2")
    return out


def stage_model_files(ctx: "RunContext") -> None:
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
