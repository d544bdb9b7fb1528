"""Posterior draws from a fitted guide and the posterior predictive they imply."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model import logits
from .types import Draws


def draw_weights(loc: np.ndarray, scale: np.ndarray, n_draws: int, seed: int, scale_tril: np.ndarray | None = None) -> np.ndarray:
    """``n_draws`` draws of w ~ N(loc, diag(scale²)), or N(loc, L Lᵀ) with ``scale_tril`` L (full and
    low-rank guides), shape (n_draws, K+1), float64. Same seed, same ε: the two forms agree for a diagonal L."""
    gen = torch.Generator().manual_seed(int(seed))
    eps = torch.randn((n_draws, loc.shape[0]), generator=gen, dtype=torch.float64)
    loc_t = torch.as_tensor(loc, dtype=torch.float64)
    if scale_tril is not None:
        return (loc_t + eps @ torch.as_tensor(scale_tril, dtype=torch.float64).T).numpy()
    return (loc_t + torch.as_tensor(scale, dtype=torch.float64) * eps).numpy()


def predict_draws(w: np.ndarray, x: np.ndarray, y: np.ndarray | None = None) -> Draws:
    """Logits (and pointwise log-likelihoods when ``y`` is given) for draws ``w`` on inputs ``x``."""
    wt = torch.as_tensor(w, dtype=torch.float64)
    z = logits(wt, torch.as_tensor(x, dtype=torch.float64))
    ll = None
    if y is not None:
        yt = torch.as_tensor(y, dtype=torch.float64)
        ll = (-F.binary_cross_entropy_with_logits(z, yt.expand_as(z), reduction="none")).numpy()
    return Draws(w=np.asarray(w), logit=z.numpy(), loglik=ll)


def loglik_sum(w: np.ndarray, x: np.ndarray, y: np.ndarray, *, chunk: int = 250) -> np.ndarray:
    """``Σ_i log p(y_i | x_i, w_s)`` per draw, shape (n_draws,): the pointwise values of
    :func:`predict_draws` summed, without keeping the (n_draws, n) matrix (chunks of ``chunk``
    draws, one ``logsigmoid`` each; ~4x faster than the cross-entropy form)."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    sign = 2.0 * torch.as_tensor(y, dtype=torch.float64) - 1.0
    wt = torch.as_tensor(w, dtype=torch.float64)
    out = [F.logsigmoid(sign * logits(wt[i : i + chunk], xt)).sum(dim=1) for i in range(0, wt.shape[0], chunk)]
    return torch.cat(out).numpy()
