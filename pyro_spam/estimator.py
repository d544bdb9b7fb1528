"""The variational spam classifier as a scikit-learn estimator.

``VariationalSpamClassifier.fit(X, y)`` takes message embeddings and runs exactly what
``pyro-spam run`` runs on its training split: :class:`~pyro_spam.features.FeaturePipeline`
(scale → PCA → scale → terms → scale), then :func:`pyro_spam.training.fit` (Pyro SVI or the manual
engine) for a Gaussian guide q(w) = N(loc, cov): mean-field (diagonal, the default), full rank
(a Cholesky factor) or low rank (diagonal plus a rank-``rank`` factor). Predictions average the
classifier's p(spam) over ``num_draws`` draws of w from q, the full covariance included (the
posterior predictive mean); the draws are fixed at fit time (seed ``seed + 1``, as in a run), so
predictions are deterministic.

No sample weights: the model's likelihood has none. Binary problems only (ham/spam).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_expit, logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import FeatureConfig, RunConfig, TrainConfig
from .errors import ConfigError, DataError, ModelFileError
from .features import FeaturePipeline
from .io.modelfile import HISTORY_FIELDS, read_model_file, write_model_file
from .posterior import draw_weights, predict_draws
from .summary import draw_seed
from .training.engines import fit as train_fit
from .types import ElboHistory, FitResult, cov_of

# Rows per block when predicting: bounds the (num_draws, rows) logit matrix at ~32 MB.
_BLOCK_ELEMENTS = 4_000_000


class EstimatorConfigError(ConfigError, ValueError):
    """An invalid constructor parameter (also a ``ValueError``, as scikit-learn expects)."""


class EstimatorDataError(DataError, ValueError):
    """Training data the model cannot use (also a ``ValueError``, as scikit-learn expects)."""


@contextlib.contextmanager
def _as_value_errors() -> Iterator[None]:
    """Re-raise the package's config/data errors as their ``ValueError`` twins."""
    try:
        yield
    except (EstimatorConfigError, EstimatorDataError):
        raise
    except ConfigError as exc:
        raise EstimatorConfigError(str(exc)) from None
    except DataError as exc:
        raise EstimatorDataError(str(exc)) from None


_TRAIN_DEFAULTS = TrainConfig()  # the estimator's defaults are the library's


