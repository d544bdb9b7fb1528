"""What a run has computed so far: the one object the stages read and add to."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import RunConfig
from ..features import FeaturePipeline
from ..types import Dataset, FeatureSet, FitResult


@dataclass
class RunContext:
    """Everything a run has computed so far; stages read it and add to it."""

    config: RunConfig
    dataset: Dataset
    features: FeatureSet
    feature_pipeline: FeaturePipeline
    fits: dict[str, FitResult] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    dir: Path | None = None
    name: str | None = None  # the run directory's final name (ctx.dir may be a staging folder)


def versions() -> dict[str, str]:
    """Versions of Python and the packages that shape the numbers."""
    out = {"python": platform.python_version(), "pyro_spam": __version__}
    for pkg in ("torch", "pyro-ppl", "numpy", "scikit-learn", "arviz"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
