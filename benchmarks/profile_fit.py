"""Where a default fit's time goes, before and after the fast path (cProfile, one fresh process each).

* before: the configuration and optimiser this package had before the fast path (plain
  ``TraceMeanField_ELBO``, ``pyro.optim.Adam`` — i.e. ``torch.optim.Adam`` —, lr 0.05, β2 0.999,
  plateau window 100);
* after: the default (compiled ELBO, :class:`pyro_spam.training.optim.Adam`, lr 0.1, β2 0.9, window 20).

Each profile is the first fit in its process (setup and one-time costs included), on the default
data, ``elbo="meanfield"``. Self time is grouped into buckets by where it is spent.

    .venv/bin/python benchmarks/profile_fit.py

Writes ``benchmarks/results/profile_{before,after}.txt`` and ``profile.json``/``profile.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, default_features, machine, run_worker  # noqa: E402

_IMPORT_BUILTINS = ("{built-in method builtins.exec}", "{built-in method _imp.create_dynamic}", "{built-in method marshal.loads}",
                    "{built-in method builtins.__build_class__}", "{built-in method _imp.exec_dynamic}")
BUCKETS = [  # (bucket, predicate on (filename, function name)); first match wins
    ("imports (mostly torch._dynamo, on first torch.optim use)", lambda f, n: n == "<module>" or "importlib" in f or n in _IMPORT_BUILTINS
     or "torch/_dynamo" in f or "/sympy/" in f or "torch/fx" in f),
    ("compiled graph: forward arithmetic (torch.jit)", lambda f, n: f.endswith("pyro/ops/jit.py") and n == "__call__"),
    ("backward (autograd engine)", lambda f, n: "run_backward" in n),
    ("torch.jit.trace (compiling)", lambda f, n: "torch/jit" in f or "_create_method_from_trace" in n or "_get_trace_graph" in n),
    ("eager torch ops (forward arithmetic without JIT)", lambda f, n: f == "~" and ("torch" in n or "Tensor" in n)),
    ("optimiser", lambda f, n: "torch/optim" in f or "pyro/optim" in f or "pyro_spam/optim" in f),
    ("Pyro Python (poutine, messengers, distributions, validation, ELBO)", lambda f, n: "/pyro/" in f or "torch/distributions" in f),
    ("pyro_spam code (eager model incl. its matmul, loop, schedule)", lambda f, n: "pyro_spam" in f),
]


def _bucket(stats: pstats.Stats) -> dict[str, float]:
    out: dict[str, float] = {b: 0.0 for b, _ in BUCKETS}
    out["other"] = 0.0
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        for bucket, pred in BUCKETS:
            if pred(filename, name):
                out[bucket] += tottime
                break
        else:
            out["other"] += tottime
    return out


def worker(which: str, data: Path) -> dict:
    import numpy as np
    import pyro.optim

    import pyro_spam.training.svi as train
    from pyro_spam.config import TrainConfig
    from pyro_spam.training import fit

    if which == "before":
        train.PyroAdam = pyro.optim.Adam  # the optimiser the package used before
        cfg = TrainConfig(elbo="meanfield", jit=False, lr=0.05, adam_beta2=0.999, window=100)
    else:
        cfg = TrainConfig(elbo="meanfield")
    d = np.load(data)
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    fr = fit(d["X_train"], d["y_train"], cfg)
    prof.disable()
    wall = time.perf_counter() - t
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    return {"which": which, "wall_s": wall, "steps": fr.steps, "ms_per_step_incl_setup": 1e3 * wall / fr.steps,
            "profiled_s": sum(v[2] for v in stats.stats.values()), "buckets_s": _bucket(stats), "top": text.getvalue()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    me = Path(__file__).resolve()
    res = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "features.npz"
        default_features(data)
        for which in ("before", "after"):
            res[which] = run_worker(me, ["--worker", which, "--data", str(data)], timeout=1800)
            (args.out / f"profile_{which}.txt").write_text(res[which].pop("top"))
    lines = [f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, load at start {res['machine']['loadavg_at_start'][0]:.2f}. "
             "First fit in a fresh process (setup included), default data, meanfield, under cProfile (which slows Python-heavy code).", "",
             "| | before | after |", "|---|---|---|",
             f"| steps | {res['before']['steps']} | {res['after']['steps']} |",
             f"| wall (s, profiled) | {res['before']['wall_s']:.2f} | {res['after']['wall_s']:.2f} |",
             f"| ms/step incl. setup | {res['before']['ms_per_step_incl_setup']:.2f} | {res['after']['ms_per_step_incl_setup']:.2f} |"]
    for b in res["before"]["buckets_s"]:
        lines.append(f"| {b} (s) | {res['before']['buckets_s'][b]:.3f} | {res['after']['buckets_s'][b]:.3f} |")
    md = "\n".join(lines) + "\n"
    (args.out / "profile.json").write_text(json.dumps(res, indent=1))
    (args.out / "profile.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
