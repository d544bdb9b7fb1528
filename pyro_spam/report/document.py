"""The report's document model and its two renderers: Markdown and self-contained HTML.

A report is a title and a list of :class:`Section` s, each holding blocks (:class:`Para`,
:class:`Bullets`, :class:`Table`, :class:`Figure`). :func:`to_markdown` refers to figures by file
name; :func:`to_html` inlines its CSS and embeds figures as base64 PNGs, so the page opens offline.
The number formatters (:func:`f`, :func:`g`, :func:`pct`, ...) print missing or non-finite values
as ``n/a``. Nothing here knows ``summary.json``: section content lives in :mod:`.sections`.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Para", "Bullets", "Table", "Figure", "Section", "Block", "f", "g", "pct", "code_list", "short_value",
           "word_count", "markdown_table", "to_markdown", "to_html", "CSS"]


# ---------------------------------------------------------------- document model


@dataclass
class Para:
    """A paragraph; ``**bold**`` and ``code`` spans are rendered in both formats."""

    text: str


@dataclass
class Bullets:
    """A bulleted list; each item is inline text as in :class:`Para`."""

    items: list[str]


@dataclass
class Table:
    """A table of text cells; cells that read as numbers are right-aligned in HTML."""

    header: list[str]
    rows: list[list[str]]
    caption: str | None = None


@dataclass
class Figure:
    """A PNG in the run directory, by file name, with its caption."""

    name: str
    caption: str


Block = Para | Bullets | Table | Figure
"""What a :class:`Section` holds."""


@dataclass
class Section:
    """A titled part of the report: ``level`` 2 is listed in the contents, 3 is a subsection."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


# ---------------------------------------------------------------- number formatting


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def f(x: Any, d: int = 3) -> str:
    """Fixed-point number, ``n/a`` for missing or non-finite values."""
    v = _num(x)
    return f"{v:.{d}f}" if math.isfinite(v) else "n/a"


def g(x: Any, d: int = 3) -> str:
    """Number with ``d`` significant digits (scientific when tiny or huge)."""
    v = _num(x)
    if not math.isfinite(v):
        return "n/a"
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.{max(0, d - 1)}e}"
    return f"{v:.{d}g}"


def pct(x: Any, d: int = 1) -> str:
    """Fraction as a percentage (``0.123`` → ``12.3 %``), ``n/a`` for missing or non-finite values."""
    v = _num(x)
    return f"{100 * v:.{d}f} %" if math.isfinite(v) else "n/a"


def code_list(items: Sequence[str]) -> str:
    """Names as code spans in prose: ``a``, ``b`` and ``c`` (``none`` when empty)."""
    quoted = [f"`{i}`" for i in items]
    if not quoted:
        return "none"
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def word_count(text: str) -> int:
    """Words in ``text`` (whitespace-separated tokens containing a letter or digit)."""
    return sum(1 for t in text.split() if re.search(r"[A-Za-z0-9]", t))


def short_value(v: Any) -> str:
    """Any JSON value as one table cell: numbers to 4 significant digits, long lists by their length."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return g(v, 4)
    if isinstance(v, list):
        if len(v) > 8:
            return f"[{len(v)} values]"
        return ", ".join(short_value(x) for x in v)
    if v is None:
        return "n/a"
    return str(v)


# ---------------------------------------------------------------- renderers


def _md_cell(text: str) -> str:
    """A table cell in Markdown: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(t: Table) -> str:
    """One table as GitHub-flavoured Markdown, its caption (if any) in italics above it."""
    out = [f"*{t.caption}*", ""] if t.caption else []
    out.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
    out.append("|" + "|".join("---" for _ in t.header) + "|")
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(out)


