"""What the exact fitting path buys the commands that fit many times: ``compare`` and ``diagnose --sbc``, and NumPyro's VSBC.

One run on the default data (N = 4,459 training messages, K = 5 polynomial terms). A run directory is
made once with ``pyro-spam run --out DIR -q`` (timed, not part of any ratio) and kept pristine; every
timed command runs in a fresh process on a fresh copy of it, with any ``sbc_*.npz`` progress files
deleted first (``diagnose --sbc`` would reuse a finished study). Wall time of the subprocess and its
CPU time (``RUSAGE_CHILDREN``) are measured from outside; per-stage seconds are read from ``summary.json``.

1. ``compare`` (``--only compare``): ``pyro-spam compare RUN -q --optimizer lbfgs`` and ``--optimizer adam``,
   ``--rounds`` interleaved rounds (the order rotates), medians and min–max. Only the prior-sensitivity
   and model-size sweeps refit with the chosen optimizer (~33 fits; 17 with ``--quick``); the
   estimator-variance study and the training curves do not depend on it. Ratios: whole command
   adam / lbfgs (subprocess wall time) and sweeps only (``prior_sensitivity`` + ``model_size`` stage
   seconds); the time inside the sweeps' fits (sum of the rows' ``seconds``) is shown too, since the
   model-size stage also rebuilds the features. "Same conclusions": best prior scale, held-out lppd per
   prior scale, and best K / one-SE K per kind of term, from each optimizer's first round.
2. SBC (``--only sbc``): ``pyro-spam diagnose RUN --sbc prior --sims N -q`` with ``--sbc-optimizer lbfgs``
   and ``adam`` (``--adam-sims`` simulations; fewer than N are reported as such, with per-simulation
   times), interleaved ``--rounds`` rounds, plus ``--sbc posterior`` with lbfgs each round. Reported: command
   wall time, the study's ``seconds`` (``info["seconds"]``: simulate + refit + linear-response covariance
   for every simulation) and ``fit_seconds`` (the mean-field refits alone). Also the Python API
   (``pyro_spam.calibration.run_sbc("prior", …, SbcSettings(sims=N, optimizer="lbfgs"))`` in a fresh
   process, import timed separately). "Same conclusions": 90 % central-interval coverage per coefficient of
   mean-field and of linear response from both optimizers (paired: the simulations draw the same truths
   and labels), their flags and the verdict sentences.
3. NumPyro (``--only numpyro``): :func:`numpyro.infer.calibration.vsbc_diagnostic` (NumPyro ≥ 0.20; Yao et
   al. 2018's VSBC, ``jax.lax.map`` over simulations, each an ``svi.init`` + ``lax.scan`` of 500 ``svi.update``
   steps) on the same training design: logistic regression, N(0, 1) prior on the K+1 coefficients,
   hand-written mean-field Normal guide (loc 0, scale 0.1 at the start, as ``bench_fit.py``),
   ``TraceMeanField_ELBO(num_particles=S)`` for each S in ``--numpyro-particles`` (1 is NumPyro's default;
   64 is ours), Adam lr 0.05, 500 steps, N simulations, 1,000 draws, ``chain_method="sequential"``.
   One fresh process per S and round; the call is timed whole (tracing and XLA compilation included;
   imports separately). Its 90 % coverage per coefficient is read off the returned probabilities (truth's
   fraction of draws below it in [0.05, 0.95]) next to its KS p-values.

Diagnostic variants (skip with ``--no-blas1``): the lbfgs commands, ``run_sbc`` and ``compare --optimizer
adam`` once more with ``OPENBLAS_NUM_THREADS=1`` (not the Adam SBC study: its refits are torch). NumPy and
SciPy run on OpenBLAS, by default one thread per core, which on a busy 2-core machine makes small linear
algebra wait for the second thread. The package limits BLAS to one thread around ``pyro-spam run``'s PCA,
each L-BFGS fit and ``run_sbc``'s loop, but not around the model-size sweep's features in ``compare``
(:func:`pyro_spam.studies.sweep_features`: a PCA per kind of term); these rows show what is left.
Torch's threads are unaffected (the package sets them).

    .venv/bin/python benchmarks/bench_exact_uses.py                 # everything, 2 rounds (~35 min)
    .venv/bin/python benchmarks/bench_exact_uses.py --quick         # compare --quick, 50 simulations (~10 min)
    .venv/bin/python benchmarks/bench_exact_uses.py --only sbc --rounds 1 --adam-sims 50

Writes ``benchmarks/results/exact_uses.json`` and ``exact_uses.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, default_features, machine, med_range  # noqa: E402

CLI = Path(sys.executable).parent / "pyro-spam"
PARTS = ("compare", "sbc", "numpyro")
OPTIMIZERS = ("lbfgs", "adam")
APPROX = ("meanfield", "linear_response")
BLAS1 = {"OPENBLAS_NUM_THREADS": "1"}  # diagnostic variants: NumPy/SciPy's OpenBLAS on one thread (torch's threads are set by the package)
STAGES = ("prior_sensitivity", "model_size", "estimator_variance", "training_curves", "total")
NUMPYRO_STEPS, NUMPYRO_LR, DRAWS = 500, 0.05, 1000
TIMEOUT = 7200


# --------------------------------------------------------------------------- subprocesses

def timed_cli(args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``pyro-spam ARGS`` in a fresh process: wall seconds, CPU seconds (user + sys of the child), load before."""
    load = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"pyro-spam {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "load_before": load, "stdout": proc.stdout}


def run_worker(args: list[str], env: dict[str, str] | None = None) -> dict:
    """This script as a worker in a fresh process; it prints one JSON object as its last line."""
    load = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out["load_before"] = load
    return out


