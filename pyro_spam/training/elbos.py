"""The ELBO estimators inside Pyro, each also returning the log-likelihood part of its estimate.

* ``trace``, ``meanfield``: Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` (plain recording
  subclasses, or the compiled ones of :mod:`pyro_spam.training.compiled`);
* ``stl``: ``Trace_ELBO`` whose guide log-density takes the guide's parameters as constants
  (sticking the landing: path-derivative gradient, same value);
* ``rqmc``: ``TraceMeanField_ELBO`` whose guide draws come from scrambled Sobol points;
* ``quad``: the exact quadrature ELBO (no particles);
* ``iwae``: ``RenyiELBO(alpha=0)`` made differentiable (the importance-weighted bound);
* ``score``: ``TraceGraph_ELBO`` with the guide's draws detached (``has_rsample`` off) and Pyro's
  decaying-average baseline (``baseline_beta`` 0.9).

:func:`make_elbo` hands them out; all offer ``loss_and_loglik(model, guide, *args, **kwargs)``. The
plain-torch twins of every estimator are in :mod:`pyro_spam.elbo_manual`, and
:mod:`pyro_spam.crosscheck` compares each pair with the same noise.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, RenyiELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent, LowRankMultivariateNormal, MultivariateNormal, Normal, kl_divergence, register_kl

from .. import elbo_manual as em
from ..errors import ConfigError
from .compiled import JitMeanFieldELBO, JitTraceELBO


def kl_gaussian_diag(q: MultivariateNormal | LowRankMultivariateNormal, p: Independent) -> torch.Tensor:
    """Closed-form ``KL(N(μ, Σ) ‖ N(m, diag(s²)))`` for the full and low-rank guides against the model's
    ``Normal(m, s).to_event(1)`` prior: ``½[Σ_j (Σ_jj + (μ_j − m_j)²)/s_j² − K − log|Σ| + Σ_j log s_j²]``.

    Registered with ``torch.distributions.register_kl`` so that ``TraceMeanField_ELBO`` (and ``rqmc``)
    use it: without a registered pair Pyro silently falls back to a Monte Carlo KL.
    """
    base = p.base_dist
    if not (isinstance(base, Normal) and p.reinterpreted_batch_ndims == 1):
        raise ConfigError(f"no closed-form KL from a {type(q).__name__} guide to a {type(p).__name__} prior")
    var_p = base.scale**2
    logdet_q = 2.0 * q.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    k = q.loc.shape[-1]
    return 0.5 * (((q.variance + (q.loc - base.loc) ** 2) / var_p).sum(-1) - k - logdet_q + var_p.log().sum(-1))


register_kl(MultivariateNormal, Independent)(kl_gaussian_diag)
register_kl(LowRankMultivariateNormal, Independent)(kl_gaussian_diag)


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
        if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
            loc, scale = q.base_dist.loc, q.base_dist.scale
        elif isinstance(q, (MultivariateNormal, LowRankMultivariateNormal)):
            loc, scale = q.loc, q.scale_tril
        else:
            raise ConfigError(f"the quad ELBO needs a Gaussian guide for w (got {type(q).__name__})")
        kl = kl_divergence(q, p).sum()
        x = args[0]
        subsample = args[2] if len(args) > 2 else kwargs.get("subsample")
        xb = x if subsample is None else x[subsample]
        yb = model_trace.nodes["y"]["value"]
        m, v = em.logit_moments(loc, scale, xb)
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


def _latent_guide_sites(guide_trace) -> list[dict[str, Any]]:
    return [site for site in guide_trace.nodes.values()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)]


def detach_params(fn: Any) -> Any:
    """The same Gaussian with its parameters cut from the autograd graph (Normal, MultivariateNormal,
    wrapped in ``Independent`` or not); anything else raises :class:`ConfigError`."""
    if isinstance(fn, Independent):
        return Independent(detach_params(fn.base_dist), fn.reinterpreted_batch_ndims)
    if isinstance(fn, Normal):
        return Normal(fn.loc.detach(), fn.scale.detach())
    if isinstance(fn, MultivariateNormal):
        return MultivariateNormal(fn.loc.detach(), scale_tril=fn.scale_tril.detach())
    if isinstance(fn, LowRankMultivariateNormal):
        return LowRankMultivariateNormal(fn.loc.detach(), fn.cov_factor.detach(), fn.cov_diag.detach())
    raise ConfigError(f"the stl ELBO needs a Gaussian guide (got {type(fn).__name__})")


class StlELBO(_RecordLoglik, Trace_ELBO):
    """Sticking the landing (Roeder, Wu & Duvenaud 2017) in Pyro's own ``Trace_ELBO``: after the guide
    is traced, each latent site's ``log q(w)`` is recomputed from a copy of its distribution whose
    parameters are detached, so ``w``'s dependence on loc/scale (the path) is the only gradient
    through ``log q``. Same ELBO value; lower gradient variance where q is close to the posterior."""

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        for site in _latent_guide_sites(guide_trace):
            unscaled = detach_params(site["fn"]).log_prob(site["value"])
            lp = scale_and_mask(unscaled, site["scale"], site["mask"])
            site["log_prob"] = lp
            site["unscaled_log_prob"] = unscaled
            site["log_prob_sum"] = lp.sum()
            site["score_parts"] = site["score_parts"]._replace(log_prob=lp, entropy_term=lp)
        return model_trace, guide_trace


class SobolNoise(Messenger):
    """Draw each Gaussian latent site as ``loc + L ε`` with ``ε`` scrambled-Sobol normal points
    (:func:`pyro_spam.elbo_manual.rqmc_normal`): one point per batch element (per particle under
    vectorised particles), reparameterised, so gradients flow to the guide's parameters as usual.
    One fresh scramble per call, seeded from the global torch generator."""

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if msg["is_observed"] or msg["value"] is not None or site_is_subsample(msg):
            return
        fn = msg["fn"]
        base = fn.base_dist if isinstance(fn, Independent) else fn
        shape = fn.batch_shape + fn.event_shape
        if isinstance(base, Normal) and fn.event_shape:
            n, dim = math.prod(fn.batch_shape), fn.event_shape.numel()
            eps = self._points(n, dim, base.loc.dtype).reshape(shape)
            msg["value"] = base.loc + base.scale * eps
        elif isinstance(base, (MultivariateNormal, LowRankMultivariateNormal)):
            n, dim = math.prod(fn.batch_shape), fn.event_shape[-1]
            eps = self._points(n, dim, base.loc.dtype).reshape(shape)
            msg["value"] = base.loc + (base.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
        else:
            raise ConfigError(f"the rqmc ELBO needs a Gaussian guide with a vector event (got {type(fn).__name__})")

    @staticmethod
    def _points(n: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
        seed = int(torch.randint(0, em.NOISE_SEED_HIGH, (1,)))
        return em.rqmc_normal(n, dim, seed, dtype)


class RqmcELBO(_RecordLoglik, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` (analytic KL) with the guide's draws from scrambled Sobol points
    (randomised quasi-Monte Carlo; Buchholz, Wenzel & Mandt 2018). Unbiased; for S a power of two the
    points are balanced and the estimate's variance falls faster than 1/S on smooth integrands.
    The Sobol messenger wraps the (vectorised) guide, so it sees each site already expanded to S particles."""

    def _get_trace(self, model, guide, args, kwargs):
        return super()._get_trace(model, SobolNoise()(guide), args, kwargs)


