"""The run report: ``report.md`` and a self-contained ``report.html`` from ``summary.json`` and the PNGs.

:func:`render_report` turns any run directory (after ``pyro-spam run``, ``diagnose`` or ``compare``)
into both files. The package has two halves: :mod:`.document` (document model, number formatters,
Markdown and HTML renderers; knows nothing of the summary) and :mod:`.sections` (the sections'
content, generated from this run's numbers in the typed :class:`~pyro_spam.summary.Summary`).
Imports no torch or Pyro.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io.run_reader import read_summary
from ..io.rundir import atomic_write_text, to_jsonable
from .document import to_html, to_markdown, word_count
from .sections import build_sections, writeup

__all__ = ["render_report", "build_sections", "writeup", "to_markdown", "to_html", "word_count"]

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


def render_report(
    run_dir: str | Path, summary: Mapping[str, Any] | None = None, name: str | None = None
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``run_dir`` (atomically) and return their paths.

    ``summary`` defaults to the directory's ``summary.json`` (read with
    :func:`~pyro_spam.io.run_reader.read_summary`); figures are the PNGs present in the directory,
    those ``summary["figures"]`` lists first, in its order. ``name`` titles the report (default:
    the directory's name).
    """
    run_dir = Path(run_dir)
    raw = summary if summary is not None else read_summary(run_dir)
    # A JSON round trip: numpy values and tuples become what summary.json would hold.
    s = json.loads(json.dumps(to_jsonable(dict(raw))))
    listed = [n for n in s.get("figures", []) if (run_dir / n).is_file()]
    present = sorted(p.name for p in run_dir.glob("*.png"))
    figures = list(dict.fromkeys(listed + present))
    title, sections = build_sections(s, run_dir, figures, name)
    d = s["data"]
    meta = s.get("meta", {})
    subtitle = (
        f"{d['n']:,} messages · {d['feature_kind']} terms, K = {d['components']} · "
        f"seed {meta.get('seed', 'n/a')} · pyro-spam {meta.get('versions', {}).get('pyro_spam', '')}"
    )
    md, page = run_dir / REPORT_MD, run_dir / REPORT_HTML
    atomic_write_text(md, to_markdown(title, sections))
    atomic_write_text(page, to_html(title, sections, run_dir, subtitle))
    return md, page
