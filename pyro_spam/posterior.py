"""Posterior draws from a fitted guide and the posterior predictive they imply."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .model import logits


@dataclass(frozen=True)
class Draws:
    """Draws of w from q and what they imply for one set of inputs.

    w : ndarray of shape (n_draws, K+1)
    logit : ndarray of shape (n_draws, n)
        Logit of p(spam) per draw and message.
    loglik : ndarray of shape (n_draws, n) or None
        log p(y_i | x_i, w_s) per draw and message (when labels were given).
    """

    w: np.ndarray
    logit: np.ndarray
    loglik: np.ndarray | None

    @property
    def prob(self) -> np.ndarray:
        """p(spam) per draw and message, shape (n_draws, n)."""
        return 1.0 / (1.0 + np.exp(-self.logit))

    @property
    def mean_prob(self) -> np.ndarray:
        """Posterior predictive p(spam) per message, shape (n,)."""
        return self.prob.mean(axis=0)


def draw_weights(loc: np.ndarray, scale: np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    """``n_draws`` draws of w ~ N(loc, diag(scale²)), shape (n_draws, K+1), float64."""
    gen = torch.Generator().manual_seed(int(seed))
    eps = torch.randn((n_draws, loc.shape[0]), generator=gen, dtype=torch.float64)
    return (torch.as_tensor(loc, dtype=torch.float64) + torch.as_tensor(scale, dtype=torch.float64) * eps).numpy()


def predict_draws(w: np.ndarray, x: np.ndarray, y: np.ndarray | None = None) -> Draws:
    """Logits (and pointwise log-likelihoods when ``y`` is given) for draws ``w`` on inputs ``x``."""
    wt = torch.as_tensor(w, dtype=torch.float64)
    z = logits(wt, torch.as_tensor(x, dtype=torch.float64))
    ll = None
    if y is not None:
        yt = torch.as_tensor(y, dtype=torch.float64)
        ll = (-F.binary_cross_entropy_with_logits(z, yt.expand_as(z), reduction="none")).numpy()
    return Draws(w=np.asarray(w), logit=z.numpy(), loglik=ll)
