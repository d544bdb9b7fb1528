"""Linear-response covariance of a mean-field fit (LRVB; Giordano, Broderick & Jordan, JMLR 2018).

Mean-field VI gets the posterior means right but, for correlated coefficients, the marginal sds
too small (here the bias and x1, ρ ≈ −0.77). Linear response recovers the covariance from the
same optimum: perturb the log joint by ``tᵀw``; the exact posterior's mean then moves by
``d E_p[w] / dt = Cov_p(w)``, and the mean-field optimum's mean ``loc*`` by

    d loc* / dt = −[H⁻¹]_{loc, loc},

where ``H`` is the Hessian of the ELBO w.r.t. the variational parameters ``(loc, log scale)``
at the optimum (the perturbation adds ``tᵀ loc`` to the ELBO, so it acts on the loc block only).
``Σ_LR = −[H⁻¹]_{loc,loc}`` is the linear-response estimate of ``Cov_p(w)``. The Hessian is
exact: the ELBO is the deterministic quadrature ELBO (:func:`pyro_spam.elbo_manual.elbo_quad`) and
``torch.autograd.functional.hessian`` differentiates it twice (2(K+1) ≤ 32 parameters: ~70 ms
on the default data; ``torch.func.hessian`` gives the same but imports ``torch._dynamo``, 1.1 s). It is
only meaningful at the optimum, so fit with ``optimizer="lbfgs"`` first (an Adam fit sits
within its Monte Carlo error of it; :func:`lr_covariance` reports the gradient norm it saw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.autograd.functional import hessian

from . import elbo_manual as em

__all__ = ["LinearResponse", "lr_covariance"]


@dataclass(frozen=True)
class LinearResponse:
    """The linear-response correction of one mean-field fit.

    loc : ndarray of shape (K+1,)
        The mean-field means (LRVB keeps them).
    cov : ndarray of shape (K+1, K+1)
        ``Σ_LR``, symmetric positive definite.
    scale : ndarray of shape (K+1,)
        Its marginal sds, ``sqrt(diag(cov))``.
    grad_max : float
        Largest ELBO-gradient component at the point used (≈ 0 at the optimum).
    """

    loc: np.ndarray
    cov: np.ndarray
    scale: np.ndarray
    grad_max: float


def lr_covariance(x: np.ndarray, y: np.ndarray, loc: np.ndarray, scale: np.ndarray, prior_scale: float = 1.0,
                  *, n_nodes: int = em.QUAD_NODES) -> LinearResponse:
    """``Σ_LR = −[H⁻¹]_{loc,loc}`` at the mean-field guide ``(loc, scale)`` for inputs ``x`` (N, K), ``y`` (N,).

    Raises :class:`ValueError` if the Hessian is not negative definite (not at a maximum).
    """
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    k1 = xt.shape[1] + 1
    loc = np.asarray(loc, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if loc.shape != (k1,) or scale.shape != (k1,):
        raise ValueError(f"loc and scale must have {k1} entries for {k1 - 1} terms (got {loc.shape}, {scale.shape})")
    rule = em.gauss_hermite(n_nodes, torch.float64)

    def elbo(theta: torch.Tensor) -> torch.Tensor:
        return em.elbo_quad(theta[:k1], torch.exp(theta[k1:]), None, xt, yt, prior_scale=prior_scale, rule=rule).elbo

    theta = torch.as_tensor(np.concatenate([loc, np.log(scale)]), dtype=torch.float64)
    h = hessian(elbo, theta).numpy()
    th = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(elbo(th), th)
    g = g.numpy()
    h = 0.5 * (h + h.T)
    eig = np.linalg.eigvalsh(h)
    if not np.all(eig < 0):
        raise ValueError(f"the ELBO's Hessian is not negative definite at this guide (largest eigenvalue {eig.max():.3g}): "
                         "not an optimum; fit with optimizer='lbfgs' first")
    cov = -np.linalg.inv(h)[:k1, :k1]
    cov = 0.5 * (cov + cov.T)
    return LinearResponse(loc=loc.copy(), cov=cov, scale=np.sqrt(np.diag(cov)), grad_max=float(np.max(np.abs(g))))
