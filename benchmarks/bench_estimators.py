"""Which ELBO estimator reaches the mean-field optimum fastest? Every estimator and a grid of particle counts.

On the default data's training features (shipped SMS data, K = 5 polynomial terms, N = 4,459; built
with ``_common.default_features``), each setting is a full training run as a user gets it:
:func:`pyro_spam.training.fit` with ``TrainConfig(elbo=..., particles=S, seed=...)`` and every other
option at its default (SVI engine, Adam lr 0.1 β2 0.9, ``stop="iterates"``, ``max_steps=3000``,
``jit=True``, which compiles only ``trace`` and ``meanfield``: the other estimators run plain Pyro).

Settings (``--only`` picks estimators; ``meanfield`` S = 64, the course's default and the ratio's
denominator, always runs):

* ``trace``, ``meanfield``, ``stl`` at S ∈ {8, 16, 64};
* ``rqmc`` at S ∈ {4, 8, 16, 64} (powers of two: the scrambled Sobol points need them);
* ``quad`` (exact Gauss–Hermite ELBO, no particles: S does not enter, Adam as for the others);
* ``iwae`` at S = 64 (``RenyiELBO(alpha=0)``: its optimum is *not* the mean-field ELBO's, so it is
  expected to miss; it is here to show by how much);
* ``score`` at S = 64 (score-function gradient; the default 3,000-step budget caps it,
  ``--score-max-steps`` changes that).

Per fit: wall seconds around ``fit()`` (setup and compilation included), steps, ``stop_reason``, and
the distance from the exact optimum (loc*, scale*) of the mean-field ELBO, from
``fit(X, y, TrainConfig(optimizer="lbfgs"))`` (exact quadrature ELBO, L-BFGS, cross-checked against
the independent numpy/SciPy :func:`pyro_spam.exact.exact_optimum`): ``max_j |loc_j − loc*_j| / scale*_j``
(posterior sd) and ``max_j |scale_j / scale*_j − 1|``. A fit *reaches the optimum* when the first is
≤ 0.3 and the second ≤ 0.15; a setting does when all its seeds do. A ``converged`` fit that does not
reach it is a *false stop* (flagged; for ``iwae`` it is expected: different optimum).

Timing: all fits run in this one process, one torch and BLAS thread, warm: before the timed fits one
untimed default fit (meanfield S = 64, full stop rule) and one 30-step fit of every estimator in the run
(lazy imports such as SciPy's Sobol engine and Pyro's TraceGraph machinery, torch.jit's first trace) are
done and discarded. Seeds are the outer loop and the setting order rotates with the seed, so a change in
machine load spreads over all settings. Medians over seeds; the ratio column is each setting's median
seconds over meanfield S = 64's median in the same run.

    .venv/bin/python benchmarks/bench_estimators.py            # 3 seeds, 16 settings (~4 min)
    .venv/bin/python benchmarks/bench_estimators.py --quick    # 1 seed, 7 settings (smoke test, < 1 min)
    .venv/bin/python benchmarks/bench_estimators.py --only rqmc,stl --seeds 5
    .venv/bin/python benchmarks/bench_estimators.py --render benchmarks/results/estimator_benchmark.json  # markdown only

Writes ``benchmarks/results/estimator_benchmark.json`` + ``.md`` (``--quick``: ``estimator_benchmark_quick.*``,
so a smoke test does not overwrite the full results).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load BLAS
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, default_features, machine  # noqa: E402

LOC_TOL = 0.3  # posterior sd
SCALE_TOL = 0.15  # relative
REFERENCE = ("meanfield", 64)
ESTIMATORS = ("trace", "meanfield", "stl", "rqmc", "quad", "iwae", "score")
DIFFERENT_OPTIMUM = {"iwae"}  # estimators whose optimum is not the mean-field ELBO's
NO_PARTICLES = {"quad"}
GRID: list[tuple[str, int]] = [
    *[(e, s) for e in ("trace", "meanfield", "stl") for s in (8, 16, 64)],
    *[("rqmc", s) for s in (4, 8, 16, 64)],
    ("quad", 64), ("iwae", 64), ("score", 64),
]
QUICK_GRID: list[tuple[str, int]] = [("meanfield", 64), ("trace", 8), ("stl", 8), ("rqmc", 8), ("quad", 64), ("iwae", 64), ("score", 64)]
QUICK_CAP = {"iwae": 150, "score": 150}  # --quick: these two only run a short budget (code path, not a result)
WARMUP_STEPS = 30


def label(elbo: str, s: int) -> str:
    return f"{elbo} S={'—' if elbo in NO_PARTICLES else s}"


# --------------------------------------------------------------------------- measuring

def distance(loc, scale, opt_loc: np.ndarray, opt_scale: np.ndarray) -> dict:
    dloc = float(np.max(np.abs(np.asarray(loc) - opt_loc) / opt_scale))
    dscale = float(np.max(np.abs(np.asarray(scale) / opt_scale - 1.0)))
    return {"dloc_sd": dloc, "dscale_rel": dscale, "reached": bool(dloc <= LOC_TOL and dscale <= SCALE_TOL)}


def run(settings: list[tuple[str, int]], seeds: int, max_steps: dict[str, int]) -> dict:
    import torch

    torch.set_num_threads(1)
    from pyro_spam.config import TrainConfig
    from pyro_spam.exact import exact_optimum
    from pyro_spam.training import fit

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        feats = default_features(Path(tmp) / "features.npz")
    x, y = feats["X_train"], feats["y_train"]
    print(f"features: X_train {x.shape} in {time.perf_counter() - t:.1f} s; load {os.getloadavg()[0]:.2f}", flush=True)

    t = time.perf_counter()
    ref = fit(x, y, TrainConfig(optimizer="lbfgs"))
    ref_s = time.perf_counter() - t
    ex = exact_optimum(x, y, TrainConfig().prior_scale)
    cross = distance(ref.loc, ref.scale, ex.loc, ex.scale)
    opt_loc, opt_scale = np.asarray(ref.loc, float), np.asarray(ref.scale, float)
    print(f"exact optimum (lbfgs): {ref.steps} iterations, {ref.stop_reason}, {ref_s:.2f} s (includes first-call setup); "
          f"vs exact_optimum: {cross['dloc_sd']:.1e} sd, {cross['dscale_rel']:.1e} rel", flush=True)

    t = time.perf_counter()
    fit(x, y, TrainConfig())  # warm-up: a whole default fit (torch.jit's first trace, lazy imports)
    for elbo in dict.fromkeys(e for e, _ in settings):
        s = 8 if elbo == "rqmc" else 16
        fit(x, y, TrainConfig(elbo=elbo, particles=s, max_steps=WARMUP_STEPS))
    warm_s = time.perf_counter() - t
    print(f"warm-up (untimed, discarded): {warm_s:.1f} s", flush=True)

    fits: list[dict] = []
    total = seeds * len(settings)
    for seed in range(seeds):
        k = seed % len(settings)
        for elbo, s in settings[k:] + settings[:k]:
            cfg = TrainConfig(elbo=elbo, particles=s, seed=seed, max_steps=max_steps.get(elbo, TrainConfig().max_steps))
            load = os.getloadavg()[0]
            t = time.perf_counter()
            fr = fit(x, y, cfg)
            wall = time.perf_counter() - t
            d = distance(fr.loc, fr.scale, opt_loc, opt_scale)
            false_stop = fr.stop_reason == "converged" and not d["reached"]
            fits.append({"elbo": elbo, "S": s, "seed": seed, "max_steps": cfg.max_steps, "wall_s": wall,
                         "fit_seconds": float(fr.seconds), "steps": int(fr.steps), "stop_reason": fr.stop_reason,
                         "decays": int(fr.extra.get("decays_done", 0)), **d, "false_stop": false_stop, "load": load,
                         "loc": np.asarray(fr.loc).tolist(), "scale": np.asarray(fr.scale).tolist()})
            print(f"{len(fits):3d}/{total} seed {seed} {label(elbo, s):14s}: {wall:6.2f} s {fr.steps:5d} steps {fr.stop_reason:9s} "
                  f"max|Δloc|/sd {d['dloc_sd']:.3f} max|scale/scale*−1| {d['dscale_rel']:.3f}"
                  f"{'  FALSE STOP' if false_stop and elbo not in DIFFERENT_OPTIMUM else ''}", flush=True)
    return {"n_train": int(x.shape[0]), "k": int(x.shape[1]),
            "exact": {"loc": opt_loc.tolist(), "scale": opt_scale.tolist(), "iterations": int(ref.steps),
                      "stop_reason": ref.stop_reason, "seconds": ref_s, "vs_exact_optimum": cross},
            "warmup_s": warm_s, "fits": fits}


# --------------------------------------------------------------------------- summary

def summarise(fits: list[dict], settings: list[tuple[str, int]]) -> list[dict]:
    rows = []
    ref_sel = [f for f in fits if (f["elbo"], f["S"]) == REFERENCE]
    ref_s = float(np.median([f["wall_s"] for f in ref_sel]))
    for elbo, s in settings:
        sel = [f for f in fits if (f["elbo"], f["S"]) == (elbo, s)]
        med = float(np.median([f["wall_s"] for f in sel]))
        rows.append({
            "elbo": elbo, "S": s, "label": label(elbo, s), "seeds": len(sel), "max_steps": sel[0]["max_steps"],
            "median_s": med, "min_s": min(f["wall_s"] for f in sel), "max_s": max(f["wall_s"] for f in sel),
            "ratio": med / ref_s, "median_steps": float(np.median([f["steps"] for f in sel])),
            "ms_per_step": float(np.median([1e3 * f["wall_s"] / f["steps"] for f in sel])),
            "stop": dict(Counter(f["stop_reason"] for f in sel)),
            "median_decays": float(np.median([f["decays"] for f in sel])),
            "median_dloc": float(np.median([f["dloc_sd"] for f in sel])), "worst_dloc": max(f["dloc_sd"] for f in sel),
            "median_dscale": float(np.median([f["dscale_rel"] for f in sel])), "worst_dscale": max(f["dscale_rel"] for f in sel),
            "reached": sum(f["reached"] for f in sel), "false_stops": sum(f["false_stop"] for f in sel),
        })
    return rows


def fmt(v: float | None, digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def verdict(r: dict) -> str:
    if r["elbo"] in DIFFERENT_OPTIMUM:
        return f"no ({r['reached']}/{r['seeds']}; different optimum, expected)" if r["reached"] < r["seeds"] else \
            f"{r['reached']}/{r['seeds']} (different optimum, yet within tolerance)"
    if r["reached"] == r["seeds"]:
        return "**yes**"
    return f"no ({r['reached']}/{r['seeds']})"


def table(rows: list[dict]) -> list[str]:
    lines = [r"| estimator | S | max_steps | median s (min–max) | × meanfield S=64 | steps | ms/step (wall/steps) | stop | "
             r"max\|Δloc\|/sd* median (worst) | max\|scale/scale*−1\| median (worst) | reaches optimum | false stops |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stop = ", ".join(f"{k} {v}" for k, v in sorted(r["stop"].items()))
        fs = r["false_stops"]
        fs_cell = "0" if fs == 0 else (f"{fs} (expected)" if r["elbo"] in DIFFERENT_OPTIMUM else f"**{fs}**")
        lines.append(
            f"| {r['elbo']} | {'—' if r['elbo'] in NO_PARTICLES else r['S']} | {r['max_steps']} | {r['median_s']:.2f} "
            f"({r['min_s']:.2f}–{r['max_s']:.2f}) | {r['ratio']:.2f} | {r['median_steps']:.0f} | {r['ms_per_step']:.2f} | {stop} | "
            f"{r['median_dloc']:.3f} ({r['worst_dloc']:.3f}) | {r['median_dscale']:.3f} ({r['worst_dscale']:.3f}) | "
            f"{verdict(r)} | {fs_cell} |")
    return lines


def conclusion(rows: list[dict], exact_s: float | None = None) -> list[str]:
    ref = next(r for r in rows if (r["elbo"], r["S"]) == REFERENCE)
    mc = [r for r in rows if r["elbo"] not in NO_PARTICLES | DIFFERENT_OPTIMUM and r["S"] < REFERENCE[1]]
    clear = [r for r in mc if r["reached"] == r["seeds"] and r["max_s"] < ref["min_s"]]
    tie = [r for r in mc if r["reached"] == r["seeds"] and r["ratio"] < 1.0 and r not in clear]
    ok = [r for r in rows if r["reached"] == r["seeds"] and r["elbo"] not in DIFFERENT_OPTIMUM]
    faster = sorted((r for r in ok if r["ratio"] < 1.0 and r is not ref), key=lambda r: r["ratio"])
    slower = sorted((r for r in ok if r["ratio"] >= 1.0 and r is not ref), key=lambda r: r["ratio"])
    missed = [r for r in rows if r["reached"] < r["seeds"] and r["elbo"] not in DIFFERENT_OPTIMUM]
    farther = [r for r in ok if r is not ref and r["median_dloc"] > 3 * ref["median_dloc"]]
    cheap_steps = [r for r in rows if r["ms_per_step"] < ref["ms_per_step"] and r["ratio"] > 1.0]
    budget = [r for r in rows if r["stop"].get("budget")]
    false = [r for r in rows if r["false_stops"] and r["elbo"] not in DIFFERENT_OPTIMUM]
    answer = ("**Does a cheaper setting (S < 64) reach the same optimum faster than meanfield S=64?** "
              + ("Yes: " + ", ".join(f"{r['label']} ×{r['ratio']:.2f}" for r in clear) + " (every seed faster)." if clear else
                 "No: no Monte Carlo setting with fewer particles is faster in every seed"
                 + (" (" + ", ".join(f"{r['label']} ×{r['ratio']:.2f}" for r in tie) + " ties: overlapping ranges)" if tie else "")
                 + ". Fewer particles make a step cheaper but the stop rule then needs more steps (next bullets)."))
    if any(r["elbo"] in NO_PARTICLES for r in rows):
        q = next(r for r in rows if r["elbo"] in NO_PARTICLES)
        answer += (f" The noise-free quad ELBO under the same Adam loop is ×{q['ratio']:.2f}"
                   + (f"; the exact path (quad + L-BFGS, the optimum itself) took {exact_s:.2f} s here "
                      "(first call in the process)." if exact_s is not None else "."))
    out = [f"- {answer}", f"- Reference: meanfield S=64 (the course's default), median {ref['median_s']:.2f} s, {ref['median_steps']:.0f} steps, "
           f"{ref['median_dloc']:.3f} sd / {100 * ref['median_dscale']:.1f} % from the optimum."]
    if faster:
        out.append("- Reach the optimum (all seeds) in less median time than meanfield S=64: "
                   + "; ".join(f"**{r['label']}** ×{r['ratio']:.2f} ({r['median_s']:.2f} s, {r['median_steps']:.0f} steps, "
                               f"{r['median_dloc']:.3f} sd"
                               + (", every seed faster than the reference's fastest)" if r["max_s"] < ref["min_s"] else
                                  f"; its range {r['min_s']:.2f}–{r['max_s']:.2f} s overlaps the reference's "
                                  f"{ref['min_s']:.2f}–{ref['max_s']:.2f} s: a tie within run-to-run spread)")
                               for r in faster) + ".")
    else:
        out.append("- No setting reaches the optimum (all seeds) in less time than meanfield S=64.")
    if slower:
        out.append("- Reach it, but slower: " + ", ".join(f"{r['label']} ×{r['ratio']:.2f}" for r in slower) + ".")
    if cheap_steps:
        out.append("- Cheaper per step but slower to the stop (more steps): "
                   + "; ".join(f"{r['label']} ms/step ×{r['ms_per_step'] / ref['ms_per_step']:.2f}, steps "
                               f"×{r['median_steps'] / ref['median_steps']:.1f}" for r in cheap_steps) + ".")
    if farther:
        out.append("- Reach it, but their returned average lands more than 3× farther than meanfield S=64's (median): "
                   + ", ".join(f"{r['label']} {r['median_dloc']:.3f} sd (worst {r['worst_dloc']:.3f})" for r in farther) + ".")
    if missed:
        out.append("- Miss it in some seed: " + ", ".join(f"{r['label']} ({r['reached']}/{r['seeds']}; worst {r['worst_dloc']:.2f} sd, "
                                                           f"{100 * r['worst_dscale']:.0f} %)" for r in missed) + ".")
    if budget:
        out.append("- Stop at the step budget (`budget`, i.e. not converged by the rule): "
                   + ", ".join(f"{r['label']} {r['stop']['budget']}/{r['seeds']}" for r in budget) + ".")
    out.append("- False stops (`converged` but outside the tolerance), iwae excluded: "
               + (", ".join(f"**{r['label']} {r['false_stops']}**" for r in false) if false else "**none**") + ".")
    for r in rows:
        if r["elbo"] in DIFFERENT_OPTIMUM:
            out.append(f"- {r['label']}: {r['median_dloc']:.2f} sd and {100 * r['median_dscale']:.0f} % (median) from the "
                       "mean-field ELBO's optimum: the importance-weighted bound has its own optimum (a wider q), so it is "
                       "not expected to reach this one.")
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    ex = res["data"]["exact"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['versions']['torch']}, pyro-ppl {m['versions']['pyro-ppl']}. "
        f"Load average at start {m['loadavg_at_start'][0]:.2f}, at end {m['loadavg_at_end'][0]:.2f}. One process, one torch "
        f"and BLAS thread. {res['seeds']} seed(s) per setting; load average before each fit "
        f"{min(f['load'] for f in res['fits']):.2f}–{max(f['load'] for f in res['fits']):.2f} (this process counts ~1). "
        f"Wall time of the whole benchmark {res['wall_s'] / 60:.1f} min."
        + (" **--quick** (smoke test: 1 seed, fewer settings, iwae/score on a short budget; not a result)." if res["quick"] else ""),
        "",
        f"Default data's training features: N = {res['data']['n_train']}, K = {res['data']['k']} (+ bias). Each fit: "
        "`fit(X_train, y_train, TrainConfig(elbo=…, particles=S, seed=…))`, all else default (SVI engine, Adam lr 0.1 β2 0.9, "
        "`stop=\"iterates\"`, `jit=True`, which compiles only trace and meanfield). Times are **warm**: wall seconds around "
        "`fit()` (setup and compilation included) after an untimed default fit and a 30-step fit of each estimator in the same "
        "process, so imports and first-call initialisation are excluded. Medians over seeds; × meanfield S=64: median seconds "
        "over that setting's median in this run.",
        "",
        f"Optimum: `fit(X, y, TrainConfig(optimizer=\"lbfgs\"))` ({ex['iterations']} iterations, {ex['stop_reason']}; "
        f"{ex['vs_exact_optimum']['dloc_sd']:.1e} sd and {ex['vs_exact_optimum']['dscale_rel']:.1e} relative from "
        "`pyro_spam.exact.exact_optimum`). Distance: max_j |loc_j − loc*_j| / scale*_j (posterior sd) and max_j "
        f"|scale_j / scale*_j − 1|. *Reaches the optimum*: ≤ {LOC_TOL} sd and ≤ {100 * SCALE_TOL:.0f} % in every seed. "
        "False stop: `converged` but outside that tolerance.",
        "",
        *table(res["rows"]),
        "",
        "Conclusion:",
        "",
        *conclusion(res["rows"], ex.get("seconds")),
    ]
    if res.get("notes"):
        lines += ["", *res["notes"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- parent

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 3; --quick 1)")
    ap.add_argument("--only", default=None, help="comma-separated estimators (meanfield S=64 always runs: the ratio's reference)")
    ap.add_argument("--quick", action="store_true", help="1 seed, 7 settings, iwae/score on a 150-step budget: a smoke test (< 1 min)")
    ap.add_argument("--score-max-steps", type=int, default=None, help="step budget of the score estimator (default: max_steps' default)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="only rewrite the markdown next to a saved results JSON (no fits)")
    args = ap.parse_args()
    if args.render is not None:
        res = json.loads(args.render.read_text())
        md = markdown(res)
        args.render.with_suffix(".md").write_text(md)
        print(md)
        return
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    settings = list(QUICK_GRID if args.quick else GRID)
    if args.only is not None:
        wanted = [e.strip() for e in args.only.split(",")]
        unknown = set(wanted) - set(ESTIMATORS)
        if unknown:
            sys.exit(f"unknown estimators {sorted(unknown)}; choose from {', '.join(ESTIMATORS)}")
        settings = [st for st in settings if st[0] in wanted or st == REFERENCE]
    max_steps = dict(QUICK_CAP) if args.quick else {}
    if args.score_max_steps is not None:
        max_steps["score"] = args.score_max_steps
    info = machine()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = run(settings, seeds, max_steps)
    wall = time.perf_counter() - t0
    rows = summarise(data["fits"], settings)
    res = {"machine": {**info, "loadavg_at_end": list(os.getloadavg())}, "wall_s": wall, "seeds": seeds, "quick": args.quick,
           "command": " ".join([".venv/bin/python", "benchmarks/bench_estimators.py", *sys.argv[1:]]),
           "tolerance": {"dloc_sd": LOC_TOL, "dscale_rel": SCALE_TOL}, "settings": [list(s) for s in settings],
           "data": {k: v for k, v in data.items() if k != "fits"}, "rows": rows, "fits": data["fits"]}
    stem = "estimator_benchmark_quick" if args.quick else "estimator_benchmark"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (args.out / f"{stem}.md").write_text(md)
    print(md)
    ref = next(r for r in rows if (r["elbo"], r["S"]) == REFERENCE)
    for r in rows:
        print(f"ratio {r['label']:14s} / meanfield S=64: {r['ratio']:.2f} ({r['median_s']:.2f} / {ref['median_s']:.2f} s)")
    print(f"wall time {wall:.1f} s ({wall / 60:.1f} min)")


if __name__ == "__main__":
    main()
