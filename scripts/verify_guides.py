"""Recompute the guide leaderboard's k̂ and sds of a run independently from its reported means and covariances.

Usage: ``python scripts/verify_guides.py RUN_DIR``.

For every Gaussian row of ``summary["diagnostics"]["guides"]`` it draws 20 fresh sets of 1000 draws
from N(mean, cov) with numpy (seeds unrelated to the run's), computes the log importance ratios
log p(y, w) − log q(w) with numpy/scipy (not the package's code) and k̂ with ArviZ's ``psislw``, and
prints the median and range next to the reported ones (one k̂ from 1000 draws varies by about
±0.1, so medians agree to about 0.05), plus the largest |sqrt(diag cov) − reported sd|.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import arviz as az
import numpy as np
from scipy.special import log_expit
from scipy.stats import multivariate_normal

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)


def main(run_dir: str) -> None:
    run = Path(run_dir)
    s = json.loads((run / "summary.json").read_text())
    prior_scale = float(s["meta"]["config"]["train"]["prior_scale"])
    with np.load(run / "features.npz") as f:
        x, y = f["X_train"].astype(np.float64), f["y_train"].astype(np.float64)
    a, sign = np.c_[np.ones(len(x)), x], 2.0 * y - 1.0
    for row in s["diagnostics"]["guides"]["rows"]:
        if not row.get("gaussian") or "cov" not in row:
            continue
        mean, cov = np.asarray(row["mean"]), np.asarray(row["cov"])
        q = multivariate_normal(mean, cov)
        ks = []
        for r in range(20):
            w = q.rvs(1000, random_state=np.random.default_rng([2026, r]))
            log_joint = log_expit(sign * (w @ a.T)).sum(1) - 0.5 * (w**2).sum(1) / prior_scale**2
            _, k = az.psislw(log_joint - q.logpdf(w))
            ks.append(float(np.asarray(k).reshape(-1)[0]))
        sd_gap = float(np.max(np.abs(np.sqrt(np.diag(cov)) - np.asarray(row["sd"]))))
        print(f"{row['name']:36s} k̂ median {np.median(ks):.2f} [{min(ks):.2f}–{max(ks):.2f}] vs reported "
              f"{row['khat_median']:.2f} {row['khat_range']}; max |sd − reported sd| {sd_gap:.1e}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/default")
