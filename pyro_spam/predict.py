"""Score new messages with a saved model: text → embeddings (the training data's embedder) →
posterior predictive p(spam), a credible interval and a verdict.

The embedder comes from the model file (recorded from the training data). When it is unknown
(a user ``.npz`` without an ``embedder`` entry) text cannot be embedded faithfully, so only
precomputed embeddings are accepted (``--embeddings FILE.npz``: key ``X``, optional ``msg``).

p(spam) and its interval come from the model's fixed draws of w from q: N(loc, diag(scale²)) for a
mean-field model, N(loc, cov) with the saved Cholesky factor for a full- or low-rank one.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError, ModelFileError
from .estimator import SavedModel, load_model
from .io.modelfile import model_filename

DEFAULT_LEVEL = 0.9
THRESHOLD = 0.5  # the estimator's predict(): spam when the posterior predictive p(spam) > 0.5
PREFERRED_ELBO = "meanfield"
PROGRESS_MIN_MESSAGES = 200  # below this, embedding takes a moment and a bar is noise


@dataclass(frozen=True)
class MessagePrediction:
    """One scored message.

    message : str
    p_spam : float
        Posterior predictive mean of p(spam).
    lower, upper : float
        Equal-tailed credible interval of p(spam) at the report's level.
    verdict : str
        ``"spam"`` when p_spam > 0.5, else ``"ham"``.
    uncertain : bool
        The interval contains 0.5: the posterior does not settle the verdict.
    """

    message: str
    p_spam: float
    lower: float
    upper: float
    verdict: str
    uncertain: bool


@dataclass(frozen=True)
class PredictionReport:
    """Predictions for a batch of messages and where they came from (``guide``: the model's family of q)."""

    model: str
    elbo: str
    embedder: str | None
    level: float
    predictions: list[MessagePrediction] = field(default_factory=list)
    guide: str = "meanfield"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "elbo": self.elbo, "guide": self.guide, "embedder": self.embedder, "level": self.level,
            "threshold": THRESHOLD, "predictions": [asdict(p) for p in self.predictions],
        }


def resolve_model_path(path: str | Path, elbo: str | None = None) -> Path:
    """The model file behind ``path``: the file itself, or a run directory's ``model_<elbo>.npz``.

    In a run directory with several models the meanfield one is used unless ``elbo`` names another.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path} does not exist; pass a run directory or a model file (model_<elbo>.npz)")
    if not path.is_dir():
        if elbo is not None:
            raise ConfigError("--elbo chooses a model inside a run directory; a model file holds one fit already")
        return path
    found = {p.name[len("model_") : -len(".npz")]: p for p in sorted(path.glob(model_filename("*")))}
    if not found:
        raise ModelFileError(
            f"{path} holds no model file (model_<elbo>.npz); runs made before model files existed "
            "must be re-run with `pyro-spam run`"
        )
    if elbo is not None:
        if elbo not in found:
            raise ConfigError(f"{path} has no {elbo} model; available: {', '.join(found)}")
        return found[elbo]
    return found.get(PREFERRED_ELBO, next(iter(found.values())))


def read_messages(text: str) -> list[str]:
    """Messages from a file's text, one per line (blank lines skipped, line endings stripped)."""
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def embed_for_model(
    saved: SavedModel,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    progress: bool = False,
    encoder: Any = None,
) -> np.ndarray:
    """Embed ``texts`` exactly as the model's training data was embedded.

    ``encoder`` (an :class:`pyro_spam.embed.Encoder`) overrides loading the recorded one; tests use
    it to inject a small model.
    """
    from . import embed

    if encoder is None:
        name = saved.embedder
        if not name:
            raise ModelFileError(
                f"{saved.path} was trained on data whose embedder is not recorded "
                f"({saved.header.get('training_data', {}).get('source', 'a user .npz')}), so new text cannot be "
                "embedded the same way; embed the messages with the encoder that built the training data and "
                "pass them with --embeddings FILE.npz (keys X and, optionally, msg)"
            )
        emb = saved.embedding
        encoder = embed.load_encoder(name, max_length=emb.get("max_length"), normalize=emb.get("normalize"), progress=progress)
    d_model = int(saved.estimator.n_features_in_)
    if encoder.dim != d_model:
        raise ModelFileError(
            f"the encoder {encoder.name} makes {encoder.dim}-d embeddings but {saved.path} expects {d_model}-d ones"
        )
    return embed.embed_texts(list(texts), encoder, batch_size=batch_size, progress=progress)


