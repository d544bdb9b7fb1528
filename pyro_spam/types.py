"""Result types shared between stages (numpy only, so downstream modules need no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit


@dataclass(frozen=True)
class Dataset:
    """A course-format data set.

    X : ndarray of shape (n_messages, dim), float32
        Fixed-size message embeddings.
    y : ndarray of shape (n_messages,), float32
        Labels, 0.0 = ham, 1.0 = spam.
    msg : ndarray of shape (n_messages,), str
        The raw messages (for qualitative evaluation and prediction).
    source : str
        Where the data came from (a path, or ``"default"``).
    embedder : str or None
        The encoder that made ``X`` when known (e.g. ``"sentence-transformers/all-MiniLM-L6-v2"``).
    """

    X: np.ndarray
    y: np.ndarray
    msg: np.ndarray
    source: str
    embedder: str | None = None

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])


@dataclass(frozen=True)
class FeatureSet:
    """The exact model inputs after the feature pipeline (the bias column is implicit).

    X_train, X_test : ndarray of shape (n, K), float32
        Standardised polynomial (or linear) terms.
    y_train, y_test : ndarray of shape (n,), float32
    msg_train, msg_test : ndarray of shape (n,), object (str)
    train_idx, test_idx : ndarray of int
        Row indices into the source data set.
    names : tuple of str
        One name per column, e.g. ``("x1", "x2^2", ...)``.
    explained_variance_ratio : ndarray of shape (K,)
        PCA explained variance ratio of each kept component (on train).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    msg_train: np.ndarray
    msg_test: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray
    names: tuple[str, ...]
    explained_variance_ratio: np.ndarray

    @property
    def k(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def explained_variance(self) -> float:
        return float(np.sum(self.explained_variance_ratio))

    @property
    def coef_names(self) -> tuple[str, ...]:
        """Names of the K+1 coefficients, bias first."""
        return ("w0 (bias)",) + self.names


@dataclass
class ElboHistory:
    """Per-step training record, all on the full-data scale (nats).

    elbo : ndarray of shape (steps,)
        The ELBO estimate the optimiser saw at each step.
    loglik : ndarray of shape (steps,)
        Its expected log-likelihood part (mini-batch sum scaled by N/B, averaged over particles).
    kl : ndarray of shape (steps,)
        Its KL part: a Monte Carlo estimate for ``trace``, analytic for ``meanfield``.
        ``loglik - kl == elbo`` holds step by step.
    lr : ndarray of shape (steps,)
        Learning rate used at each step.
    """

    elbo: np.ndarray
    loglik: np.ndarray
    kl: np.ndarray
    lr: np.ndarray

    def __len__(self) -> int:
        return int(self.elbo.shape[0])

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("elbo", "loglik", "kl", "lr")}


GUIDES = ("meanfield", "fullrank", "lowrank")
"""The Gaussian guide families: diagonal, full covariance (Cholesky factor), diagonal plus rank-r factor."""


@dataclass
class FitResult:
    """A fitted Gaussian guide q(w) = N(loc, cov).

    elbo : str
        The ELBO estimator (``"trace"``, ``"meanfield"``, …; see ``config.ELBO_TYPES``).
    engine : str
        ``"svi"`` (Pyro) or ``"manual"`` (plain torch).
    loc, scale : ndarray of shape (K+1,)
        Mean and marginal standard deviations of q, bias first (for the mean-field guide its
        variational parameters: q(w) = N(loc, diag(scale²))).
    history : ElboHistory
    steps : int
        Optimiser steps taken.
    seconds : float
        Wall time of the training loop (setup included).
    stop_reason : str
        ``"converged"`` (the stop rule's criterion held), ``"budget"`` (the step budget ran out
        first: not converged), or ``"interrupted"`` (Ctrl-C).
    extra : dict
        Engine-specific details (e.g. learning-rate decays).
    state : TrainState or None
        What an exact resume needs (optimiser and RNG states); written to the run's checkpoint,
        not a result to report.
    """

    elbo: str
    engine: str
    loc: np.ndarray
    scale: np.ndarray
    history: ElboHistory
    steps: int
    seconds: float
    stop_reason: str
    extra: dict[str, Any] = field(default_factory=dict)
    state: Any = field(default=None, repr=False)
    guide: str = "meanfield"
    scale_tril: np.ndarray | None = None

    @property
    def cov(self) -> np.ndarray:
        """Covariance of q, (K+1, K+1): ``scale_tril @ scale_tril.T``, or ``diag(scale²)`` for the mean-field guide."""
        return cov_of(self.scale, self.scale_tril)


