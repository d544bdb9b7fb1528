"""Load and validate course-format ``.npz`` files (keys ``X``, ``y``, ``msg``); split them.

Label policy: numbers 0/1 (any int, float or bool dtype: ``True`` is spam) and the strings
``"ham"``/``"spam"`` (any case, surrounding blanks ignored, unicode or bytes) are accepted;
anything else is an error, including other numbers, NaN and strings such as ``"0"``/``"1"``. ``X`` may be float16/32/64 and is used as
float32.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from .errors import DataError
from .types import Dataset

DEFAULT_DATA_NAME = "384d_sms_spam_all-MiniLM-L6-v2.npz"
REQUIRED_KEYS = ("X", "y", "msg")
MIN_PER_CLASS = 5


def default_data_path() -> Path:
    """Path of the shipped default data set (SMS Spam Collection, all-MiniLM-L6-v2)."""
    return Path(str(resources.files("pyro_spam") / "data" / DEFAULT_DATA_NAME))


def load_default() -> Dataset:
    """Load the shipped default data set: a :class:`~pyro_spam.types.Dataset` with embeddings ``X``
    (messages × dimensions), labels ``y`` (1 = spam) and the messages ``msg``.

    >>> from pyro_spam import load_default
    >>> ds = load_default()
    >>> ds.X.shape[0] == ds.y.shape[0] == ds.msg.shape[0]
    True
    """
    path = default_data_path()
    if not path.exists():
        raise DataError(f"the shipped default data {path} is missing: reinstall pyro-spam")
    ds = load_npz(path)
    return Dataset(ds.X, ds.y, ds.msg, "default", ds.embedder)


def load_data(path: str | Path | None) -> Dataset:
    """Load ``path`` or, when it is None, the shipped default."""
    return load_default() if path is None else load_npz(path)


def load_npz(path: str | Path) -> Dataset:
    """Load and validate a course-format ``.npz``.

    Raises
    ------
    DataError
        With one message naming the problem and what to do about it.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check the --data path")
    if path.is_dir():
        raise DataError(f"data path {path} is a directory; pass a course-format .npz file")
    _check_is_npz(path)
    try:
        # Our own file handle: np.load leaks its handle when the zip directory is unreadable.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [k for k in REQUIRED_KEYS if k not in keys]
            if missing:
                raise DataError(
                    f"{path} lacks key(s) {', '.join(missing)}: a course-format .npz holds "
                    "X (N×D embeddings), y (N labels 0/1) and msg (N strings)"
                )
            X, y_raw, msg_raw = npz["X"], npz["y"], npz["msg"]
            embedder = _optional_str(npz, "embedder")
    except DataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataError(
                f"{path} stores an array as Python objects (pickle), which pyro-spam will not "
                "unpickle; re-save it with np.savez(..., msg=msg.astype(str))"
            ) from None
        raise DataError(f"{path} is not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path} is not a readable .npz file ({type(exc).__name__}: {exc}); it may be truncated: re-create it"
        ) from None
    return validate(X, y_raw, msg_raw, source=str(path), embedder=embedder)


