"""Time per fit when one process fits many data sets (a sweep, simulation-based calibration): 1, 10, 100 fits.

One fresh process per contender (and round, rounds interleaved with a rotating order): import the
framework (timed as ``import_s``), then fit data sets 1, 2, …, 100 one after another, each a full
user-level fit from scratch (model, compilation where the framework compiles, optimiser). Each data
set is the default training set's X (N = 4,459, K = 5 polynomial terms) with new labels simulated
from the model, as SBC does: a coefficient vector w⁽ⁱ⁾ ~ N(loc*, diag(scale*²)) drawn from the exact
mean-field posterior of the default data (seed 1000 + i), then y⁽ⁱ⁾ ~ Bernoulli(σ(w0 + X w[1:])).
So the data sets are slightly different versions of the default one. Reported per contender: import
time, the first (cold) fit, the median time per fit over fits 1–10 and 1–100 (min–max), the total
wall time of the fits, (import + all fits) / fits, the resident memory after fits 1, 10 and the last,
the ratio to the exact path, and every fit's distance from the exact optimum of its own data set
(:func:`pyro_spam.exact.exact_optimum`, computed afterwards and not timed): max |Δloc| / scale* and
max |scale / scale* − 1|.

Contenders (``--only`` picks some):

* ``exact-lbfgs``: ``pyro_spam.training.fit(x, y, TrainConfig(optimizer="lbfgs"))`` (stops by itself);
* ``exact-lbfgs-blas1``: the same inside ``threadpoolctl.threadpool_limits(1)`` (diagnostic: SciPy's
  L-BFGS-B on one OpenBLAS thread; see ``benchmarks/README.md``);
* ``svi-meanfield``: ``fit(x, y, TrainConfig())``, the default Adam SVI fit (stops by itself);
* ``numpyro-meanfield-tuned``: NumPyro SVI as ``bench_fit.py`` runs it (hand-written mean-field guide,
  ``TraceMeanField_ELBO(num_particles=64)``, Adam lr 0.1 β2 0.9, ``svi.run``), fixed budget;
  ``svi.run`` traces and compiles its ``lax.scan`` again on every call;
* ``numpyro-meanfield-tuned-jit``: the same SVI, but ``jax.jit`` of (``svi.init`` + ``lax.scan`` of
  ``svi.update``) with the data as arguments, built once per process: fits 2… reuse the compiled
  program (what a NumPyro user would write for many fits; same numbers as ``svi.run``);
* ``pymc-advi``: ``pm.fit(method="advi")`` with PyMC's defaults (a new model per fit), fixed budget.

Fixed budgets: the steps the shared criterion of ``bench_fit.py`` needs on the default data (a
reference run and a pre-pass with ``bench_fit.py``'s workers, seed 0), used for every data set;
the distance columns show whether that budget is also enough on the simulated ones. A contender
whose fits exceed ``--cap`` seconds (default 180) in a process stops after the fit that crosses
it (but not before 10 fits); the output says how many fits it ran, and "est. 100" extrapolates
the cold fit + 99 × the median.

    .venv/bin/python benchmarks/bench_many_fits.py             # 1, 10, 100 fits, 2 rounds (~20 min)
    .venv/bin/python benchmarks/bench_many_fits.py --quick     # 1 and 10 fits, 1 round (~3 min)
    .venv/bin/python benchmarks/bench_many_fits.py --only exact-lbfgs,svi-meanfield --rounds 1

Writes ``benchmarks/results/many_fits.json`` and ``many_fits.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_fit  # noqa: E402
from _common import (  # noqa: E402
    RESULTS,
    default_features,
    machine,
    med_range,
    numpyro_meanfield_svi,
    run_worker,
    running_mean,
    steps_to_criterion,
)

S = bench_fit.S
N_MANY = 100
EXACT = "exact-lbfgs"

# name: (kind, label, name in bench_fit whose pre-pass gives the fixed budget, or None: stops by itself)
CONTENDERS: dict[str, tuple[str, str, str | None]] = {
    "exact-lbfgs": ("exact", "pyro_spam exact path (optimizer=\"lbfgs\")", None),
    "exact-lbfgs-blas1": ("exact", "the same inside threadpool_limits(1) (diagnostic)", None),
    "svi-meanfield": ("ours", "pyro_spam default Adam SVI (TraceMeanField, JIT, iterate stop)", None),
    "numpyro-meanfield-tuned": ("numpyro", "NumPyro SVI, svi.run per fit (Adam 0.1/β2 0.9, S = 64)", "numpyro-meanfield-tuned"),
    "numpyro-meanfield-tuned-jit": ("numpyro-jit", "NumPyro SVI, jit(init + scan) compiled once per process", "numpyro-meanfield-tuned"),
    "pymc-advi": ("pymc", "PyMC ADVI, defaults, pm.fit per fit", "pymc-advi"),
}
IMPORTS = {**bench_fit.IMPORTS, "numpyro-jit": bench_fit.IMPORTS["numpyro"]}


# --------------------------------------------------------------------------- contenders (in workers)

_JIT_CACHE: dict[tuple[int, int], object] = {}


def _numpyro_jit(name: str, x, y, fixed: int | None, seed: int = 0):
    """bench_fit's NumPyro SVI (tuned), compiled once: jit(init + scan of update) with X, Y as arguments."""
    import jax
    import jax.numpy as jnp

    k1 = x.shape[1] + 1
    key = (k1, int(fixed))
    if key not in _JIT_CACHE:
        svi = numpyro_meanfield_svi(k1, 0.1, 0.9, S)

        def run(rng_key, X, Y):
            state = svi.init(rng_key, X, Y)
            state, losses = jax.lax.scan(lambda s, _: svi.update(s, X, Y), state, None, length=int(fixed))
            return svi.get_params(state), losses

        _JIT_CACHE[key] = jax.jit(run)
    params, losses = _JIT_CACHE[key](jax.random.PRNGKey(seed), jnp.asarray(x), jnp.asarray(y))
    losses = np.asarray(losses)  # blocks until the computation has finished
    return -losses.astype(float), np.asarray(params["w_loc"], float), np.asarray(params["w_scale"], float), fixed, "max_steps"