def code_version() -> dict:
    """The commit and whether ``pyro_spam/`` differs from it (read-only git calls; None outside a checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pyro_spam"], cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "pyro_spam_modified": None}
    return {"commit": head, "pyro_spam_modified": bool(dirty)}


def fresh_copy(pristine: Path, dest: Path) -> Path:
    """A new copy of the pristine run directory, without SBC progress files (a rerun would reuse them)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(pristine, dest)
    for f in dest.glob("sbc_*.npz"):
        f.unlink()
    return dest


# --------------------------------------------------------------------------- workers

def numpyro_worker(data: Path, sims: int, particles: int, seed: int = 0) -> dict:
    """NumPyro's own VSBC on the default training design, timed whole (compilation included)."""
    t = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import TraceMeanField_ELBO
    from numpyro.infer.calibration import vsbc_diagnostic

    import_s = time.perf_counter() - t
    d = np.load(data)
    X = jnp.asarray(d["X_train"], dtype=jnp.float32)
    k1 = X.shape[1] + 1

    def model(X, y=None):
        w = numpyro.sample("w", dist.Normal(jnp.zeros(k1), 1.0).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=w[0] + X @ w[1:]), obs=y)

    def guide(X, y=None):
        loc = numpyro.param("w_loc", jnp.zeros(k1))
        scale = numpyro.param("w_scale", jnp.full(k1, 0.1), constraint=dist.constraints.positive)
        numpyro.sample("w", dist.Normal(loc, scale).to_event(1))

    t, c = time.perf_counter(), time.process_time()
    res = vsbc_diagnostic(jax.random.PRNGKey(seed), model, guide, numpyro.optim.Adam(NUMPYRO_LR), TraceMeanField_ELBO(num_particles=particles),
                          X, observed_sites=["y"], num_simulations=sims, num_svi_steps=NUMPYRO_STEPS, num_samples=DRAWS,
                          chain_method="sequential")
    p = np.asarray(res.probabilities["w"], dtype=float)  # (sims, K+1): fraction of guide draws below the truth
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    return {"import_s": import_s, "seconds": seconds, "cpu_s": cpu, "sims": sims, "particles": particles,
            "coverage_90": ((p >= 0.05) & (p <= 0.95)).mean(axis=0).tolist(),
            "coverage_50": ((p >= 0.25) & (p <= 0.75)).mean(axis=0).tolist(),
            "ks_p": np.asarray(res.ks_pvalues["w"], dtype=float).tolist(), "vsbc_mean": p.mean(axis=0).tolist(),
            "jax_devices": [str(dv) for dv in jax.devices()]}


def api_worker(data: Path, sims: int) -> dict:
    """``pyro_spam.calibration.run_sbc("prior", …)`` with the exact path, as a user calls it from Python."""
    t = time.perf_counter()
    from pyro_spam.calibration import SbcSettings, run_sbc

    import_s = time.perf_counter() - t
    d = np.load(data)
    t = time.perf_counter()
    st = run_sbc("prior", d["X_train"], d["y_train"], prior_scale=1.0, settings=SbcSettings(sims=sims, optimizer="lbfgs"))
    return {"import_s": import_s, "call_s": time.perf_counter() - t, "seconds": float(st["seconds"]),
            "fit_seconds": float(st["fit_seconds"]), "not_converged": int((~np.asarray(st["converged"])).sum())}


# --------------------------------------------------------------------------- reading summaries

def compare_facts(summary: dict) -> dict:
    """Per-stage seconds, time inside the sweeps' fits, and the sweeps' conclusions."""
    c = summary["compare"]
    prior, size = c["prior_sensitivity"], c["model_size"]
    fit_s = sum(r["seconds"] for r in prior["rows"]) + sum(sum(v["seconds"]) for v in size["kinds"].values())
    return {
        "seconds": {k: float(c["seconds"][k]) for k in STAGES},
        "sweep_fit_s": float(fit_s),
        "fits": len(prior["rows"]) + sum(len(v["seconds"]) for v in size["kinds"].values()),
        "stop_reasons": sorted({r["stop_reason"] for r in prior["rows"]}),
        "conclusions": {
            "best_prior_scale": prior["best"],
            "lppd_by_prior_scale": {f"{r['prior_scale']:g}": r["lppd"] for r in prior["rows"]},
            "se_by_prior_scale": {f"{r['prior_scale']:g}": r["se"] for r in prior["rows"]},
            "ks": size["ks"],
            "model_size": {k: {"best_k": v["best_k"], "one_se_k": v["one_se_k"], "lppd": v["lppd"]} for k, v in size["kinds"].items()},
        },
    }


def compare_agreement(a: dict, b: dict) -> dict:
    """Do two compare runs reach the same conclusions?"""
    la, lb = a["lppd_by_prior_scale"], b["lppd_by_prior_scale"]
    dl = max(abs(la[k] - lb[k]) for k in la) if la.keys() == lb.keys() else float("nan")
    size = {k: (a["model_size"][k]["best_k"] == b["model_size"][k]["best_k"],
                a["model_size"][k]["one_se_k"] == b["model_size"][k]["one_se_k"]) for k in a["model_size"]}
    dk = max(max(abs(x - y) for x, y in zip(a["model_size"][k]["lppd"], b["model_size"][k]["lppd"])) for k in a["model_size"])
    out = {"best_prior_scale": a["best_prior_scale"] == b["best_prior_scale"],
           "max_abs_lppd_diff_prior": dl, "max_abs_lppd_diff_model_size": dk,
           **{f"best_k_{k}": v[0] for k, v in size.items()}, **{f"one_se_k_{k}": v[1] for k, v in size.items()}}
    out["all"] = all(v for k, v in out.items() if isinstance(v, bool))
    ks = a["ks"]
    for k in a["model_size"]:  # where best K differs: how far apart the two K's lppd are under each optimizer
        ka, kb = a["model_size"][k]["best_k"], b["model_size"][k]["best_k"]
        if ka != kb:
            ia, ib = ks.index(ka), ks.index(kb)
            out[f"best_k_{k}_lppd_gap"] = {"lbfgs": a["model_size"][k]["lppd"][ia] - a["model_size"][k]["lppd"][ib],
                                           "adam": b["model_size"][k]["lppd"][ib] - b["model_size"][k]["lppd"][ia]}
    return out


