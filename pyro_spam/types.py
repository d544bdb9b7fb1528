"""Result types shared between stages (numpy only, so downstream modules need no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    msg_train, msg_test : ndarray of shape (n,), str
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


@dataclass
class FitResult:
    """A fitted mean-field guide.

    elbo : str
        ``"trace"`` (Monte Carlo KL) or ``"meanfield"`` (analytic KL).
    engine : str
        ``"svi"`` (Pyro) or ``"manual"`` (plain torch).
    loc, scale : ndarray of shape (K+1,)
        Variational parameters of q(w) = N(loc, diag(scale²)), bias first.
    history : ElboHistory
    steps : int
        Optimiser steps taken.
    seconds : float
        Wall time of the training loop (setup included).
    stop_reason : str
        ``"converged"``, ``"max_steps"`` or ``"interrupted"``.
    extra : dict
        Engine-specific details (e.g. learning-rate decays).
    state : pyro_spam.checkpoint.TrainState or None
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
