"""Helpers shared by the benchmark scripts: machine facts, the default data, the shared criterion.

Not part of the package: benchmarks may import anything (NumPyro, PyMC) and print.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# The shared convergence criterion (the issue's): the running mean of the per-step ELBO estimates
# over WINDOW steps is within TOL_NATS of the best running mean of a long reference run.
WINDOW = 100
TOL_NATS = 1.0


def machine() -> dict:
    """CPU model, cores, memory, load and package versions: where the numbers come from."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "pyro-ppl", "numpy", "jax", "jaxlib", "numpyro", "pymc", "pytensor"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
        "versions": versions,
    }


def default_features(path: Path) -> dict[str, np.ndarray]:
    """Build the default run's features once (shipped data, K = 5 polynomial terms) and save them."""
    from pyro_spam.config import RunConfig
    from pyro_spam.pipeline.run import prepare

    fs = prepare(RunConfig()).features
    arrays = {"X_train": fs.X_train, "y_train": fs.y_train, "X_test": fs.X_test, "y_test": fs.y_test}
    np.savez(path, **arrays)
    return arrays


def running_mean(trace: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Mean of each ``window`` consecutive values; entry i covers steps i … i+window−1."""
    trace = np.asarray(trace, dtype=np.float64)
    if trace.size < window:
        return np.empty(0)
    c = np.concatenate([[0.0], np.cumsum(trace)])
    return (c[window:] - c[:-window]) / window


def steps_to_criterion(trace: np.ndarray, best: float, window: int = WINDOW, tol: float = TOL_NATS) -> int | None:
    """The number of steps after which the running mean is first within ``tol`` of ``best`` (None: never)."""
    rm = running_mean(trace, window)
    hit = np.nonzero(rm >= best - tol)[0]
    return int(hit[0] + window) if hit.size else None


def final_elbo(loc: np.ndarray, scale: np.ndarray, x: np.ndarray, y: np.ndarray, draws: int = 4096, seed: int = 12345,
               prior_scale: float = 1.0) -> float:
    """Full-train ELBO at (loc, scale): analytic KL minus the expected log-likelihood over fixed draws
    (float64, common random numbers for every contender, so differences are not Monte Carlo noise)."""
    import torch

    from pyro_spam import elbo_manual as em

    eps = torch.randn(draws, loc.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    parts = em.elbo_analytic(torch.as_tensor(loc, dtype=torch.float64), torch.as_tensor(scale, dtype=torch.float64), eps,
                             torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64),
                             prior_scale=prior_scale)
    return float(parts.elbo)


def heldout_lppd(loc: np.ndarray, scale: np.ndarray, x: np.ndarray, y: np.ndarray, draws: int = 2000, seed: int = 1) -> float:
    """Held-out log pointwise predictive density per message (the package's own evaluation code)."""
    from pyro_spam.evaluate import lppd_pointwise
    from pyro_spam.posterior import draw_weights, predict_draws

    d = predict_draws(draw_weights(np.asarray(loc), np.asarray(scale), draws, seed), x, y)
    return float(lppd_pointwise(d.loglik).mean())


def run_worker(script: Path, args: list[str], timeout: float) -> dict:
    """Run one contender in a fresh process; it prints one JSON object as its last line."""
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_results(out: Path, stem: str, res: dict, md: str) -> None:
    """``<stem>.json`` (all numbers) and ``<stem>.md`` (the table) into ``out``; prints the table."""
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (out / f"{stem}.md").write_text(md)
    print(md)


def med_range(values: list[float]) -> tuple[float, float, float]:
    """Median, min and max, ignoring None."""
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return (float("nan"),) * 3
    return float(np.median(v)), float(np.min(v)), float(np.max(v))


def numpyro_meanfield_svi(k1: int, lr: float, b2: float, particles: int):
    """NumPyro SVI of the same model (logistic, N(0, 1) prior) with a hand-written mean-field guide
    (loc 0, scale 0.1 at the start), ``TraceMeanField_ELBO(num_particles)`` and Adam(lr, 0.9, b2).
    Imports JAX lazily, so only NumPyro workers pay for it."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, TraceMeanField_ELBO

    def model(X, Y):
        w = numpyro.sample("w", dist.Normal(jnp.zeros(k1), 1.0).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=w[0] + X @ w[1:]), obs=Y)

    def guide(X, Y):
        loc = numpyro.param("w_loc", jnp.zeros(k1))
        scale = numpyro.param("w_scale", jnp.full(k1, 0.1), constraint=dist.constraints.positive)
        numpyro.sample("w", dist.Normal(loc, scale).to_event(1))

    return SVI(model, guide, numpyro.optim.Adam(lr, b1=0.9, b2=b2), TraceMeanField_ELBO(num_particles=particles))