def cov_of(scale: np.ndarray, scale_tril: np.ndarray | None = None) -> np.ndarray:
    """Covariance of a Gaussian guide from its marginal sds ``scale`` (diagonal) or its lower Cholesky
    factor ``scale_tril`` (any guide; it wins when given)."""
    if scale_tril is not None:
        L = np.asarray(scale_tril, dtype=np.float64)
        return L @ L.T
    return np.diag(np.asarray(scale, dtype=np.float64) ** 2)


BASELINE_PREFIX = "__baseline_"
"""Pyro param-store entries of decaying-average baselines (the ``score`` ELBO): optimiser-side state
kept in :attr:`TrainState.params` for an exact resume, not guide parameters."""


@dataclass
class TrainState:
    """Where a fit stands: enough to resume it (numpy arrays and plain values only).

    loc, scale : ndarray of shape (K+1,)
        Guide parameters after the last completed step.
    history : ElboHistory
        Per-step record of the completed steps.
    lr : float
        Learning rate for the next step.
    decays_done : int
        Learning-rate decays the plateau schedule has made.
    events : list of dict, default=[]
        The schedule's decay/convergence events so far.
    seconds : float, default=0.0
        Training wall time spent so far (added to the resumed fit's time).
    params : dict of str to ndarray or None
        Unconstrained Pyro parameter values (``w_loc``, ``w_scale`` before ``exp``).
    optim : dict or None
        Per-parameter optimiser state: ``{name: {"state": {index: {key: array}}, "param_groups": [...]}}``.
    rng : dict or None
        ``{"torch": uint8 array, "numpy": np.random state tuple, "random": random state tuple}``.
    stop_state : dict or None
        The iterate rule's state (:meth:`~pyro_spam.training.convergence.IterateConvergence.state_dict`:
        arrays and plain values); None for the plateau rule, whose state is ``lr``/``decays_done``/``events``.
    fit_loc, fit_scale : ndarray of shape (K+1,) or None
        The guide the fit returned when it is not the last iterate (the iterate average).
    scale_tril, fit_scale_tril : ndarray of shape (K+1, K+1) or None
        Cholesky factor of the covariance of the last iterate and of the returned guide (full and
        low-rank guides; None for the mean-field guide).
    """

    loc: np.ndarray
    scale: np.ndarray
    history: ElboHistory
    lr: float
    decays_done: int
    events: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    params: dict[str, np.ndarray] | None = None
    optim: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    stop_state: dict[str, Any] | None = None
    fit_loc: np.ndarray | None = None
    fit_scale: np.ndarray | None = None
    scale_tril: np.ndarray | None = None
    fit_scale_tril: np.ndarray | None = None

    @property
    def exact(self) -> bool:
        """True when resuming reproduces an uninterrupted run bit for bit."""
        return self.params is not None and self.optim is not None and self.rng is not None


@dataclass(frozen=True)
class Draws:
    """Draws of w from q and what they imply for one set of inputs.

    w : ndarray of shape (n_draws, K+1)
    logit : ndarray of shape (n_draws, n) or None
        Logit of p(spam) per draw and message (None where only the log-likelihood was kept).
    loglik : ndarray of shape (n_draws, n) or None
        log p(y_i | x_i, w_s) per draw and message (when labels were given).
    """

    w: np.ndarray
    logit: np.ndarray | None
    loglik: np.ndarray | None

    @property
    def prob(self) -> np.ndarray:
        """p(spam) per draw and message, shape (n_draws, n)."""
        return expit(self.logit)

    @property
    def mean_prob(self) -> np.ndarray:
        """Posterior predictive p(spam) per message, shape (n,)."""
        return self.prob.mean(axis=0)
