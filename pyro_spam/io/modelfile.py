"""One file per fitted model: feature pipeline, guide parameters and configuration, no pickle.

Format (``FORMAT_VERSION`` 2): an uncompressed ``.npz`` holding only plain numeric arrays plus
one 0-d unicode array ``header`` with JSON. It loads with ``np.load(..., allow_pickle=False)``, so
opening a model file never runs code.

``header`` keys: ``format`` (``"pyro-spam-model"``), ``format_version``, ``pyro_spam_version``,
``created`` (UTC), ``params`` (the estimator's constructor parameters), ``classes``,
``n_features_in``, ``features`` (the pipeline's JSON metadata), ``fit`` (ELBO, engine, guide family,
steps, stop reason, coef names), ``embedding`` (how X was made: ``embedder``, ``max_length``, ``normalize``; ``embedder`` is
None when unknown), ``training_data`` (where the data came from), ``arrays`` (name → shape) and
``sha256`` (a digest of every array's bytes, checked on load).

Arrays: ``feature.<field>`` for each :attr:`FeaturePipeline.ARRAY_FIELDS`, ``guide.loc`` (the mean)
and ``guide.scale`` (the marginal sds), both (K+1,); for the full- and low-rank guides also
``guide.scale_tril`` (K+1, K+1), the lower Cholesky factor of q's covariance (predictions draw
from it); ``history.{elbo,loglik,kl,lr}`` (steps,).

Versions: 2 (the full- and low-rank guides) adds the estimator parameters ``guide`` and ``rank`` and
``guide.scale_tril``. Version 1 files (mean-field only) still load, as mean-field models with the
parameters they lack at their old values (``estimator.PARAMS_ADDED``); any other version is refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ModelFileError
from .rundir import atomic_write_bytes, to_jsonable

FORMAT = "pyro-spam-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Format versions this pyro-spam loads (1: mean-field only, before ``guide``/``rank`` and ``guide.scale_tril``)."""
MODEL_EXT = ".npz"
HISTORY_FIELDS = ("elbo", "loglik", "kl", "lr")


def model_filename(elbo: str) -> str:
    """Name of a run's model file for one ELBO type, e.g. ``model_meanfield.npz``."""
    return f"model_{elbo}{MODEL_EXT}"


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


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
        raise ModelFileError(
            f"{path} is not a pyro-spam model file (header format is {header.get('format') if isinstance(header, dict) else None!r})"
        )
    return header, arrays


def _check_version(header: dict[str, Any], path: Path) -> None:
    version = header.get("format_version")
    written_by = header.get("pyro_spam_version", "unknown")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path} has no valid format_version; it is damaged or was not written by pyro-spam")
    if version not in READABLE_VERSIONS:
        newer = version > FORMAT_VERSION
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise ModelFileError(
            f"{path} uses model-file format version {version} (written by pyro-spam {written_by}); this "
            f"pyro-spam {__version__} reads versions {readable} only: "
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


def write_model_file(path: str | Path, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` and the JSON ``header`` (completed with format, versions, shapes and checksum)
    to ``path`` atomically (temporary file + rename)."""
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pyro_spam_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **header,
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


def read_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and arrays of a model file, after the format, version, shape and checksum checks;
    raises :class:`ModelFileError` for a corrupt, foreign or incompatible file."""
    path = Path(path)
    header, arrays = _read(path)
    _check_version(header, path)
    _check_arrays(header, arrays, path)
    return header, arrays
