"""Does "converged" mean "at the optimum"? The iterate-based stop against v0.1's plateau stop.

Every fit is judged against the exact optimum of the mean-field ELBO of the same training set
(:func:`pyro_spam.exact.exact_optimum`: Gauss–Hermite quadrature + trust-region Newton, numpy and
scipy only, independent of the training code). Per fit: steps, seconds (``FitResult.seconds``,
setup included), stop reason, ``max_j |loc_j − loc*_j| / scale*_j`` and the range of
``scale_j / scale*_j``. A *false stop* is a fit that says ``converged`` but is farther than the
issue's tolerance: ``max |Δloc|/sd > 0.3`` or a scale ratio outside ``[0.8, 1.25]``.

Grid (both stop rules, ``stop="iterates"`` (default) and ``stop="plateau"`` with v0.1's Adam
β1 = 0.9 (the fit the iterate rule replaced), ``max_steps=3000``, both ELBOs, 5 seeds):

* B ∈ {32, 64, 256, 1000, full} at S = 64, and S ∈ {1, 2, 8, 64} at full batch (S = 64 full shared);
* data sets: ``default`` (the shipped SMS data, K = 5) and ``synthetic`` (built here, seed fixed:
  4,000 × 64 "embeddings" from a rank-8 Gaussian plus isotropic noise, labels from a logistic
  model on three known latent directions, ~15 % positives, written as a course-format ``.npz``
  to a temporary directory, read back with :func:`pyro_spam.data.load_npz`, K = 10 components).

The two data sets run in two worker processes in parallel, each on one torch (and BLAS) thread;
inside a worker, the two rules run back to back for each (seed, setting, ELBO), after one
unrecorded warm-up fit.

``--big``: a 1,000,000-row synthetic problem with known coefficients ``W_TRUE`` (standardised
K = 5 features, float32, ``y ~ Bernoulli(σ(w0 + x·w))``), fed straight to ``fit`` with B = 1,000,
S = 64, ``stop="iterates"``, ``max_steps=10000`` (seeds 0–2), each fit in a fresh process: stop
reason, steps, seconds, ``|loc − w_true|/scale`` and the distance from the exact optimum of the
same data (computed in chunks, timed), and the peak RSS of the fit against the same fit at
N = 100,000 (``resource.getrusage`` for the whole process, and the peak ``VmHWM`` reset just
before the fit minus the resident size then: what the fit adds), also with ``jit=False`` (what
the compiled ELBO keeps).

    .venv/bin/python benchmarks/bench_convergence.py            # the grid, ~5 min
    .venv/bin/python benchmarks/bench_convergence.py --quick    # 2 seeds, 3 settings (smoke test)
    .venv/bin/python benchmarks/bench_convergence.py --big      # the 1M-row fits, ~1.5 min

Writes ``benchmarks/results/convergence_benchmark.json`` + ``.md`` (grid) and
``convergence_big.json`` + ``.md`` (``--big``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, run_worker  # noqa: E402

MAX_STEPS = 3000
LOC_TOL = 0.3  # posterior sd
RATIO_TOL = (0.8, 1.25)
RULES = ("iterates", "plateau")
# v0.1's default fit for the "plateau" columns: its stop rule with its optimiser (Adam β1 0.9; the
# iterate rule's default is 0.8, whose shorter momentum ends the ringing it waits for sooner).
RULE_SETTINGS = {"iterates": {}, "plateau": {"adam_beta1": 0.9}}
ELBOS = ("meanfield", "trace")
DATASETS = ("default", "synthetic")
GRID = [(64, 32), (64, 64), (64, 256), (64, 1000), (64, None), (1, None), (2, None), (8, None)]
QUICK_GRID = [(64, 32), (64, None), (2, None)]
FEATURES = {"default": 5, "synthetic": 10}
SYNTH_SEED = 20240613

BIG_N, BIG_SMALL_N, BIG_B, BIG_S, BIG_MAX_STEPS = 1_000_000, 100_000, 1000, 64, 10_000
W_TRUE = np.array([-2.0, 1.0, -0.5, 0.3, 0.0, 0.8])
BIG_DATA_SEED = 7

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- data

def synthetic_npz(path: Path, n: int = 4000, d: int = 64, rank: int = 8, seed: int = SYNTH_SEED) -> dict:
    """Write a course-format .npz (X float32 N×D, y 0/1, msg strings) with a known logistic label.

    Embeddings: ``f @ U.T + 0.5 ε`` with ``U`` a random orthonormal D×rank basis and latent factors
    ``f_r ~ N(0, s_r²)``, ``s`` from 3 down to 1. Label: ``logit = b + 1.5 f̃_0 − 1.0 f̃_1 + 0.7 f̃_3``
    (``f̃`` the standardised factors), ``b`` chosen by bisection so the mean spam probability is 0.15.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, rank)))[0]
    sd = np.linspace(3.0, 1.0, rank)
    f = rng.normal(size=(n, rank)) * sd
    X = f @ basis.T + 0.5 * rng.normal(size=(n, d))
    lin = 1.5 * f[:, 0] / sd[0] - 1.0 * f[:, 1] / sd[1] + 0.7 * f[:, 3] / sd[3]
    lo, hi = -10.0, 10.0
    for _ in range(60):  # mean σ(b + lin) = 0.15
        b = 0.5 * (lo + hi)
        lo, hi = (b, hi) if np.mean(1 / (1 + np.exp(-(b + lin)))) < 0.15 else (lo, b)
    y = (rng.random(n) < 1 / (1 + np.exp(-(b + lin)))).astype(np.int64)
    msg = np.array([f"synthetic message {i}" for i in range(n)])
    np.savez(path, X=X.astype(np.float32), y=y, msg=msg)
    return {"n": n, "d": d, "rank": rank, "seed": seed, "intercept": b, "positives": float(y.mean()),
            "label": "logit = b + 1.5 f0 - 1.0 f1 + 0.7 f3 (standardised latent factors)"}