def _fit_fn(name: str):
    kind = CONTENDERS[name][0]
    if kind == "numpyro-jit":
        return _numpyro_jit, name
    # bench_fit's functions, under the bench_fit contender name that selects the configuration
    return bench_fit.FIT[kind], CONTENDERS[name][2] or name


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(name: str, data: Path, budget: int | None, n_fits: int, cap_s: float) -> dict:
    """Import, then fit data sets 0 … n_fits−1 in turn (stopping early past ``cap_s`` seconds of fits, after at least 10)."""
    kind = CONTENDERS[name][0]
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    exec(IMPORTS[kind])  # noqa: S102 - fixed strings
    import_s = time.perf_counter() - t
    d = np.load(data)
    x, ys = d["X_train"], d["Y"]
    fn, fit_name = _fit_fn(name)
    walls, cpus, steps, stops, locs, scales, rss = [], [], [], [], [], [], {}
    spent = 0.0
    for i in range(n_fits):
        t, c = time.perf_counter(), time.process_time()
        _, loc, scale, k, stop = fn(fit_name, x, ys[i], budget)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        spent += walls[-1]
        steps.append(int(k))
        stops.append(stop)
        locs.append(np.asarray(loc, float).tolist())
        scales.append(np.asarray(scale, float).tolist())
        if i + 1 in (1, 10) or i + 1 == n_fits:
            rss[i + 1] = _rss_mb()
        if spent > cap_s and i + 1 >= 10 and i + 1 < n_fits:
            rss[i + 1] = _rss_mb()
            break
    return {"name": name, "import_s": import_s, "wall_s": walls, "cpu_s": cpus, "steps": steps, "stop_reason": stops,
            "loc": locs, "scale": scales, "rss_mb": rss, "load_before": load0, "load_after": os.getloadavg()[0],
            "requested": n_fits, "capped": len(walls) < n_fits}


