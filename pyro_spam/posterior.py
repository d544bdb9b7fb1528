"""Posterior draws from a fitted guide and the posterior predictive they imply."""

from __future__ import annotations

import numpy as np
import torch

from .model import logits
from .summary import draw_seed
from .types import Draws, FitResult


def draw_weights(loc: np.ndarray, scale: np.ndarray, n_draws: int, seed: int, scale_tril: np.ndarray | None = None) -> np.ndarray:
    """``n_draws`` draws of w ~ N(loc, diag(scale²)), or N(loc, L Lᵀ) with ``scale_tril`` L (full and
    low-rank guides), shape (n_draws, K+1), float64. Same seed, same ε: the two forms agree for a diagonal L."""
    gen = torch.Generator().manual_seed(int(seed))
    eps = torch.randn((n_draws, loc.shape[0]), generator=gen, dtype=torch.float64)
    loc_t = torch.as_tensor(loc, dtype=torch.float64)
    if scale_tril is not None:
        return (loc_t + eps @ torch.as_tensor(scale_tril, dtype=torch.float64).T).numpy()
    return (loc_t + torch.as_tensor(scale, dtype=torch.float64) * eps).numpy()


def run_draws(fit: FitResult, n_draws: int, train_seed: int) -> np.ndarray:
    """The draws of w a run makes from ``fit`` (trained with seed ``train_seed``): every stage that
    needs them calls this, so they are the same draws without being kept (:func:`~pyro_spam.summary.draw_seed`)."""
    return draw_weights(fit.loc, fit.scale, n_draws, seed=draw_seed(train_seed), scale_tril=fit.scale_tril)


_PREDICT_CHUNK = 64
"""Draws evaluated at once by :func:`predict_draws`: its temporaries stay at chunk × n floats."""


def predict_draws(w: np.ndarray, x: np.ndarray, y: np.ndarray | None = None) -> Draws:
    """Logits (and pointwise log-likelihoods when ``y`` is given) for draws ``w`` on inputs ``x``.

    Float64, computed in chunks of draws into the output matrices, so that memory peaks at the
    outputs (8 bytes × draws × n each) rather than at several times that. The log-likelihood is
    ``log σ(s z) = min(s z, 0) − log1p(exp(−|z|))`` with ``s = 2y − 1``, as in :func:`loglik_sum`
    (torch's binary cross-entropy gives the same to ~1e-16 at twice the cost).
    """
    z = np.empty((np.shape(w)[0], np.shape(x)[0]))
    ll = None if y is None else np.empty_like(z)
    _fill(w, x, y, z, ll)
    return Draws(w=np.asarray(w), logit=z, loglik=ll)


def loglik_matrix(w: np.ndarray, x: np.ndarray, y: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """``predict_draws(w, x, y).loglik`` without the logit matrix: half the memory.

    ``dtype=np.float32`` gives ``loglik_matrix(w, x, y).astype(np.float32)`` bit for bit (each chunk
    is computed in float64 and then rounded) without the float64 matrix: a quarter of the memory."""
    ll = np.empty((np.shape(w)[0], np.shape(x)[0]), dtype=dtype)
    _fill(w, x, y, None, ll)
    return ll


def _fill(w: np.ndarray, x: np.ndarray, y: np.ndarray | None, z_out: np.ndarray | None, ll_out: np.ndarray | None) -> None:
    """Logits into ``z_out`` and log-likelihoods into ``ll_out`` (either may be None), by chunks of draws."""
    wt = torch.as_tensor(w, dtype=torch.float64)
    xt = torch.as_tensor(x, dtype=torch.float64)
    sign = None if y is None else 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    for lo in range(0, wt.shape[0], _PREDICT_CHUNK):
        zc = logits(wt[lo : lo + _PREDICT_CHUNK], xt).numpy()
        if z_out is not None:
            z_out[lo : lo + zc.shape[0]] = zc
        if ll_out is not None:
            lc = ll_out[lo : lo + zc.shape[0]] if ll_out.dtype == np.float64 else np.empty(zc.shape)
            t = np.abs(zc)
            np.negative(t, out=t)
            np.exp(t, out=t)
            np.log1p(t, out=t)
            np.multiply(zc, sign, out=lc)
            np.minimum(lc, 0.0, out=lc)
            lc -= t
            if ll_out.dtype != np.float64:
                ll_out[lo : lo + zc.shape[0]] = lc


def loglik_sum(w: np.ndarray, x: np.ndarray, y: np.ndarray, *, chunk: int = 16) -> np.ndarray:
    """``Σ_i log p(y_i | x_i, w_s)`` per draw, shape (n_draws,): the pointwise values of
    :func:`predict_draws` summed, without keeping the (n_draws, n) matrix.

    With ``s_i = 2 y_i − 1`` folded into the inputs (``z = w · s_i (1, x_i)``, one matmul),
    ``log σ(z) = min(z, 0) − log1p(exp(−|z|))`` is summed term by term, in place, over blocks of
    ``chunk`` draws that stay in cache: equal to summing ``logsigmoid`` up to rounding (~1e-15
    relative) and about twice as fast as one ``logsigmoid`` per block of 250 draws.
    """
    xt = torch.as_tensor(x, dtype=torch.float64)
    sign = 2.0 * torch.as_tensor(y, dtype=torch.float64) - 1.0
    xs = torch.cat([sign[None, :], (xt * sign[:, None]).T]).contiguous()  # (K+1, n)
    wt = torch.as_tensor(w, dtype=torch.float64)
    n_draws = wt.shape[0]
    out = np.empty(n_draws)
    z_buf = torch.empty((max(1, min(chunk, n_draws)), xt.shape[0]), dtype=torch.float64)
    t_buf = torch.empty_like(z_buf)
    t_np = t_buf.numpy()
    for lo in range(0, n_draws, chunk):
        wc = wt[lo : lo + chunk]
        m = wc.shape[0]
        z, t = z_buf[:m], t_buf[:m]
        torch.mm(wc, xs, out=z)
        torch.abs(z, out=t).neg_().exp_()
        np.log1p(t_np[:m], out=t_np[:m])  # numpy's log1p is faster than torch's here
        z.clamp_(max=0.0)
        out[lo : lo + m] = (z.sum(dim=1) - t.sum(dim=1)).numpy()
    return out
