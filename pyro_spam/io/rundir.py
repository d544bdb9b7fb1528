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
    """Atomic PNG of a matplotlib figure, cropped to what is drawn plus a 0.1 in border; closes it.

    The result matches ``savefig(bbox_inches="tight")`` up to a pixel or two of border, at about
    two thirds of the cost: the tight bounding box needs a layout pass over every artist before the
    real draw, whereas here the figure is drawn once (onto a canvas :data:`_FIGURE_MARGIN` inches
    larger on every side unless a layout engine already fitted it to its canvas) and the crop is
    read off the pixels. Content reaching the canvas edge (something sticking out further than
    that margin) falls back to the tight bounding box. Opaque figures are written as RGB at zlib
    level 3: smaller and quicker to encode than RGBA at PIL's default level 6.
    """
    import matplotlib.pyplot as plt

    try:
        png = _png_cropped(fig, dpi)
        if png is None:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pil_kwargs={"compress_level": _PNG_LEVEL})
            png = buf.getvalue()
    finally:
        plt.close(fig)
    atomic_write_bytes(path, png)


_FIGURE_MARGIN = 1.0
"""Inches of extra canvas on each side of a figure in :func:`save_figure`, for labels that stick out."""
_PNG_LEVEL = 3


def _png_cropped(fig: Any, dpi: float, pad: float = 0.1) -> bytes | None:
    """PNG bytes of ``fig`` drawn once and cropped to its ink plus ``pad`` inches; None when that
    cannot be done exactly (the caller falls back to the tight bounding box).

    A figure without a layout engine is drawn with :data:`_FIGURE_MARGIN` inches of extra canvas
    around it, for labels that stick out; one laid out by constrained or tight layout already fits
    its canvas and is drawn as it is (its layout runs inside ``savefig``)."""
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.layout_engine import ConstrainedLayoutEngine, TightLayoutEngine
    from matplotlib.transforms import Bbox
    from PIL import Image, PngImagePlugin

    if not isinstance(fig.canvas, FigureCanvasAgg) or any(ax.get_axes_locator() is not None for ax in fig.axes):
        return None
    laid_out = isinstance(fig.get_layout_engine(), (ConstrainedLayoutEngine, TightLayoutEngine))
    m = 0.0 if laid_out else _FIGURE_MARGIN
    if m:
        # A figure legend without an explicit anchor follows fig.bbox, which savefig swaps for the
        # enlarged canvas: anchor it to the figure's own box (in figure coordinates, which follow
        # the shift) so it stays where it was placed. (Not under a layout engine: constrained
        # layout only makes room for an "outside" legend that has no anchor of its own.)
        for legend in fig.legends:
            if legend.get_bbox_to_anchor() is fig.bbox:
                legend.set_bbox_to_anchor((0, 0, 1, 1), transform=fig.transFigure)
    w, h = fig.get_size_inches()
    raw = io.BytesIO()
    fig.savefig(raw, format="rgba", dpi=dpi, bbox_inches=Bbox.from_extents(-m, -m, w + m, h + m))
    renderer = fig.canvas.renderer
    width, height = int(renderer.width), int(renderer.height)
    data = raw.getbuffer()
    if data.nbytes != 4 * width * height or width < 2 or height < 2:
        return None
    img = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 4)
    pixels = img.view(np.uint32)[..., 0]
    background = pixels[0, 0]
    if not (pixels[0, -1] == pixels[-1, 0] == pixels[-1, -1] == background):
        return None
    ink = pixels != background
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0 or rows[0] == 0 or cols[0] == 0 or rows[-1] == height - 1 or cols[-1] == width - 1:
        return None  # empty, or clipped by the enlarged canvas
    if not _placed_inside(fig, renderer, dpi, m):
        return None  # something placed wholly off the canvas, which the pixels cannot show
    p = round(pad * dpi)
    crop = img[max(rows[0] - p, 0):rows[-1] + 1 + p, max(cols[0] - p, 0):cols[-1] + 1 + p]
    if img[0, 0, 3] == 255:  # opaque background, so every pixel is opaque
        crop = crop[..., :3]
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"Matplotlib version{mpl.__version__}, https://matplotlib.org/")
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(crop)).save(out, format="png", compress_level=_PNG_LEVEL, dpi=(dpi, dpi),
                                                     pnginfo=info)
    return out.getvalue()


def _placed_inside(fig: Any, renderer: Any, dpi: float, margin: float) -> bool:
    """Whether the freely placed artists of ``fig`` (axes, their titles, axis labels, texts and
    legends; the figure's texts and legends) lie within ``margin`` inches of the figure, measured
    with the renderer that just drew it (its text metrics are cached: a few ms per figure)."""
    artists = [*fig.texts, *fig.legends]
    for ax in fig.axes:
        if ax.get_visible():
            artists += [ax, ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts, ax.get_legend()]
    lo, hi_x, hi_y = -margin * dpi, (fig.get_figwidth() + margin) * dpi, (fig.get_figheight() + margin) * dpi
    figure_dpi = fig.dpi
    fig.dpi = dpi
    try:
        for artist in artists:
            if artist is None or not artist.get_visible() or (hasattr(artist, "get_text") and not artist.get_text()):
                continue
            bb = artist.get_window_extent(renderer)
            if bb.x0 < lo or bb.y0 < lo or bb.x1 > hi_x or bb.y1 > hi_y:
                return False
    finally:
        fig.dpi = figure_dpi
    return True


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