def _check_is_npz(path: Path) -> None:
    """Refuse files that are not zip archives before numpy guesses (it would call a text file a pickle)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise DataError(f"cannot read data file {path} ({exc.strerror or exc}); check its permissions") from None
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return
    if head == b"\x93NUMPY":
        kind = "a single .npy array"
    elif not head:
        kind = "empty"
    else:
        kind = "not a .npz (zip) archive"
    raise DataError(
        f"{path} is {kind}; pass a course-format .npz holding X (N×D embeddings), y (N labels 0/1) and msg "
        "(N strings), e.g. written with np.savez(path, X=X, y=y, msg=msg)"
    )


def _optional_str(npz: np.lib.npyio.NpzFile, key: str) -> str | None:
    if key not in npz.files:
        return None
    value = npz[key]
    return str(value.item()) if value.size == 1 else None


def validate(X: np.ndarray, y: np.ndarray, msg: np.ndarray, *, source: str, embedder: str | None = None) -> Dataset:
    """Check shapes, dtypes and values; return a clean float32 :class:`Dataset`."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(
            f"X in {source} must be 2-D (messages × embedding dims), got shape {X.shape}; "
            "store one embedding row per message"
        )
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise DataError(f"X in {source} must be numeric, got dtype {X.dtype}; store the embeddings as floats")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"X in {source} is empty (shape {X.shape}); it needs at least one message and one dimension")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, reported just below
        X = X.astype(np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise DataError(
            f"X in {source} holds {int(bad.sum())} NaN/inf value(s) in {rows.size} row(s) "
            f"(first rows: {rows[:5].tolist()}; values beyond the float32 range count as inf); "
            "fix or drop those messages"
        )
    y = _labels(np.asarray(y), source)
    msg = _messages(np.asarray(msg), source)
    n = X.shape[0]
    if y.shape[0] != n or msg.shape[0] != n:
        raise DataError(
            f"lengths differ in {source}: X has {n} rows, y has {y.shape[0]}, msg has {msg.shape[0]}; "
            "they must describe the same messages"
        )
    counts = np.bincount(y.astype(np.int64), minlength=2)
    if counts.min() == 0:
        only = "ham" if counts[1] == 0 else "spam"
        raise DataError(f"{source} holds only one class ({only}); a classifier needs both ham and spam")
    if counts.min() < MIN_PER_CLASS:
        raise DataError(
            f"{source} has too few messages to split: {counts[0]} ham and {counts[1]} spam "
            f"(at least {MIN_PER_CLASS} of each are needed)"
        )
    return Dataset(X=X, y=y, msg=msg, source=source, embedder=embedder)


def _labels(y: np.ndarray, source: str) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"y in {source} must be 1-D (one label per message), got shape {y.shape}; flatten it")
    if y.dtype.kind in "US":
        text = np.char.lower(np.char.strip(y.astype(str)))
        ok = np.isin(text, ("ham", "spam"))
        if not ok.all():
            raise DataError(
                f"y in {source} holds label(s) other than 'ham'/'spam' or 0/1: "
                f"{sorted(set(text[~ok].tolist()))[:5]}; use 0/1 numbers or the strings 'ham'/'spam'"
            )
        return (text == "spam").astype(np.float32)
    if y.dtype.kind not in "biuf":
        raise DataError(f"y in {source} must hold 0/1 labels, got dtype {y.dtype}; store them as numbers 0/1 or 'ham'/'spam'")
    yf = y.astype(np.float64)
    ok = (yf == 0) | (yf == 1)
    if not ok.all():
        bad = np.unique(yf[~ok])
        raise DataError(
            f"y in {source} must be 0.0 (ham) or 1.0 (spam); found {bad[:5].tolist()} "
            f"in {int((~ok).sum())} row(s); map the labels to 0/1 (or 'ham'/'spam')"
        )
    return yf.astype(np.float32)


def _messages(msg: np.ndarray, source: str) -> np.ndarray:
    if msg.ndim != 1:
        raise DataError(f"msg in {source} must be 1-D (one string per message), got shape {msg.shape}; flatten it")
    if msg.dtype.kind == "S":
        try:
            msg = np.array([m.decode("utf-8") for m in msg.tolist()], dtype=str)
        except UnicodeDecodeError as exc:
            raise DataError(f"msg in {source} is not valid UTF-8 ({exc}); re-encode the messages as UTF-8") from None
    elif msg.dtype.kind != "U":
        raise DataError(f"msg in {source} must hold strings, got dtype {msg.dtype}; store the message texts (msg.astype(str))")
    empty = np.nonzero(np.char.str_len(np.char.strip(msg)) == 0)[0]
    if empty.size:
        raise DataError(
            f"msg in {source} has {empty.size} empty message(s) (first rows: {empty[:5].tolist()}); "
            "drop them: an empty text has no meaningful embedding"
        )
    return msg


def stratified_split(y: np.ndarray, *, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split; returns sorted (train_idx, test_idx)."""
    idx = np.arange(y.shape[0])
    try:
        tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
    except ValueError as exc:
        raise DataError(
            f"too few messages to split: cannot split {y.shape[0]} messages with test_size={test_size} ({exc}); "
            "use more messages or a test size that leaves both classes on each side"
        ) from None
    return np.sort(tr), np.sort(te)


def data_facts(ds: Dataset) -> dict[str, object]:
    """Plain facts about a data set for summaries."""
    return {
        "source": ds.source,
        "embedder": ds.embedder,
        "n": ds.n,
        "dim": ds.dim,
        "n_spam": int(ds.y.sum()),
        "spam_rate": float(ds.y.mean()),
    }


def read_json_sidecar(path: Path) -> dict[str, object] | None:
    """Metadata JSON next to a data file (``name.json``), if present."""
    side = path.with_suffix(".json")
    if not side.exists():
        return None
    return json.loads(side.read_text(encoding="utf-8"))
