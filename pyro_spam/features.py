"""Embeddings → model inputs: scale → PCA(K) → scale → polynomial (or linear) terms → scale.

Everything is fitted on the training rows only. The fitted state is plain numpy arrays (see
:meth:`FeaturePipeline.to_arrays`) so a saved model needs no pickle.

About the prior: the terms ``x_j^j`` are standardised on the training set before they enter
the logit, so ``w_j`` is the change in log-odds per training-set standard deviation of the
term. ``N(0, 1)`` on every ``w_j`` therefore says "no single term moves the log-odds by much
more than ±2 per standard deviation", whatever the degree j; without this step ``x_5^5`` would
span several orders of magnitude and the same prior would mean very different things per term.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from .config import MAX_COMPONENTS, FeatureConfig
from .data import stratified_split
from .errors import ConfigError, DataError
from .types import Dataset, FeatureSet

log = logging.getLogger(__name__)


def choose_k(cumulative: np.ndarray, target: float, cap: int = MAX_COMPONENTS) -> tuple[int, bool]:
    """Smallest K whose cumulative explained variance reaches ``target``.

    Returns ``(K, capped)``; ``capped`` is True when the cap came before the target.
    """
    reached = np.nonzero(cumulative >= target - 1e-12)[0]
    if reached.size and reached[0] + 1 <= cap:
        return int(reached[0] + 1), False
    return int(min(cap, cumulative.shape[0])), True


def _standardise_params(a: np.ndarray, rel_tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Column means and sds; a column whose sd is below ``rel_tol`` × the largest is constant.

    Such columns (MiniLM has three, sd ≈ 1e-33…1e-8 against ≈ 0.03 elsewhere) hold only rounding
    noise; dividing by their sd would blow that noise up to the size of real signal and make
    the PCA depend on the storage dtype. They are centred and left unscaled (≈ 0).
    """
    mean = a.mean(axis=0)
    std = a.std(axis=0)
    std = np.where(std > rel_tol * max(float(std.max(initial=0.0)), np.finfo(float).tiny), std, 1.0)
    return mean, std


def term_names(k: int, kind: str) -> tuple[str, ...]:
    """Column names: ``x1, x2^2, …`` (polynomial) or ``x1, x2, …`` (linear)."""
    if kind == "polynomial":
        return tuple("x1" if j == 1 else f"x{j}^{j}" for j in range(1, k + 1))
    return tuple(f"x{j}" for j in range(1, k + 1))


