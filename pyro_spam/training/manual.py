"""The manual training engine: Adam over the hand-written ELBO (:mod:`pyro_spam.elbo_manual`), no Pyro.

Same contract as :func:`pyro_spam.training.svi.fit_svi` (arguments, :class:`FitResult`, history on the
full-data scale, the stop rule, Ctrl-C and non-finite handling), and built to behave
like it step for step:

* the guide scale is ``exp(u)`` of an unconstrained ``u`` (Pyro's transform for
  ``constraints.positive``), so Adam sees the same parameterisation;
* the package's Adam (:mod:`.optim`, ``torch.optim.Adam``'s numbers) with the same settings as ``fit_svi``
  (``cfg.lr``, ``cfg.adam_beta1``, ``cfg.adam_beta2``), loss = −ELBO, the ELBO recorded before each update;
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

``cfg.elbo`` picks the estimator (see :func:`elbo_manual.elbo`); ``rqmc`` draws scrambled Sobol
points seeded from the noise generator (as Pyro's RQMC ELBO seeds from the global one), ``score``
keeps Pyro's decaying-average baseline per particle slot (β = 0.9, starting at 0).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from .. import elbo_manual as em
from ..config import TrainConfig
from ..errors import ConfigError
from ..types import ElboHistory, FitResult, TrainState
from .guards import Params, raise_nonfinite
from .loop import batch_stream, check_batch_size, fit_result, run_steps, train_state
from .optim import Adam
from .stopping import stop_rule_for

SCORE_BASELINE_BETA = 0.9
"""As :data:`pyro_spam.training.elbos.SCORE_BASELINE_BETA` (Pyro's default; this engine imports no Pyro)."""

__all__ = ["fit_manual"]


class ManualStepper:
    """One Adam step on the hand-written ELBO; noise drawn as an (S, 1, K+1) block, as SVI draws it."""

    def __init__(self, cfg: TrainConfig, x: Tensor, y: Tensor, loc: Tensor, log_scale: Tensor, lr: float,
                 noise: torch.Generator) -> None:
        self.cfg, self.x, self.y, self.noise = cfg, x, y, noise
        self.loc, self.log_scale = loc.requires_grad_(True), log_scale.requires_grad_(True)
        self.opt = Adam([self.loc, self.log_scale], lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
        n = x.shape[0]

        def neg_elbo(loc_: Tensor, log_scale_: Tensor, eps: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, em.ElboParts]:
            parts = em.elbo(cfg.elbo, loc_, torch.exp(log_scale_), eps, xb, yb, n_total=n, prior_scale=cfg.prior_scale)
            return -parts.elbo, em.ElboParts(*(p.detach() for p in parts))

        def neg_elbo_score(loc_: Tensor, log_scale_: Tensor, eps: Tensor, xb: Tensor, yb: Tensor,
                           b: Tensor) -> tuple[Tensor, tuple[em.ElboParts, Tensor]]:
            parts, f = em.score_parts(loc_, torch.exp(log_scale_), eps, xb, yb, n_total=n, prior_scale=cfg.prior_scale, baseline=b)
            return -parts.elbo, (em.ElboParts(*(p.detach() for p in parts)), f)

        self.grad_fn = em.grad_with_aux(neg_elbo_score if cfg.elbo == "score" else neg_elbo)
        self.baseline = torch.zeros(cfg.particles)

    def step(self, step: int, idx: Tensor | None, last: Params | None) -> tuple[float, float]:
        xb, yb = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        k1 = self.loc.shape[0]
        if self.cfg.elbo == "rqmc":
            eps = em.draw_noise("rqmc", self.cfg.particles, k1, self.noise)
        else:
            eps = torch.randn((self.cfg.particles, 1, k1), generator=self.noise).reshape(self.cfg.particles, k1)
        loc, log_scale = self.loc.detach(), self.log_scale.detach()
        if self.cfg.elbo == "score":
            (g_loc, g_log_scale), (parts, f) = self.grad_fn(loc, log_scale, eps, xb, yb, self.baseline)
            self.baseline = (1.0 - SCORE_BASELINE_BETA) * f + SCORE_BASELINE_BETA * self.baseline
        else:
            (g_loc, g_log_scale), parts = self.grad_fn(loc, log_scale, eps, xb, yb)
        ll, kl = float(parts.loglik), float(parts.kl)
        if not (math.isfinite(ll) and math.isfinite(kl)):  # checked before the update is applied
            raise_nonfinite(step, kl - ll, ll, last)
        self.loc.grad, self.log_scale.grad = g_loc, g_log_scale
        self.opt.step()
        return ll - kl, ll

    def params(self) -> Params:
        return self.loc.detach().numpy().copy(), torch.exp(self.log_scale.detach()).numpy().copy()

    def raw(self) -> None:
        return None  # mean-field only: (loc, scale) are the guide

    def from_raw(self, raw: np.ndarray) -> Params:
        raise NotImplementedError("the manual engine fits the mean-field guide only")

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr


def fit_manual(
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    *,
    progress: bool = False,
    resume: TrainState | None = None,
) -> FitResult:
    """Fit q(w) to the training inputs ``x`` (N, K) and labels ``y`` (N,) with the manual ELBO.

    Stops when the stop rule (:mod:`.stopping`) says converged, at ``cfg.max_steps`` (``"budget"``) or on Ctrl-C
    (``stop_reason="interrupted"``, keeping the last completed step's parameters). A non-finite
    ELBO raises :class:`TrainingError` naming the step and the term that failed, before the
    offending update is applied.
    """
    t0 = time.perf_counter()
    n, k = x.shape
    check_batch_size(cfg, n)
    if cfg.elbo not in em.ELBO_KINDS:
        raise ConfigError(f"elbo must be one of: {', '.join(em.ELBO_KINDS)} (got {cfg.elbo!r})")
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    if xt.dim() != 2 or yt.shape != (n,):
        raise ConfigError(f"x (N, K) and y (N,) expected, got {tuple(xt.shape)}, {tuple(yt.shape)}")
    k1 = k + 1
    rule = stop_rule_for(cfg, resume)
    prev_hist: ElboHistory | None = None
    if resume is not None:
        loc0 = torch.as_tensor(resume.loc, dtype=torch.float32).clone()
        scale0 = torch.as_tensor(resume.scale, dtype=torch.float32).clone()
        prev_hist = resume.history
    else:
        loc0 = torch.zeros(k1)
        scale0 = torch.full((k1,), cfg.init_scale)
    if loc0.shape != (k1,) or scale0.shape != (k1,):
        raise ConfigError(f"the resume state's loc/scale must have {k1} entries")
    start = len(prev_hist) if prev_hist is not None else 0
    noise = torch.Generator().manual_seed(cfg.seed + start)  # as fit_svi: do not replay the first steps' noise
    stepper = ManualStepper(cfg, xt, yt, loc0, torch.log(scale0), rule.lr, noise)
    batches = batch_stream(n, cfg, start)
    out = run_steps(stepper, rule, batches, total=cfg.max_steps, previous=prev_hist, progress=progress,
                    desc=f"manual {cfg.elbo}")
    seconds = time.perf_counter() - t0 + (resume.seconds if resume is not None else 0.0)
    state = resume if resume is not None and out.steps == start else train_state(out, rule, resume, seconds)
    return fit_result(cfg, "manual", out, rule, resume, seconds, state)  # no optimiser/RNG state: resumes closely, not exactly
