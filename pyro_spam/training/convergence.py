"""When is a stochastic fit done? A convergence stop on the iterates, not on the noisy ELBO.

After Dhaka et al. 2020 ("Robust, Accurate Stochastic Optimization for Variational Inference",
NeurIPS) and Welandawe et al. 2024 (RAABBVI, JMLR): at a fixed learning rate the optimiser's
iterates ``θ_t = (loc, log_scale)`` behave like a Markov chain around the optimum. So

1. **stationarity**: every ``check_every`` steps, split-R̂ of each parameter over a few trailing
   windows of the current learning-rate phase; the phase is stationary when the best window has
   ``max R̂ ≤ rhat_max`` (early Adam drift makes the window halves disagree);
2. **accuracy**: the Polyak–Ruppert average over that window is accepted when its Monte Carlo
   standard error is small in the guide's own units, ``MCSE(loc_j)/scale_j`` and
   ``MCSE(log scale_j)`` ``≤ mcse_rel_max``, with ``ESS ≥ ess_min``;
3. **learning-rate decay**: an accepted average is compared with the previous phase's; if the
   smaller rate moved it by more than ``delta_tol`` posterior sd (``max_j |Δloc_j|/scale_j`` or
   ``|Δ log scale_j|``) the rate is multiplied by ``lr_factor`` and a new phase starts (the
   stationary mean of constant-rate Adam is biased by O(rate)); so is it when the window that
   the MCSE would need exceeds ``window_max`` (stationary but too noisy at this rate);
4. **converged** when two successive accepted averages agree within ``delta_tol``.

The monitor is numpy plus ArviZ (``rhat``, ``ess``, ``mcse`` on small arrays); it never sees the
ELBO, torch or Pyro. Everything it decides is a function of the iterates it was given, so the
same inputs give the same decisions, and :meth:`IterateConvergence.state_dict` /
:meth:`IterateConvergence.from_state` resume bit for bit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..io.rundir import to_jsonable

with warnings.catch_warnings():  # arviz 0.2x announces its refactor with a FutureWarning on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = ["ConvergenceConfig", "IterateConvergence", "CRITERION"]

CRITERION = "iterate split-R̂ + MCSE of the Polyak–Ruppert average + learning-rate halving test (Dhaka et al. 2020; Welandawe et al. 2024)"


@dataclass(frozen=True)
class ConvergenceConfig:
    """Thresholds of :class:`IterateConvergence` (measurements: ``benchmarks/results/convergence_thresholds.md``).

    check_every : int, default=10
        Minimum steps between checks. A check costs ~2–10 ms of ArviZ calls, a full-batch step
        ~1–4 ms, so checking every step would double the time to stop.
    check_frac : float, default=0.1
        Between checks wait at least this fraction of the current phase's length too, so a long
        noisy phase (thousands of steps) costs O(log length) checks, delaying a verdict by ≤ 10 %.
    window_min : int, default=40
        Shortest averaging window (iterates). Split-R̂ splits it into 4 segments of 10. Measured
        on the default data at full batch, S = 64, seeds 0–2 (Pyro engine, Adam β1 0.9): 40 stops at 193–233
        steps, 0.014–0.038 sd from the exact optimum; 20 stops at 233–281 steps, 0.029–0.070 sd
        (shorter windows still holding Adam's ringing pass R̂ by chance and then fail accuracy).
    window_max : int, default=4000
        Longest window kept (and memory: ``window_max × 2(k+1)`` floats).
    n_windows : int, default=5
        Candidate trailing windows per check, evenly spaced in [window_min, phase length] (as
        Dhaka et al.); the one with the smallest max R̂ is used.
    rhat_max : float, default=1.1
        Stationarity threshold on split-R̂ (4 segments), both classic and rank-normalised
        folded (Vehtari et al. 2021). Dhaka et al. use 1.1.
    drift_tol : float, default=0.1
        A parameter whose 4 segment means span at most this many posterior sd (loc: in units
        of its scale; log-scale: absolute) counts as stationary whatever its R̂. R̂ is
        scale-free: with nearly noise-free gradients (full batch, S = 64) the iterates keep a
        slow deterministic drift that keeps R̂ high long after the average has settled
        (measured with Adam β1 0.9: 0.02 or 0.05 stop at 485–720 steps, 0.1 at 215–284 steps
        within 0.07 sd).
    ess_min : float, default=10
        Minimum ESS (ArviZ "mean") of every parameter in the window; below it the MCSE of a
        short window is itself unreliable (Dhaka et al. use ``W_min/8``), and a chain frozen by a
        tiny rate (a slow random walk) has ESS of a few. At full batch, S = 64 the log-scales'
        autocorrelation time is ≈ 7.5 steps, so 10 needs windows of ≈ 80 iterates.
    mcse_rel_max : float, default=0.05
        Maximum ``MCSE(loc_j)/scale_j`` and ``MCSE(log scale_j)`` of the average. 3 MCSE over 12
        parameters is then ≤ 0.15 sd, half the 0.3 sd tolerance.
    spread_max : float, default=0.5
        Stationary sd of the iterates (posterior units) below which the rate counts as small
        enough without a decay test. Constant-rate Adam's stationary mean is biased by about
        0.2 × spread² (measured over full batch S = 2, 64 and B = 32, 256 at rates 0.1–0.01:
        ratio 0.18–0.30), so at 0.5 the bias is ≈ 0.05 sd (0.075 at the largest ratio). With
        0.35, 5 of 10 full-batch S = 64 fits on the K = 10 synthetic set decayed (3 with 0.5):
        median 203 → 146 steps, the same worst distance (0.064 sd).
    delta_tol : float, default=0.1
        Maximum change of the accepted average between successive rates, in posterior sd
        (loc) and in log-scale.
    lr_factor : float, default=0.3
        Learning-rate multiplier at a decay. 0.1 overshoots: the iterates' spread scales about
        linearly with the rate, and at a tenth of it they move so slowly that reaching
        ``ess_min`` takes hundreds of steps (K = 10 synthetic set, full batch, S = 64: 1,104 steps
        after a decay at step 232, against 409 with 0.3).
    max_decays : int, default=6
        Decays allowed; after them the monitor keeps averaging (the loop's budget ends the fit).
    """

    check_every: int = 10
    check_frac: float = 0.1
    window_min: int = 40
    window_max: int = 4000
    n_windows: int = 5
    rhat_max: float = 1.1
    drift_tol: float = 0.1
    ess_min: float = 10.0
    mcse_rel_max: float = 0.05
    spread_max: float = 0.5
    delta_tol: float = 0.1
    lr_factor: float = 0.3
    max_decays: int = 6

    def __post_init__(self) -> None:
        if not (isinstance(self.check_every, int) and self.check_every >= 1):
            raise ValueError(f"check_every must be an integer >= 1 (got {self.check_every!r})")
        if not (isinstance(self.window_min, int) and self.window_min >= 16):
            raise ValueError(f"window_min must be an integer >= 16 (got {self.window_min!r})")
        if not (isinstance(self.window_max, int) and self.window_max >= self.window_min):
            raise ValueError(f"window_max must be an integer >= window_min (got {self.window_max!r})")
        if not (isinstance(self.n_windows, int) and self.n_windows >= 1):
            raise ValueError(f"n_windows must be an integer >= 1 (got {self.n_windows!r})")
        if not 0.0 < self.lr_factor < 1.0:
            raise ValueError(f"lr_factor must be in (0, 1) (got {self.lr_factor!r})")
        for name in ("check_frac", "rhat_max", "drift_tol", "ess_min", "mcse_rel_max", "spread_max", "delta_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)!r})")
        if not self.rhat_max > 1.0:
            raise ValueError(f"rhat_max must be > 1 (got {self.rhat_max!r})")


def _split_rhat(w: np.ndarray, method: str = "split", cols: np.ndarray | None = None) -> np.ndarray:
    """Split-R̂ of each column of ``w`` (W, P): the window as 2 chains, which ArviZ splits again
    (4 segments). ``method="split"`` is the classic one (~0.1 ms per column); ``"rank"`` is
    Vehtari et al.'s rank-normalised, folded version (~1 ms per column), which also catches a
    changing spread (the decaying ringing of Adam's transient). Only ``cols`` are computed
    (others are 1). A constant column (no movement at all) counts as R̂ = 1."""
    half = w.shape[0] // 2
    chains = np.stack([w[w.shape[0] - 2 * half : w.shape[0] - half], w[w.shape[0] - half :]])
    out = np.ones(w.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "split" and cols is None and half >= 4 and np.all(np.isfinite(chains)):
            out = _classic_split_rhat(chains)
        else:
            for j in range(w.shape[1]) if cols is None else np.flatnonzero(cols):
                out[j] = _scalar(az.rhat(chains[:, :, j], method=method))
    out[np.ptp(w, axis=0) == 0] = 1.0
    return out


def _classic_split_rhat(chains: np.ndarray) -> np.ndarray:
    """``az.rhat(chains[:, :, j], method="split")`` for every column j of ``chains`` (2, n, P) at once
    (equal to ~1e-15; ``tests/test_convergence.py``): ArviZ loops over columns in Python, and this
    check runs at every stop-rule check of every fit."""
    half = chains.shape[1] // 2
    seg = np.concatenate([chains[:, :half], chains[:, -half:]], axis=0)  # ArviZ's 4 split chains
    between = half * seg.mean(axis=1).var(axis=0, ddof=1)
    within = seg.var(axis=1, ddof=1).mean(axis=0)
    return np.sqrt((between / within + half - 1) / half)


def _units(w: np.ndarray) -> np.ndarray:
    """Per-parameter unit of ``w`` (W, P) columns ``(loc, log_scale)``: the guide's scale (from
    the window's mean log-scale) for loc, 1 for log-scale."""
    d = w.shape[1] // 2
    return np.concatenate([np.exp(w[:, d:].mean(axis=0)), np.ones(d)])


def _scalar(value: object) -> float:
    """ArviZ's one-variable result as a float: a 0-d value, or a (1,)-array when numba is installed."""
    return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])


def _drift(w: np.ndarray) -> np.ndarray:
    """Range of the 4 segment means of each column of ``w`` (W, P), in posterior units."""
    seg = np.array_split(w[w.shape[0] % 4 :], 4)
    means = np.stack([s.mean(axis=0) for s in seg])
    return np.ptp(means, axis=0) / _units(w)


def _ess_mcse(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ESS ("mean") and MCSE of the mean of each column of ``w`` (W, P), one chain, via ArviZ.
    A constant column has MCSE 0 and ESS = W."""
    ess = np.empty(w.shape[1])
    mcse = np.empty(w.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for j in range(w.shape[1]):
            col = w[None, :, j]
            if np.ptp(col) == 0:
                ess[j], mcse[j] = float(w.shape[0]), 0.0
                continue
            ess[j] = _scalar(az.ess(col, method="mean"))
            mcse[j] = _scalar(az.mcse(col, method="mean"))
    ess[~np.isfinite(ess)] = 0.0
    mcse[~np.isfinite(mcse)] = np.inf
    return ess, mcse


class IterateConvergence:
    """Decides, from the iterates alone, when to decay the learning rate and when the fit is done.

    lr : float
        The current learning rate; the training loop sets its optimiser to it after "decay".
    config : ConvergenceConfig
    start_step : int, default=0
        The first step :meth:`update` will see (a warm start or a resume without the monitor's
        state begins a fresh phase there).

    Call :meth:`update` after every optimiser step; return :meth:`average` as the fit, whatever
    the stop reason.
    """

    def __init__(self, lr: float, config: ConvergenceConfig = ConvergenceConfig(), start_step: int = 0) -> None:
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number (got {lr!r})")
        self.config = config
        self.lr = float(lr)
        self.lr0 = float(lr)
        self.status = "running"  # "running" | "converged"
        self.last_step = int(start_step) - 1  # last step passed to update
        self.phase_start = int(start_step)  # first step of the current learning-rate phase
        self.next_check = -1  # step at which the next check runs
        self._buf: np.ndarray | None = None  # (window_max, P) ring of the phase's iterates
        self._xbuf: np.ndarray | None = None  # (window_max, Q) ring of extra parameters averaged alongside (not monitored)
        self.accepted_extra: np.ndarray | None = None  # their average over the accepted window
        self._n = 0  # iterates in the current phase
        self.window: tuple[int, int] | None = None  # [start, end) steps of the last stationary window
        self.prev: dict[str, Any] | None = None  # accepted average of the previous phase
        self.accepted: dict[str, Any] | None = None  # the converged average
        self.last_check: dict[str, Any] | None = None  # diagnostics of the last check
        self.decays: list[dict[str, Any]] = []
        self.checks = 0

    # ---- the iterate buffer -------------------------------------------------------------
    def _push(self, theta: np.ndarray) -> None:
        cap = self.config.window_max
        if self._buf is None:
            self._buf = np.zeros((cap, theta.size))
        elif self._buf.shape[1] != theta.size:
            raise ValueError(f"iterate has {theta.size} entries, expected {self._buf.shape[1]}")
        self._buf[self._n % cap] = theta
        self._n += 1

    def _push_extra(self, x: np.ndarray) -> None:
        cap = self.config.window_max
        if self._xbuf is None or self._xbuf.shape[1] != x.size:
            self._xbuf = np.zeros((cap, x.size))
        self._xbuf[self._n % cap] = x  # the slot _push is about to fill

    def _trailing(self, w: int, buf: np.ndarray | None = None) -> np.ndarray:
        """The last ``w`` iterates of the phase (of ``buf``, default the monitored ones), oldest first, (w, P)."""
        cap = self.config.window_max
        buf = self._buf if buf is None else buf
        assert buf is not None and 0 < w <= min(self._n, cap)
        idx = (np.arange(self._n - w, self._n)) % cap
        return buf[idx]

    # ---- public API ----------------------------------------------------------------------
    def update(self, step: int, loc: np.ndarray, log_scale: np.ndarray, extra: np.ndarray | None = None) -> str:
        """Call after every optimiser step with the new iterate; returns "continue", "decay" or "converged".

        step : int
            The step just completed (0-based, consecutive).
        loc, log_scale : ndarray of shape (k + 1,)
            The guide's mean and log marginal sds after the step (for the mean-field guide, its
            parameters). These decide stationarity and accuracy.
        extra : ndarray or None
            Further parameters to average over the same window but not to monitor (the full and
            low-rank guides' unconstrained parameters: :meth:`average_extra`).

        After "decay" set the optimiser's learning rate to :attr:`lr`. After "converged" further
        calls return "converged" and change nothing.
        """
        if self.status == "converged":
            return "converged"
        if step != self.last_step + 1:
            raise ValueError(f"steps must be consecutive: got {step} after {self.last_step}")
        theta = np.concatenate([np.asarray(loc, dtype=np.float64).ravel(), np.asarray(log_scale, dtype=np.float64).ravel()])
        if not np.all(np.isfinite(theta)):
            raise ValueError(f"non-finite iterate at step {step}")
        self.last_step = step
        if extra is not None:
            self._push_extra(np.asarray(extra, dtype=np.float64).ravel())
        self._push(theta)
        cfg = self.config
        if self._n < cfg.window_min or step < self.next_check:
            return "continue"
        self.next_check = step + max(cfg.check_every, int(cfg.check_frac * self._n))
        return self._check(step)

    def _check(self, step: int) -> str:
        cfg = self.config
        self.checks += 1
        n_avail = min(self._n, cfg.window_max)
        sizes = np.unique(np.linspace(cfg.window_min, n_avail, cfg.n_windows).astype(int))
        # Stationarity: split-R̂ per parameter, ignoring parameters whose segment means agree
        # within drift_tol posterior sd anyway.
        passing: list[tuple[int, np.ndarray, np.ndarray]] = []
        best_r = math.inf
        for w in sizes:
            win = self._trailing(int(w))
            rhat = _split_rhat(win)
            drift = _drift(win)
            moving = drift > cfg.drift_tol
            r = float(np.where(moving, rhat, 1.0).max())
            if r <= cfg.rhat_max:  # confirm with the rank-normalised folded R̂ (slower, so only here)
                rhat = np.maximum(rhat, _split_rhat(win, "rank", moving))
                r = float(np.where(moving, rhat, 1.0).max())
            best_r = min(best_r, r)
            if r <= cfg.rhat_max:
                passing.append((int(w), rhat, drift))
        info: dict[str, Any] = {"step": step, "lr": self.lr, "window": None, "rhat_max": best_r}
        self.last_check = info
        if not passing:
            return "continue"
        # Of the stationary windows, average over the one whose mean is most precise (largest
        # max MCSE/scale smallest; ties: the longer): a window that still holds the transient's
        # ringing passes R̂ only by luck and has a wide spread.
        best: tuple[float, int] | None = None
        for w, rhat, drift in passing[-3:]:  # the 3 longest: ESS calls on long windows are the cost
            win = self._trailing(w)
            ess_w, mcse_w = _ess_mcse(win)
            score = float((mcse_w / _units(win)).max()) if ess_w.min() >= cfg.ess_min else math.inf
            if best is None or score < best[0] or (score == best[0] and w > best[1]):
                best = (score, w)
                best_w, best_rhat, best_drift, ess, mcse = w, rhat, drift, ess_w, mcse_w
        info["window"] = best_w
        info["rhat_max"] = float(np.where(best_drift <= cfg.drift_tol, 1.0, best_rhat).max())
        window = self._trailing(best_w)
        mean = window.mean(axis=0)
        units = _units(window)
        mcse_rel = mcse / units
        spread = window.std(axis=0) / units  # stationary sd of the iterates, posterior units
        self.window = (step + 1 - best_w, step + 1)
        accurate = bool(mcse_rel.max() <= cfg.mcse_rel_max and ess.min() >= cfg.ess_min)
        settled = bool(spread.max() <= cfg.spread_max)
        info.update(rhat=best_rhat.tolist(), drift=best_drift.tolist(), ess=ess.tolist(), ess_min=float(ess.min()),
                    mcse_rel=mcse_rel.tolist(), mcse_rel_max=float(mcse_rel.max()), spread=spread.tolist(),
                    spread_max=float(spread.max()), accurate=accurate, settled=settled,
                    average=mean.tolist(), window_steps=list(self.window))
        if accurate and self.prev is not None:
            info["delta"] = _delta(np.asarray(self.prev["average"]), mean)
            info["skl"] = _skl(np.asarray(self.prev["average"]), mean)
        if accurate and (settled or info.get("delta", math.inf) <= cfg.delta_tol):
            info["accepted_by"] = "spread" if settled else "delta"
            self.status = "converged"
            self.accepted = dict(info)
            if self._xbuf is not None:
                self.accepted_extra = self._trailing(best_w, self._xbuf).mean(axis=0)
            return "converged"
        if accurate:
            return self._decay(step, info, "accurate average, but the iterates spread too wide to rule out O(rate) bias")
        if not settled:
            return self._decay(step, info, "stationary, spread too wide (bias ∝ spread²)")
        # Stationary, settled, not yet accurate: MCSE falls like 1/sqrt(W). Decay only if the chain
        # mixes (ESS ≥ ess_min) but the window the MCSE needs cannot fit. A chain with tiny ESS is
        # slow (a small rate freezes it), not noisy: a smaller rate would freeze it further, so
        # wait (the budget ends it honestly).
        need = best_w * (mcse_rel.max() / cfg.mcse_rel_max) ** 2
        info["window_needed"] = float(need)
        if ess.min() >= cfg.ess_min and need > cfg.window_max and best_w >= min(self._n, cfg.window_max) // 2:
            return self._decay(step, info, "stationary but too noisy to average at this rate")
        return "continue"

    def _decay(self, step: int, info: dict[str, Any], why: str) -> str:
        cfg = self.config
        if info.get("accurate"):
            self.prev = {"average": info["average"], "lr": self.lr, "window_steps": info["window_steps"]}
        if len(self.decays) >= cfg.max_decays:
            return "continue"
        old = self.lr
        self.lr = old * cfg.lr_factor
        self.decays.append({"step": step + 1, "lr_from": old, "lr_to": self.lr, "reason": why,
                            "delta": info.get("delta"), "mcse_rel_max": info.get("mcse_rel_max")})
        self._n = 0
        self.phase_start = step + 1
        self.next_check = -1
        return "decay"

    def average(self) -> tuple[np.ndarray, np.ndarray]:
        """Polyak–Ruppert average ``(loc, scale)`` over the current averaging window.

        After "converged": the accepted window's average. Otherwise the trailing window chosen
        by the last stationary check (extended to the latest step), or the last half of the
        current phase if no check was stationary yet. ``scale = exp(mean log_scale)``: the
        iterates are averaged where the optimiser moves them.
        """
        if self.accepted is not None:
            mean = np.asarray(self.accepted["average"])
        else:
            if self._n == 0:
                raise ValueError("no iterate in the current phase yet")
            w = self._n // 2
            if self.window is not None and self.window[0] >= self.phase_start:
                w = self.last_step + 1 - self.window[0]
            w = max(1, min(w, self._n, self.config.window_max))
            mean = self._trailing(w).mean(axis=0)
        d = mean.size // 2
        return mean[:d].copy(), np.exp(mean[d:])

    def average_extra(self) -> np.ndarray | None:
        """Average of the extra parameters (see :meth:`update`) over the window :meth:`average` uses;
        None when none were given."""
        if self.accepted is not None:
            return None if self.accepted_extra is None else self.accepted_extra.copy()
        if self._xbuf is None or self._n == 0:
            return None
        start, end = self.averaging_window()
        w = max(1, min(end - start, self._n, self.config.window_max))
        return self._trailing(w, self._xbuf).mean(axis=0)

    def averaging_window(self) -> tuple[int, int]:
        """``[start, end)`` steps that :meth:`average` averages over."""
        if self.accepted is not None:
            return tuple(self.accepted["window_steps"])  # type: ignore[return-value]
        end = self.last_step + 1
        if self.window is not None and self.window[0] >= self.phase_start:
            return (self.window[0], end)
        w = max(1, min(self._n // 2, self.config.window_max))
        return (end - w, end)

    def evidence(self) -> dict[str, Any]:
        """JSON-able record of the decision: criterion, thresholds, R̂/ESS/MCSE of the final
        window, averaging window, learning-rate decays, and the last between-rate change."""
        final = self.accepted if self.accepted is not None else self.last_check
        keep = ("step", "lr", "window", "rhat_max", "rhat", "drift", "ess", "ess_min", "mcse_rel", "mcse_rel_max",
                "spread", "spread_max", "accurate", "settled", "accepted_by",
                "delta", "skl", "window_needed")
        return {
            "criterion": CRITERION,
            "status": self.status,
            "thresholds": asdict(self.config),
            "final_check": None if final is None else {k: to_jsonable(final[k]) for k in keep if k in final},
            "averaging_window": list(self.averaging_window()) if (self._n > 0 or self.accepted is not None) else None,
            "lr_initial": self.lr0,
            "lr_final": self.lr,
            "lr_decays": [{k: to_jsonable(v) for k, v in e.items()} for e in self.decays],
            "checks": self.checks,
            "steps_seen": self.last_step + 1,
        }

    # ---- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: numpy arrays and plain JSON-able values only."""
        import json

        scalars = {"lr": self.lr, "lr0": self.lr0, "status": self.status, "last_step": self.last_step,
                   "phase_start": self.phase_start, "next_check": self.next_check, "n": self._n, "checks": self.checks,
                   "window": None if self.window is None else list(self.window)}
        return {
            "buffer": np.zeros((0, 0)) if self._buf is None else self._buf.copy(),
            "extra_buffer": np.zeros((0, 0)) if self._xbuf is None else self._xbuf.copy(),
            "accepted_extra": np.zeros(0) if self.accepted_extra is None else self.accepted_extra.copy(),
            "scalars_json": json.dumps(scalars),
            "prev_json": json.dumps(to_jsonable(self.prev)),
            "accepted_json": json.dumps(to_jsonable(self.accepted)),
            "last_check_json": json.dumps(to_jsonable(self.last_check)),
            "decays_json": json.dumps(to_jsonable(self.decays)),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: ConvergenceConfig = ConvergenceConfig()) -> IterateConvergence:
        """Rebuild a monitor from :meth:`state_dict` (values may have gone through ``np.savez``)."""
        import json

        def js(key: str) -> Any:
            return json.loads(str(np.asarray(state[key]).item()) if not isinstance(state[key], str) else state[key])

        s = js("scalars_json")
        mon = cls(s["lr0"], config)
        mon.lr, mon.status, mon.last_step = float(s["lr"]), s["status"], int(s["last_step"])
        mon.phase_start, mon.next_check, mon._n, mon.checks = int(s["phase_start"]), int(s["next_check"]), int(s["n"]), int(s["checks"])
        mon.window = None if s["window"] is None else (int(s["window"][0]), int(s["window"][1]))
        buf = np.array(state["buffer"], dtype=np.float64)
        if buf.size:
            if buf.shape[0] != config.window_max:
                raise ValueError(f"saved buffer holds {buf.shape[0]} iterates but window_max is {config.window_max}")
            mon._buf = buf
        if "extra_buffer" in state and np.asarray(state["extra_buffer"]).size:
            mon._xbuf = np.array(state["extra_buffer"], dtype=np.float64)
        if "accepted_extra" in state and np.asarray(state["accepted_extra"]).size:
            mon.accepted_extra = np.array(state["accepted_extra"], dtype=np.float64)
        mon.prev, mon.accepted, mon.last_check = js("prev_json"), js("accepted_json"), js("last_check_json")
        mon.decays = js("decays_json")
        return mon


def _delta(a: np.ndarray, b: np.ndarray) -> float:
    """Largest change between two averages ``(loc, log_scale)``: ``|Δloc_j|/scale_j`` (scale of
    ``b``, the newer) or ``|Δ log scale_j|``."""
    d = a.size // 2
    return float(max(np.max(np.abs(a[:d] - b[:d]) / np.exp(b[d:])), np.max(np.abs(a[d:] - b[d:]))))


def _skl(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetrised KL between the diagonal normals with ``(loc, log_scale)`` ``a`` and ``b``."""
    d = a.size // 2
    va, vb = np.exp(2 * a[d:]), np.exp(2 * b[d:])
    dm2 = (a[:d] - b[:d]) ** 2
    return float(0.5 * np.sum((va + dm2) / vb + (vb + dm2) / va - 2.0))
