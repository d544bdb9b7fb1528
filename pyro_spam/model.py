"""The Pyro model: a logistic classifier whose logit is the course's polynomial (eq. 1).

``z = w0 + Σ_j w_j t_j`` with ``t_j`` the j-th standardised term (``x_j^j`` or ``x_j``),
``w ~ N(0, prior_scale² I)``, ``y ~ Bernoulli(logits=z)`` in a ``data`` plate.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from torch import Tensor

DATA_PLATE_DIM = -1


def logits(w: Tensor, x: Tensor) -> Tensor:
    """Logits for coefficient draws ``w`` of shape (..., K+1) and inputs ``x`` of shape (N, K).

    Returns shape (..., N). One matmul: no (..., N, K) intermediate.
    """
    assert w.shape[-1] == x.shape[-1] + 1, f"w has {w.shape[-1]} coefficients for {x.shape[-1]} terms"
    return w[..., :1] + w[..., 1:] @ x.T


def model(x: Tensor, y: Tensor | None = None, subsample: Tensor | None = None, prior_scale: float = 1.0) -> Tensor:
    """Pyro model over the K+1 coefficients.

    x : Tensor of shape (N, K)
        Model inputs (all N training rows).
    y : Tensor of shape (N,) or None
        Labels 0/1; None samples them.
    subsample : Tensor of int or None
        Row indices of the mini-batch; the plate scales the likelihood by N / len(subsample).
    prior_scale : float, default=1.0
    """
    # Plain ints, also under torch.jit.trace (where x.shape[0] would be traced): the plate's scale
    # N/B then stays a Python number, and Pyro skips multiplying the S×N log-likelihood by 1.0.
    n, k = len(x), x.shape[-1]
    b = n if subsample is None else len(subsample)
    w = pyro.sample("w", dist.Normal(x.new_zeros(k + 1), prior_scale).to_event(1))
    # Under vectorised particles w is (S, 1, K+1): the size-1 dim is the data plate's slot.
    # Drop it before the matmul, or the logits come out as (S, 1, N) and broadcast wrongly.
    w_flat = w.squeeze(DATA_PLATE_DIM - 1) if w.dim() > 1 else w
    with pyro.plate("data", n, subsample=subsample, subsample_size=b, dim=DATA_PLATE_DIM) as idx:
        xb = x if subsample is None else x[idx]  # the full batch needs no gather
        yb = y if y is None or subsample is None else y[idx]
        z = logits(w_flat, xb)
        return pyro.sample("y", dist.Bernoulli(logits=z), obs=yb)