def sbc_facts(summary: dict, key: str) -> dict:
    sec = summary["diagnostics"][key]
    info = sec["info"]
    out = {k: info[k] for k in ("sims", "seconds", "fit_seconds", "optimizer", "redrawn", "not_converged", "lr_failed", "reference")}
    out["verdicts"] = info.get("verdicts", {})
    out["diagnose_seconds"] = summary["diagnostics"].get("seconds", {})
    out["approximations"] = {}
    for a in info["approximations"]:
        s = sec[a]
        out["approximations"][a] = {"coverage_90": s["coverage_90"], "coverage_50": s["coverage_50"], "band_90": s["coverage_band_90"],
                                    "ks_p_vsbc": s["ks_p_vsbc"], "rank_p": s["rank_p"],
                                    "flags": sorted((f["coef"], f["check"]) for f in s["flags"]),
                                    "vsbc_p": s["vsbc_p"]}
    return out


def coverage_from_vsbc(vsbc_p: list, n: int, level: float = 0.9) -> list[float]:
    """Coverage of the first ``n`` simulations from their VSBC probabilities (truth inside the central interval)."""
    p = np.asarray(vsbc_p, dtype=float)[:n]
    lo = (1 - level) / 2
    return ((p >= lo) & (p <= 1 - lo)).mean(axis=0).tolist()


def sbc_agreement(a: dict, b: dict) -> dict:
    """Paired comparison of two prior-SBC studies (lbfgs ``a``, adam ``b``) on their common simulations."""
    n = min(a["sims"], b["sims"])
    out: dict = {"sims_compared": n}
    for name in a["approximations"]:
        if name not in b["approximations"]:
            continue
        ca = coverage_from_vsbc(a["approximations"][name]["vsbc_p"], n) if a["sims"] != n else a["approximations"][name]["coverage_90"]
        cb = coverage_from_vsbc(b["approximations"][name]["vsbc_p"], n) if b["sims"] != n else b["approximations"][name]["coverage_90"]
        pa = np.asarray(a["approximations"][name]["vsbc_p"], float)[:n]
        pb = np.asarray(b["approximations"][name]["vsbc_p"], float)[:n]
        ina, inb = (pa >= 0.05) & (pa <= 0.95), (pb >= 0.05) & (pb <= 0.95)
        out[name] = {"coverage_90_lbfgs": ca, "coverage_90_adam": cb,
                     "max_abs_coverage_diff": float(np.max(np.abs(np.asarray(ca) - np.asarray(cb)))),
                     "sims_covered_differently_per_coef": (ina != inb).sum(axis=0).tolist(),
                     "max_abs_vsbc_p_diff": float(np.max(np.abs(pa - pb))),
                     "same_flags": a["approximations"][name]["flags"] == b["approximations"][name]["flags"] if a["sims"] == b["sims"] else None,
                     "verdict_text_identical": a["verdicts"].get(name) == b["verdicts"].get(name) if a["sims"] == b["sims"] else None}
    return out


# --------------------------------------------------------------------------- parts

