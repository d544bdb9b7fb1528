"""Costs behind the diagnostics' defaults, measured in one run on the default data (K = 5, N = 4459).

1. NUTS gradient: Pyro's potential energy + gradient with and without ``jit_compile``.
2. NUTS settings: one chain with a diagonal vs a dense (``full_mass``) mass matrix, both JIT-compiled:
   wall time, adapted step size, ESS per second.
3. The ArviZ run stage for one fit: InferenceData build, netCDF write, PSIS k̂, ``az.loo``, figures.

Prints wall and CPU seconds and the ratios the code's comments quote. Run:
``.venv/bin/python benchmarks/bench_diagnostics.py [--draws 300]`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def _timed(fn, *args, **kwargs):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, time.process_time() - c0


def bench_gradient(x: torch.Tensor, y: torch.Tensor, reps: int = 300) -> dict[str, float]:
    """Milliseconds per potential-energy gradient, without and with JIT."""
    import pyro
    from pyro.infer.mcmc.util import initialize_model
    from pyro.ops.integrator import potential_grad

    from pyro_spam.model import model

    out = {}
    for jit in (False, True):
        pyro.set_rng_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            _, pfn, _, _ = initialize_model(model, (x, y), jit_compile=jit, skip_jit_warnings=True)
            z = {"w": torch.zeros(x.shape[1] + 1, dtype=x.dtype)}
            for _ in range(5):
                potential_grad(pfn, z)
            t = time.perf_counter()
            for _ in range(reps):
                potential_grad(pfn, z)
        out["jit" if jit else "no_jit"] = (time.perf_counter() - t) / reps * 1e3
    return out


def bench_mass(x: np.ndarray, y: np.ndarray, draws: int) -> dict[str, dict[str, float]]:
    """One NUTS chain (``draws`` warmup + ``draws`` kept) per mass-matrix choice."""
    import arviz as az

    from pyro_spam.diagnostics.nuts import NutsOptions, run_nuts

    out = {}
    for full in (False, True):
        opts = NutsOptions(chains=2, warmup=draws, draws=draws, full_mass=full)
        res, wall, cpu = _timed(run_nuts, x, y, options=opts, seed=0)
        ess = min(float(az.ess(res.samples[..., j])) for j in range(res.samples.shape[-1]))
        out["dense" if full else "diagonal"] = {"wall_s": wall, "cpu_s": cpu, "step_size": float(res.step_size.mean()),
                                                "ess_bulk_min": ess, "ess_per_cpu_s": ess / cpu}
    return out


def bench_stage(ctx) -> dict[str, tuple[float, float]]:
    """Wall and CPU seconds of each step of the ArviZ run stage for the meanfield fit."""
    from pyro_spam.diagnostics.psis import loo_summary, vi_khat
    from pyro_spam.inference_data import save_netcdf, to_inference_data
    from pyro_spam.pipeline.diagnose import az_summary_table, draw_figures
    from pyro_spam.pipeline.stages import _inputs_from_context
    from pyro_spam.posterior import draw_weights, predict_draws
    from pyro_spam.summary import draw_seed

    inp = _inputs_from_context(ctx)
    fr = ctx.fits["meanfield"]
    w = draw_weights(fr.loc, fr.scale, inp.num_draws, seed=draw_seed(inp.seed))  # the run's draws (runs keep none)
    tr, te = predict_draws(w, inp.x_train, inp.y_train), predict_draws(w, inp.x_test, inp.y_test)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        idata, *out["build InferenceData"] = _timed(to_inference_data, fr, inp.coef_names, inp.x_train, inp.y_train,
                                                    inp.x_test, inp.y_test, tr, te, seed=0)
        _, *out["write netCDF"] = _timed(save_netcdf, idata, Path(tmp) / "p.nc")
        _, *out["PSIS k̂ of q"] = _timed(vi_khat, tr.w, tr.loglik, fr.loc, fr.scale)
        _, *out["az.loo"] = _timed(loo_summary, idata)
        _, *out["az.summary tables"] = _timed(az_summary_table, idata, Path(tmp), "s", kind="stats")
        _, *out["3 figures"] = _timed(draw_figures, inp, {"meanfield": idata}, Path(tmp))
        out["netCDF MB"] = ((Path(tmp) / "p.nc").stat().st_size / 1e6, float("nan"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=300, help="NUTS warmup and kept draws per chain (default 300)")
    args = p.parse_args()

    from pyro_spam.config import RunConfig, TrainConfig
    from pyro_spam.pipeline.run import evaluate_fits, fit_all, prepare

    ctx = prepare(RunConfig(elbos=("meanfield",), train=TrainConfig()))
    fs = ctx.features
    torch.set_num_threads(1)
    x64 = torch.as_tensor(fs.X_train, dtype=torch.float64)
    y64 = torch.as_tensor(fs.y_train, dtype=torch.float64)

    g = bench_gradient(x64, y64)
    print(f"NUTS gradient: {g['no_jit']:.2f} ms without JIT, {g['jit']:.2f} ms with JIT "
          f"(ratio no-JIT / JIT = {g['no_jit'] / g['jit']:.2f})")

    m = bench_mass(fs.X_train, fs.y_train, args.draws)
    for k, v in m.items():
        print(f"NUTS {k:>8} mass, 2 chains × ({args.draws}+{args.draws}): {v['wall_s']:.1f} s wall, {v['cpu_s']:.1f} s CPU, "
              f"step {v['step_size']:.3f}, ESS bulk min {v['ess_bulk_min']:.0f}, {v['ess_per_cpu_s']:.1f} ESS per CPU s")
    print(f"dense / diagonal: step size x{m['dense']['step_size'] / m['diagonal']['step_size']:.2f}, "
          f"ESS per CPU second x{m['dense']['ess_per_cpu_s'] / m['diagonal']['ess_per_cpu_s']:.2f}")

    fit_all(ctx)
    evaluate_fits(ctx)
    ctx.summary["meta"] = {"versions": {}}
    st = bench_stage(ctx)
    total = sum(c for k, (w, c) in st.items() if k != "netCDF MB")
    for k, (w, c) in st.items():
        print(f"{k:>20}: {w:.2f}" + (" MB" if k == "netCDF MB" else f" s wall, {c:.2f} s CPU ({100 * c / total:.0f} % of CPU)"))
    print(f"ArviZ stage for one fit ({ctx.config.num_draws} draws × {fs.X_train.shape[0]} messages): {total:.2f} s CPU")


if __name__ == "__main__":
    main()