@dataclass
class FeaturePipeline:
    """Fit-on-train feature map. Fitted attributes end in ``_``.

    config : FeatureConfig
    """

    config: FeatureConfig

    def fit(self, X: np.ndarray) -> FeaturePipeline:
        """Fit scaler, PCA, second scaler and the term scaler on training embeddings X."""
        X = np.asarray(X, dtype=np.float64)
        n, d = X.shape
        k_req = self.config.components
        max_k = min(MAX_COMPONENTS, d, n - 1)
        if k_req != "auto" and k_req > d:
            raise ConfigError(
                f"components K={k_req} exceeds the embedding dimension {d}; choose K <= {min(d, MAX_COMPONENTS)}"
            )
        if k_req != "auto" and k_req > n - 1:
            raise DataError(f"components K={k_req} needs more than {n} training messages")
        self.in_mean_, self.in_std_ = _standardise_params(X)
        Z = (X - self.in_mean_) / self.in_std_
        n_fit = max_k if k_req == "auto" else int(k_req)
        pca = PCA(n_components=n_fit, svd_solver="full")
        pca.fit(Z)
        ratio = pca.explained_variance_ratio_
        self.capped_ = False
        if k_req == "auto":
            k, self.capped_ = choose_k(np.cumsum(ratio), self.config.variance_target, max_k)
            if self.capped_:
                log.warning(
                    "components=auto: %d components explain only %.1f%% (< target %.0f%%); using the cap K=%d",
                    k, 100 * np.sum(ratio[:k]), 100 * self.config.variance_target, k,
                )
        else:
            k = int(k_req)
        self.k_ = k
        self.pca_mean_ = pca.mean_.copy()
        self.components_ = pca.components_[:k].copy()
        self.explained_variance_ratio_ = ratio[:k].copy()
        P = (Z - self.pca_mean_) @ self.components_.T
        self.pc_mean_, self.pc_std_ = _standardise_params(P)
        T = self._terms((P - self.pc_mean_) / self.pc_std_)
        self.term_mean_, self.term_std_ = _standardise_params(T)
        self.names_ = term_names(k, self.config.kind)
        return self

    def _terms(self, P: np.ndarray) -> np.ndarray:
        if self.config.kind == "polynomial":
            powers = np.arange(1, P.shape[1] + 1)
            return P**powers
        return P

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Model inputs of shape (n, K), float32."""
        if not hasattr(self, "k_"):
            raise RuntimeError("FeaturePipeline is not fitted; call fit() first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.in_mean_.shape[0]:
            raise DataError(
                f"embeddings have shape {X.shape}, but the pipeline was fitted on dimension {self.in_mean_.shape[0]}"
            )
        Z = (X - self.in_mean_) / self.in_std_
        P = (Z - self.pca_mean_) @ self.components_.T
        T = self._terms((P - self.pc_mean_) / self.pc_std_)
        return ((T - self.term_mean_) / self.term_std_).astype(np.float32)

    ARRAY_FIELDS = (
        "in_mean_", "in_std_", "pca_mean_", "components_", "explained_variance_ratio_",
        "pc_mean_", "pc_std_", "term_mean_", "term_std_",
    )

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """Fitted state as (arrays, JSON-able metadata): no pickle needed to save it."""
        arrays = {f: getattr(self, f) for f in self.ARRAY_FIELDS}
        meta = {
            "components": self.config.components,
            "variance_target": self.config.variance_target,
            "kind": self.config.kind,
            "test_size": self.config.test_size,
            "k": self.k_,
            "capped": self.capped_,
            "names": list(self.names_),
        }
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, object]) -> FeaturePipeline:
        """Rebuild a fitted pipeline from :meth:`to_arrays` output."""
        cfg = FeatureConfig(
            components=meta["components"], variance_target=meta["variance_target"],
            kind=meta["kind"], test_size=meta["test_size"],
        )
        self = cls(cfg)
        for f in cls.ARRAY_FIELDS:
            setattr(self, f, np.asarray(arrays[f], dtype=np.float64))
        self.k_ = int(meta["k"])
        self.capped_ = bool(meta["capped"])
        self.names_ = tuple(meta["names"])
        return self


def _strings(msg: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``msg[idx]`` as an object array of ``str``: a fixed-width copy (``<U910`` on the SMS data)
    would take 3.6 kB per message, 20 MB for the two parts."""
    out = np.empty(idx.shape[0], dtype=object)
    out[:] = [str(m) for m in msg[idx].tolist()]
    return out


def build_features(ds: Dataset, config: FeatureConfig, *, seed: int = 0) -> tuple[FeatureSet, FeaturePipeline]:
    """Split ``ds`` (stratified, seeded), fit the pipeline on train, transform both parts."""
    tr, te = stratified_split(ds.y, test_size=config.test_size, seed=seed)
    pipe = FeaturePipeline(config).fit(ds.X[tr])
    fs = FeatureSet(
        X_train=pipe.transform(ds.X[tr]),
        y_train=ds.y[tr].astype(np.float32),
        X_test=pipe.transform(ds.X[te]),
        y_test=ds.y[te].astype(np.float32),
        msg_train=_strings(ds.msg, tr),
        msg_test=_strings(ds.msg, te),
        train_idx=tr,
        test_idx=te,
        names=pipe.names_,
        explained_variance_ratio=pipe.explained_variance_ratio_,
    )
    return fs, pipe
