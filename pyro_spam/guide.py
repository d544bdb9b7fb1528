"""The hand-written Gaussian guides q(w), sites in the model's order.

* ``meanfield`` (the course's): ``N(loc, diag(scale²))``, params ``w_loc``, ``w_scale`` (positive);
* ``fullrank``: ``MultivariateNormal(loc, scale_tril=L)``, params ``w_loc``, ``w_scale_tril``
  (lower triangular with a positive diagonal: Pyro's ``lower_cholesky`` constraint);
* ``lowrank``: ``LowRankMultivariateNormal(loc, cov_factor=F, cov_diag=d)``, covariance
  ``F Fᵀ + diag(d)`` with F of shape (K+1, rank), params ``w_loc``, ``w_cov_factor``, ``w_cov_diag``.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import constraints

LOC = "w_loc"
SCALE = "w_scale"
SCALE_TRIL = "w_scale_tril"
COV_FACTOR = "w_cov_factor"
COV_DIAG = "w_cov_diag"

PARAM_NAMES = {"meanfield": (LOC, SCALE), "fullrank": (LOC, SCALE_TRIL), "lowrank": (LOC, COV_FACTOR, COV_DIAG)}
"""The Pyro parameters of each guide, in the order :func:`raw_vector` flattens them."""
PARAM_CONSTRAINTS = {LOC: constraints.real, SCALE: constraints.positive, SCALE_TRIL: constraints.lower_cholesky,
                     COV_FACTOR: constraints.real, COV_DIAG: constraints.positive}
LOWRANK_INIT = 0.01
"""Initial size of the low-rank factor's entries (F = 0 is a saddle: its gradient vanishes there)."""


def make_guide(init_scale: float = 0.1, init_loc: Tensor | None = None, init_scale_vec: Tensor | None = None, *,
               kind: str = "meanfield", rank: int = 1, init_scale_tril: Tensor | None = None,
               init_cov_factor: Tensor | None = None):
    """Build a guide of family ``kind``. Initial loc is 0 (the prior mean) unless given; the initial
    covariance is ``diag(init_scale²)``, or ``diag(init_scale_vec²)``, or ``init_scale_tril``'s
    (full rank; low rank: ``init_cov_factor`` (else a small one) plus the diagonal that completes
    the marginal variances).

    A small initial scale keeps early gradient noise low; the optimiser widens it where the
    data are uninformative.
    """
    if kind not in PARAM_NAMES:
        raise ValueError(f"guide must be one of: {', '.join(PARAM_NAMES)} (got {kind!r})")

    def scales(x: Tensor, k1: int) -> Tensor:
        if init_scale_vec is not None:
            return init_scale_vec.clone()
        if init_scale_tril is not None:
            return init_scale_tril.pow(2).sum(-1).sqrt()
        return x.new_full((k1,), init_scale)

    def guide(x: Tensor, y: Tensor | None = None, subsample: Tensor | None = None, prior_scale: float = 1.0) -> Tensor:
        k1 = x.shape[-1] + 1
        loc = pyro.param(LOC, lambda: init_loc.clone() if init_loc is not None else x.new_zeros(k1))
        if kind == "meanfield":
            scale = pyro.param(SCALE, lambda: scales(x, k1), constraint=constraints.positive)
            return pyro.sample("w", dist.Normal(loc, scale).to_event(1))
        if kind == "fullrank":
            tril = pyro.param(SCALE_TRIL, lambda: init_scale_tril.clone() if init_scale_tril is not None else torch.diag(scales(x, k1)),
                              constraint=constraints.lower_cholesky)
            return pyro.sample("w", dist.MultivariateNormal(loc, scale_tril=tril))
        factor = pyro.param(COV_FACTOR, lambda: init_cov_factor.clone() if init_cov_factor is not None
                            else LOWRANK_INIT * torch.eye(k1, rank, dtype=x.dtype))
        diag = pyro.param(COV_DIAG, lambda: (scales(x, k1) ** 2 - factor.detach().pow(2).sum(-1)).clamp(min=1e-4 * scales(x, k1) ** 2),
                          constraint=constraints.positive)
        return pyro.sample("w", dist.LowRankMultivariateNormal(loc, cov_factor=factor, cov_diag=diag))

    return guide


guide = make_guide()


def guide_params(kind: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(loc, marginal sds, scale_tril or None)`` of the guide in Pyro's param store (detached)."""
    store = pyro.get_param_store()
    loc = store[LOC].detach()
    if kind == "meanfield":
        return loc, store[SCALE].detach(), None
    if kind == "fullrank":
        tril = store[SCALE_TRIL].detach()
    else:
        f, d = store[COV_FACTOR].detach(), store[COV_DIAG].detach()
        tril = torch.linalg.cholesky(f @ f.T + torch.diag(d))
    return loc, tril.pow(2).sum(-1).sqrt(), tril


def raw_vector(kind: str) -> Tensor:
    """The guide's unconstrained parameters (what the optimiser moves), flattened in
    :data:`PARAM_NAMES` order: the coordinates the iterate average is taken in."""
    store = pyro.get_param_store()
    return torch.cat([store[n].unconstrained().detach().reshape(-1) for n in PARAM_NAMES[kind]])


def from_raw_vector(kind: str, raw: Tensor, k1: int, rank: int = 1) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(loc, marginal sds, scale_tril or None)`` of the guide whose unconstrained parameters are ``raw``
    (e.g. an iterate average from :func:`raw_vector`)."""
    loc = raw[:k1]
    rest = raw[k1:]
    if kind == "meanfield":
        scale = torch.distributions.transform_to(constraints.positive)(rest)
        return loc, scale, None
    if kind == "fullrank":
        tril = torch.distributions.transform_to(constraints.lower_cholesky)(rest.reshape(k1, k1))
    else:
        f = rest[: k1 * rank].reshape(k1, rank)
        d = torch.distributions.transform_to(constraints.positive)(rest[k1 * rank :])
        tril = torch.linalg.cholesky(f @ f.T + torch.diag(d))
    return loc, tril.pow(2).sum(-1).sqrt(), tril


def laplace_init(loc: np.ndarray, cov: np.ndarray, kind: str, rank: int = 1) -> dict[str, Tensor]:
    """:func:`make_guide` arguments that start a ``kind`` guide at the Gaussian ``N(loc, cov)`` (e.g. the
    Laplace approximation): its Cholesky factor (full rank), or the top-``rank`` eigen-directions of
    ``cov`` as the factor with the diagonal completing the marginal variances (low rank)."""
    out = {"init_loc": torch.as_tensor(loc, dtype=torch.float32)}
    if kind == "fullrank":
        out["init_scale_tril"] = torch.as_tensor(np.linalg.cholesky(cov), dtype=torch.float32)
    elif kind == "lowrank":
        val, vec = np.linalg.eigh(cov)
        top = np.argsort(val)[::-1][:rank]
        factor = vec[:, top] * np.sqrt(0.9 * val[top])  # 0.9: leave the diagonal room in every direction
        out["init_cov_factor"] = torch.as_tensor(factor, dtype=torch.float32)
        out["init_scale_vec"] = torch.as_tensor(np.sqrt(np.diag(cov)), dtype=torch.float32)
    else:
        out["init_scale_vec"] = torch.as_tensor(np.sqrt(np.diag(cov)), dtype=torch.float32)
    return out