# --------------------------------------------------------------------------- parent

def simulate(x: np.ndarray, loc: np.ndarray, scale: np.ndarray, n: int) -> np.ndarray:
    """``n`` label vectors: y⁽ⁱ⁾ ~ Bernoulli(σ(w0 + X w[1:])) at w⁽ⁱ⁾ ~ N(loc, diag(scale²)), seed 1000 + i."""
    from scipy.special import expit

    out = np.empty((n, x.shape[0]), dtype=np.float32)
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        w = loc + scale * rng.standard_normal(loc.shape[0])
        out[i] = (rng.random(x.shape[0]) < expit(w[0] + x.astype(np.float64) @ w[1:])).astype(np.float32)
    return out


def summarise(name: str, runs: list[dict], optima: list, n_fits: int) -> dict:
    """Per-round statistics and their medians (min–max over rounds)."""
    rows = []
    for r in runs:
        w = np.asarray(r["wall_s"])
        done = len(w)
        dloc = [float(np.max(np.abs(np.asarray(lo) - optima[i].loc) / optima[i].scale)) for i, lo in enumerate(r["loc"])]
        dsc = [float(np.max(np.abs(np.asarray(sc) / optima[i].scale - 1.0))) for i, sc in enumerate(r["scale"])]
        row = {
            "import_s": r["import_s"],
            "cold_s": float(w[0]),
            "median_10_s": float(np.median(w[:10])),
            "min_10_s": float(np.min(w[:10])),
            "max_10_s": float(np.max(w[:10])),
            "fits_done": done,
            "median_all_s": float(np.median(w)),
            "min_all_s": float(np.min(w)),
            "max_all_s": float(np.max(w)),
            "total_s": float(w.sum()),
            "est_total_100_s": float(w[0] + (N_MANY - 1) * np.median(w)),
            "per_fit_incl_import_s": float((r["import_s"] + w.sum()) / done),
            "median_cpu_s": float(np.median(r["cpu_s"])),
            "median_steps": float(np.median(r["steps"])),
            "converged": sum(s == "converged" for s in r["stop_reason"]),
            "rss_first_mb": r["rss_mb"].get("1"),
            "rss_10_mb": r["rss_mb"].get("10"),
            "rss_last_mb": r["rss_mb"].get(str(done)),
            "dloc_sd_median": float(np.median(dloc)),
            "dloc_sd_max": float(np.max(dloc)),
            "dscale_rel_median": float(np.median(dsc)),
            "dscale_rel_max": float(np.max(dsc)),
            "load_before": r["load_before"],
            "load_after": r["load_after"],
        }
        rows.append(row)
    agg = {k: med_range([row[k] for row in rows]) for k in rows[0]}
    kind, label, _ = CONTENDERS[name]
    return {"label": label, "kind": kind, "requested": n_fits, "capped": any(r["capped"] for r in runs), "rounds": rows,
            "median_min_max": agg, "stop_reasons": sorted({s for r in runs for s in r["stop_reason"]}),
            "wall_s": [r["wall_s"] for r in runs]}


def fmt(v, digits=2):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def fmt_mmm(t, digits=2):
    m, lo, hi = t
    if math.isnan(m):
        return "—"
    if lo == hi:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def fmt_small(v: float) -> str:
    return f"{v:.1e}" if abs(v) < 1e-3 else f"{v:.4f}"