def grid_data(name: str, tmp: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Training inputs of one grid data set, built as ``pyro-spam run`` would (split seed 0)."""
    from pyro_spam.config import FeatureConfig
    from pyro_spam.data import load_default, load_npz
    from pyro_spam.features import build_features

    if name == "default":
        ds, meta = load_default(), {"source": "shipped default (SMS Spam Collection, all-MiniLM-L6-v2)"}
    else:
        path = tmp / "synthetic.npz"
        meta = synthetic_npz(path)
        ds = load_npz(path)
        meta["source"] = f"synthetic course-format .npz ({ds.X.shape[0]}×{ds.X.shape[1]}), read with load_npz"
    fs, _ = build_features(ds, FeatureConfig(components=FEATURES[name]), seed=0)
    meta.update(n_train=int(fs.X_train.shape[0]), k=int(fs.X_train.shape[1]), train_positives=float(fs.y_train.mean()))
    return fs.X_train, fs.y_train, meta


def big_data(n: int, seed: int = BIG_DATA_SEED, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Standardised float32 features (n, 5) and y ~ Bernoulli(σ(w0 + x·w)) with ``W_TRUE``, in chunks."""
    rng = np.random.default_rng(seed)
    k = W_TRUE.size - 1
    x = np.empty((n, k), dtype=np.float32)
    for lo in range(0, n, chunk):
        x[lo:lo + chunk] = rng.standard_normal((min(chunk, n - lo), k), dtype=np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    sd = x.std(axis=0, dtype=np.float64)
    x -= mean.astype(np.float32)
    x /= sd.astype(np.float32)
    y = np.empty(n, dtype=np.float32)
    for lo in range(0, n, chunk):
        z = W_TRUE[0] + x[lo:lo + chunk].astype(np.float64) @ W_TRUE[1:]
        y[lo:lo + chunk] = rng.random(z.size) < 1 / (1 + np.exp(-z))
    return x, y


# --------------------------------------------------------------------------- judging a fit

def distance(loc: np.ndarray, scale: np.ndarray, ex_loc: np.ndarray, ex_scale: np.ndarray) -> dict:
    """``max |Δloc|/sd*``, the range of ``scale/scale*``, and whether both are within tolerance."""
    dloc = np.abs(np.asarray(loc) - ex_loc) / ex_scale
    ratio = np.asarray(scale) / ex_scale
    within = bool(dloc.max() <= LOC_TOL and RATIO_TOL[0] <= ratio.min() and ratio.max() <= RATIO_TOL[1])
    return {"dloc_max": float(dloc.max()), "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
            "log_ratio_max": float(np.abs(np.log(ratio)).max()), "within_tol": within}


def slim_evidence(ev: dict) -> dict:
    """The parts of ``fr.extra["convergence"]`` worth keeping per fit (thresholds are the same for all)."""
    out = {k: ev[k] for k in ("status", "averaging_window", "lr_final", "checks") if k in ev}
    out["decay_steps"] = [int(d["step"]) for d in ev.get("lr_decays", ev.get("decays", []))]
    fc = ev.get("final_check") or {}
    out["final_check"] = {k: fc[k] for k in ("step", "lr", "window", "rhat_max", "ess_min", "mcse_rel_max", "spread_max",
                                             "accurate", "settled", "accepted_by", "delta") if k in fc}
    return out


# --------------------------------------------------------------------------- workers

def grid_worker(name: str, seeds: int, quick: bool, result: Path) -> None:
    import torch

    torch.set_num_threads(1)
    from pyro_spam.config import TrainConfig
    from pyro_spam.exact import exact_optimum
    from pyro_spam.training import fit

    with tempfile.TemporaryDirectory() as tmp:
        x, y, meta = grid_data(name, Path(tmp))
    t = time.perf_counter()
    ex = exact_optimum(x, y, TrainConfig().prior_scale)
    exact = {"loc": ex.loc.tolist(), "scale": ex.scale.tolist(), "elbo": ex.elbo, "grad_norm": ex.grad_norm,
             "iterations": ex.iterations, "seconds": time.perf_counter() - t}
    print(f"[{name}] N_train {meta['n_train']}, K {meta['k']}, positives {meta['train_positives']:.3f}; exact optimum in "
          f"{exact['seconds']:.2f} s ({ex.iterations} Newton steps), scale* {np.round(ex.scale, 4).tolist()}", flush=True)
    fit(x, y, TrainConfig(max_steps=50))  # warm-up: one-time lazy initialisation stays out of the first timed fit
    settings = QUICK_GRID if quick else GRID
    fits = []
    total = seeds * len(settings) * len(ELBOS) * len(RULES)
    for seed in range(seeds):
        for s, b in settings:
            for elbo in ELBOS:
                for rule in RULES:
                    cfg = TrainConfig(elbo=elbo, particles=s, batch_size=b, seed=seed, stop=rule, max_steps=MAX_STEPS,
                                      **RULE_SETTINGS[rule])
                    t = time.perf_counter()
                    fr = fit(x, y, cfg)
                    wall = time.perf_counter() - t
                    dist = distance(fr.loc, fr.scale, ex.loc, ex.scale)
                    false_stop = fr.stop_reason == "converged" and not dist["within_tol"]
                    fits.append({"seed": seed, "S": s, "B": b, "elbo": elbo, "rule": rule, "steps": int(fr.steps),
                                 "seconds": float(fr.seconds), "wall_s": wall, "stop_reason": fr.stop_reason, **dist,
                                 "false_stop": false_stop, "loc": fr.loc.tolist(), "scale": fr.scale.tolist(),
                                 "evidence": slim_evidence(fr.extra.get("convergence", {}))})
                    print(f"[{name}] {len(fits):3d}/{total} seed {seed} S={s:<2d} B={b or 'full':<4} {elbo:9s} {rule:8s}: "
                          f"{fr.steps:4d} steps {fr.seconds:5.2f} s {fr.stop_reason:9s} max|Δloc|/sd {dist['dloc_max']:.3f} "
                          f"scale ratio {dist['ratio_min']:.3f}–{dist['ratio_max']:.3f}{'  FALSE STOP' if false_stop else ''}",
                          flush=True)
    result.write_text(json.dumps({"meta": meta, "exact": exact, "fits": fits}))


def big_fit_worker(n: int, seed: int, max_steps: int, jit: bool) -> dict:
    import torch

    torch.set_num_threads(1)
    import pyro_spam.training.svi  # noqa: F401 - imports before the memory baseline
    from pyro_spam.config import TrainConfig
    from pyro_spam.training import fit

    x, y = big_data(n)
    rss_before = _status_mb("VmRSS")
    ru_before = _ru_maxrss_mb()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak below is the fit's
    fr = fit(x, y, TrainConfig(particles=BIG_S, batch_size=BIG_B, seed=seed, stop="iterates", max_steps=max_steps, jit=jit))
    return {"n": n, "seed": seed, "jit": jit, "max_steps": max_steps, "steps": int(fr.steps), "seconds": float(fr.seconds),
            "stop_reason": fr.stop_reason, "loc": fr.loc.tolist(), "scale": fr.scale.tolist(), "positives": float(y.mean()),
            "rss_before_fit_mb": rss_before, "vmhwm_during_fit_mb": _status_mb("VmHWM"),
            "added_by_fit_mb": _status_mb("VmHWM") - rss_before, "ru_maxrss_before_fit_mb": ru_before,
            "ru_maxrss_mb": _ru_maxrss_mb(), "data_mb": (x.nbytes + y.nbytes) / 2**20,
            "evidence": slim_evidence(fr.extra.get("convergence", {}))}


def big_exact_worker(n: int) -> dict:
    from pyro_spam.exact import exact_optimum

    x, y = big_data(n)
    rss_before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    t = time.perf_counter()
    ex = exact_optimum(x, y, 1.0)
    return {"n": n, "seconds": time.perf_counter() - t, "loc": ex.loc.tolist(), "scale": ex.scale.tolist(), "elbo": ex.elbo,
            "grad_norm": ex.grad_norm, "iterations": ex.iterations, "added_mb": _status_mb("VmHWM") - rss_before,
            "ru_maxrss_mb": _ru_maxrss_mb()}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


# --------------------------------------------------------------------------- summaries

def fmt(v: float | None, digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def cell(fits: list[dict]) -> dict:
    conv = [f for f in fits if f["stop_reason"] == "converged"]
    return {
        "n": len(fits), "converged": len(conv), "budget": sum(f["stop_reason"] == "budget" for f in fits),
        "median_steps": float(np.median([f["steps"] for f in fits])),
        "median_seconds": float(np.median([f["seconds"] for f in fits])),
        "worst_dloc_converged": max((f["dloc_max"] for f in conv), default=None),
        "ratio_range_converged": [min(f["ratio_min"] for f in conv), max(f["ratio_max"] for f in conv)] if conv else None,
        "false_stops": sum(f["false_stop"] for f in fits),
        "worst_dloc_all": max(f["dloc_max"] for f in fits),
        "budget_within_tol": sum(f["stop_reason"] == "budget" and f["within_tol"] for f in fits),
    }


def summarise(ds: dict) -> dict:
    fits = ds["fits"]
    settings = sorted({(f["S"], f["B"]) for f in fits}, key=lambda sb: (sb[1] is None, sb[1] or 0, -sb[0]))
    rows = []
    for s, b in settings:
        for elbo in ELBOS:
            row = {"S": s, "B": b, "elbo": elbo}
            for rule in RULES:
                sel = [f for f in fits if (f["S"], f["B"], f["elbo"], f["rule"]) == (s, b, elbo, rule)]
                if sel:
                    row[rule] = cell(sel)
            rows.append(row)
    default_fits = {rule: [f for f in fits if f["S"] == 64 and f["B"] is None and f["rule"] == rule] for rule in RULES}
    speed: dict = {}
    if all(default_fits.values()):
        for elbo in (*ELBOS, "both"):
            sel = {r: [f for f in v if elbo in ("both", f["elbo"])] for r, v in default_fits.items()}
            sec = {r: float(np.median([f["seconds"] for f in v])) for r, v in sel.items()}
            steps = {r: float(np.median([f["steps"] for f in v])) for r, v in sel.items()}
            speed[elbo] = {"median_seconds": sec, "median_steps": steps, "time_ratio_new_old": sec["iterates"] / sec["plateau"],
                           "steps_ratio_new_old": steps["iterates"] / steps["plateau"],
                           "median_dloc": {r: float(np.median([f["dloc_max"] for f in v])) for r, v in sel.items()},
                           "worst_dloc": {r: max(f["dloc_max"] for f in v) for r, v in sel.items()},
                           "worst_log_ratio": {r: max(f["log_ratio_max"] for f in v) for r, v in sel.items()}}
    totals = {rule: {"fits": sum(f["rule"] == rule for f in fits),
                     "converged": sum(f["rule"] == rule and f["stop_reason"] == "converged" for f in fits),
                     "false_stops": sum(f["rule"] == rule and f["false_stop"] for f in fits),
                     "budget_within_tol": sum(f["rule"] == rule and f["stop_reason"] == "budget" and f["within_tol"] for f in fits)}
              for rule in RULES}
    return {"rows": rows, "full_batch_s64": speed, "totals": totals}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['versions']['torch']}, pyro-ppl {m['versions']['pyro-ppl']}. "
        f"Load average at start {m['loadavg_at_start'][0]:.2f}, at end {m['loadavg_at_end'][0]:.2f}; the two data sets ran in "
        f"parallel, one process each, one torch thread each. Wall time {res['wall_s'] / 60:.1f} min. max_steps {MAX_STEPS}.",
        "",
        f"Distance from the exact optimum of the mean-field ELBO of the same training set: max |Δloc|/sd = "
        f"max_j |loc_j − loc*_j| / scale*_j; scale ratio = scale_j / scale*_j (min–max over coefficients and fits). "
        f"False stop: `converged` but max |Δloc|/sd > {LOC_TOL} or a scale ratio outside [{RATIO_TOL[0]}, {RATIO_TOL[1]}]. "
        "conv/budget: counts over seeds; steps and seconds: medians over seeds; worst Δloc and scale range: over converged fits only. "
        "Both rules run with their own defaults: iterates with Adam β1 0.8 (today's default), plateau with v0.1's β1 0.9 "
        "(the default fit before the iterate rule).",
    ]
    for name, ds in res["datasets"].items():
        meta, s = ds["meta"], ds["summary"]
        seeds = len({f["seed"] for f in ds["fits"]})
        lines += ["", f"### {name}: {meta['source']}; N_train = {meta['n_train']}, K = {meta['k']}, "
                      f"{100 * meta['train_positives']:.1f} % positives; {seeds} seeds", ""]
        head = "| S | B | ELBO |"
        sep = "|---|---|---|"
        for rule in RULES:
            head += f" {rule}: conv/budget | steps | s | worst max\\|Δloc\\|/sd | scale ratio | false |"
            sep += "---|---|---|---|---|---|"
        lines += [head, sep]
        for row in s["rows"]:
            line = f"| {row['S']} | {row['B'] or 'full'} | {row['elbo']} |"
            for rule in RULES:
                c = row.get(rule)
                if c is None:
                    line += " | | | | | |"
                    continue
                rr = c["ratio_range_converged"]
                line += (f" {c['converged']}/{c['budget']} | {c['median_steps']:.0f} | {c['median_seconds']:.2f} | "
                         f"{fmt(c['worst_dloc_converged'], 3)} | {'—' if rr is None else f'{rr[0]:.2f}–{rr[1]:.2f}'} | "
                         f"{'**' + str(c['false_stops']) + '**' if c['false_stops'] else 0} |")
            lines.append(line)
        lines.append("")
        for rule, t in s["totals"].items():
            lines.append(f"- {rule}: {t['converged']}/{t['fits']} converged, **{t['false_stops']} false stops**; "
                         f"{t['budget_within_tol']} fits said `budget` although within tolerance")
        sp = s["full_batch_s64"].get("both")
        if sp:
            lines.append(
                f"- full batch, S = 64: median {sp['median_seconds']['iterates']:.2f} s / {sp['median_steps']['iterates']:.0f} steps "
                f"(iterates) vs {sp['median_seconds']['plateau']:.2f} s / {sp['median_steps']['plateau']:.0f} steps (plateau): "
                f"time ratio new/old **{sp['time_ratio_new_old']:.2f}** (meanfield {s['full_batch_s64']['meanfield']['time_ratio_new_old']:.2f}, "
                f"trace {s['full_batch_s64']['trace']['time_ratio_new_old']:.2f}); max |Δloc|/sd median (worst) "
                f"{sp['median_dloc']['iterates']:.3f} ({sp['worst_dloc']['iterates']:.3f}) vs {sp['median_dloc']['plateau']:.3f} "
                f"({sp['worst_dloc']['plateau']:.3f}); worst |log scale ratio| {sp['worst_log_ratio']['iterates']:.3f} vs "
                f"{sp['worst_log_ratio']['plateau']:.3f}")
    lines += ["", "Total false stops over all data sets: " + ", ".join(f"{r} **{n}**" for r, n in res["false_stops_total"].items())
              + "; full batch S = 64 time ratio new/old (median seconds over seeds and both ELBOs): "
              + ", ".join(f"{n} **{r:.2f}**" for n, r in res["time_ratio_s64_full"].items())]
    return "\n".join(lines) + "\n"


def big_markdown(res: dict) -> str:
    lines = [f"1M-row synthetic problem (K = 5 standardised features, w_true = {W_TRUE.tolist()}, data seed {BIG_DATA_SEED}), "
             f"B = {BIG_B}, S = {BIG_S}, stop = iterates, max_steps = {res['max_steps']}. Load at start "
             f"{res['machine']['loadavg_at_start'][0]:.2f}.", ""]
    for n, ex in res["exact"].items():
        lines.append(f"- exact optimum, N = {int(n):,}: {ex['seconds']:.1f} s ({ex['iterations']} Newton steps, gradient norm "
                     f"{ex['grad_norm']:.1e}), {ex['added_mb']:.0f} MB added; |loc* − w_true|/scale* = "
                     f"{np.round(np.abs(np.array(ex['loc']) - W_TRUE) / np.array(ex['scale']), 2).tolist()}")
    lines += ["", "| N | seed | jit | stop | steps | s | max \\|loc − w_true\\|/scale | max \\|Δloc\\|/sd* vs exact | scale/scale* | "
                  "peak RSS (getrusage) MB | added by fit MB (KB/step) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in res["fits"]:
        lines.append(f"| {f['n']:,} | {f['seed']} | {'on' if f['jit'] else 'off'} | {f['stop_reason']} | {f['steps']} | "
                     f"{f['seconds']:.1f} | {f['z_true_max']:.2f} | {fmt(f.get('dloc_max'), 3)} | "
                     f"{fmt(f.get('ratio_min'), 3)}–{fmt(f.get('ratio_max'), 3)} | {f['ru_maxrss_mb']:.0f} | "
                     f"{f['added_by_fit_mb']:.0f} ({1024 * f['added_by_fit_mb'] / f['steps']:.0f}) |")
    f0 = res["fits"][0]
    lines += ["", f"Seed {f0['seed']}, N = {f0['n']:,}: loc ± scale = "
              + ", ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(f0["loc"], f0["scale"]))
              + f"; |loc − w_true|/scale = {np.round(f0['z_true'], 2).tolist()}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- parent

def run_grid(args: argparse.Namespace) -> None:
    me = Path(__file__).resolve()
    names = DATASETS if args.only is None else (args.only,)
    info = machine()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        procs = {}
        for name in names:
            cmd = [sys.executable, str(me), "--worker", "grid", "--dataset", name, "--seeds", str(args.seeds),
                   "--result", str(Path(tmp) / f"{name}.json"), *(["--quick"] if args.quick else [])]
            procs[name] = subprocess.Popen(cmd, env={**os.environ, **THREAD_ENV, "PYTHONWARNINGS": "ignore"})
        failed = [n for n, p in procs.items() if p.wait() != 0]
        if failed:
            sys.exit(f"worker(s) {failed} failed")
        datasets = {n: json.loads((Path(tmp) / f"{n}.json").read_text()) for n in names}
    wall = time.perf_counter() - t0
    out_json = args.out / "convergence_benchmark.json"
    if args.only is not None and out_json.exists():  # keep the other data set from an earlier run
        old = json.loads(out_json.read_text())
        merged = {**old.get("datasets", {}), **datasets}
        datasets = {n: merged[n] for n in DATASETS if n in merged}
    for ds in datasets.values():
        ds["summary"] = summarise(ds)
    allfits = [f for ds in datasets.values() for f in ds["fits"]]
    ratios = {n: ds["summary"]["full_batch_s64"]["both"]["time_ratio_new_old"] for n, ds in datasets.items()
              if ds["summary"]["full_batch_s64"]}
    res = {"machine": {**info, "loadavg_at_end": list(os.getloadavg())}, "wall_s": wall,
           "command": " ".join([".venv/bin/python", "benchmarks/bench_convergence.py", *sys.argv[1:]]),
           "tolerance": {"dloc_max": LOC_TOL, "scale_ratio": list(RATIO_TOL)}, "max_steps": MAX_STEPS, "quick": args.quick,
           "false_stops_total": {r: sum(f["rule"] == r and f["false_stop"] for f in allfits) for r in RULES},
           "time_ratio_s64_full": ratios,
           "datasets": datasets}
    args.out.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (args.out / "convergence_benchmark.md").write_text(md)
    print(md)
    print("total false stops: " + ", ".join(f"{r} {n}" for r, n in res["false_stops_total"].items()))
    for n, r in res["time_ratio_s64_full"].items():
        print(f"{n}: full batch S = 64, time ratio new/old (median seconds over seeds and both ELBOs): {r:.2f}")
    print(f"wall time {wall / 60:.1f} min")


def run_big(args: argparse.Namespace) -> None:
    me = Path(__file__).resolve()
    info = machine()
    os.environ.update(THREAD_ENV)  # the workers inherit one BLAS thread
    steps = ["--big-max-steps", str(args.big_max_steps)]
    jobs = [["--worker", "bigexact", "--n", str(BIG_N)]]
    jobs += [["--worker", "bigfit", "--n", str(BIG_N), "--seed", str(s), *steps] for s in range(args.big_seeds)]
    jobs += [["--worker", "bigfit", "--n", str(BIG_SMALL_N), "--seed", "0", *steps], ["--worker", "bigexact", "--n", str(BIG_SMALL_N)]]
    # The same fit without the compiled ELBO: separates what the fit needs from what torch.jit keeps.
    jobs += [["--worker", "bigfit", "--n", str(n), "--seed", "0", *steps, "--nojit"] for n in (BIG_N, BIG_SMALL_N)]
    t0 = time.perf_counter()

    def one(job: list[str]) -> dict:
        out = run_worker(me, job, timeout=3600)
        print(f"{' '.join(job[1:])}: "
              + json.dumps({k: v for k, v in out.items() if k not in ("loc", "scale", "evidence")}), flush=True)
        return out

    with ThreadPoolExecutor(max_workers=2) as pool:  # two processes at a time
        outs = list(pool.map(one, jobs))
    exact = {str(o["n"]): o for o in outs if "iterations" in o}
    fits = [o for o in outs if "steps" in o]
    for f in fits:
        loc, scale = np.array(f["loc"]), np.array(f["scale"])
        f["z_true"] = (np.abs(loc - W_TRUE) / scale).tolist()
        f["z_true_max"] = float(max(f["z_true"]))
        ex = exact.get(str(f["n"]))
        if ex is not None:
            f.update(distance(loc, scale, np.array(ex["loc"]), np.array(ex["scale"])))
            f["false_stop"] = f["stop_reason"] == "converged" and not f["within_tol"]
    res = {"machine": {**info, "loadavg_at_end": list(os.getloadavg())}, "wall_s": time.perf_counter() - t0,
           "command": " ".join([".venv/bin/python", "benchmarks/bench_convergence.py", *sys.argv[1:]]),
           "w_true": W_TRUE.tolist(), "B": BIG_B, "S": BIG_S, "max_steps": args.big_max_steps, "exact": exact, "fits": fits}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "convergence_big.json").write_text(json.dumps(res, indent=1))
    md = big_markdown(res)
    (args.out / "convergence_big.md").write_text(md)
    print(md)
    print(f"wall time {res['wall_s'] / 60:.1f} min")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 3 settings: a smoke test")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 5; --quick 2)")
    ap.add_argument("--only", choices=DATASETS, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--big", action="store_true", help="the 1M-row synthetic fits instead of the grid")
    ap.add_argument("--big-seeds", type=int, default=3, help="seeds of the 1M-row fit")
    ap.add_argument("--big-max-steps", type=int, default=BIG_MAX_STEPS)
    ap.add_argument("--nojit", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seeds is None:
        args.seeds = 2 if args.quick else 5
    if args.worker == "grid":
        grid_worker(args.dataset, args.seeds, args.quick, args.result)
    elif args.worker == "bigfit":
        print(json.dumps(big_fit_worker(args.n, args.seed, args.big_max_steps, not args.nojit)))
    elif args.worker == "bigexact":
        print(json.dumps(big_exact_worker(args.n)))
    elif args.big:
        run_big(args)
    else:
        run_grid(args)


if __name__ == "__main__":
    main()