def part_compare(pristine: Path, tmp: Path, rounds: int, quick: bool, blas1: bool) -> dict:
    variants = [*OPTIMIZERS, *(["lbfgs-blas1", "adam-blas1"] if blas1 else [])]
    runs: dict[str, list[dict]] = {o: [] for o in variants}
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[: r % len(variants)]  # rotate: interleaved rounds
        for var in order:
            opt = var.removesuffix("-blas1")
            run = fresh_copy(pristine, tmp / f"compare-{var}")
            t = timed_cli(["compare", str(run), "-q", "--optimizer", opt, *(["--quick"] if quick else [])],
                          env=BLAS1 if var.endswith("-blas1") else None)
            facts = compare_facts(json.loads((run / "summary.json").read_text()))
            t.pop("stdout")
            runs[var].append({**t, **facts})
            s = facts["seconds"]
            print(f"round {r + 1} compare --optimizer {var:>11}: wall {t['wall_s']:.1f} s (CPU {t['cpu_s']:.1f}), "
                  f"prior {s['prior_sensitivity']:.1f} + size {s['model_size']:.1f} (fits {facts['sweep_fit_s']:.1f}) "
                  f"+ est {s['estimator_variance']:.1f} + curves {s['training_curves']:.1f} s; load {t['load_before']:.2f}", flush=True)
            shutil.rmtree(run)
    med = {o: {"wall_s": med_range([x["wall_s"] for x in runs[o]]), "cpu_s": med_range([x["cpu_s"] for x in runs[o]]),
               "sweep_fit_s": med_range([x["sweep_fit_s"] for x in runs[o]]),
               "sweeps_s": med_range([x["seconds"]["prior_sensitivity"] + x["seconds"]["model_size"] for x in runs[o]]),
               **{k: med_range([x["seconds"][k] for x in runs[o]]) for k in STAGES}} for o in variants}
    ratios = {
        "whole command wall, adam / lbfgs (target ≥ 3)": med["adam"]["wall_s"][0] / med["lbfgs"]["wall_s"][0],
        "sweeps only (prior_sensitivity + model_size), adam / lbfgs": med["adam"]["sweeps_s"][0] / med["lbfgs"]["sweeps_s"][0],
        "time inside the sweeps' fits, adam / lbfgs": med["adam"]["sweep_fit_s"][0] / med["lbfgs"]["sweep_fit_s"][0],
        "prior_sensitivity, adam / lbfgs": med["adam"]["prior_sensitivity"][0] / med["lbfgs"]["prior_sensitivity"][0],
        "model_size, adam / lbfgs": med["adam"]["model_size"][0] / med["lbfgs"]["model_size"][0],
    }
    if blas1:
        b = med["lbfgs-blas1"]
        ab = med["adam-blas1"]
        ratios["diagnostic: whole command wall, adam / lbfgs, both with OPENBLAS_NUM_THREADS=1"] = ab["wall_s"][0] / b["wall_s"][0]
        ratios["diagnostic: sweeps only, adam / lbfgs, both with OPENBLAS_NUM_THREADS=1"] = ab["sweeps_s"][0] / b["sweeps_s"][0]
        ratios["diagnostic: whole command wall, adam (default BLAS) / lbfgs with OPENBLAS_NUM_THREADS=1"] = med["adam"]["wall_s"][0] / b["wall_s"][0]
        ratios["diagnostic: whole command wall, lbfgs / lbfgs with OPENBLAS_NUM_THREADS=1"] = med["lbfgs"]["wall_s"][0] / b["wall_s"][0]
        ratios["diagnostic: model_size, lbfgs / lbfgs with OPENBLAS_NUM_THREADS=1"] = med["lbfgs"]["model_size"][0] / b["model_size"][0]
    conc = {o: runs[o][0]["conclusions"] for o in variants}
    stable = {o: all(x["conclusions"] == conc[o] for x in runs[o]) for o in variants}
    agree = compare_agreement(conc["lbfgs"], conc["adam"])
    if blas1:
        agree["lbfgs_blas1_same_as_lbfgs"] = compare_agreement(conc["lbfgs"], conc["lbfgs-blas1"])
    print(f"compare ratios: {', '.join(f'{k}: {v:.2f}' for k, v in ratios.items())}", flush=True)
    print(f"compare conclusions agree: {agree['all']} ({agree}); identical across rounds: {stable}", flush=True)
    return {"quick": quick, "rounds": runs, "median_min_max": med, "ratios": ratios, "conclusions": conc,
            "conclusions_identical_across_rounds": stable, "agreement": agree}


