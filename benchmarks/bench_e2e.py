"""End to end: the wall time of README's main command and of the test suite, and where a run's time goes.

* ``pyro-spam run --out DIR --overwrite -q`` on the default data (both ELBOs, evaluation, all
  stages and the report), in a fresh process, ``--rounds`` times (median, min–max);
* the same run in-process with a timer around each stage (imports, prepare, fits, evaluation,
  every entry of ``pipeline.RUN_STAGES``), to say where the time goes;
* with ``--tests``: ``python -m pytest -q`` once (the whole suite: minutes; run it on an idle machine).

    .venv/bin/python benchmarks/bench_e2e.py --rounds 3 --tests

Writes ``benchmarks/results/e2e_benchmark.json`` and ``e2e_benchmark.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, med_range, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "pyro-spam"


def stage_worker(out: Path) -> dict:
    """One run in this process with a timer around each stage (``bench_lean_run``'s, which also
    records memory)."""
    from bench_lean_run import stage_worker as lean_worker

    res = lean_worker(out)
    timings = {r["stage"]: r["seconds"] for r in res["stages"]}
    timings["pipeline.run total"] = res["pipeline_run_s"]
    return {"timings_s": timings, "fits": res["fits"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tests", action="store_true", help="also time the whole test suite once")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(stage_worker(args.worker)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": machine(), "command": f"{CLI.name} run --out DIR --overwrite -q", "run_wall_s": [], "load": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            t = time.perf_counter()
            subprocess.run([str(CLI), "run", "--out", str(Path(tmp) / "run"), "--overwrite", "-q"], check=True,
                           capture_output=True, text=True, timeout=1800)
            res["run_wall_s"].append(time.perf_counter() - t)
            res["load"].append(load)
            print(f"round {r + 1}: pyro-spam run {res['run_wall_s'][-1]:.1f} s (load {load:.2f})", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--worker", str(Path(tmp) / "staged")], check=True,
                              capture_output=True, text=True, timeout=1800)
        res["stages"] = json.loads(proc.stdout.strip().splitlines()[-1])
    if args.tests:
        load = os.getloadavg()[0]
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=ROOT,
                              capture_output=True, text=True, timeout=5400)
        res["tests"] = {"wall_s": time.perf_counter() - t, "exit_code": proc.returncode, "load": load,
                        "summary": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""}
        print(f"test suite: {res['tests']['wall_s']:.0f} s, {res['tests']['summary']}", flush=True)
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    m, lo, hi = med_range(res["run_wall_s"])
    lines = [f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores; load at start {res['machine']['loadavg_at_start'][0]:.2f}.", "",
             f"`pyro-spam run` (default data, both ELBOs, evaluation and report): **{m:.1f} s** wall, median of "
             f"{len(res['run_wall_s'])} (min {lo:.1f}, max {hi:.1f}).", ""]
    if "tests" in res:
        lines += [f"Test suite (`python -m pytest -q`): {res['tests']['wall_s']:.0f} s wall ({res['tests']['summary']}).", ""]
    lines += ["Where one run's time goes (in-process, one run):", "", "| part | seconds |", "|---|---|"]
    for k, v in res["stages"]["timings_s"].items():
        lines.append(f"| {k} | {v:.2f} |")
    for k, f in res["stages"]["fits"].items():
        lines.append(f"| (fit {k}: {f['steps']} steps, {f['stop_reason']}) | {f['seconds']:.2f} |")
    md = "\n".join(lines) + "\n"
    write_results(args.out, "e2e_benchmark", res, md)


if __name__ == "__main__":
    main()