def markdown(res: dict) -> str:
    m = res["machine"]
    n_many = res["n_fits"]
    names = list(res["contenders"])
    covers = "all contenders" if set(names) == set(CONTENDERS) else f"only the contenders {', '.join(names)} (`--only`)"
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}; "
        f"torch {m['versions']['torch']}, pyro-ppl {m['versions']['pyro-ppl']}, jax {m['versions']['jax']}, "
        f"numpyro {m['versions']['numpyro']}, pymc {m['versions']['pymc']}. Load average at start {m['loadavg_at_start'][0]:.2f}, "
        f"at end {m['loadavg_at_end'][0]:.2f}. {res['rounds']} round(s), one process per contender and round; "
        f"{n_many} fits per process (cap {res['cap_s']:g} s of fits). This file covers {covers}. "
        f"Fixed budgets (shared criterion on the default data): NumPyro {res['budgets'].get('numpyro-meanfield-tuned', '—')} steps, "
        f"PyMC {res['budgets'].get('pymc-advi', '—')} steps.",
        "",
        "Times in seconds; medians over rounds, (min–max over rounds) where there is more than one round. "
        "\"per fit\" columns are the median of the per-fit wall times in a process.",
        "",
        f"| contender | import | first fit (cold) | per fit, fits 1–10 | per fit, fits 1–{n_many} | fits run | "
        f"total wall of the fits | (import + fits) / fit | per fit / exact-lbfgs | RSS after 1 / 10 / last fit (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ex = res["contenders"].get(EXACT)
    for name, s in res["contenders"].items():
        a = s["median_min_max"]
        done = int(a["fits_done"][0])
        capped = done < n_many
        total = fmt_mmm(a["total_s"], 1) + (f" (est. {n_many}: {a['est_total_100_s'][0]:.0f})" if capped and n_many == N_MANY else "")
        rel = "1" if name == EXACT else (fmt(a["median_all_s"][0] / ex["median_min_max"]["median_all_s"][0], 1) if ex else "—")
        rss = " / ".join(fmt(a[k][0], 0) for k in ("rss_first_mb", "rss_10_mb", "rss_last_mb"))
        lines.append(
            f"| {s['label']} | {fmt(a['import_s'][0])} | {fmt_mmm(a['cold_s'])} | {fmt_mmm(a['median_10_s'], 3)} | "
            f"{fmt_mmm(a['median_all_s'], 3)} | {done}{' (capped)' if capped else ''} | {total} | "
            f"{fmt(a['per_fit_incl_import_s'][0], 3)} | {rel} | {rss} |")
    lines += ["", "Distance of each fit from the exact optimum of its own data set (`pyro_spam.exact.exact_optimum`), "
              "median and worst over the fits of the first round; steps per fit (median) and fits that stopped by themselves:", "",
              r"| contender | max \|Δloc\| / scale*: median (worst) | max \|scale / scale* − 1\|: median (worst) | steps per fit | "
              "stop reasons (converged / fits) |",
              "|---|---|---|---|---|"]
    for _name, s in res["contenders"].items():
        r0 = s["rounds"][0]
        lines.append(f"| {s['label']} | {fmt_small(r0['dloc_sd_median'])} ({fmt_small(r0['dloc_sd_max'])}) | "
                     f"{fmt_small(r0['dscale_rel_median'])} ({fmt_small(r0['dscale_rel_max'])}) | {r0['median_steps']:.0f} | "
                     f"{', '.join(s['stop_reasons'])} ({r0['converged']} / {r0['fits_done']}) |")
    if res.get("ratios"):
        lines += ["", "Ratios to exact-lbfgs (medians; > 1: the other contender is slower):", ""]
        lines += [f"- {k}: {fmt(v, 2)}" for k, v in res["ratios"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 and 10 fits only, 1 round")
    ap.add_argument("--rounds", type=int, default=None, help="processes per contender, interleaved (default 2; 1 with --quick)")
    ap.add_argument("--only", default=None, help="comma-separated contender names")
    ap.add_argument("--cap", type=float, default=180.0, help="seconds of fits per process after which a contender stops (≥ 10 fits)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fits", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.budget, args.fits, args.cap)))
        return

    names = list(CONTENDERS) if args.only is None else args.only.split(",")
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        sys.exit(f"unknown contenders {sorted(unknown)}; choose from {', '.join(CONTENDERS)}")
    n_fits = 10 if args.quick else N_MANY
    rounds = args.rounds or (1 if args.quick else 2)
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    me, bf = Path(__file__).resolve(), Path(bench_fit.__file__).resolve()
    from pyro_spam.exact import exact_optimum

    with tempfile.TemporaryDirectory() as tmp:
        feats_path, data = Path(tmp) / "features.npz", Path(tmp) / "many.npz"
        feats = default_features(feats_path)
        x, y = feats["X_train"], feats["y_train"]
        opt0 = exact_optimum(x, y)
        ys = simulate(x, opt0.loc, opt0.scale, n_fits)
        np.savez(data, X_train=x, Y=ys)
        print(f"features: X_train {x.shape}; {n_fits} simulated label sets, spam rate {ys.mean(1).min():.3f}–{ys.mean(1).max():.3f}; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        # The fixed budgets: bench_fit's reference run and pre-pass on the default data (seed 0).
        budgets: dict[str, int] = {}
        need = sorted({CONTENDERS[n][2] for n in names if CONTENDERS[n][2]})
        if need:
            ref = run_worker(bf, ["--worker", "reference", "--data", str(feats_path)], timeout=3600)
            best = float(running_mean(np.asarray(ref["trace"])).max())
            for b in need:
                fixed = bench_fit.CONTENDERS[b][1]
                pre = run_worker(bf, ["--worker", b, "--data", str(feats_path), "--budget", str(fixed), "--prepass"], timeout=3600)
                k = steps_to_criterion(np.asarray(pre["trace"]), best)
                budgets[b] = k if k is not None else fixed
                print(f"pre-pass {b}: criterion (best {best:.3f}) at step {k} of {fixed}", flush=True)
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for n in order:
                b = CONTENDERS[n][2]
                extra = ["--budget", str(budgets[b])] if b else []
                out = run_worker(me, ["--worker", n, "--data", str(data), "--fits", str(n_fits), "--cap", str(args.cap), *extra],
                                 timeout=7200)
                runs[n].append(out)
                w = out["wall_s"]
                print(f"round {r + 1} {n:>28}: import {out['import_s']:.2f} s, cold {w[0]:.3f} s, median {np.median(w):.3f} s "
                      f"over {len(w)} fits{' (capped)' if out['capped'] else ''}, total {sum(w):.1f} s, load {out['load_before']:.2f}",
                      flush=True)
    done_max = max(len(o["wall_s"]) for rs in runs.values() for o in rs)
    optima = [exact_optimum(x, ys[i]) for i in range(done_max)]  # not timed
    contenders = {n: summarise(n, runs[n], optima, n_fits) for n in names}
    ratios = {}
    if EXACT in contenders:
        e = contenders[EXACT]["median_min_max"]
        for n, s in contenders.items():
            if n == EXACT:
                continue
            a = s["median_min_max"]
            ratios[f"{n} / exact-lbfgs, median per fit over fits 1–{n_fits}"] = a["median_all_s"][0] / e["median_all_s"][0]
            ratios[f"{n} / exact-lbfgs, median per fit over fits 1–10"] = a["median_10_s"][0] / e["median_10_s"][0]
            ratios[f"{n} / exact-lbfgs, first fit (cold)"] = a["cold_s"][0] / e["cold_s"][0]
            ratios[f"{n} / exact-lbfgs, (import + fits) / fit"] = a["per_fit_incl_import_s"][0] / e["per_fit_incl_import_s"][0]
    res = {"machine": {**info, "loadavg_at_end": list(os.getloadavg())}, "rounds": rounds, "n_fits": n_fits, "cap_s": args.cap,
           "budgets": budgets, "data": "default X_train, y simulated at w ~ N(loc*, scale*²) of the default data's exact optimum, seed 1000+i",
           "contenders": contenders, "ratios": ratios}
    (args.out / "many_fits.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (args.out / "many_fits.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