def part_sbc(pristine: Path, tmp: Path, rounds: int, sims: int, adam_sims: int, blas1: bool) -> dict:
    specs = {"prior-lbfgs": ("prior", "lbfgs", sims), "prior-adam": ("prior", "adam", adam_sims), "posterior-lbfgs": ("posterior", "lbfgs", sims)}
    if blas1:
        specs.update({"prior-lbfgs-blas1": ("prior", "lbfgs", sims), "posterior-lbfgs-blas1": ("posterior", "lbfgs", sims)})
    names = list(specs)
    runs: dict[str, list[dict]] = {k: [] for k in specs}
    facts: dict[str, dict] = {}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate: interleaved rounds
        for name in order:
            study, opt, n = specs[name]
            run = fresh_copy(pristine, tmp / f"sbc-{name}")
            t = timed_cli(["diagnose", str(run), "--sbc", study, "--sims", str(n), "--sbc-optimizer", opt, "--sbc-draws", str(DRAWS), "-q"],
                          env=BLAS1 if name.endswith("-blas1") else None)
            t.pop("stdout")
            f = sbc_facts(json.loads((run / "summary.json").read_text()), "sbc" if study == "prior" else "posterior_sbc")
            runs[name].append({**t, "seconds": f["seconds"], "fit_seconds": f["fit_seconds"], "sims": f["sims"], "not_converged": f["not_converged"],
                               "diagnose_seconds": f["diagnose_seconds"]})
            facts.setdefault(name, f)
            tag = " (OPENBLAS_NUM_THREADS=1)" if name.endswith("-blas1") else ""
            print(f"round {r + 1} diagnose --sbc {study} --sims {n} --sbc-optimizer {opt}{tag}: wall {t['wall_s']:.1f} s (CPU {t['cpu_s']:.1f}), "
                  f"study {f['seconds']:.1f} s, fits {f['fit_seconds']:.1f} s, {f['not_converged']} not converged; "
                  f"load {t['load_before']:.2f}", flush=True)
            shutil.rmtree(run)
    api: dict[str, list[dict]] = {"api-prior-lbfgs": [], **({"api-prior-lbfgs-blas1": []} if blas1 else {})}
    data = pristine / "features.npz"
    for r in range(rounds):
        for name in (list(api) if r % 2 == 0 else list(api)[::-1]):
            api[name].append(run_worker(["--worker", "api", "--data", str(data), "--sims", str(sims)],
                                        env=BLAS1 if name.endswith("-blas1") else None))
            a = api[name][-1]
            tag = " (OPENBLAS_NUM_THREADS=1)" if name.endswith("-blas1") else ""
            print(f"round {r + 1} run_sbc('prior', sims={sims}, optimizer='lbfgs') in Python{tag}: "
                  f"import {a['import_s']:.2f} s, call {a['call_s']:.1f} s (fits {a['fit_seconds']:.1f} s); load {a['load_before']:.2f}", flush=True)
    med = {}
    for name, rs in runs.items():
        n = rs[0]["sims"]
        med[name] = {"sims": n, **{k: med_range([x[k] for x in rs]) for k in ("wall_s", "cpu_s", "seconds", "fit_seconds")},
                     "seconds_per_sim": med_range([x["seconds"] / n for x in rs]),
                     "fit_seconds_per_sim": med_range([x["fit_seconds"] / n for x in rs]),
                     "figures_s": med_range([x["diagnose_seconds"].get("figures", float("nan")) for x in rs])}
    for name, rs in api.items():
        med[name] = {"sims": sims, **{k: med_range([a[k] for a in rs]) for k in ("import_s", "call_s", "seconds", "fit_seconds")}}
    lb, ad = med["prior-lbfgs"], med["prior-adam"]
    full = ad["sims"] == lb["sims"]
    ratios = {}
    if full:
        ratios["prior SBC command wall, adam / lbfgs (target ≥ 3)"] = ad["wall_s"][0] / lb["wall_s"][0]
        ratios["prior SBC study seconds, adam / lbfgs"] = ad["seconds"][0] / lb["seconds"][0]
        ratios["prior SBC fit_seconds, adam / lbfgs"] = ad["fit_seconds"][0] / lb["fit_seconds"][0]
    note = "" if full else f" (adam {ad['sims']} sims, lbfgs {lb['sims']})"
    ratios[f"prior SBC seconds per simulation, adam / lbfgs{note}"] = ad["seconds_per_sim"][0] / lb["seconds_per_sim"][0]
    ratios["prior SBC fit seconds per simulation, adam / lbfgs"] = ad["fit_seconds_per_sim"][0] / lb["fit_seconds_per_sim"][0]
    if not full:
        ratios[f"prior SBC command wall, adam at {ad['sims']} sims extrapolated to {lb['sims']} / lbfgs"] = (
            (ad["wall_s"][0] - ad["seconds"][0] + ad["seconds_per_sim"][0] * lb["sims"]) / lb["wall_s"][0])
    if blas1:
        for st in ("prior", "posterior"):
            b = med[f"{st}-lbfgs-blas1"]
            ratios[f"diagnostic: {st} SBC command wall, lbfgs / lbfgs with OPENBLAS_NUM_THREADS=1"] = med[f"{st}-lbfgs"]["wall_s"][0] / b["wall_s"][0]
            ratios[f"diagnostic: {st} SBC fit_seconds, lbfgs / lbfgs with OPENBLAS_NUM_THREADS=1"] = (
                med[f"{st}-lbfgs"]["fit_seconds"][0] / b["fit_seconds"][0])
        if full:
            ratios["diagnostic: prior SBC command wall, adam / lbfgs with OPENBLAS_NUM_THREADS=1"] = (
                ad["wall_s"][0] / med["prior-lbfgs-blas1"]["wall_s"][0])
    agree = sbc_agreement(facts["prior-lbfgs"], facts["prior-adam"])
    if blas1:
        agree["lbfgs_blas1_vs_lbfgs"] = sbc_agreement(facts["prior-lbfgs"], facts["prior-lbfgs-blas1"])
    print(f"SBC ratios: {', '.join(f'{k}: {v:.2f}' for k, v in ratios.items())}", flush=True)
    for a, v in agree.items():
        if a in ("meanfield", "linear_response"):
            print(f"SBC {a}: max |coverage_90 lbfgs − adam| {v['max_abs_coverage_diff']:.3f} over {agree['sims_compared']} sims; "
                  f"same flags {v['same_flags']}, verdict text identical {v['verdict_text_identical']}", flush=True)
    for f in facts.values():
        for a in f["approximations"].values():
            a.pop("vsbc_p")  # per-simulation values: big, and in the run's summary.json anyway
    return {"sims": sims, "adam_sims": adam_sims, "rounds": runs, "api_rounds": api, "median_min_max": med, "ratios": ratios,
            "studies": facts, "agreement": agree}


def part_numpyro(data: Path, sims: int, particles: list[int], rounds: int) -> dict:
    runs: dict[str, list[dict]] = {str(s): [] for s in particles}
    for i in range(rounds):
        for s in (particles if i % 2 == 0 else particles[::-1]):
            r = run_worker(["--worker", "numpyro", "--data", str(data), "--sims", str(sims), "--particles", str(s)])
            runs[str(s)].append(r)
            print(f"round {i + 1} NumPyro vsbc_diagnostic, S = {s}, {sims} sims x {NUMPYRO_STEPS} steps: {r['seconds']:.1f} s "
                  f"(CPU {r['cpu_s']:.1f}, import {r['import_s']:.1f} s); 90% coverage {min(r['coverage_90']):.2f}–{max(r['coverage_90']):.2f}; "
                  f"load {r['load_before']:.2f}", flush=True)
    out = {}
    for s, rs in runs.items():  # the first round's coverage (same seed every round), median times
        out[s] = {**rs[0], **{k: float(np.median([r[k] for r in rs])) for k in ("seconds", "cpu_s", "import_s")},
                  "seconds_min_max": [min(r["seconds"] for r in rs), max(r["seconds"] for r in rs)], "rounds": rs}
    return {"function": "numpyro.infer.calibration.vsbc_diagnostic", "sims": sims, "steps": NUMPYRO_STEPS, "lr": NUMPYRO_LR,
            "draws": DRAWS, "by_particles": out}


# --------------------------------------------------------------------------- markdown

def fmt(v, digits=2):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def mmm(t, digits=1):
    m, lo, hi = t
    if math.isnan(m):
        return "—"
    return f"{m:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})" if hi - lo >= 0.5 * 10**-digits else f"{m:.{digits}f}"


