"""Pyro's two ELBOs, each also returning the log-likelihood part of its estimate.

``make_elbo`` hands out the plain recording subclasses or the compiled ones of
:mod:`pyro_spam.training.compiled`; both offer ``loss_and_loglik(model, guide, *args, **kwargs)``.
"""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

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
