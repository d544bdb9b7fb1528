"""The manual training engine: Adam over the hand-written ELBO (:mod:`pyro_spam.elbo_manual`), no Pyro.

Same contract as :func:`pyro_spam.train.fit_svi` (arguments, :class:`FitResult`, history on the
full-data scale, :class:`PlateauSchedule`, Ctrl-C and non-finite handling), and built to behave
like it step for step:

* the guide scale is ``exp(u)`` of an unconstrained ``u`` (Pyro's transform for
  ``constraints.positive``), so Adam sees the same parameterisation;
* ``torch.optim.Adam`` with the same settings as ``fit_svi`` (``cfg.lr``, ``cfg.adam_beta2``), loss = −ELBO, the ELBO recorded before each update;
* the noise comes from a private generator seeded with ``cfg.seed`` and is drawn as an (S, 1, K+1)
  block per step, which is the exact stream SVI draws from the global generator after
  ``pyro.set_rng_seed(cfg.seed)``; mini-batches come from a second generator seeded with
  ``cfg.seed``, as in ``fit_svi``. So with the same config both engines see the same noise and
  the same batches, and differ only by float32 rounding.
* resuming works like ``fit_svi``'s non-exact resume: start from the saved loc/scale, schedule
  and history with a fresh Adam, noise reseeded with ``cfg.seed + steps done`` (so the first
  steps' noise is not replayed) and the batch stream replayed to the step reached. The engine
  records no optimiser/RNG state, so ``FitResult.state`` is None (the checkpoint builds the
  resume state from loc, scale, history and ``extra``).

``cfg.elbo`` picks the variant: ``"trace"`` → Monte Carlo KL inside the expectation,
``"meanfield"`` → analytic KL (see :func:`elbo_manual.elbo`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.func import grad
from tqdm.auto import tqdm

from . import elbo_manual as em
from .config import TrainConfig
from .errors import ConfigError, TrainingError
from .batching import minibatches
from .schedule import PlateauSchedule
from .types import ElboHistory, FitResult

if TYPE_CHECKING:  # only for annotations: resume states are read by attribute
    from .checkpoint import TrainState

log = logging.getLogger(__name__)

__all__ = ["fit_manual"]


def fit_manual(
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    *,
    progress: bool = False,
    resume: "TrainState | None" = None,
) -> FitResult:
    """Fit q(w) to the training inputs ``x`` (N, K) and labels ``y`` (N,) with the manual ELBO.

    Stops at convergence (see :class:`PlateauSchedule`), at ``cfg.max_steps`` or on Ctrl-C
    (``stop_reason="interrupted"``, keeping the last completed step's parameters). A non-finite
    ELBO raises :class:`TrainingError` naming the step and the term that failed, before the
    offending update is applied.
    """
    t0 = time.perf_counter()
    n, k = x.shape
    if cfg.batch_size is not None and cfg.batch_size > n:
        raise ConfigError(
            f"batch size {cfg.batch_size} exceeds the {n} training messages; "
            f"pass --batch-size {n} or less, or 'full'"
        )
    if cfg.elbo not in em.ELBO_KINDS:
        raise ConfigError(f"elbo must be one of: {', '.join(em.ELBO_KINDS)} (got {cfg.elbo!r})")
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    assert xt.dim() == 2 and yt.shape == (n,), f"x (N, K) and y (N,) expected, got {tuple(xt.shape)}, {tuple(yt.shape)}"
    k1 = k + 1

    sched = PlateauSchedule(lr=cfg.lr, window=cfg.window, tol=cfg.tol, decays=cfg.lr_decays)
    prev_hist: ElboHistory | None = None
    if resume is not None:
        loc0 = torch.as_tensor(resume.loc, dtype=torch.float32).clone()
        scale0 = torch.as_tensor(resume.scale, dtype=torch.float32).clone()
        prev_hist = resume.history
        sched.lr, sched.decays_done = resume.lr, resume.decays_done
        sched.events = list(getattr(resume, "events", []))
    else:
        loc0 = torch.zeros(k1)
        scale0 = torch.full((k1,), cfg.init_scale)
    assert loc0.shape == scale0.shape == (k1,), f"loc/scale must have {k1} entries"
    loc = loc0.requires_grad_(True)
    log_scale = torch.log(scale0).requires_grad_(True)
    opt = torch.optim.Adam([loc, log_scale], lr=sched.lr, betas=(0.9, cfg.adam_beta2))  # as fit_svi
    start = len(prev_hist) if prev_hist is not None else 0
    noise_gen = torch.Generator().manual_seed(cfg.seed + start)  # as fit_svi: do not replay the first steps' noise
    batches = minibatches(n, cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    for _ in range(start):  # the batch stream is a function of (seed, step): replay it to where we stopped
        next(batches)

    def neg_elbo(loc_: Tensor, log_scale_: Tensor, eps: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, em.ElboParts]:
        parts = em.elbo(cfg.elbo, loc_, torch.exp(log_scale_), eps, xb, yb, n_total=n, prior_scale=cfg.prior_scale)
        return -parts.elbo, em.ElboParts(*(p.detach() for p in parts))

    grad_fn = grad(neg_elbo, argnums=(0, 1), has_aux=True)

    total = cfg.max_steps
    lls = np.empty(total, dtype=np.float64)
    kls = np.empty(total, dtype=np.float64)
    lrs = np.empty(total, dtype=np.float64)
    elbos = np.empty(total, dtype=np.float64)
    if prev_hist is not None:
        lls[:start], kls[:start], lrs[:start], elbos[:start] = prev_hist.loglik, prev_hist.kl, prev_hist.lr, prev_hist.elbo
    last: tuple[np.ndarray, np.ndarray] | None = None
    stop_reason = "max_steps"
    done = start
    bar = tqdm(total=total, initial=start, desc=f"manual {cfg.elbo}", disable=not progress, leave=False, unit="step")
    try:
        for step in range(start, total):
            idx = next(batches)
            xb, yb = (xt, yt) if idx is None else (xt[idx], yt[idx])
            eps = torch.randn((cfg.particles, 1, k1), generator=noise_gen).reshape(cfg.particles, k1)
            (g_loc, g_log_scale), parts = grad_fn(loc.detach(), log_scale.detach(), eps, xb, yb)
            ll, kl = float(parts.loglik), float(parts.kl)
            if not (math.isfinite(ll) and math.isfinite(kl)):
                _raise_nonfinite(step, ll, kl, last)
            loc.grad, log_scale.grad = g_loc, g_log_scale
            opt.step()
            lls[step], kls[step], lrs[step] = ll, kl, sched.lr
            elbos[step] = ll - kl
            snap = (loc.detach().numpy().copy(), torch.exp(log_scale.detach()).numpy().copy())
            _check_params(step, snap, last)
            last = snap
            done = step + 1
            bar.update(1)
            verdict = sched.update(step, elbos)
            if verdict == "decay":
                for group in opt.param_groups:
                    group["lr"] = sched.lr
            elif verdict == "converged":
                stop_reason = "converged"
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted"
        log.warning("training interrupted at step %d; keeping the last completed step", done)
    finally:
        bar.close()
    if last is None and resume is None:
        raise TrainingError("training was interrupted before the first step finished")
    loc_np, scale_np = last if last is not None else (np.asarray(resume.loc), np.asarray(resume.scale))
    hist = ElboHistory(elbo=elbos[:done].copy(), loglik=lls[:done].copy(), kl=kls[:done].copy(), lr=lrs[:done].copy())
    return FitResult(
        elbo=cfg.elbo,
        engine="manual",
        loc=np.asarray(loc_np, dtype=np.float64),
        scale=np.asarray(scale_np, dtype=np.float64),
        history=hist,
        steps=done,
        seconds=time.perf_counter() - t0 + float(getattr(resume, "seconds", 0.0) if resume is not None else 0.0),
        stop_reason=stop_reason,
        extra={"lr_final": sched.lr, "decays_done": sched.decays_done, "lr_events": sched.events},
    )


def _check_params(step: int, snap: tuple[np.ndarray, np.ndarray], last: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Raise :class:`TrainingError` if the update at ``step`` left a non-finite or zero scale or loc."""
    for name, arr in (("loc", snap[0]), ("scale", snap[1])):
        bad = ~np.isfinite(arr) if name == "loc" else ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            raise TrainingError(
                f"the update at step {step} made {name}[{int(np.flatnonzero(bad)[0])}] = {arr[bad][0]}; "
                f"{_last_finite(last)}. Try a smaller learning rate or prior scale."
            )


def _last_finite(last: tuple[np.ndarray, np.ndarray] | None) -> str:
    if last is None:
        return "no finite step yet"
    return f"last finite loc={np.round(last[0], 4).tolist()}, scale={np.round(last[1], 4).tolist()}"


def _raise_nonfinite(step: int, loglik: float, kl: float, last: tuple[np.ndarray, np.ndarray] | None) -> None:
    term = "likelihood" if not math.isfinite(loglik) else "KL"
    raise TrainingError(
        f"the ELBO became non-finite at step {step} (loglik={loglik}, kl={kl}); the {term} term failed; {_last_finite(last)}. "
        "Try a smaller learning rate or prior scale."
    )