def code_line(start: dict | None, end: dict | None) -> str:
    def one(c: dict) -> str:
        return f"commit {c['commit'][:7]}{' with pyro_spam/ modified' if c['pyro_spam_modified'] else ', pyro_spam/ unmodified'}"

    if not start or not start.get("commit"):
        return ""
    if end == start:
        return f" Code: {one(start)}, at start and end."
    return f" Code: {one(start)} at start, {one(end) if end and end.get('commit') else 'unknown'} at end (it changed during the run)."


def markdown(res: dict) -> str:
    m = res["machine"]
    v = m["versions"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}; torch {v['torch']}, pyro-ppl {v['pyro-ppl']}, "
        f"jax {v['jax']}, numpyro {v['numpyro']}. Load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in m['loadavg_at_start'])}, "
        f"at end {'/'.join(f'{x:.2f}' for x in m['loadavg_at_end'])}. {res['rounds']} interleaved rounds, medians (min–max). "
        "Default data: N = 4,459 training messages, K = 5 polynomial terms."
        + code_line(res.get("code_at_start"), res.get("code_at_end"))
        + (f" Run directory made once in {res['run_setup_s']:.1f} s (`pyro-spam run --out DIR -q`); every timed command ran in a fresh "
           "process on a fresh copy of it." if "run_setup_s" in res else ""),
    ]
    if "compare" in res:
        c = res["compare"]
        md = c["median_min_max"]
        lines += ["", f"## `pyro-spam compare RUN -q{' --quick' if c['quick'] else ''} --optimizer …`", "",
                  "| optimizer | command wall (s) | CPU (s) | prior_sensitivity (s) | model_size (s) | time in the sweeps' fits, both sweeps (s) | "
                  "estimator_variance (s) | training_curves (s) | compare total (s) | sweep fits |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for o, a in md.items():
            lab = f"{o.removesuffix('-blas1')}, OPENBLAS_NUM_THREADS=1 (diagnostic)" if o.endswith("-blas1") else o
            lines.append(f"| {lab} | {mmm(a['wall_s'])} | {mmm(a['cpu_s'])} | {mmm(a['prior_sensitivity'])} | {mmm(a['model_size'])} | "
                         f"{mmm(a['sweep_fit_s'])} | {mmm(a['estimator_variance'])} | {mmm(a['training_curves'])} | {mmm(a['total'])} | "
                         f"{c['rounds'][o][0]['fits']} |")
        lines += ["", "Ratios (medians):", ""] + [f"- {k}: {fmt(x)}" for k, x in c["ratios"].items()]
        cl, ca = c["conclusions"]["lbfgs"], c["conclusions"]["adam"]
        ag = c["agreement"]
        lines += ["", f"Same conclusions: **{'yes' if ag['all'] else 'no'}** (first round of each; identical across rounds: "
                  f"lbfgs {c['conclusions_identical_across_rounds']['lbfgs']}, adam {c['conclusions_identical_across_rounds']['adam']}).", "",
                  "| | lbfgs | adam |", "|---|---|---|",
                  f"| best prior scale | {cl['best_prior_scale']:g} | {ca['best_prior_scale']:g} |"]
        for k in cl["lppd_by_prior_scale"]:
            lines.append(f"| held-out lppd/msg, prior sd {k} | {cl['lppd_by_prior_scale'][k]:.4f} ± {cl['se_by_prior_scale'][k]:.4f} | "
                         f"{ca['lppd_by_prior_scale'].get(k, float('nan')):.4f} ± {ca['se_by_prior_scale'].get(k, float('nan')):.4f} |")
        for kind in cl["model_size"]:
            a, b = cl["model_size"][kind], ca["model_size"][kind]
            lines.append(f"| {kind} terms: best K / one-SE K | {a['best_k']} / {a['one_se_k']} | {b['best_k']} / {b['one_se_k']} |")
        lines += ["", f"Largest |lppd difference| between the optimizers: {ag['max_abs_lppd_diff_prior']:.2g} (prior sweep), "
                  f"{ag['max_abs_lppd_diff_model_size']:.2g} (model-size sweep, K ∈ {cl['ks']}) nats/msg."]
        for key, gap in ag.items():
            if key.endswith("_lppd_gap"):
                kind = key.removeprefix("best_k_").removesuffix("_lppd_gap")
                lines.append(f"Best K of the {kind} terms differs: under lbfgs its best K beats adam's best K by {gap['lbfgs']:.2g} nats/msg, "
                             f"under adam by {gap['adam']:.2g} (a near tie; the one-SE choice is the rule's robust answer).")
        if "lbfgs_blas1_same_as_lbfgs" in ag:
            b = ag["lbfgs_blas1_same_as_lbfgs"]
            lines.append(f"lbfgs with OPENBLAS_NUM_THREADS=1 reaches the same conclusions as lbfgs: {b['all']} "
                         f"(largest |lppd difference| {max(b['max_abs_lppd_diff_prior'], b['max_abs_lppd_diff_model_size']):.2g}).")
    if "sbc" in res:
        s = res["sbc"]
        md = s["median_min_max"]
        lines += ["", "## Simulation-based calibration", "",
                  "| what | sims | command wall (s) | CPU (s) | study `seconds` | `fit_seconds` | study s/sim | fit s/sim | figures (s) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        b1 = ", OPENBLAS_NUM_THREADS=1 (diagnostic)"
        labels = {"prior-lbfgs": "`diagnose --sbc prior --sbc-optimizer lbfgs`", "prior-adam": "`diagnose --sbc prior --sbc-optimizer adam`",
                  "posterior-lbfgs": "`diagnose --sbc posterior --sbc-optimizer lbfgs`",
                  "prior-lbfgs-blas1": f"`diagnose --sbc prior --sbc-optimizer lbfgs`{b1}",
                  "posterior-lbfgs-blas1": f"`diagnose --sbc posterior --sbc-optimizer lbfgs`{b1}"}
        for name, lab in labels.items():
            if name not in md:
                continue
            a = md[name]
            lines.append(f"| {lab} | {a['sims']} | {mmm(a['wall_s'])} | {mmm(a['cpu_s'])} | {mmm(a['seconds'])} | {mmm(a['fit_seconds'])} | "
                         f"{mmm(a['seconds_per_sim'], 3)} | {mmm(a['fit_seconds_per_sim'], 3)} | {mmm(a['figures_s'])} |")
        for name in ("api-prior-lbfgs", "api-prior-lbfgs-blas1"):
            if name not in md:
                continue
            a = md[name]
            lines.append(f"| Python `run_sbc(\"prior\", …, optimizer=\"lbfgs\")`{b1 if name.endswith('-blas1') else ''} "
                         f"(import {mmm(a['import_s'])} s; call {mmm(a['call_s'])} s) | "
                         f"{a['sims']} | — | — | {mmm(a['seconds'])} | {mmm(a['fit_seconds'])} | {fmt(a['seconds'][0] / a['sims'], 3)} | "
                         f"{fmt(a['fit_seconds'][0] / a['sims'], 3)} | — |")
        if "numpyro" in res:
            n = res["numpyro"]
            for p, r in n["by_particles"].items():
                lines.append(f"| NumPyro `vsbc_diagnostic`, S = {p}, {n['steps']} steps (call incl. compilation; import {r['import_s']:.1f} s) | "
                             f"{r['sims']} | — | {r['cpu_s']:.1f} | {r['seconds']:.1f} | — | {r['seconds'] / r['sims']:.3f} | — | — |")
        lines += ["", "Command wall = process start and imports, reading the run, the exact fit of the observed data, the study, "
                  "redrawing the run's ArviZ figures and the SBC figures (`figures`), the report. Study `seconds` = simulate labels, "
                  "refit, linear-response covariance, per simulation; `fit_seconds` = the refits alone."]
        if md["prior-adam"]["sims"] != md["prior-lbfgs"]["sims"]:
            lines += ["", f"**Adam used {md['prior-adam']['sims']} simulations, not {md['prior-lbfgs']['sims']}** (`--adam-sims`): "
                      "compare its per-simulation times."]
        lines += ["", "Ratios (medians):", ""] + [f"- {k}: {fmt(x)}" for k, x in s["ratios"].items()]
        ag = s["agreement"]
        names = res.get("coef_names") or [f"w{j}" for j in range(len(ag["meanfield"]["coverage_90_lbfgs"]))]
        st_l, st_a = s["studies"]["prior-lbfgs"], s["studies"]["prior-adam"]
        band = st_l["approximations"]["meanfield"]["band_90"]
        lines += ["", f"Prior SBC, 90 % central-interval coverage per coefficient ({ag['sims_compared']} paired simulations; "
                  f"99 % binomial band {band[0]:.2f}–{band[1]:.2f} at {st_l['sims']}); in brackets: simulations whose truth is "
                  "inside one optimizer's interval and outside the other's:", "",
                  "| coefficient | mean-field, lbfgs | mean-field, adam | LRVB, lbfgs | LRVB, adam |", "|---|---|---|---|---|"]
        mf, lr = ag["meanfield"], ag.get("linear_response")
        for j, nm in enumerate(names):
            row = f"| {nm} | {mf['coverage_90_lbfgs'][j]:.3f} | {mf['coverage_90_adam'][j]:.3f} ({mf['sims_covered_differently_per_coef'][j]})"
            row += (f" | {lr['coverage_90_lbfgs'][j]:.3f} | {lr['coverage_90_adam'][j]:.3f} ({lr['sims_covered_differently_per_coef'][j]}) |"
                    if lr else " | — | — |")
            lines.append(row)
        lines.append("")
        for a in ("meanfield", "linear_response"):
            if a in ag:
                lines.append(f"- {a}: max |Δ coverage| {ag[a]['max_abs_coverage_diff']:.3f}, "
                             f"max |Δ VSBC probability| {ag[a]['max_abs_vsbc_p_diff']:.3f}; "
                             f"same flags (coverage outside its band, rank or VSBC test failed): {ag[a]['same_flags']}; "
                             f"verdict sentence word for word: {ag[a]['verdict_text_identical']}. "
                             f"Verdicts — lbfgs: {st_l['verdicts'].get(a, '—')} adam: {st_a['verdicts'].get(a, '—')}")
        if "lbfgs_blas1_vs_lbfgs" in ag:
            b = ag["lbfgs_blas1_vs_lbfgs"]
            lines.append(f"- lbfgs with OPENBLAS_NUM_THREADS=1 against lbfgs: max |Δ coverage| "
                         f"{max(b[a]['max_abs_coverage_diff'] for a in APPROX if a in b):.3f}, max |Δ VSBC probability| "
                         f"{max(b[a]['max_abs_vsbc_p_diff'] for a in APPROX if a in b):.2g}.")
        post = s["studies"]["posterior-lbfgs"]
        lines += ["", f"Posterior SBC (lbfgs, {post['sims']} sims, reference: {post['reference']}): 90 % coverage "
                  + "; ".join(f"{a} {min(x['coverage_90']):.2f}–{max(x['coverage_90']):.2f}" for a, x in post["approximations"].items()) + "."]
    if "numpyro" in res:
        n = res["numpyro"]
        lines += ["", f"## NumPyro `{n['function']}`", "",
                  f"Same design, N(0, 1) prior, mean-field Normal guide, Adam {n['lr']}, {n['steps']} steps, {n['sims']} simulations, "
                  f"{n['draws']} draws, `chain_method=\"sequential\"`; timed whole in a fresh process (tracing + XLA compilation included).", "",
                  "| S (particles) | seconds | CPU (s) | import (s) | 90 % coverage per coefficient | VSBC KS p per coefficient |",
                  "|---|---|---|---|---|---|"]
        for p, r in n["by_particles"].items():
            lo, hi = r["seconds_min_max"]
            lines.append(f"| {p} | {r['seconds']:.1f} ({lo:.1f}–{hi:.1f}) | {r['cpu_s']:.1f} | {r['import_s']:.1f} | "
                         f"{', '.join(f'{x:.2f}' for x in r['coverage_90'])} | {', '.join(f'{x:.2g}' for x in r['ks_p'])} |")
        if "ours_vs_numpyro" in res:
            lines += ["", "Ours against NumPyro (same number of simulations; target: ours ≤ NumPyro):", ""]
            lines += [f"- {k}: {fmt(x)}" for k, x in res["ours_vs_numpyro"].items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of compare and SBC (default 2)")
    ap.add_argument("--quick", action="store_true", help="compare --quick and 50 simulations")
    ap.add_argument("--only", default=None, help=f"comma-separated parts: {', '.join(PARTS)}")
    ap.add_argument("--sims", type=int, default=None, help="SBC simulations (default 200, --quick 50)")
    ap.add_argument("--adam-sims", type=int, default=None, help="simulations of the Adam SBC study (default: --sims)")
    ap.add_argument("--numpyro-particles", default="1,64", help="NumPyro's num_particles values (default 1,64)")
    ap.add_argument("--no-blas1", action="store_true", help="skip the diagnostic lbfgs runs with OPENBLAS_NUM_THREADS=1")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--particles", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sims = args.sims or (50 if args.quick else 200)
    if args.worker == "numpyro":
        print(json.dumps(numpyro_worker(args.data, sims, args.particles)))
        return
    if args.worker == "api":
        print(json.dumps(api_worker(args.data, sims)))
        return
    parts = list(PARTS) if args.only is None else args.only.split(",")
    if set(parts) - set(PARTS):
        sys.exit(f"unknown parts {sorted(set(parts) - set(PARTS))}; choose from {', '.join(PARTS)}")
    adam_sims = args.adam_sims or sims
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": machine(), "code_at_start": code_version(), "rounds": args.rounds, "quick": args.quick, "parts": parts,
                 "sims": sims, "adam_sims": adam_sims}
    with tempfile.TemporaryDirectory(prefix="bench-exact-uses-") as tmpd:
        tmp = Path(tmpd)
        pristine = tmp / "pristine"
        if "compare" in parts or "sbc" in parts:
            t = timed_cli(["run", "--out", str(pristine), "-q"])
            res["run_setup_s"] = t["wall_s"]
            summ = json.loads((pristine / "summary.json").read_text())
            fits = summ.get("fits", {})
            res["coef_names"] = next((f.get("coef_names") for f in fits.values() if f.get("coef_names")), None)
            data = pristine / "features.npz"
            print(f"pyro-spam run: {t['wall_s']:.1f} s; load {os.getloadavg()[0]:.2f}", flush=True)
        else:
            data = tmp / "features.npz"
            default_features(data)
        if "compare" in parts:
            res["compare"] = part_compare(pristine, tmp, args.rounds, args.quick, not args.no_blas1)
        if "sbc" in parts:
            res["sbc"] = part_sbc(pristine, tmp, args.rounds, sims, adam_sims, not args.no_blas1)
        if "numpyro" in parts:
            res["numpyro"] = part_numpyro(data, sims, [int(p) for p in args.numpyro_particles.split(",")], args.rounds)
    if "sbc" in res and "numpyro" in res and res["numpyro"]["sims"] == res["sbc"]["sims"]:
        md = res["sbc"]["median_min_max"]
        cmp = {}
        for p, r in res["numpyro"]["by_particles"].items():
            for suffix, tag in (("", ""), ("-blas1", " [OPENBLAS_NUM_THREADS=1]")):
                if f"prior-lbfgs{suffix}" not in md:
                    continue
                ours, api = md[f"prior-lbfgs{suffix}"], md[f"api-prior-lbfgs{suffix}"]
                cmp[f"our prior SBC fit_seconds (mean-field refits){tag} / NumPyro vsbc S={p}"] = ours["fit_seconds"][0] / r["seconds"]
                cmp[f"our prior SBC study seconds (refits + LRVB covariance){tag} / NumPyro vsbc S={p}"] = ours["seconds"][0] / r["seconds"]
                cmp[f"our Python run_sbc call{tag} / NumPyro vsbc S={p}"] = api["call_s"][0] / r["seconds"]
                cmp[f"our whole diagnose command (process, imports, run I/O){tag} / NumPyro vsbc S={p} + its imports"] = (
                    ours["wall_s"][0] / (r["seconds"] + r["import_s"]))
        res["ours_vs_numpyro"] = cmp
        for k, v in cmp.items():
            print(f"{k}: {v:.2f}", flush=True)
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    res["code_at_end"] = code_version()
    (args.out / "exact_uses.json").write_text(json.dumps(res, indent=1))
    md_text = markdown(res)
    (args.out / "exact_uses.md").write_text(md_text)
    print(md_text)


if __name__ == "__main__":
    main()