class VariationalSpamClassifier(ClassifierMixin, BaseEstimator):
    """Bayesian logistic classifier on polynomial PCA terms, fitted by variational inference.

    Example (L-BFGS finds the exact mean-field optimum in ~0.1 s)

    >>> from pyro_spam import VariationalSpamClassifier, load_default
    >>> ds = load_default()
    >>> clf = VariationalSpamClassifier(optimizer="lbfgs").fit(ds.X, ds.y)
    >>> clf.predict_proba(ds.X[:3]).shape            # columns: p(ham), p(spam)
    (3, 2)
    >>> clf.predict_interval(ds.X[:3], level=0.9).shape   # 90 % credible interval of p(spam)
    (3, 2)

    Parameters
    ----------
    components : int or "auto", default=5
        Number K of PCA components (1…15), or the smallest K whose cumulative explained variance
        reaches ``variance_target``. Must not exceed the number of features of X.
    variance_target : float, default=0.30
        Explained variance that ``components="auto"`` aims for.
    features : {"polynomial", "linear"}, default="polynomial"
        Terms ``x_j^j`` (the course's model) or ``x_j``.
    elbo : {"trace", "meanfield", "stl", "rqmc", "quad", "iwae", "score"} or None, default=None
        The estimator (see :class:`pyro_spam.config.TrainConfig`): ``Trace_ELBO`` (Monte Carlo
        KL), ``TraceMeanField_ELBO`` (analytic KL), sticking the landing, randomised QMC (a power
        of two ``particles``), the exact Gauss–Hermite quadrature ELBO (no Monte Carlo noise),
        the IWAE bound or the score function. None: ``"meanfield"`` with Adam, ``"quad"`` with L-BFGS.
    optimizer : {"adam", "lbfgs"}, default="adam"
        ``"adam"``: SVI with the stop rule ``stop``. ``"lbfgs"``: L-BFGS on the exact ``quad``
        ELBO, full batch, converged at ``grad_tol``; ~0.1 s per fit on the default data, so use it
        where many fits are needed (``cross_val_score``, grid searches)::

            from sklearn.model_selection import cross_val_score
            cross_val_score(VariationalSpamClassifier(optimizer="lbfgs"), X, y, cv=5)

    grad_tol : float, default=1e-4
        ``optimizer="lbfgs"`` only: largest ELBO-gradient component at convergence.
    guide : {"meanfield", "fullrank", "lowrank"}, default="meanfield"
        The Gaussian family of q (:mod:`pyro_spam.guide`): diagonal (the course's), full
        covariance (a Cholesky factor), or diagonal plus a rank-``rank`` factor. The full and
        low-rank guides start at the Laplace approximation and need ``engine="svi"`` and
        ``optimizer="adam"``; they keep the posterior correlations the mean-field guide drops,
        and every prediction draws w from the full covariance::

            from pyro_spam.data import load_default
            ds = load_default()
            clf = VariationalSpamClassifier(guide="fullrank").fit(ds.X, ds.y)
            clf.cov_                         # (K+1, K+1) covariance of q; clf.scale_ = sqrt(diag(cov_))
            clf.predict_interval(ds.X[:5])   # 90 % intervals of p(spam) from draws of N(loc_, cov_)
            clf.save("model_fullrank.npz")   # keeps the Cholesky factor: load() predicts the same

    rank : int, default=1
        ``guide="lowrank"`` only: rank of the factor (1 … K).
    engine : {"svi", "manual"}, default="svi"
        Pyro SVI, or the plain-torch loop over the hand-written ELBO.
    particles : int, default=64
        Monte Carlo particles per step (vectorised).
    batch_size : int or None, default=None
        Mini-batch size; ``None`` uses all rows each step.
    steps : int, default=3000
        Step budget; training usually stops earlier at convergence.
    lr : float, default=0.1
        Initial Adam learning rate (the stop rule divides it by 10 at each decay).
    lr_decays : int, default=2
        ``stop="plateau"`` only: plateaus passed (with a 10x smaller rate each) before declaring convergence.
    stop : {"iterates", "plateau"}, default="iterates"
        Convergence rule (see :class:`~pyro_spam.config.TrainConfig`): ``"iterates"`` returns the
        Polyak–Ruppert average once it is accurate; ``"plateau"`` is v0.1's ELBO-window test.
    window : int, default=20
        ``stop="plateau"`` only: steps per convergence check.
    adam_beta1 : float, default=0.8
        Adam's momentum decay (see :class:`~pyro_spam.config.TrainConfig`).
    adam_beta2 : float, default=0.9
        Adam's second-moment decay (see :class:`~pyro_spam.config.TrainConfig`).
    tol : float, default=0.5
        ``stop="plateau"`` only: plateau threshold in nats.
    prior_scale : float, default=1.0
        Standard deviation of the N(0, s²) prior on every coefficient.
    init_scale : float, default=0.1
        Initial guide scale for Adam (loc starts at 0); L-BFGS starts from the Laplace point.
    seed : int, default=0
        Seeds training; the predictive draws use ``seed + 1`` (as ``pyro-spam run`` does).
    num_draws : int, default=1000
        Draws of w from the guide behind every prediction.
    progress : bool, default=False
        Show a progress bar while training.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two labels; ``classes_[1]`` is the positive class (spam).
    n_features_in_ : int
        Embedding dimension seen in ``fit``.
    feature_pipeline_ : FeaturePipeline
        The fitted feature map (embeddings → K standardised terms).
    coef_names_ : tuple of str
        Names of the K+1 coefficients, bias first.
    loc_, scale_ : ndarray of shape (K+1,)
        Mean and marginal standard deviations of q (for the mean-field guide its parameters:
        q(w) = N(loc_, diag(scale_²))).
    cov_ : ndarray of shape (K+1, K+1)
        Covariance of q (diagonal for the mean-field guide).
    scale_tril_ : ndarray of shape (K+1, K+1) or None
        Lower Cholesky factor L of ``cov_`` (full- and low-rank guides); None for mean-field.
    weight_draws_ : ndarray of shape (num_draws, K+1)
        The draws of w every prediction averages over: ``loc_ + L ε`` (``loc_ + scale_ * ε`` for
        mean-field), ε standard normal.
    history_ : ElboHistory
        Per-step ELBO, log-likelihood, KL and learning rate.
    n_iter_ : int
        Optimiser steps taken.
    stop_reason_ : str
        ``"converged"``, ``"budget"`` (step budget used up first: not converged), ``"interrupted"``, or
        for L-BFGS ``"stalled"`` (line search stuck above ``grad_tol``: not converged).
    """

    def __init__(
        self,
        components: int | str = 5,
        variance_target: float = 0.30,
        features: str = "polynomial",
        elbo: str | None = None,
        optimizer: str = _TRAIN_DEFAULTS.optimizer,
        grad_tol: float = _TRAIN_DEFAULTS.grad_tol,
        guide: str = _TRAIN_DEFAULTS.guide,
        rank: int = _TRAIN_DEFAULTS.rank,
        engine: str = "svi",
        particles: int = 64,
        batch_size: int | None = None,
        steps: int = 3000,
        lr: float = _TRAIN_DEFAULTS.lr,
        lr_decays: int = _TRAIN_DEFAULTS.lr_decays,
        stop: str = _TRAIN_DEFAULTS.stop,
        window: int = _TRAIN_DEFAULTS.window,
        tol: float = _TRAIN_DEFAULTS.tol,
        adam_beta1: float = _TRAIN_DEFAULTS.adam_beta1,
        adam_beta2: float = _TRAIN_DEFAULTS.adam_beta2,
        prior_scale: float = 1.0,
        init_scale: float = 0.1,
        seed: int = 0,
        num_draws: int = 1000,
        progress: bool = False,
    ) -> None:
        self.components = components
        self.variance_target = variance_target
        self.features = features
        self.elbo = elbo
        self.optimizer = optimizer
        self.grad_tol = grad_tol
        self.guide = guide
        self.rank = rank
        self.engine = engine
        self.particles = particles
        self.batch_size = batch_size
        self.steps = steps
        self.lr = lr
        self.lr_decays = lr_decays
        self.stop = stop
        self.window = window
        self.tol = tol
        self.adam_beta1 = adam_beta1
        self.adam_beta2 = adam_beta2
        self.prior_scale = prior_scale
        self.init_scale = init_scale
        self.seed = seed
        self.num_draws = num_draws
        self.progress = progress

    # -- configuration ------------------------------------------------------------------------

    def feature_config(self) -> FeatureConfig:
        """The :class:`FeatureConfig` these parameters describe (validated)."""
        with _as_value_errors():
            return FeatureConfig(components=self.components, variance_target=self.variance_target, kind=self.features)

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` these parameters describe (validated)."""
        with _as_value_errors():
            return TrainConfig(
                elbo=self.elbo, optimizer=self.optimizer, grad_tol=self.grad_tol, engine=self.engine,
                guide=self.guide, rank=self.rank,
                particles=self.particles, batch_size=self.batch_size,
                max_steps=self.steps, lr=self.lr, lr_decays=self.lr_decays, stop=self.stop, window=self.window, tol=self.tol,
                adam_beta1=self.adam_beta1, adam_beta2=self.adam_beta2, prior_scale=self.prior_scale, init_scale=self.init_scale, seed=self.seed,
            )

    @classmethod
    def params_from_run_config(cls, config: RunConfig, elbo: str) -> dict[str, Any]:
        """Constructor parameters equivalent to the fit of ``elbo`` in a ``pyro-spam run``."""
        f, t = config.features, config.train
        return {
            "components": f.components, "variance_target": f.variance_target, "features": f.kind,
            "elbo": elbo, "optimizer": t.optimizer, "grad_tol": t.grad_tol, "guide": t.guide, "rank": t.rank,
            "engine": t.engine, "particles": t.particles, "batch_size": t.batch_size,
            "steps": t.max_steps, "lr": t.lr, "lr_decays": t.lr_decays, "stop": t.stop, "window": t.window, "tol": t.tol,
            "adam_beta1": t.adam_beta1, "adam_beta2": t.adam_beta2, "prior_scale": t.prior_scale, "init_scale": t.init_scale, "seed": t.seed,
            "num_draws": config.num_draws, "progress": False,
        }

    def _check_num_draws(self) -> None:
        n = self.num_draws
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise EstimatorConfigError(f"num_draws must be a whole number >= 1 (got {n!r})")

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> VariationalSpamClassifier:
        """Fit the feature pipeline on X, then the variational posterior of the weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Message embeddings.
        y : array-like of shape (n_samples,)
            Two distinct labels; the larger one (``classes_[1]``) is treated as spam.

        Returns
        -------
        self : VariationalSpamClassifier
        """
        feature_cfg, train_cfg = self.feature_config(), self.train_config()
        self._check_num_draws()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        y_type = type_of_target(y, input_name="y", raise_unknown=True)
        classes, y_idx = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise EstimatorDataError(
                f"y holds only one class ({classes[0]!r}); the classifier needs two classes (ham and spam)"
            )
        if y_type != "binary":
            raise EstimatorDataError(
                f"Only binary classification is supported. The type of the target is {y_type} "
                f"({classes.size} classes); VariationalSpamClassifier separates ham from spam"
            )
        n, d = X.shape
        k = feature_cfg.components
        if k != "auto" and k > d:
            raise EstimatorConfigError(
                f"components K={k} exceeds the {d} feature(s) of X (n_features = {d}); choose components <= {d}"
            )
        with _as_value_errors():
            pipe = FeaturePipeline(feature_cfg).fit(X)
            result = train_fit(pipe.transform(X), y_idx.astype(np.float32), train_cfg, progress=bool(self.progress))
        self.classes_ = classes
        self._set_fitted(pipe, result.loc, result.scale, result.history, result.steps, result.stop_reason, result.scale_tril)
        return self

    def _set_fitted(
        self,
        pipe: FeaturePipeline,
        loc: np.ndarray,
        scale: np.ndarray,
        history: ElboHistory,
        n_iter: int,
        stop_reason: str,
        scale_tril: np.ndarray | None = None,
    ) -> None:
        self.feature_pipeline_ = pipe
        self.coef_names_ = ("w0 (bias)",) + tuple(pipe.names_)
        self.loc_ = np.asarray(loc, dtype=np.float64)
        self.scale_ = np.asarray(scale, dtype=np.float64)
        self.scale_tril_ = None if scale_tril is None else np.asarray(scale_tril, dtype=np.float64)
        self.cov_ = cov_of(self.scale_, self.scale_tril_)
        self.history_ = history
        self.n_iter_ = int(n_iter)
        self.stop_reason_ = str(stop_reason)
        self.weight_draws_ = draw_weights(self.loc_, self.scale_, int(self.num_draws), seed=draw_seed(int(self.seed)),
                                          scale_tril=self.scale_tril_)

    @classmethod
    def from_fitted(
        cls,
        params: dict[str, Any],
        feature_pipeline: FeaturePipeline,
        fit_result: FitResult,
        classes: np.ndarray,
        n_features_in: int,
    ) -> VariationalSpamClassifier:
        """A fitted estimator from parts fitted elsewhere (a run's pipeline and guide, a model file).

        Parameters
        ----------
        params : dict
            Constructor parameters (see :meth:`params_from_run_config`).
        feature_pipeline : FeaturePipeline
            Fitted on the training embeddings.
        fit_result : FitResult
            The fitted guide (``loc``, ``scale``, ``scale_tril``, ``history``, ``steps``, ``stop_reason``);
            its family must be ``params["guide"]`` (full- and low-rank fits carry ``scale_tril``).
        classes : ndarray of shape (2,)
        n_features_in : int
        """
        est = cls(**params)
        est.train_config()
        est._check_num_draws()
        family, tril = str(fit_result.guide), fit_result.scale_tril
        if family != est.guide or (tril is None) != (family == "meanfield"):
            raise EstimatorConfigError(
                f"the fit is a {family} guide {'without' if tril is None else 'with'} a Cholesky factor, "
                f"but the estimator's parameters say guide={est.guide!r}"
            )
        est.classes_ = np.asarray(classes)
        est.n_features_in_ = int(n_features_in)
        est._set_fitted(
            feature_pipeline, fit_result.loc, fit_result.scale, fit_result.history, fit_result.steps, fit_result.stop_reason, tril
        )
        return est

    # -- prediction ---------------------------------------------------------------------------

    def _inputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with _as_value_errors():
            return self.feature_pipeline_.transform(X)

    def _blocks(self, n: int) -> Iterator[slice]:
        rows = max(1, _BLOCK_ELEMENTS // self.weight_draws_.shape[0])
        for start in range(0, n, rows):
            yield slice(start, min(n, start + rows))

    def _log_proba_spam(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """log(1 - p) and log p of the posterior predictive p(spam), computed on the logit scale."""
        T = self._inputs(X)
        log_ham = np.empty(T.shape[0])
        log_spam = np.empty(T.shape[0])
        for b in self._blocks(T.shape[0]):
            z = predict_draws(self.weight_draws_, T[b]).logit
            log_spam[b] = logsumexp(log_expit(z), axis=0) - np.log(z.shape[0])
            log_ham[b] = logsumexp(log_expit(-z), axis=0) - np.log(z.shape[0])
        return log_ham, log_spam

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`, accurate for probabilities near 0 or 1.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, 2)
        """
        log_ham, log_spam = self._log_proba_spam(X)
        return np.column_stack([log_ham, log_spam])

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior predictive probabilities: the mean over the weight draws of p(class | x, w).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Columns follow ``classes_``; column 1 is p(spam).
        """
        return np.exp(self.predict_log_proba(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """Log-odds of the posterior predictive p(spam); positive means spam.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        log_ham, log_spam = self._log_proba_spam(X)
        return log_spam - log_ham

    def predict(self, X: Any) -> np.ndarray:
        """Label of each message: ``classes_[1]`` when the posterior predictive p(spam) > 0.5.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.classes_[(self.decision_function(X) > 0).astype(np.int64)]

    def predictive_draws(self, X: Any) -> np.ndarray:
        """p(spam) under each weight draw: the posterior distribution of each message's probability.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (num_draws, n_samples)
            Its mean over axis 0 is ``predict_proba(X)[:, 1]``.
        """
        T = self._inputs(X)
        return predict_draws(self.weight_draws_, T).prob

    def predict_interval(self, X: Any, level: float = 0.9) -> np.ndarray:
        """Equal-tailed credible interval of each message's p(spam).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        level : float, default=0.9
            Posterior mass inside the interval, in (0, 1).

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Lower and upper quantiles ``(1 - level) / 2`` and ``(1 + level) / 2`` of p(spam) over
            the weight draws.
        """
        if not 0 < level < 1:
            raise EstimatorConfigError(f"level must be between 0 and 1 (got {level!r})")
        T = self._inputs(X)
        out = np.empty((T.shape[0], 2))
        q = [(1 - level) / 2, (1 + level) / 2]
        for b in self._blocks(T.shape[0]):
            out[b] = np.quantile(predict_draws(self.weight_draws_, T[b]).prob, q, axis=0).T
        return out

    # -- saving -------------------------------------------------------------------------------

    def save(self, path: str | Path, *, embedding: dict[str, Any] | None = None) -> Path:
        """Write the fitted model to one file (see :mod:`pyro_spam.io.modelfile`); returns its path.

        ``embedding`` records how X was made (e.g. ``{"embedder": "sentence-transformers/all-MiniLM-L6-v2"}``)
        so ``pyro-spam predict`` can embed new text the same way.
        """
        return save_model(self, path, embedding=embedding)

    @classmethod
    def load(cls, path: str | Path) -> VariationalSpamClassifier:
        """Read a model file written by :meth:`save` or ``pyro-spam run``."""
        return load_model(path).estimator

    def __sklearn_tags__(self):  # noqa: D105 - scikit-learn's tag protocol
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


# -- model files (format: :mod:`pyro_spam.io.modelfile`) ----------------------------------------


PARAMS_ADDED = {"stop": "plateau", "optimizer": "adam", "grad_tol": _TRAIN_DEFAULTS.grad_tol, "guide": "meanfield", "rank": 1}
"""Estimator parameters added after format version 1 was written, with the value that reproduces
older files' behaviour (pyro-spam 0.1.0 fitted with the ELBO-plateau rule; before 0.3.0 every fit used
Adam; format version 1 knew only the mean-field guide, so its files load as mean-field)."""


@dataclass(frozen=True)
class SavedModel:
    """A loaded model file.

    estimator : VariationalSpamClassifier
        Fitted, ready to predict.
    embedding : dict
        How the training embeddings were made (``embedder`` is None when unknown).
    header : dict
        The whole JSON header.
    path : Path
    """

    estimator: VariationalSpamClassifier
    embedding: dict[str, Any]
    header: dict[str, Any]
    path: Path

    @property
    def embedder(self) -> str | None:
        return self.embedding.get("embedder")

    @property
    def elbo(self) -> str:
        return str(self.estimator.elbo)

    @property
    def guide(self) -> str:
        """The guide family (``"meanfield"`` for files of format version 1)."""
        return str(self.estimator.guide)

    @property
    def format_version(self) -> int:
        return int(self.header["format_version"])

    def __repr__(self) -> str:
        """One line with the key facts (the dataclass default would dump the whole JSON header)."""
        est = self.estimator
        facts = [
            repr(self.path.name),
            f"elbo={self.elbo}",
            f"guide={self.guide}",
            f"components={est.components}",
            f"coefficients={len(getattr(est, 'coef_names_', ()) or ())}",
            f"dim={getattr(est, 'n_features_in_', '?')}",
        ]
        training = self.header.get("training_data") or {}
        n = training.get("n_train", training.get("n"))
        if n is not None:
            facts.append(f"n_train={n}")
        facts.append(f"embedder={self.embedder}" if self.embedder else "embedder=unknown")
        return f"{type(self).__name__}({', '.join(facts)})"


def _arrays_of(est: VariationalSpamClassifier) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    feat, feat_meta = est.feature_pipeline_.to_arrays()
    arrays = {f"feature.{k}": np.asarray(v, dtype=np.float64) for k, v in feat.items()}
    arrays["guide.loc"] = np.asarray(est.loc_, dtype=np.float64)
    arrays["guide.scale"] = np.asarray(est.scale_, dtype=np.float64)
    if est.scale_tril_ is not None:
        arrays["guide.scale_tril"] = np.asarray(est.scale_tril_, dtype=np.float64)
    for f in HISTORY_FIELDS:
        arrays[f"history.{f}"] = np.asarray(getattr(est.history_, f), dtype=np.float64)
    return arrays, feat_meta


def save_model(
    est: VariationalSpamClassifier,
    path: str | Path,
    *,
    embedding: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
) -> Path:
    """Write a fitted estimator to ``path`` atomically (temporary file + rename).

    Parameters
    ----------
    est : VariationalSpamClassifier
        Fitted.
    path : str or Path
        Destination; conventionally ends in ``.npz``.
    embedding : dict, optional
        How X was made; ``{"embedder": name, "max_length": int, "normalize": bool}``. Without
        it, ``pyro-spam predict`` can only use precomputed embeddings.
    training_data : dict, optional
        Facts about the training data (source, n, dim) kept for the record.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)
    arrays, feat_meta = _arrays_of(est)
    classes = np.asarray(est.classes_)
    header = {
        "params": est.get_params(deep=False),
        "classes": classes.tolist(),
        "classes_dtype": classes.dtype.str,
        "n_features_in": int(est.n_features_in_),
        "feature_names_in": list(map(str, getattr(est, "feature_names_in_", []))) or None,
        "features": feat_meta,
        "fit": {
            "elbo": est.elbo, "engine": est.engine, "guide": est.guide, "steps": est.n_iter_, "stop_reason": est.stop_reason_,
            "coef_names": list(est.coef_names_),
        },
        "embedding": {"embedder": None, "max_length": None, "normalize": None, **(embedding or {})},
        "training_data": training_data or {},
    }
    return write_model_file(path, header, arrays)


def _scale_tril(guide: Any, tril: np.ndarray | None, scale: np.ndarray, path: Path) -> np.ndarray | None:
    """The file's Cholesky factor, checked against its guide family and marginal sds."""
    if guide == "meanfield":
        if tril is not None:
            raise ModelFileError(f"{path} is inconsistent: a mean-field model with a covariance factor (guide.scale_tril)")
        return None
    if guide not in ("fullrank", "lowrank"):
        return tril  # an unknown family: from_fitted refuses the parameter
    if tril is None:
        raise ModelFileError(f"{path} is a {guide} model without its covariance factor (guide.scale_tril); the file is damaged")
    k1 = scale.shape[0]
    if tril.shape != (k1, k1):
        raise ModelFileError(f"{path} is inconsistent: guide.scale_tril has shape {tril.shape}, expected {(k1, k1)}")
    diag = np.diag(tril)
    if not (np.all(np.isfinite(tril)) and np.all(np.triu(tril, 1) == 0) and np.all(diag > 0)):
        raise ModelFileError(f"{path} holds an invalid guide.scale_tril (not lower triangular with a positive diagonal, or not finite)")
    if not np.allclose(np.sqrt(np.sum(tril**2, axis=1)), scale, rtol=1e-4, atol=0.0):
        raise ModelFileError(f"{path} is inconsistent: guide.scale is not the marginal sds of guide.scale_tril")
    return tril


def _build(header: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> VariationalSpamClassifier:
    params = {**PARAMS_ADDED, **header["params"]}  # files from before a parameter existed: its old behaviour
    known = set(VariationalSpamClassifier().get_params())
    if set(params) != known:
        raise ModelFileError(
            f"{path} does not match this version's estimator: parameters {sorted(set(params) ^ known)} differ"
        )
    feat_meta = header["features"]
    pipe = FeaturePipeline.from_arrays({f: arrays[f"feature.{f}"] for f in FeaturePipeline.ARRAY_FIELDS}, feat_meta)
    k, d = int(feat_meta["k"]), int(header["n_features_in"])
    loc, scale = arrays["guide.loc"], arrays["guide.scale"]
    if pipe.components_.shape != (k, d) or loc.shape != (k + 1,) or scale.shape != (k + 1,):
        raise ModelFileError(
            f"{path} is inconsistent: K={k} terms and dimension {d}, but the PCA components have shape "
            f"{pipe.components_.shape} and the guide {loc.shape[0]} coefficients"
        )
    if not (np.all(np.isfinite(loc)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ModelFileError(f"{path} holds non-finite guide parameters or a non-positive scale")
    tril = _scale_tril(params["guide"], arrays.get("guide.scale_tril"), scale, path)
    history = ElboHistory(**{f: arrays[f"history.{f}"] for f in HISTORY_FIELDS})
    fit_info = header["fit"]
    fr = FitResult(
        elbo=params["elbo"], engine=params["engine"], loc=loc, scale=scale, history=history,
        steps=int(fit_info["steps"]), seconds=float("nan"), stop_reason=str(fit_info["stop_reason"]),
        guide=str(params["guide"]), scale_tril=tril,
    )
    classes = np.asarray(header["classes"], dtype=np.dtype(header["classes_dtype"]))
    try:
        est = VariationalSpamClassifier.from_fitted(params, pipe, fr, classes, d)
    except ValueError as exc:
        raise ModelFileError(f"{path} holds invalid parameters: {exc}") from None
    if header.get("feature_names_in"):
        est.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
    return est


def load_model(path: str | Path) -> SavedModel:
    """Read a model file; raises :class:`ModelFileError` for a corrupt, foreign or incompatible file.

    ``path`` is a ``model_<elbo>.npz`` of a run directory or a file written by
    :meth:`VariationalSpamClassifier.save`. Returns a :class:`SavedModel`: ``.estimator`` is the
    fitted classifier, ``.embedding`` how its training embeddings were made.

    Example (the model file of :func:`pyro_spam.run`'s example)

    >>> from pyro_spam import load_default, load_model
    >>> model = load_model("runs/demo/model_quad.npz")
    >>> model.estimator.predict_proba(load_default().X[:3]).shape
    (3, 2)
    """
    path = Path(path)
    header, arrays = read_model_file(path)
    try:
        est = _build(header, arrays, path)
    except KeyError as exc:
        raise ModelFileError(f"{path} lacks the entry {exc} its format version requires; the file is damaged") from None
    embedding = {"embedder": None, "max_length": None, "normalize": None, **(header.get("embedding") or {})}
    return SavedModel(estimator=est, embedding=embedding, header=header, path=path)
