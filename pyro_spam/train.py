"""Fit the hand-written mean-field guide with Pyro SVI (``Trace_ELBO`` or ``TraceMeanField_ELBO``)."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
import warnings
from typing import Any, Iterator

import numpy as np
import pyro
import pyro.optim
import pyro.util
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import constraints
from tqdm.auto import tqdm

from .checkpoint import TrainState
from .config import TrainConfig
from .errors import ConfigError, ModelFileError, TrainingError
from .fast_elbo import JitMeanFieldELBO, JitTraceELBO
from .optim import PyroAdam
from .guide import LOC, SCALE, make_guide
from .model import model
from .batching import minibatches
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

    def loss_and_loglik(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """The differentiable loss (−ELBO estimate) and its log-likelihood part (the interface of
        :mod:`pyro_spam.fast_elbo`'s compiled ELBOs)."""
        self._loglik = 0.0
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        return loss, self._loglik / self.num_particles


class RecordingTraceELBO(_RecordLoglik, Trace_ELBO):
    """``Trace_ELBO`` (Monte Carlo KL) that records the log-likelihood part."""


class RecordingMeanFieldELBO(_RecordLoglik, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` (analytic KL) that records the log-likelihood part."""


ELBO_CLASSES = {"trace": RecordingTraceELBO, "meanfield": RecordingMeanFieldELBO}
JIT_ELBO_CLASSES = {"trace": JitTraceELBO, "meanfield": JitMeanFieldELBO}


def make_elbo(kind: str, particles: int, *, jit: bool = False) -> Trace_ELBO:
    """The Pyro ELBO object for ``kind`` with S vectorised particles (compiled once if ``jit``).

    Both kinds of object offer ``loss_and_loglik(model, guide, *args, **kwargs)``.
    """
    classes = JIT_ELBO_CLASSES if jit else ELBO_CLASSES
    try:
        cls = classes[kind]
    except KeyError:
        raise ConfigError(f"elbo must be one of: {', '.join(ELBO_CLASSES)} (got {kind!r})") from None
    extra = {"ignore_jit_warnings": True} if jit else {}
    return cls(num_particles=particles, vectorize_particles=True, max_plate_nesting=1, **extra)


class _SviStep:
    """One step of ``SVI.step`` (trace the params, backpropagate −ELBO, Pyro optimiser, zero the
    grads) that also returns the log-likelihood part and finds the parameters only once.

    The model's non-tensor input ``prior_scale`` goes as a keyword and the mini-batch indices
    as a trailing positional tensor (or not at all for the full batch), as a compiled ELBO needs.
    """

    def __init__(self, guide, elbo: Trace_ELBO, optim: pyro.optim.PyroOptim, prior_scale: float) -> None:
        self.guide, self.elbo, self.optim, self.kwargs = guide, elbo, optim, {"prior_scale": prior_scale}
        self.params: list[torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None) -> tuple[float, torch.Tensor]:
        """Loss (a float: the per-step finiteness check reads it) and log-likelihood part (a tensor)."""
        args = (x, y) if idx is None else (x, y, idx)
        if self.params is None:
            with poutine.trace(param_only=True) as capture:
                loss, loglik = self.elbo.loss_and_loglik(model, self.guide, *args, **self.kwargs)
            self.params = [site["value"].unconstrained() for site in capture.trace.nodes.values()]
        else:  # the param store keeps the same unconstrained tensors and updates them in place
            loss, loglik = self.elbo.loss_and_loglik(model, self.guide, *args, **self.kwargs)
        loss.backward()
        self.optim(self.params)
        for p in self.params:
            p.grad = None
        return float(loss.detach()), loglik


# TrainState (what a resume needs) lives in the numpy-only ``checkpoint`` module; imported above.
PARAM_CONSTRAINTS = {LOC: constraints.real, SCALE: constraints.positive}


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
    (``stop_reason="interrupted"``). Ctrl-C is deferred to the end of the running step (see
    :func:`_sigint_deferred`), so the result's ``state`` holds parameters, Adam moments, schedule
    and RNG states at a step boundary, and ``resume=`` with it continues bit for bit like an
    uninterrupted run. A non-finite ELBO or parameter raises :class:`TrainingError` at once,
    naming the step, the failing term or parameter and the last finite values.
    """
    t0 = time.perf_counter()
    n = x.shape[0]
    if cfg.batch_size is not None and cfg.batch_size > n:
        raise ConfigError(
            f"batch size {cfg.batch_size} exceeds the {n} training messages; "
            f"pass --batch-size {n} or less, or 'full'"
        )
    pyro.set_rng_seed(cfg.seed)
    pyro.clear_param_store()
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    init_loc = init_scale = None
    prev_hist: ElboHistory | None = None
    sched = PlateauSchedule(lr=cfg.lr, window=cfg.window, tol=cfg.tol, decays=cfg.lr_decays)
    exact = resume is not None and resume.exact
    if resume is not None:
        init_loc = torch.as_tensor(resume.loc, dtype=torch.float32)
        init_scale = torch.as_tensor(resume.scale, dtype=torch.float32)
        prev_hist = resume.history
        sched.lr, sched.decays_done, sched.events = resume.lr, resume.decays_done, list(resume.events)
        if exact:
            _restore_params(resume.params)
        else:  # a warm start (empty history) or a state without optimiser/RNG parts
            if len(prev_hist):
                log.warning("resuming without optimiser/RNG state: the continuation is close to, not identical with, an uninterrupted run")
            pyro.set_rng_seed(cfg.seed + len(prev_hist))  # do not replay the first steps' noise
    guide = make_guide(cfg.init_scale, init_loc, init_scale)
    elbo = make_elbo(cfg.elbo, cfg.particles, jit=cfg.jit)
    optim = PyroAdam({"lr": sched.lr, "betas": (0.9, cfg.adam_beta2)})  # pyro.optim.Adam's numbers, no torch._dynamo import
    svi_step = _SviStep(guide, elbo, optim, cfg.prior_scale)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = minibatches(n, cfg.batch_size, gen)

    start = len(prev_hist) if prev_hist is not None else 0
    for _ in range(start):  # the batch stream is a function of (seed, step): replay it to where we stopped
        next(batches)
    if exact:
        optim.set_state(_optim_state_to_torch(resume.optim))
        _set_rng_state(resume.rng)
    total = cfg.max_steps
    elbos = np.empty(total, dtype=np.float64)
    lrs = np.empty(total, dtype=np.float64)
    logliks: list[torch.Tensor] = []
    if prev_hist is not None:
        elbos[:start] = prev_hist.elbo
        lrs[:start] = prev_hist.lr
    last = None
    stop_reason = "max_steps"
    step = done = start  # done: completed steps, whose parameters are in `last`
    at_boundary = True  # param store, Adam and RNG are exactly at the end of step `done`
    bar = tqdm(total=total, initial=start, desc=f"SVI {cfg.elbo}", disable=not progress, leave=False, unit="step")
    try:
        with _sigint_deferred() as sigint, _quiet_nan_warnings():
            for step in range(start, total):
                idx = next(batches)
                at_boundary = False
                try:
                    loss, ll = svi_step(xt, yt, idx)
                except ValueError as exc:  # distribution validation rejected a non-finite or invalid value
                    _raise_invalid(step, exc, last)
                if not math.isfinite(loss):
                    _raise_nonfinite(step, loss, ll, last)
                snap = _snapshot()  # per step: detects bad parameters at once and keeps the last finite ones
                _check_params(step, loss, ll, snap, last)
                elbos[step] = -loss
                lrs[step] = sched.lr
                logliks.append(ll)
                last, done = snap, step + 1
                bar.update(1)
                verdict = sched.update(step, elbos)
                if verdict == "decay":
                    _set_lr(optim, sched.lr)
                at_boundary = True
                if verdict == "converged":
                    stop_reason = "converged"
                    break
                if sigint.requested:
                    stop_reason = "interrupted"
                    log.warning("training interrupted after step %d of %d; stopping with a consistent state", done, total)
                    break
    except KeyboardInterrupt:  # a second Ctrl-C, or one raised where the handler could not be installed
        stop_reason = "interrupted"
        log.warning("training interrupted at step %d; keeping the last completed step", done)
    finally:
        bar.close()
    if last is None and resume is None:
        raise TrainingError("training was interrupted before the first step finished")
    loc, scale = last if last is not None else (resume.loc, resume.scale)
    ll_new = torch.stack(logliks[: done - start]).numpy().astype(np.float64) if done > start else np.empty(0)
    ll_all = np.concatenate([prev_hist.loglik, ll_new]) if prev_hist is not None else ll_new
    hist = ElboHistory(elbo=elbos[:done].copy(), loglik=ll_all, kl=ll_all - elbos[:done], lr=lrs[:done].copy())
    seconds = time.perf_counter() - t0 + (resume.seconds if resume is not None else 0.0)
    state = TrainState(loc=loc, scale=scale, history=hist, lr=sched.lr, decays_done=sched.decays_done,
                       events=list(sched.events), seconds=seconds)
    if resume is not None and done == start:  # stopped before a step: the old state is still the state
        state = resume
    elif at_boundary:
        state.params, state.optim, state.rng = _param_store_state(), _optim_state_to_numpy(optim), _rng_state()
    return FitResult(
        elbo=cfg.elbo,
        engine="svi",
        loc=np.asarray(loc, dtype=np.float64),
        scale=np.asarray(scale, dtype=np.float64),
        history=hist,
        steps=done,
        seconds=seconds,
        stop_reason=stop_reason,
        extra={"lr_final": sched.lr, "decays_done": sched.decays_done, "lr_events": sched.events},
        state=state,
    )


def _snapshot() -> tuple[np.ndarray, np.ndarray]:
    store = pyro.get_param_store()
    return store[LOC].detach().numpy().copy(), store[SCALE].detach().numpy().copy()


def _set_lr(optim: pyro.optim.PyroOptim, lr: float) -> None:
    for opt in optim.optim_objs.values():
        for group in opt.param_groups:
            group["lr"] = lr


def _last_finite(last: tuple[np.ndarray, np.ndarray] | None) -> str:
    if last is None:
        return "no step had finished yet"
    loc, scale = ([round(float(v), 4) for v in a] for a in last)
    return f"last finite values: loc={loc}, scale={scale}"


def _raise_nonfinite(step: int, loss: float, loglik: torch.Tensor | float, last) -> None:
    ll = float(loglik)
    term = "likelihood" if not math.isfinite(ll) else "KL"
    raise TrainingError(
        f"the ELBO became non-finite at step {step} (loss={loss}, log-likelihood={ll}); the {term} term failed; "
        f"{_last_finite(last)}. Try a smaller learning rate or prior scale, or check the inputs for extreme values."
    )


def _check_params(step: int, loss: float, loglik: torch.Tensor | float, snap: tuple[np.ndarray, np.ndarray], last) -> None:
    """Raise at once if the update of ``step`` left a non-finite loc or a scale that is not positive and finite."""
    loc, scale = snap
    bad_loc = ~np.isfinite(loc)
    bad_scale = ~(np.isfinite(scale) & (scale > 0))
    if not (bad_loc.any() or bad_scale.any()):
        return
    parts = []
    if bad_loc.any():
        parts.append(f"loc at coefficient(s) {np.nonzero(bad_loc)[0].tolist()} = {loc[bad_loc].tolist()}")
    if bad_scale.any():
        parts.append(f"scale at coefficient(s) {np.nonzero(bad_scale)[0].tolist()} = {scale[bad_scale].tolist()}")
    raise TrainingError(
        f"the parameters became non-finite in the update of step {step} ({'; '.join(parts)}) although the ELBO "
        f"was finite (loss={loss}, log-likelihood={float(loglik)}): the optimiser step overflowed; {_last_finite(last)}. "
        "Try a smaller learning rate."
    )


def _raise_invalid(step: int, exc: ValueError, last) -> None:
    text = str(exc)
    if "Expected parameter" not in text and "Expected value argument" not in text:
        raise exc
    term = "likelihood" if "Bernoulli" in text.split("\n", 1)[0] else "KL (guide or prior)"
    raise TrainingError(
        f"a non-finite or invalid value reached the {term} term at step {step} ({text.splitlines()[0][:200]}); "
        f"{_last_finite(last)}. Try a smaller learning rate or prior scale, or check the inputs for extreme values."
    ) from None


class _StopRequest:
    requested: bool = False


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[_StopRequest]:
    """Turn the first Ctrl-C into a request to stop after the running step.

    A ``KeyboardInterrupt`` raised inside ``svi.step`` could leave one parameter updated and the
    other not; deferring it keeps the saved state consistent. The first press restores the
    previous handler, so a second press interrupts at once. Installed only in the main thread
    and only over Python's default handler (elsewhere Ctrl-C arrives as an exception, as before).
    """
    req = _StopRequest()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield req
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        req.requested = True  # no logging here: the loop reports it at the step boundary
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield req
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    """Silence Pyro's "Encountered NaN/inf" warnings: every step is checked and reported as a TrainingError."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Encountered (NaN|[+-]?inf)", category=UserWarning)
        yield


def _param_store_state() -> dict[str, np.ndarray]:
    """Unconstrained parameter values (restoring these, not exp/log round trips, keeps resume exact)."""
    return {name: p.detach().numpy().copy() for name, p in pyro.get_param_store().named_parameters()}


def _restore_params(params: dict[str, np.ndarray]) -> None:
    if set(params) != set(PARAM_CONSTRAINTS):
        raise ModelFileError(f"checkpoint holds parameters {sorted(params)}, this guide has {sorted(PARAM_CONSTRAINTS)}; start a new run")
    pyro.get_param_store().set_state({
        "params": {n: torch.tensor(np.asarray(a), dtype=torch.float32).requires_grad_(True) for n, a in params.items()},
        "constraints": {n: PARAM_CONSTRAINTS[n] for n in params},
    })


def _optim_state_to_numpy(optim: pyro.optim.PyroOptim) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sd in optim.get_state().items():
        state = {
            int(i): {k: v.detach().numpy().copy() if torch.is_tensor(v) else np.asarray(v) for k, v in entries.items()}
            for i, entries in sd["state"].items()
        }
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
        out[name] = {"state": state, "param_groups": groups}
    return out


def _optim_state_to_torch(optim: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "state": {int(i): {k: torch.tensor(np.asarray(v)) for k, v in entries.items()} for i, entries in sd["state"].items()},
            "param_groups": [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in sd["param_groups"]],
        }
        for name, sd in optim.items()
    }


def _rng_state() -> dict[str, Any]:
    st = pyro.util.get_rng_state()
    return {"torch": st["torch"].numpy().copy(), "numpy": st["numpy"], "random": st["random"]}


def _set_rng_state(rng: dict[str, Any]) -> None:
    pyro.util.set_rng_state({
        "torch": torch.from_numpy(np.asarray(rng["torch"], dtype=np.uint8).copy()),
        "numpy": rng["numpy"],
        "random": rng["random"],
    })


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
