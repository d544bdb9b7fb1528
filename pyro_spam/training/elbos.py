"""Pyro's two ELBOs and the exact quadrature ELBO, each also returning the log-likelihood part of its estimate.

``make_elbo`` hands out the plain recording subclasses or the compiled ones of
:mod:`pyro_spam.training.compiled`; all offer ``loss_and_loglik(model, guide, *args, **kwargs)``.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import Independent, Normal, kl_divergence

from .. import elbo_manual as em
from ..errors import ConfigError
from .compiled import JitMeanFieldELBO, JitTraceELBO


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
        :mod:`pyro_spam.training.compiled`'s compiled ELBOs)."""
        self._loglik = 0.0
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        return loss, self._loglik / self.num_particles


class RecordingTraceELBO(_RecordLoglik, Trace_ELBO):
    """``Trace_ELBO`` (Monte Carlo KL) that records the log-likelihood part."""


class RecordingMeanFieldELBO(_RecordLoglik, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` (analytic KL) that records the log-likelihood part."""


class QuadratureELBO(ELBO):
    """The exact ELBO of a Gaussian guide inside Pyro: KL(q‖p) in closed form from the guide's and
    the model's ``w`` sites (``torch.distributions.kl_divergence``; an unregistered pair raises
    rather than falling back to Monte Carlo), and the expected log-likelihood by Gauss–Hermite
    quadrature of each message's normal logit (:func:`pyro_spam.elbo_manual.quad_log_lik`), on
    the mini-batch the ``subsample`` argument names, scaled by N/B. No particles: the estimate is
    deterministic given the batch. Specific to this package's model (logit linear in ``w``).
    """

    def __init__(self, num_particles: int = 1, **kwargs: object) -> None:
        kwargs.pop("vectorize_particles", None)
        super().__init__(num_particles=1, **kwargs)

    def loss_and_loglik(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """The differentiable loss (−ELBO) and its expected log-likelihood part."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        q, p = guide_trace.nodes["w"]["fn"], model_trace.nodes["w"]["fn"]
        if not (isinstance(q, Independent) and isinstance(q.base_dist, Normal)):
            raise ConfigError(f"the quad ELBO needs a Normal guide for w (got {type(q).__name__})")
        kl = kl_divergence(q, p).sum()
        x = args[0]
        subsample = args[2] if len(args) > 2 else kwargs.get("subsample")
        xb = x if subsample is None else x[subsample]
        yb = model_trace.nodes["y"]["value"]
        m, v = em.logit_moments(q.base_dist.loc, q.base_dist.scale, xb)
        ll = em.quad_log_lik(m, v, yb.to(m.dtype), n_total=len(x))
        return kl - ll, ll.detach()

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("the quad ELBO draws no particles")

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return self.loss_and_loglik(model, guide, *args, **kwargs)[0]

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.loss_and_loglik(model, guide, *args, **kwargs)[0])

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


ELBO_CLASSES = {"trace": RecordingTraceELBO, "meanfield": RecordingMeanFieldELBO, "quad": QuadratureELBO}
JIT_ELBO_CLASSES = {"trace": JitTraceELBO, "meanfield": JitMeanFieldELBO, "quad": QuadratureELBO}
"""The quad ELBO is not compiled: one evaluation is a B × nodes array, Pyro's overhead is the guide trace."""


def make_elbo(kind: str, particles: int, *, jit: bool = False) -> Trace_ELBO:
    """The Pyro ELBO object for ``kind`` with S vectorised particles (compiled once if ``jit``).

    Both kinds of object offer ``loss_and_loglik(model, guide, *args, **kwargs)``.
    """
    classes = JIT_ELBO_CLASSES if jit else ELBO_CLASSES
    try:
        cls = classes[kind]
    except KeyError:
        raise ConfigError(f"elbo must be one of: {', '.join(ELBO_CLASSES)} (got {kind!r})") from None
    extra = {"ignore_jit_warnings": True} if jit and cls is not QuadratureELBO else {}
    return cls(num_particles=particles, vectorize_particles=True, max_plate_nesting=1, **extra)