class IwaeELBO(RenyiELBO):
    """Pyro's ``RenyiELBO(alpha=0)``, the importance-weighted bound ``log 1/S Σ_s w_s`` (Burda, Grosse &
    Salakhutdinov 2016), with a differentiable loss (Pyro's class only offers ``loss_and_grads``):
    the gradient equals Pyro's surrogate for a reparameterised guide. A tighter bound than the ELBO
    with a different optimum (q widens towards the posterior's spread); S = 1 is ``Trace_ELBO``."""

    def __init__(self, num_particles: int = 2, **kwargs: Any) -> None:
        super().__init__(alpha=0, num_particles=num_particles, **kwargs)

    def loss_and_loglik(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """The differentiable loss (−bound) and the particle mean of the observed site's log-likelihood."""
        parts, logliks = [], []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            particle = 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    particle = particle + torch_sum(site["log_prob"], sum_dims)
            for site in guide_trace.nodes.values():
                if site["type"] == "sample":
                    particle = particle - torch_sum(site["log_prob"], sum_dims)
            parts.append(particle)
            logliks.append(model_trace.nodes["y"]["log_prob_sum"].detach())
        vectorized = self.vectorize_particles and self.num_particles > 1
        f = parts[0].reshape(-1) if vectorized else torch.stack(parts)
        bound = torch.logsumexp(f, dim=0) - math.log(self.num_particles)
        return -bound, sum(logliks) / self.num_particles

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return self.loss_and_loglik(model, guide, *args, **kwargs)[0]


SCORE_BASELINE_BETA = 0.9
"""Decay of the score estimator's baseline (Pyro's default ``baseline_beta``)."""


class NoReparam(Messenger):
    """Turn off reparameterised sampling of every latent site (``has_rsample_(False)``: draws are
    detached) and ask for Pyro's decaying-average baseline at each, as a score-function estimator needs."""

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if msg["is_observed"] or site_is_subsample(msg):
            return
        fn = msg["fn"]
        while isinstance(fn, Independent):  # Independent's has_rsample is its base's
            fn = fn.base_dist
        fn.has_rsample_(False)
        msg["infer"] = {**msg.get("infer", {}),
                        "baseline": {"use_decaying_avg_baseline": True, "baseline_beta": SCORE_BASELINE_BETA}}


class ScoreELBO(TraceGraph_ELBO):
    """The score-function (REINFORCE) estimator in Pyro's ``TraceGraph_ELBO``: the guide's draws are
    not reparameterised, so the gradient is ``1/S Σ_s (f_s − b_s) ∇ log q(w_s)`` with Pyro's decaying
    average baseline ``b`` (kept in the param store as ``__baseline_avg_downstream_cost_w``, one per
    particle slot). Unbiased, and orders of magnitude noisier than the reparameterised estimators:
    here to teach why reparameterisation matters."""

    def _get_trace(self, model, guide, args, kwargs):
        return super()._get_trace(model, NoReparam()(guide), args, kwargs)

    def loss_and_loglik(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """The differentiable loss (value −ELBO, gradient of the surrogate) and the log-likelihood part."""
        loss, surrogate, loglik = 0.0, 0.0, 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            lp, slp = self._loss_and_surrogate_loss_particle(model_trace, guide_trace)
            loss, surrogate = loss + lp, surrogate + slp
            loglik = loglik + model_trace.nodes["y"]["log_prob_sum"].detach()
        loss, surrogate = -loss / self.num_particles, surrogate / self.num_particles  # Pyro's "loss" here is the ELBO
        return loss.detach() + (surrogate - surrogate.detach()), loglik / self.num_particles

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return self.loss_and_loglik(model, guide, *args, **kwargs)[0]


ELBO_CLASSES = {
    "trace": RecordingTraceELBO, "meanfield": RecordingMeanFieldELBO, "stl": StlELBO, "rqmc": RqmcELBO,
    "quad": QuadratureELBO, "iwae": IwaeELBO, "score": ScoreELBO,
}
JIT_ELBO_CLASSES = {**ELBO_CLASSES, "trace": JitTraceELBO, "meanfield": JitMeanFieldELBO}
"""Only Pyro's two ELBOs are compiled. The quad ELBO is one B × nodes array (Pyro's overhead is the
guide trace); the other estimators run plain (``jit`` does not apply to them)."""


def make_elbo(kind: str, particles: int, *, jit: bool = False) -> Trace_ELBO:
    """The Pyro ELBO object for ``kind`` with S vectorised particles (``trace``/``meanfield`` compiled once if ``jit``).

    Both kinds of object offer ``loss_and_loglik(model, guide, *args, **kwargs)``.
    """
    classes = JIT_ELBO_CLASSES if jit else ELBO_CLASSES
    try:
        cls = classes[kind]
    except KeyError:
        raise ConfigError(f"elbo must be one of: {', '.join(ELBO_CLASSES)} (got {kind!r})") from None
    extra = {"ignore_jit_warnings": True} if cls in (JitTraceELBO, JitMeanFieldELBO) else {}
    return cls(num_particles=particles, vectorize_particles=True, max_plate_nesting=1, **extra)
