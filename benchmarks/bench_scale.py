"""How a step scales: ms/step and peak memory versus N (full batch vs subsampling) and versus S.

Each point runs in a fresh process, on one torch thread unless the point says otherwise, after a
warm-up fit; ms/step is the difference quotient of the median wall times of two step counts
(3 alternating repeats each; setup cancels). Peak memory = the peak resident set size (``VmHWM``,
reset after the warm-up through ``/proc/self/clear_refs``) during one fit, minus the resident size
at that reset (data already in memory), i.e. what one fit adds.

* N sweep: the default training set replicated 1x, 10x, 100x (4,459 … 445,900 rows), S = 64;
  ``pyro_spam`` full batch, ``pyro_spam`` with ``batch_size`` B = 1,000 (its own subsample
  indices: one ``randperm`` per epoch, sliced), and, for contrast, the same model with Pyro's
  ``pyro.plate(subsample_size=B)``, which draws ``torch.randperm(N)`` on every step.
* S sweep: S = 1 … 512 at 1x N, full batch: ``pyro_spam`` and the hand-written torch loop.
* Threads: the default fit's ms/step on 1 and 2 torch threads.
* A 1M-row synthetic problem (K = 5, known coefficients): a whole default fit with B = 1,000 until
  it stops by itself, plus a few full-batch steps for the memory contrast.

    .venv/bin/python benchmarks/bench_scale.py          # ~5 min
    .venv/bin/python benchmarks/bench_scale.py --quick  # fewer points

Writes ``benchmarks/results/scale_benchmark.json``, ``scale_benchmark.md`` and ``scale_*.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, default_features, machine, run_worker  # noqa: E402

B = 1000
W_TRUE = np.array([-2.0, 1.5, -1.0, 0.5, 0.0, 0.25])


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> float:
    """Reset the peak-RSS mark (Linux: ``echo 5 > /proc/self/clear_refs``); return the resident size now (MiB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    return _status_mb("VmHWM")


def _data(spec: str, features: Path) -> tuple[np.ndarray, np.ndarray]:
    if spec.startswith("rep"):
        d = np.load(features)
        r = int(spec[3:])
        return np.tile(d["X_train"], (r, 1)), np.tile(d["y_train"], r)
    n = int(spec.removeprefix("synthetic"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, W_TRUE.size - 1)).astype(np.float32)
    z = W_TRUE[0] + x @ W_TRUE[1:]
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return x, y


def _ours_steps(x, y, steps: int, particles: int, batch: int | None) -> None:
    from pyro_spam.config import TrainConfig
    from pyro_spam.training.svi import fit_svi

    fit_svi(x, y, TrainConfig(particles=particles, batch_size=batch, max_steps=steps, window=10**7))


def _plate_loop(x, y, steps: int, particles: int, batch: int):
    """The package's guide and ELBO, but a model whose plate draws its own subsample (randperm(N) per step)."""
    import pyro
    import pyro.distributions as dist
    import torch

    from pyro_spam.guide import make_guide
    from pyro_spam.model import logits
    from pyro_spam.training.compiled import JitMeanFieldELBO
    from pyro_spam.training.svi import PyroAdam

    def model_ss(x, y):
        n, k = x.shape
        w = pyro.sample("w", dist.Normal(x.new_zeros(k + 1), 1.0).to_event(1))
        w = w.squeeze(-2) if w.dim() > 1 else w
        with pyro.plate("data", n, subsample_size=batch, dim=-1) as idx:
            pyro.sample("y", dist.Bernoulli(logits=logits(w, x[idx])), obs=y[idx])

    pyro.clear_param_store()
    guide = make_guide(0.1)
    elbo = JitMeanFieldELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1, ignore_jit_warnings=True)
    svi = pyro.infer.SVI(model_ss, guide, PyroAdam({"lr": 0.1, "betas": (0.9, 0.9)}), elbo)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(steps):
        svi.step(xt, yt)


def _hand_loop(x, y, steps: int, particles: int):
    import math

    import torch
    import torch.nn.functional as F

    from pyro_spam.training.optim import Adam

    X, Y = torch.as_tensor(x), torch.as_tensor(y)
    k1 = X.shape[1] + 1
    loc = torch.zeros(k1, requires_grad=True)
    log_scale = torch.full((k1,), math.log(0.1), requires_grad=True)
    opt = Adam([loc, log_scale], lr=0.05)
    for _ in range(steps):
        scale = log_scale.exp()
        w = loc + scale * torch.randn(particles, k1)
        z = w[:, :1] + w[:, 1:] @ X.T
        elbo = -F.binary_cross_entropy_with_logits(z, Y.expand_as(z), reduction="sum") / particles - (
            -log_scale + (scale**2 + loc**2) / 2 - 0.5).sum()
        opt.zero_grad()
        (-elbo).backward()
        opt.step()
        elbo.item()


