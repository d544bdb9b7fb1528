"""Fit the hand-written mean-field guide with Pyro SVI (``Trace_ELBO`` or ``TraceMeanField_ELBO``)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from tqdm.auto import tqdm

from .config import TrainConfig
from .errors import ConfigError, TrainingError
from .guide import LOC, SCALE, make_guide
from .model import model
from .schedule import PlateauSchedule
from .types import ElboHistory, FitResult

log = logging.getLogger(__name__)


class _RecordLoglik:
    """Mixin that keeps the observed site's log-likelihood of each particle (no extra work:
    Pyro has already computed ``log_prob_sum``), so each step's ELBO splits into loglik and KL."""

    _loglik: torch.Tensor | float = 0.0

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        self._loglik = self._loglik + model_trace.nodes["y"]["log_prob_sum"].detach()
        return loss, surrogate


class RecordingTraceELBO(_RecordLoglik, Trace_ELBO):
    """``Trace_ELBO`` (Monte Carlo KL) that records the log-likelihood part."""


class RecordingMeanFieldELBO(_RecordLoglik, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` (analytic KL) that records the log-likelihood part."""


ELBO_CLASSES = {"trace": RecordingTraceELBO, "meanfield": RecordingMeanFieldELBO}


def make_elbo(kind: str, particles: int) -> Trace_ELBO:
    """The Pyro ELBO object for ``kind`` with S vectorised particles."""
    try:
        cls = ELBO_CLASSES[kind]
    except KeyError:
        raise ConfigError(f"elbo must be one of: {', '.join(ELBO_CLASSES)} (got {kind!r})") from None
    return cls(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)


@dataclass
class TrainState:
    """Where a fit stands: enough to resume it exactly (all plain tensors / numbers)."""

    loc: np.ndarray
    scale: np.ndarray
    history: ElboHistory
    lr: float
    decays_done: int


def _batches(n: int, batch_size: int | None, gen: torch.Generator):
    """Endless mini-batch index tensors: a fresh permutation each epoch, sliced (None = full)."""
    if batch_size is None or batch_size >= n:
        while True:
            yield None
    while True:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start : start + batch_size]


def fit_svi(
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    *,
    progress: bool = False,
    resume: TrainState | None = None,
) -> FitResult:
    """Fit q(w) to the training inputs ``x`` (N, K) and labels ``y`` (N,) with Pyro SVI.

    Stops at convergence (see :class:`PlateauSchedule`), at ``cfg.max_steps`` or on Ctrl-C
    (``stop_reason="interrupted"``, keeping the last completed step's parameters). A non-finite
    ELBO raises :class:`TrainingError` naming the step and the term that failed.
    """
    t0 = time.perf_counter()
    n = x.shape[0]
    if cfg.batch_size is not None and cfg.batch_size > n:
        raise ConfigError(f"batch size {cfg.batch_size} exceeds the {n} training messages")
    pyro.set_rng_seed(cfg.seed)
    pyro.clear_param_store()
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    init_loc = init_scale = None
    prev_hist: ElboHistory | None = None
    sched = PlateauSchedule(lr=cfg.lr, window=cfg.window, tol=cfg.tol, decays=cfg.lr_decays)
    if resume is not None:
        init_loc = torch.as_tensor(resume.loc, dtype=torch.float32)
        init_scale = torch.as_tensor(resume.scale, dtype=torch.float32)
        prev_hist = resume.history
        sched.lr, sched.decays_done = resume.lr, resume.decays_done
    guide = make_guide(cfg.init_scale, init_loc, init_scale)
    elbo = make_elbo(cfg.elbo, cfg.particles)
    optim = pyro.optim.Adam({"lr": sched.lr})
    svi = SVI(model, guide, optim, elbo)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = _batches(n, cfg.batch_size, gen)

    start = len(prev_hist) if prev_hist is not None else 0
    total = cfg.max_steps
    elbos = np.empty(total, dtype=np.float64)
    lrs = np.empty(total, dtype=np.float64)
    logliks: list[torch.Tensor] = []
    if prev_hist is not None:
        elbos[:start] = prev_hist.elbo
        lrs[:start] = prev_hist.lr
    last = None
    stop_reason = "max_steps"
    step = start
    bar = tqdm(total=total, initial=start, desc=f"SVI {cfg.elbo}", disable=not progress, leave=False, unit="step")
    try:
        for step in range(start, total):
            idx = next(batches)
            elbo._loglik = 0.0
            loss = svi.step(xt, yt, idx, cfg.prior_scale)
            ll = elbo._loglik / cfg.particles
            if not math.isfinite(loss):
                _raise_nonfinite(step, loss, ll, last)
            elbos[step] = -loss
            lrs[step] = sched.lr
            logliks.append(ll)
            last = _snapshot()
            bar.update(1)
            verdict = sched.update(step, elbos)
            if verdict == "decay":
                _set_lr(optim, sched.lr)
            elif verdict == "converged":
                stop_reason = "converged"
                break
        step += 1
    except KeyboardInterrupt:
        stop_reason = "interrupted"
        step = start + len(logliks)
        log.warning("training interrupted at step %d; keeping the last completed step", step)
    finally:
        bar.close()
    if last is None and resume is None:
        raise TrainingError("training was interrupted before the first step finished")
    loc, scale = last if last is not None else (resume.loc, resume.scale)
    ll_new = torch.stack(logliks).numpy().astype(np.float64) if logliks else np.empty(0)
    ll_all = np.concatenate([prev_hist.loglik, ll_new]) if prev_hist is not None else ll_new
    hist = ElboHistory(elbo=elbos[:step].copy(), loglik=ll_all, kl=ll_all - elbos[:step], lr=lrs[:step].copy())
    return FitResult(
        elbo=cfg.elbo,
        engine="svi",
        loc=np.asarray(loc, dtype=np.float64),
        scale=np.asarray(scale, dtype=np.float64),
        history=hist,
        steps=step,
        seconds=time.perf_counter() - t0,
        stop_reason=stop_reason,
        extra={"lr_final": sched.lr, "decays_done": sched.decays_done, "lr_events": sched.events},
    )


def _snapshot() -> tuple[np.ndarray, np.ndarray]:
    store = pyro.get_param_store()
    return store[LOC].detach().numpy().copy(), store[SCALE].detach().numpy().copy()


def _set_lr(optim: pyro.optim.PyroOptim, lr: float) -> None:
    for opt in optim.optim_objs.values():
        for group in opt.param_groups:
            group["lr"] = lr


def _raise_nonfinite(step: int, loss: float, loglik: torch.Tensor | float, last) -> None:
    ll = float(loglik)
    term = "likelihood" if not math.isfinite(ll) else "KL"
    where = "no finite step yet" if last is None else f"last finite loc={np.round(last[0], 4).tolist()}, scale={np.round(last[1], 4).tolist()}"
    raise TrainingError(
        f"the ELBO became non-finite at step {step} (loss={loss}); the {term} term failed; {where}. "
        "Try a smaller learning rate or prior scale."
    )


def fit(
    x: np.ndarray, y: np.ndarray, cfg: TrainConfig, *, progress: bool = False, resume: TrainState | None = None
) -> FitResult:
    """Fit with the engine ``cfg.engine`` names: ``"svi"`` (Pyro) or ``"manual"`` (plain torch)."""
    with torch_threads(1):
        if cfg.engine == "manual":
            from .train_manual import fit_manual

            return fit_manual(x, y, cfg, progress=progress, resume=resume)
        return fit_svi(x, y, cfg, progress=progress, resume=resume)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch ops on ``n`` threads, restoring the previous setting afterwards.

    One step is a few MFLOP; with two intra-op threads the synchronisation costs more than the
    arithmetic (measured here: 14 ms/step on 1 thread vs 100 ms/step on 2 under load).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