def load_embeddings(path: str | Path, saved: SavedModel) -> tuple[np.ndarray, list[str]]:
    """Embeddings (key ``X``) and messages (key ``msg``, else ``row <i>``) from an ``.npz``.

    A course-format file works too (its labels are ignored). The file's recorded embedder, when
    both are known, must be the model's.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"embeddings file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a readable .npz of embeddings (not a complete .npz archive)")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            if "X" not in npz.files:
                raise DataError(f"{path} lacks the key X (an N×D array of embeddings)")
            X = np.asarray(npz["X"])
            msg = npz["msg"] if "msg" in npz.files else None
            emb = str(npz["embedder"].item()) if "embedder" in npz.files and npz["embedder"].size == 1 else None
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz of embeddings ({exc})") from None
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number) or X.shape[0] == 0:
        raise DataError(f"X in {path} must be a non-empty 2-D numeric array, got shape {X.shape} and dtype {X.dtype}")
    d_model = int(saved.estimator.n_features_in_)
    if X.shape[1] != d_model:
        raise DataError(f"X in {path} has {X.shape[1]} columns but {saved.path} expects {d_model}-d embeddings")
    if not np.all(np.isfinite(X)):
        raise DataError(f"X in {path} holds NaN or infinite values")
    if emb and saved.embedder and _canonical(emb) != _canonical(saved.embedder):
        raise DataError(
            f"{path} was embedded with {emb}, but {saved.path} was trained on {saved.embedder} embeddings"
        )
    if msg is None:
        messages = [f"row {i}" for i in range(X.shape[0])]
    else:
        if msg.shape != (X.shape[0],):
            raise DataError(f"msg in {path} has shape {msg.shape}; expected one string per row of X ({X.shape[0]})")
        messages = [str(m) for m in msg.tolist()]
    return X.astype(np.float64), messages


def _canonical(name: str) -> str:
    from .embed import MINILM_ALIASES, MINILM_NAME

    return MINILM_NAME if name in MINILM_ALIASES else name


def predict_embeddings(
    saved: SavedModel, X: np.ndarray, messages: Sequence[str], *, level: float = DEFAULT_LEVEL
) -> PredictionReport:
    """Score embedded messages: posterior predictive p(spam), its ``level`` interval, a verdict (from draws
    of the model's q, its full covariance included)."""
    if not 0 < level < 1:
        raise ConfigError(f"level must be between 0 and 1 (got {level!r})")
    est = saved.estimator
    p = est.predict_proba(X)[:, 1]
    interval = est.predict_interval(X, level=level)
    labels = est.predict(X)
    preds = [
        MessagePrediction(
            message=m, p_spam=float(pi), lower=float(lo), upper=float(hi),
            verdict="spam" if lab == est.classes_[1] else "ham", uncertain=bool(lo <= THRESHOLD <= hi),
        )
        for m, pi, (lo, hi), lab in zip(messages, p, interval, labels)
    ]
    return PredictionReport(
        model=str(saved.path), elbo=saved.elbo, embedder=saved.embedder, level=float(level), predictions=preds,
        guide=saved.guide,
    )


def predict_messages(
    model: str | Path,
    messages: Sequence[str] = (),
    *,
    embeddings: str | Path | None = None,
    elbo: str | None = None,
    level: float = DEFAULT_LEVEL,
    batch_size: int = 64,
    progress: bool = False,
    encoder: Any = None,
) -> PredictionReport:
    """Load the model behind ``model`` (run directory or file) and score ``messages`` or ``embeddings``.

    ``pyro-spam predict`` as a function: raw texts are embedded with the encoder that made the
    model's training data (the bundled MiniLM for the shipped data; needs the ``[embed]`` extra,
    works offline); ``embeddings`` (an ``.npz`` with key ``X``) skips the encoder. Returns a
    :class:`PredictionReport`: per message p(spam), its ``level`` credible interval and a verdict.

    Example, on a run of the shipped data (e.g. ``run("runs/demo", overwrite=True)``)::

        >>> from pyro_spam import predict_messages
        >>> report = predict_messages("runs/demo", ["WINNER!! You have won a £1000 prize. Call now to claim",
        ...                                         "see you at lunch"])
        >>> [p.verdict for p in report.predictions]  # p(spam) ≈ 0.94 and 0.001 with the default run
        ['spam', 'ham']
        >>> prize = report.predictions[0]
        >>> print(f"{report.level:.0%} interval of p(spam): {prize.lower:.2f}–{prize.upper:.2f}")  # doctest: +ELLIPSIS
        90% interval of p(spam): 0...–...
    """
    if embeddings is not None and messages:
        raise ConfigError("give either messages or --embeddings, not both")
    if not 0 < level < 1:  # before the encoder loads (seconds), not after
        raise ConfigError(f"level must be between 0 and 1 (got {level!r})")
    saved = load_model(resolve_model_path(model, elbo))
    if embeddings is not None:
        X, messages = load_embeddings(embeddings, saved)
    else:
        messages = list(messages)
        if not messages:
            raise ConfigError("no messages to score: pass them as arguments, with --file (one per line; '-' = stdin) or --embeddings")
        X = embed_for_model(
            saved, messages, batch_size=batch_size, progress=progress and len(messages) >= PROGRESS_MIN_MESSAGES,
            encoder=encoder,
        )
    return predict_embeddings(saved, X, messages, level=level)


def _shorten(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_table(report: PredictionReport, width: int = 60) -> str:
    """A plain-text table: p(spam), the credible interval, the verdict and the message."""
    pct = f"{100 * report.level:g}%"
    head = f"{'p(spam)':>8}  {pct + ' interval':>16}  {'verdict':<16}  message"
    guide = "" if report.guide == "meanfield" else f", {report.guide} guide"
    lines = [
        f"model: {report.model} ({report.elbo} ELBO{guide}; embedder: {report.embedder or 'unknown'})",
        head,
        "-" * len(head),
    ]
    for p in report.predictions:
        verdict = p.verdict + (" (uncertain)" if p.uncertain else "")
        lines.append(f"{p.p_spam:8.4f}  [{p.lower:.4f}, {p.upper:.4f}]  {verdict:<16}  {_shorten(p.message, width)}")
    return "\n".join(lines)


def format_json(report: PredictionReport) -> str:
    """The report as indented JSON."""
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False)


def embed_message_file(
    path: str | Path,
    out: str | Path,
    encoder: str = "minilm",
    *,
    dtype: str = "float32",
    batch_size: int = 64,
    progress: bool = True,
) -> Path:
    """Embed an unlabelled text file (one message per line) into an ``.npz`` for ``predict --embeddings``.

    Keys: ``X``, ``msg``, ``embedder`` and ``meta`` (as :func:`pyro_spam.embed.write_course_npz`
    writes them) but no ``y``: without labels it is input for prediction, not for training.
    """
    from . import embed
    from .io.rundir import write_npz

    if dtype not in embed.DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(embed.DTYPES)}, got {dtype!r}")
    path = Path(path)
    try:
        messages = read_messages(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"messages file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 ({exc}); re-save it as UTF-8") from None
    if not messages:
        raise DataError(f"{path} holds no messages (one message per line)")
    out = Path(out)
    if not out.parent.is_dir():
        raise DataError(f"cannot write {out}: folder {out.parent} does not exist")
    enc = encoder if isinstance(encoder, embed.Encoder) else embed.load_encoder(encoder, progress=progress)
    X = embed.embed_texts(messages, enc, batch_size=batch_size, progress=progress)
    meta = {**embed.build_meta(enc, source=path), "dtype": dtype, "n": len(messages), "dim": enc.dim, "labels": "none"}
    write_npz(
        out, X=X.astype(dtype), msg=np.asarray(messages, dtype=str), embedder=np.array(enc.name, dtype=str),
        meta=np.array(json.dumps(meta, sort_keys=True, ensure_ascii=False), dtype=str),
    )
    return out
