"""The default run's cost: wall time, peak resident memory and run-directory size, and per stage.

* ``pyro-spam run --out DIR --overwrite -q`` in a fresh process, ``--rounds`` times: wall seconds and
  the process's peak RSS (``ru_maxrss`` of that one child, from ``os.wait4``);
* one more run in a worker process with, around each stage (imports, prepare, fits, evaluation and
  every entry of ``pipeline.RUN_STAGES``), its seconds, the RSS after it and the peak RSS *during* it
  (Linux ``VmHWM``, reset before each stage through ``/proc/self/clear_refs``);
* the size of every file in the run directory.

The limits checked (issue 17): < 8 s wall, < 600 MB peak RSS, < 12 MB run directory.

    .venv/bin/python benchmarks/bench_lean_run.py --rounds 3

Writes ``benchmarks/results/lean_run.json`` and ``lean_run.md``.
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

CLI = Path(sys.executable).parent / "pyro-spam"
LIMITS = {"wall_s": 8.0, "peak_rss_mb": 600.0, "run_dir_mb": 12.0}


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB (10⁶ bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def stage_worker(out: Path) -> dict:
    """One run in this process: seconds, RSS after and peak RSS during each stage."""
    rows: list[dict] = []
    resettable = _reset_peak()

    def record(name: str, seconds: float) -> None:
        rows.append({"stage": name, "seconds": seconds, "rss_after_mb": _status_mb("VmRSS"), "peak_mb": _status_mb("VmHWM")})
        _reset_peak()

    t0 = time.perf_counter()
    import warnings

    warnings.simplefilter("ignore", FutureWarning)
    from pyro_spam.config import RunConfig
    from pyro_spam.pipeline import run as pipeline

    record("import pyro_spam.pipeline (torch, Pyro, ArviZ, …)", time.perf_counter() - t0)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                record(name, time.perf_counter() - t)
        return wrapper

    for name in ("prepare", "fit_all", "evaluate_fits"):
        setattr(pipeline, name, timed(name, getattr(pipeline, name)))
    pipeline.RUN_STAGES[:] = [timed(fn.__name__, fn) for fn in pipeline.RUN_STAGES]
    t = time.perf_counter()
    ctx = pipeline.run(RunConfig(), out, overwrite=True)
    total = time.perf_counter() - t
    fits = {k: {"steps": f.steps, "seconds": f.seconds, "stop_reason": f.stop_reason} for k, f in ctx.fits.items()}
    return {"stages": rows, "pipeline_run_s": total, "peak_resettable": resettable, "fits": fits,
            "process_peak_mb": max(r["peak_mb"] for r in rows) if resettable else _status_mb("VmHWM")}


def timed_run(out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``pyro-spam run`` process."""
    t = time.perf_counter()
    proc = subprocess.Popen([str(CLI), "run", "--out", str(out), "--overwrite", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"pyro-spam run failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1e3  # kB → MB


def dir_sizes(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(path.iterdir(), key=lambda p: -p.stat().st_size) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(stage_worker(args.worker)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": machine(), "command": "pyro-spam run --out DIR --overwrite -q", "limits": LIMITS,
                 "wall_s": [], "peak_rss_mb": [], "load": []}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            wall, peak = timed_run(run_dir)
            res["wall_s"].append(wall)
            res["peak_rss_mb"].append(peak)
            res["load"].append(load)
            print(f"round {r + 1}: {wall:.2f} s, peak RSS {peak:.0f} MB (load {load:.2f})", flush=True)
        res["files"] = dir_sizes(run_dir)
        res["run_dir_mb"] = sum(res["files"].values()) / 1e6
        proc = subprocess.run([sys.executable, __file__, "--worker", str(Path(tmp) / "staged")], check=True,
                              capture_output=True, text=True, timeout=1800)
        res["worker"] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    m, lo, hi = med_range(res["wall_s"])
    pm, plo, phi = med_range(res["peak_rss_mb"])
    ok = {"wall_s": m < LIMITS["wall_s"], "peak_rss_mb": phi < LIMITS["peak_rss_mb"], "run_dir_mb": res["run_dir_mb"] < LIMITS["run_dir_mb"]}
    res["within_limits"] = ok
    mark = {True: "within", False: "OVER"}
    lines = [
        f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores; load at start {res['machine']['loadavg_at_start'][0]:.2f}.", "",
        f"`{res['command']}` on the default data, {len(res['wall_s'])} fresh processes:", "",
        f"- wall: **{m:.2f} s** median (min {lo:.2f}, max {hi:.2f}); limit {LIMITS['wall_s']:.0f} s: {mark[ok['wall_s']]}",
        f"- peak RSS: **{pm:.0f} MB** median (max {phi:.0f}); limit {LIMITS['peak_rss_mb']:.0f} MB: {mark[ok['peak_rss_mb']]}",
        f"- run directory: **{res['run_dir_mb']:.1f} MB** in {len(res['files'])} files; limit {LIMITS['run_dir_mb']:.0f} MB: "
        f"{mark[ok['run_dir_mb']]}", "",
        "Per stage (one more run, in-process; peak = highest RSS during the stage):", "",
        "| stage | seconds | RSS after (MB) | peak during (MB) |", "|---|---|---|---|",
    ]
    for r in res["worker"]["stages"]:
        lines.append(f"| {r['stage']} | {r['seconds']:.2f} | {r['rss_after_mb']:.0f} | {r['peak_mb']:.0f} |")
    for k, f in res["worker"]["fits"].items():
        lines.append(f"| (fit {k}: {f['steps']} steps, {f['stop_reason']}) | {f['seconds']:.2f} | | |")
    lines += ["", "Files (largest first):", "", "| file | kB |", "|---|---|"]
    lines += [f"| {name} | {size / 1e3:.0f} |" for name, size in res["files"].items()]
    md = "\n".join(lines) + "\n"
    write_results(args.out, "lean_run", res, md)


if __name__ == "__main__":
    main()
