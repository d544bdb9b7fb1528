"""Run directories: atomic file writes and all-or-nothing creation.

A run is built in a hidden staging folder beside its destination and renamed into place only
when every file is written, so a crash or Ctrl-C never leaves a half-written run. Single files
added later (e.g. by ``pyro-spam compare``) are written to a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import PyroSpamError

SUMMARY = "summary.json"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; run files get the usual umask-based modes.
FILE_MODE = 0o666 & ~_current_umask()
_DIR_MODE = 0o777 & ~_current_umask()


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path`` for a writer that wants a file name; when the block ends
    without error the file is synced, given the run files' mode and renamed onto ``path``
    (readers see the old file or the new one, never half of one); on error it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` atomically through ``write(file_handle)`` (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON (numpy values converted, NaN/inf written as null)."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomic uncompressed ``.npz`` (no object arrays: loadable with ``allow_pickle=False``)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Atomic PNG of a matplotlib figure; closes it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def check_destination(out: Path, *, overwrite: bool) -> None:
    """Refuse a destination that already holds a run (unless ``overwrite``) or other files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PyroSpamError(f"output path {out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SUMMARY).exists():
            raise PyroSpamError(f"output directory {out} is not empty and holds no pyro-spam run; choose another --out")
        if not overwrite:
            raise PyroSpamError(f"output directory {out} already holds a run; pass --overwrite to replace it or choose another --out")
    parent = out.resolve().parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())  # nothing is created here
    if not existing.is_dir():
        raise PyroSpamError(f"cannot create the output directory {out}: {existing} is a file; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PyroSpamError(
            f"output directory {out} cannot be written (no write permission in {existing}); choose another --out"
        )


def _make_parents(parent: Path) -> list[Path]:
    """Create ``parent`` and its missing ancestors; return the ones created (deepest last)."""
    missing = [p for p in (parent, *parent.parents) if not p.exists()][::-1]
    for p in missing:
        p.mkdir()
    return missing


@contextlib.contextmanager
def staged_run_dir(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder; on success move it to ``out`` (replacing an old run), else delete it."""
    out = Path(out)
    check_destination(out, overwrite=overwrite)
    parent = out.resolve().parent
    created: list[Path] = []
    try:  # os.access cannot see read-only mounts, ACLs or root's view: trying is the real test
        created = _make_parents(parent)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=parent))
        os.chmod(stage, _DIR_MODE)
    except OSError as exc:
        _remove_dirs(created)
        raise PyroSpamError(
            f"output directory {out} cannot be written ({exc.strerror or exc} in {parent}); choose another --out"
        ) from None
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_dirs(created)  # a failed run leaves nothing behind, not even the folders made for it
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
        os.replace(out, old / "run")
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_dirs(created: list[Path]) -> None:
    for p in reversed(created):
        with contextlib.suppress(OSError):
            p.rmdir()