def to_markdown(title: str, sections: Sequence[Section]) -> str:
    """The report as GitHub-flavoured Markdown (figures referenced by file name)."""
    out = [f"# {title}", ""]
    out += ["Contents: " + " · ".join(f"[{sec.title}](#{sec.id})" for sec in sections if sec.level == 2), ""]
    for sec in sections:
        out += [f"<a id=\"{sec.id}\"></a>", "", f"{'#' * sec.level} {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, Para):
                out += [b.text, ""]
            elif isinstance(b, Bullets):
                out += [f"- {i}" for i in b.items] + [""]
            elif isinstance(b, Table):
                out += [markdown_table(b), ""]
            elif isinstance(b, Figure):
                out += [f"![{b.caption}]({b.name})", "", f"*{b.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITAL = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_CODE = re.compile(r"`([^`]+)`")


def _html_inline(text: str) -> str:
    """Escaped HTML of inline Markdown: ``code``, ``**bold**`` and ``*italic*`` spans."""
    t = html.escape(text, quote=False)
    t = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", t)
    t = _BOLD.sub(r"<strong>\1</strong>", t)
    t = _ITAL.sub(r"<em>\1</em>", t)
    return t


CSS = """
:root { --fg:#1d232a; --muted:#5b6670; --line:#dde2e6; --accent:#1f6feb; --bg:#ffffff; --soft:#f5f7f9; }
* { box-sizing: border-box; }
body { margin:0; font: 16px/1.55 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; \
color:var(--fg); background:var(--bg); }
header { background:#0f2a44; color:#fff; padding:28px 0 22px; }
header h1 { margin:0 0 6px; font-size:28px; }
header p { margin:0; color:#c9d6e3; }
.wrap { max-width: 1240px; margin: 0 auto; padding: 0 28px; }
nav { position: sticky; top:0; background:#fff; border-bottom:1px solid var(--line); z-index:5; }
nav .wrap { display:flex; flex-wrap:wrap; gap:4px 16px; padding-top:8px; padding-bottom:8px; font-size:14px; }
nav a { color:var(--accent); text-decoration:none; white-space:nowrap; }
section { padding: 8px 0 12px; border-bottom: 1px solid var(--line); }
h2 { font-size:23px; margin:30px 0 10px; }
h3 { font-size:19px; margin:26px 0 8px; color:#0f2a44; }
p { margin: 8px 0 12px; max-width: 1000px; }
code { background:var(--soft); padding:1px 5px; border-radius:4px; font-size:90%; }
#summary ul { background:#eef5ff; border-left:4px solid var(--accent); padding:14px 18px 14px 36px; border-radius:6px; }
#summary li { margin:4px 0; }
figure { margin: 14px 0 20px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; background:#fff; }
figcaption { color:var(--muted); font-size:14px; margin-top:6px; max-width: 1000px; }
.tablewrap { overflow-x:auto; margin: 10px 0 18px; }
table { border-collapse: collapse; font-size:14px; }
th, td { border:1px solid var(--line); padding:5px 9px; text-align:left; vertical-align:top; }
th { background:var(--soft); font-weight:600; }
tr:nth-child(even) td { background:#fafbfc; }
td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
caption { caption-side: top; text-align:left; color:var(--muted); font-size:14px; padding-bottom:4px; }
.bad { color:#b00020; font-weight:700; }
footer { color:var(--muted); font-size:13px; padding:18px 0 40px; }
"""


def _is_num(cell: str) -> bool:
    """Whether a table cell reads as a number (or ``n/a``), hence right-aligned."""
    return bool(re.fullmatch(r"[+\-−]?[\d.,]+(e[+\-]?\d+)?( %)?|n/a", cell.strip()))


def to_html(title: str, sections: Sequence[Section], run_dir: Path, subtitle: str = "") -> str:
    """A self-contained HTML page: inline CSS, figures embedded as base64 PNGs, no external assets."""
    nav = "".join(f'<a href="#{sec.id}">{html.escape(sec.title)}</a>' for sec in sections if sec.level == 2)
    body = []
    open_section = False
    for sec in sections:
        if sec.level == 2:
            if open_section:
                body.append("</section>")
            body.append(f'<section id="{sec.id}"><h2>{html.escape(sec.title)}</h2>')
            open_section = True
        else:
            body.append(f'<h3 id="{sec.id}">{html.escape(sec.title)}</h3>')
        for b in sec.blocks:
            if isinstance(b, Para):
                body.append(f"<p>{_html_inline(b.text)}</p>")
            elif isinstance(b, Bullets):
                body.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>")
            elif isinstance(b, Table):
                cap = f"<caption>{_html_inline(b.caption)}</caption>" if b.caption else ""
                head = "".join(f"<th>{_html_inline(h)}</th>" for h in b.header)
                rows = []
                for row in b.rows:
                    cells = []
                    for c in row:
                        cls = ' class="num"' if _is_num(str(c)) else ""
                        txt = _html_inline(str(c)).replace("<strong>NO</strong>", '<span class="bad">NO</span>')
                        cells.append(f"<td{cls}>{txt}</td>")
                    rows.append("<tr>" + "".join(cells) + "</tr>")
                body.append(f'<div class="tablewrap"><table>{cap}<thead><tr>{head}</tr></thead>'
                            f'<tbody>{"".join(rows)}</tbody></table></div>')
            elif isinstance(b, Figure):
                path = run_dir / b.name
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{_html_inline(b.caption)}</figcaption></figure>")
    if open_section:
        body.append("</section>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header><div class="wrap"><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></div></header>'
        f'<nav><div class="wrap">{nav}</div></nav><main class="wrap">{"".join(body)}</main>'
        '<footer class="wrap">Generated by pyro-spam from summary.json and the figures in this run directory. '
        "Every number in the text is computed from this run.</footer></body></html>\n"
    )