def point_worker(variant: str, spec: str, particles: int, steps: int, threads: int, features: Path, repeats: int = 3) -> dict:
    """ms/step (difference of two step counts, setup cancels) and the memory training adds."""
    import torch

    torch.set_num_threads(threads)
    x, y = _data(spec, features)
    import pyro_spam.training.svi  # noqa: F401 - imports before the memory baseline

    run = {
        "ours-full": lambda n: _ours_steps(x, y, n, particles, None),
        "ours-subsample": lambda n: _ours_steps(x, y, n, particles, B),
        "pyro-plate-subsample_size": lambda n: _plate_loop(x, y, n, particles, B),
        "hand-full": lambda n: _hand_loop(x, y, n, particles),
    }[variant]
    n1, n2 = max(steps // 4, 2), steps
    run(n1)  # warm-up (one-time lazy initialisation)
    base = _reset_peak()
    run(n2)  # the memory reading: one fit
    peak_added = _peak_mb() - base
    times: dict[int, list[float]] = {n1: [], n2: []}
    for _ in range(repeats):  # alternate the two lengths; medians damp the noise of a shared machine
        for n in (n1, n2):
            t = time.perf_counter()
            run(n)
            times[n].append(time.perf_counter() - t)
    t1, t2 = float(np.median(times[n1])), float(np.median(times[n2]))
    return {"variant": variant, "data": spec, "n_rows": int(x.shape[0]), "particles": particles, "threads": threads,
            "ms_per_step": 1e3 * (t2 - t1) / (n2 - n1), "peak_added_mb": peak_added,
            "rss_before_mb": base, "steps": [n1, n2]}


def fit_worker(spec: str, features: Path) -> dict:
    """A whole default fit with B = 1,000 to its own stop, then 3 full-batch steps (memory contrast)."""
    import torch

    from pyro_spam.config import TrainConfig
    from pyro_spam.training.engines import fit

    x, y = _data(spec, features)
    base = _reset_peak()
    t = time.perf_counter()
    fr = fit(x, y, TrainConfig(batch_size=B))
    wall = time.perf_counter() - t
    sub_peak = _peak_mb() - base
    # The plateau stop compares 20-step means of ELBO estimates whose noise at B/N = 0.1% is
    # thousands of nats, so it stops at its minimum; a fixed 3,000-step fit shows where it goes.
    base_long = _reset_peak()
    t = time.perf_counter()
    long = fit(x, y, TrainConfig(batch_size=B, max_steps=3000, window=10**7))
    long_wall = time.perf_counter() - t
    long_peak = _peak_mb() - base_long
    torch.set_num_threads(1)
    t = time.perf_counter()
    _ours_steps(x, y, 3, 64, None)
    full_s = (time.perf_counter() - t) / 3
    return {"n_rows": int(x.shape[0]), "steps": fr.steps, "stop_reason": fr.stop_reason, "wall_s": wall,
            "ms_per_step": 1e3 * wall / fr.steps, "peak_added_mb_subsample": sub_peak,
            "long_steps": long.steps, "long_wall_s": long_wall, "long_peak_added_mb": long_peak,
            "long_loc": long.loc.tolist(), "long_scale": long.scale.tolist(),
            "peak_added_mb_after_full_batch": _peak_mb() - base_long, "full_batch_s_per_step_incl_compile": full_s,
            "loc": fr.loc.tolist(), "scale": fr.scale.tolist(), "w_true": W_TRUE.tolist()}


def plots(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for variant, marker in (("ours-full", "o"), ("ours-subsample", "s"), ("pyro-plate-subsample_size", "^")):
        pts = sorted((p for p in res["n_sweep"] if p["variant"] == variant), key=lambda p: p["n_rows"])
        if not pts:
            continue
        n = [p["n_rows"] for p in pts]
        axes[0].plot(n, [p["ms_per_step"] for p in pts], marker=marker, label=variant)
        axes[1].plot(n, [p["peak_added_mb"] for p in pts], marker=marker, label=variant)
    for ax, ylab in zip(axes, ("ms per step", "peak memory added by training (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training rows N (replicated default set)")
        ax.set_ylabel(ylab)
        ax.legend()
    axes[0].set_title(f"Time per step vs N (S = 64, B = {B})")
    axes[1].set_title("Peak memory vs N")
    fig.tight_layout()
    fig.savefig(out / "scale_n.png", dpi=110)
    names.append("scale_n.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for variant, marker in (("ours-full", "o"), ("hand-full", "s")):
        pts = sorted((p for p in res["s_sweep"] if p["variant"] == variant), key=lambda p: p["particles"])
        s = [p["particles"] for p in pts]
        axes[0].plot(s, [p["ms_per_step"] for p in pts], marker=marker, label=variant)
        axes[1].plot(s, [p["peak_added_mb"] for p in pts], marker=marker, label=variant)
    for ax, ylab in zip(axes, ("ms per step", "peak memory added by training (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("particles S")
        ax.set_ylabel(ylab)
        ax.legend()
    axes[0].set_title("Time per step vs S (N = 4,459, full batch)")
    axes[1].set_title("Peak memory vs S")
    fig.tight_layout()
    fig.savefig(out / "scale_s.png", dpi=110)
    names.append("scale_s.png")
    plt.close(fig)
    return names


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['versions']['torch']}; load at start {m['loadavg_at_start'][0]:.2f}.", "",
             "N sweep (S = 64, one thread):", "", "| variant | N | ms/step | peak memory added (MiB) |", "|---|---|---|---|"]
    for p in sorted(res["n_sweep"], key=lambda p: (p["variant"], p["n_rows"])):
        lines.append(f"| {p['variant']} | {p['n_rows']:,} | {p['ms_per_step']:.2f} | {p['peak_added_mb']:.0f} |")
    lines += ["", "S sweep (N = 4,459, full batch, one thread):", "", "| variant | S | ms/step | peak memory added (MiB) |", "|---|---|---|---|"]
    for p in sorted(res["s_sweep"], key=lambda p: (p["variant"], p["particles"])):
        lines.append(f"| {p['variant']} | {p['particles']} | {p['ms_per_step']:.2f} | {p['peak_added_mb']:.0f} |")
    lines += ["", "Threads (default fit's step, N = 4,459, S = 64):", "", "| threads | ms/step |", "|---|---|"]
    for p in res["threads"]:
        lines.append(f"| {p['threads']} | {p['ms_per_step']:.2f} |")
    f = res.get("million")
    if f:
        lines += ["", f"1M-row synthetic fit (B = {B}, default settings): {f['steps']} steps ({f['stop_reason']}), "
                  f"{f['wall_s']:.2f} s wall ({f['ms_per_step']:.2f} ms/step incl. setup), peak memory added "
                  f"{f['peak_added_mb_subsample']:.0f} MiB; after 3 full-batch steps {f['peak_added_mb_after_full_batch']:.0f} MiB. "
                  f"loc = {np.round(f['loc'], 2).tolist()}, scale = {np.round(f['scale'], 3).tolist()} (true w = {f['w_true']}). "
                  f"The plateau stop compares 20-step means of ELBO estimates whose noise at B/N = 0.1% is thousands of nats, "
                  f"so it stops at its minimum of 100 steps before the coefficients settle. A fixed {f['long_steps']}-step fit: "
                  f"{f['long_wall_s']:.1f} s, peak memory added {f['long_peak_added_mb']:.0f} MiB, loc = {np.round(f['long_loc'], 3).tolist()}, "
                  f"scale = {np.round(f['long_scale'], 4).tolist()}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parts", default="n,s,threads,million",
                    help="comma-separated parts to (re)measure; the others are kept from the existing results JSON")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--particles", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=100, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--features", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "fit":
        print(json.dumps(fit_worker(args.spec, args.features)))
        return
    if args.worker:
        print(json.dumps(point_worker(args.worker, args.spec, args.particles, args.steps, args.threads, args.features)))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    me = Path(__file__).resolve()
    parts = set(args.parts.split(","))
    old = args.out / "scale_benchmark.json"
    res: dict = json.loads(old.read_text()) if old.exists() and parts != {"n", "s", "threads", "million"} else {}
    res.update({"machine": machine(), "batch_size": B})
    for key, part in (("n_sweep", "n"), ("s_sweep", "s"), ("threads", "threads")):
        if part in parts or key not in res:
            res[key] = []
    with tempfile.TemporaryDirectory() as tmp:
        feats = Path(tmp) / "features.npz"
        default_features(feats)

        def point(variant, spec, particles=64, steps=100, threads=1):
            p = run_worker(me, ["--worker", variant, "--spec", spec, "--particles", str(particles), "--steps", str(steps),
                                "--threads", str(threads), "--features", str(feats)], timeout=3600)
            print(f"{variant:>26} {spec:>16} S={particles:<4} threads={threads}: {p['ms_per_step']:8.2f} ms/step, "
                  f"+{p['peak_added_mb']:7.0f} MiB", flush=True)
            return p

        reps = (1, 10) if args.quick else (1, 10, 100)
        for r in reps if "n" in parts else ():
            full_steps = 40 if r < 100 else 12
            res["n_sweep"].append(point("ours-full", f"rep{r}", steps=full_steps))
            res["n_sweep"].append(point("ours-subsample", f"rep{r}", steps=200))
            res["n_sweep"].append(point("pyro-plate-subsample_size", f"rep{r}", steps=200))
        for s in ((1, 4, 16, 64) if args.quick else (1, 4, 16, 64, 256, 512)) if "s" in parts else ():
            res["s_sweep"].append(point("ours-full", "rep1", particles=s, steps=100 if s <= 64 else 40))
            res["s_sweep"].append(point("hand-full", "rep1", particles=s, steps=100 if s <= 64 else 40))
        for t in (1, 2) if "threads" in parts else ():
            res["threads"].append(point("ours-full", "rep1", steps=200, threads=t))
        if not args.quick and "million" in parts:
            res["million"] = run_worker(me, ["--worker", "fit", "--spec", "synthetic1000000", "--features", str(feats)], timeout=3600)
            print("1M rows:", {k: v for k, v in res["million"].items() if k not in ("loc", "scale")}, flush=True)
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    res["figures"] = plots(res, args.out)
    (args.out / "scale_benchmark.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (args.out / "scale_benchmark.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
