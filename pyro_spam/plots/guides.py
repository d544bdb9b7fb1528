"""The guide leaderboard's figure: each approximation on the most correlated pair, and a marginal forest.

Left: NUTS draws (when available) as a scatter, each approximation as its 2-sd ellipse (Mahalanobis
distance 2 from its mean, from its mean and 2×2 covariance). Right: mean ± 2 sd of every
coefficient under each approximation, standardised by the reference (NUTS, else the row that named
the pair), so a too-narrow or shifted marginal stands out whatever the coefficient's scale.
Drawing only: the numbers are :func:`pyro_spam.diagnostics.guides.leaderboard`'s.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["ellipse", "plot_guides_pair"]

_COLORS = ("tab:blue", "tab:cyan", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink")
_STYLES = {"fit": ["-", (0, (6, 3)), (0, (2, 2))], "correction": ["--", "-."], "reference": [":"]}
"""Line styles by kind, cycled within a kind: identical ellipses (two fits at the same optimum) stay visible."""
_MAX_SCATTER = 2000


def ellipse(mean: np.ndarray, cov: np.ndarray, radius: float = 2.0, n: int = 200) -> np.ndarray:
    """Points (n, 2) of the ellipse at Mahalanobis distance ``radius`` from ``mean`` under the 2×2 ``cov``."""
    vals, vecs = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    t = np.linspace(0.0, 2.0 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    return (np.asarray(mean, dtype=np.float64)[:, None] + radius * vecs @ (np.sqrt(np.maximum(vals, 0.0))[:, None] * circle)).T


def _text_width_inches(texts: list[str], size: float | str) -> float:
    """Width of the widest of ``texts`` at font ``size``, in inches (font metrics, no drawing)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(size=size)
    return max((text_to_path.get_text_width_height_descent(str(t), prop, ismath=False)[0] for t in texts), default=0.0) / 72


def plot_guides_pair(section: Mapping[str, object], nuts_draws: np.ndarray | None = None) -> Figure:
    """The two-panel figure of a leaderboard section (``summary["diagnostics"]["guides"]``)."""
    rows = list(section["rows"])  # type: ignore[call-overload]
    names = list(section["coef_names"])  # type: ignore[call-overload]
    i, j = section["pair"]  # type: ignore[misc]
    approx = [r for r in rows if r["key"] != "nuts"]
    nuts = next((r for r in rows if r["key"] == "nuts"), None)
    ref = nuts or next((r for r in rows if r["name"] == section.get("pair_source")), None) or approx[0]
    colors = {r["key"]: _COLORS[k % len(_COLORS)] for k, r in enumerate(approx)}
    if nuts is not None:
        colors["nuts"] = "black"
    # Fixed margins (inches) instead of tight_layout (a layout pass over every artist): between the
    # panels, room for the forest's coefficient names (measured); save_figure crops the outer margins.
    w, h, left, right = 13.0, 5.5, 0.9, 0.15
    gap = max(1.1, _text_width_inches(names, plt.rcParams["ytick.labelsize"]) + 0.4)
    fig, (ax, fx) = plt.subplots(1, 2, figsize=(w, h), gridspec_kw={
        "width_ratios": [1.0, 1.15], "left": left / w, "right": 1 - right / w, "bottom": 0.7 / h, "top": 1 - 0.4 / h,
        "wspace": gap / ((w - left - right - gap) / 2)})
    if nuts_draws is not None:
        flat = np.asarray(nuts_draws, dtype=np.float64).reshape(-1, len(names))
        step = max(1, flat.shape[0] // _MAX_SCATTER)
        ax.scatter(flat[::step, i], flat[::step, j], s=4, alpha=0.25, color="0.35", lw=0, label="NUTS draws")
    seen: dict[str, int] = {}
    for r in rows:
        pts = ellipse(np.asarray(r["pair_mean"]), np.asarray(r["pair_cov"]))
        styles = _STYLES.get(r["kind"], ["-."])
        k = seen[r["kind"]] = seen.get(r["kind"], -1) + 1
        style = "-" if r["key"] == "nuts" else styles[k % len(styles)]
        lw = 2.2 if r["key"] == "nuts" else 1.6
        ax.plot(pts[:, 0], pts[:, 1], ls=style, color=colors[r["key"]], lw=lw, label=f"{r['name']} (ρ = {r['pair_rho']:+.2f})")
        ax.plot(*r["pair_mean"], "o", color=colors[r["key"]], ms=3)
    ax.set_xlabel(names[i])
    ax.set_ylabel(names[j])
    ax.set_title(f"Most correlated pair ({section.get('pair_source') or 'first two'}): 2-sd ellipses")
    ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
    # forest: mean ± 2 sd, standardised by the reference
    centre, spread = np.asarray(ref["mean"]), np.asarray(ref["sd"])
    n_rows = len(rows)
    offsets = np.linspace(-0.32, 0.32, n_rows) if n_rows > 1 else np.zeros(1)
    for k, r in enumerate(rows):
        m = (np.asarray(r["mean"]) - centre) / spread
        half = 2.0 * np.asarray(r["sd"]) / spread
        ypos = np.arange(len(names)) + offsets[k]
        fx.errorbar(m, ypos, xerr=half, fmt="o", ms=3, color=colors[r["key"]], lw=1.4, capsize=2)
    fx.axvline(0.0, color="0.6", lw=0.8)
    for edge in (-2.0, 2.0):
        fx.axvline(edge, color="0.8", lw=0.8, ls="--")
    fx.set_yticks(np.arange(len(names)), names)
    fx.invert_yaxis()
    fx.set_xlabel(f"(w − mean) / sd, both of {ref['name']}")
    fx.set_title("Marginals: mean ± 2 sd (colours as on the left)")
    return fig
