"""Training checkpoints: the state a fit needs to continue exactly where it stopped.

Every run directory holds ``checkpoint.json`` (configuration, per-fit scalars, format version and
the SHA-256 of the arrays file) and ``checkpoint.npz`` (plain numeric arrays: guide parameters,
Adam moments, histories, RNG states). Nothing is pickled and nothing is unpickled on load
(``allow_pickle=False``). ``pyro-spam run --resume RUN_DIR`` reads them back through
:func:`load_checkpoint`; every way a file can be corrupt, from another version or from another
data set raises :class:`~pyro_spam.errors.ModelFileError` with one message saying what to do.

A fit's state is *exact* when it holds the unconstrained Pyro parameters, the optimiser state
and the RNG states at a step boundary (what the SVI engine records); resuming an exact state
gives bit-for-bit the numbers of an uninterrupted run. A state without them (the manual engine,
or a hard second Ctrl-C in the middle of a step) resumes from the last completed step's loc and
scale with a fresh optimiser: close, but not bit-identical.

This module is numpy + JSON only (no torch, no Pyro).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError, ModelFileError, PyroSpamError
from ..types import ElboHistory, FeatureSet, FitResult, TrainState
from .rundir import SUMMARY, atomic_write_bytes, write_json

if TYPE_CHECKING:  # pipeline imports this module; the type is only needed for annotations
    pass

log = logging.getLogger(__name__)

CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_NPZ = "checkpoint.npz"
FORMAT = "pyro-spam-checkpoint"
VERSION = 1
HISTORY_FIELDS = ("elbo", "loglik", "kl", "lr")
STOP_REASONS = ("converged", "budget", "interrupted", "max_steps")  # "max_steps": 0.1.0's name for "budget"


@dataclass
class FitCheckpoint:
    """One fit of a run as saved: its resume state and how it ended."""

    kind: str
    engine: str
    state: TrainState
    stop_reason: str
    convergence: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.state.history)

    @property
    def complete(self) -> bool:
        """Finished (converged or used its budget): resuming it would change nothing."""
        return self.stop_reason != "interrupted"

    def to_fit_result(self, guide: str = "meanfield") -> FitResult:
        """The saved fit as a :class:`FitResult` (for fits that were already complete); ``guide``: the
        run's guide family (its configuration's ``train.guide``)."""
        s = self.state
        loc, scale = (s.fit_loc, s.fit_scale) if s.fit_loc is not None else (s.loc, s.scale)
        tril = s.fit_scale_tril if s.fit_loc is not None else s.scale_tril
        return FitResult(
            elbo=self.kind, engine=self.engine, loc=np.asarray(loc, dtype=np.float64), scale=np.asarray(scale, dtype=np.float64),
            history=s.history, steps=self.steps, seconds=s.seconds, stop_reason=self.stop_reason,
            extra={"lr_final": s.lr, "decays_done": s.decays_done, "lr_events": list(s.events), "convergence": self.convergence},
            state=s, guide=guide, scale_tril=None if tril is None else np.asarray(tril, dtype=np.float64),
        )


@dataclass
class Checkpoint:
    """A run's checkpoint: its configuration, a fingerprint of its features and one entry per fit."""

    config: RunConfig
    fits: dict[str, FitCheckpoint]
    features_sha256: str
    n_train: int
    k: int
    source: Path | None = None

    @property
    def interrupted(self) -> list[str]:
        """ELBO types whose fit was interrupted."""
        return [k for k, f in self.fits.items() if not f.complete]

    @property
    def finished(self) -> bool:
        """Every requested fit is complete."""
        return all(k in self.fits and self.fits[k].complete for k in self.config.elbos)

    def check_features(self, fs: FeatureSet) -> None:
        """Refuse to resume on features that differ from the ones the run was trained on."""
        if fs.k != self.k or fs.X_train.shape[0] != self.n_train or features_fingerprint(fs) != self.features_sha256:
            raise ModelFileError(
                f"checkpoint {self.source} does not match the data: the run was trained on {self.n_train} "
                f"messages with K={self.k}, the data now give {fs.X_train.shape[0]} with K={fs.k} "
                "(or different values); resume needs the same data file, or start a new run with --out"
            )


def features_fingerprint(fs: FeatureSet) -> str:
    """SHA-256 of the exact training inputs (shape, dtype and bytes of X_train and y_train)."""
    h = hashlib.sha256()
    for a in (fs.X_train, fs.y_train):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def state_from_fit(fr: FitResult) -> TrainState:
    """The fit's resume state: the engine's exact one if it recorded it, else loc/scale/history."""
    state = getattr(fr, "state", None)
    if state is not None:
        return state
    extra = fr.extra or {}
    return TrainState(
        loc=np.asarray(fr.loc), scale=np.asarray(fr.scale), history=fr.history,
        lr=float(extra.get("lr_final", np.nan)), decays_done=int(extra.get("decays_done", 0)),
        events=list(extra.get("lr_events", [])), seconds=float(fr.seconds),
    )


# --- writing ---------------------------------------------------------------------------------


def _state_to_files(kind: str, st: TrainState) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    p = f"{kind}."
    arrays: dict[str, np.ndarray] = {p + "loc": np.asarray(st.loc), p + "scale": np.asarray(st.scale)}
    for name in HISTORY_FIELDS:
        arrays[f"{p}history.{name}"] = np.asarray(getattr(st.history, name), dtype=np.float64)
    meta: dict[str, Any] = {
        "lr": float(st.lr), "decays_done": int(st.decays_done), "events": st.events, "seconds": float(st.seconds),
        "exact": st.exact,
    }
    for name in ("fit_loc", "fit_scale", "scale_tril", "fit_scale_tril"):
        if getattr(st, name) is not None:
            arrays[p + name] = np.asarray(getattr(st, name), dtype=np.float64)
    if st.stop_state is not None:
        meta["stop_state"] = sorted(st.stop_state)
        for name, value in st.stop_state.items():
            arrays[f"{p}stop.{name}"] = np.asarray(value)
    if st.exact:
        meta["params"] = sorted(st.params)
        for name, value in st.params.items():
            arrays[f"{p}param.{name}"] = np.asarray(value)
        meta["optim"] = {}
        for name, sd in st.optim.items():
            keys = {}
            for idx, entries in sd["state"].items():
                keys[str(idx)] = sorted(entries)
                for key, value in entries.items():
                    arrays[f"{p}optim.{name}.{idx}.{key}"] = np.asarray(value)
            meta["optim"][name] = {"param_groups": sd["param_groups"], "state_keys": keys}
        np_state, py_state = st.rng["numpy"], st.rng["random"]
        arrays[p + "rng.torch"] = np.asarray(st.rng["torch"], dtype=np.uint8)
        arrays[p + "rng.numpy"] = np.asarray(np_state[1], dtype=np.uint32)
        arrays[p + "rng.random"] = np.asarray(py_state[1], dtype=np.int64)
        meta["rng"] = {
            "numpy": {"kind": str(np_state[0]), "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                      "cached_gaussian": float(np_state[4])},
            "random": {"version": int(py_state[0]), "gauss_next": py_state[2]},
        }
    return arrays, meta


def save_checkpoint(
    out: Path, config: RunConfig, fits: dict[str, FitResult], features: FeatureSet, *,
    versions: dict[str, str] | None = None,
) -> None:
    """Write ``checkpoint.npz`` then ``checkpoint.json`` (which records the npz's SHA-256) into ``out``.

    Both are written atomically; a reader that finds a JSON whose hash does not match the npz
    knows the pair is inconsistent.
    """
    out = Path(out)
    arrays: dict[str, np.ndarray] = {}
    fits_meta: dict[str, Any] = {}
    for kind, fr in fits.items():
        a, m = _state_to_files(kind, state_from_fit(fr))
        arrays.update(a)
        fits_meta[kind] = {"engine": fr.engine, "stop_reason": fr.stop_reason, "steps": int(fr.steps),
                           "convergence": (fr.extra or {}).get("convergence", {}), **m}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    atomic_write_bytes(out / CHECKPOINT_NPZ, data)
    write_json(out / CHECKPOINT_JSON, {
        "format": FORMAT,
        "version": VERSION,
        "npz_sha256": hashlib.sha256(data).hexdigest(),
        "config": config.to_dict(),
        "features": {"sha256": features_fingerprint(features), "n_train": int(features.X_train.shape[0]), "k": features.k},
        "versions": versions or {},
        "fits": fits_meta,
    })


# --- reading ---------------------------------------------------------------------------------


def _bad(path: Path, problem: str) -> ModelFileError:
    return ModelFileError(
        f"checkpoint {path} {problem}; it cannot be resumed: start a new run (pyro-spam run --out NEW_DIR)"
    )


def _read_meta(run_dir: Path) -> dict[str, Any]:
    if not run_dir.exists():
        raise ModelFileError(f"run directory {run_dir} does not exist; pass the directory of an earlier pyro-spam run")
    if not run_dir.is_dir():
        raise ModelFileError(f"{run_dir} is not a directory; --resume takes the directory of an earlier pyro-spam run")
    path = run_dir / CHECKPOINT_JSON
    if not path.exists():
        what = "holds a run but no checkpoint (made by an older pyro-spam?)" if (run_dir / SUMMARY).exists() \
            else "is not a pyro-spam run directory (no checkpoint.json)"
        raise ModelFileError(f"{run_dir} {what}; start a new run (pyro-spam run --out NEW_DIR)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"is corrupt (not valid JSON: {exc})") from None
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror or exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _bad(path, f"is not a pyro-spam checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise _bad(path, f"has format version {meta.get('version')!r}, but this pyro-spam reads version {VERSION}")
    return meta


def _read_arrays(run_dir: Path, expected_sha: str) -> dict[str, np.ndarray]:
    path = run_dir / CHECKPOINT_NPZ
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _bad(path, "is missing") from None
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != expected_sha:
        raise _bad(path, f"does not match its {CHECKPOINT_JSON} (SHA-256 differs: truncated, edited or from another run)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _bad(path, f"is not a readable .npz ({type(exc).__name__}: {exc})") from None


def _array(arrays: dict[str, np.ndarray], key: str, path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if key not in arrays:
        raise _bad(path, f"lacks the array {key!r}")
    a = arrays[key]
    if shape is not None and a.shape != shape:
        raise _bad(path, f"has {key!r} of shape {a.shape}, expected {shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise _bad(path, f"has non-finite values in {key!r}")
    return a


def _state_from_files(kind: str, m: dict[str, Any], arrays: dict[str, np.ndarray], k1: int, path: Path) -> TrainState:
    p = f"{kind}."
    steps = int(m["steps"])
    hist = ElboHistory(**{name: _array(arrays, f"{p}history.{name}", path, (steps,)).astype(np.float64)
                          for name in HISTORY_FIELDS})
    st = TrainState(
        loc=_array(arrays, p + "loc", path, (k1,)), scale=_array(arrays, p + "scale", path, (k1,)),
        history=hist, lr=float(m["lr"]), decays_done=int(m["decays_done"]),
        events=[dict(e) for e in m.get("events", [])], seconds=float(m.get("seconds", 0.0)),
    )
    if not (st.lr > 0 and np.all(st.scale > 0)):
        raise _bad(path, f"has an invalid {kind} state (learning rate {st.lr}, scale {st.scale.tolist()})")
    if p + "fit_loc" in arrays:
        st.fit_loc, st.fit_scale = _array(arrays, p + "fit_loc", path, (k1,)), _array(arrays, p + "fit_scale", path, (k1,))
    for name in ("scale_tril", "fit_scale_tril"):
        if p + name in arrays:
            setattr(st, name, _array(arrays, p + name, path, (k1, k1)))
    if m.get("stop_state"):
        st.stop_state = {name: _array(arrays, f"{p}stop.{name}", path) for name in m["stop_state"]}
    if not m.get("exact"):
        return st
    # guide parameters have the guide's shapes; Pyro's score-estimator baselines are state of shape (S, 1) or ()
    shapes = {"w_loc": (k1,), "w_scale": (k1,), "w_scale_tril": (k1, k1), "w_cov_diag": (k1,)}
    st.params = {name: _array(arrays, f"{p}param.{name}", path, shapes.get(name)) for name in m["params"]}
    st.optim = {}
    for name, om in m["optim"].items():
        groups = []
        for g in om["param_groups"]:
            g = dict(g)
            if isinstance(g.get("betas"), list):
                g["betas"] = tuple(g["betas"])
            groups.append(g)
        state = {
            int(idx): {key: _array(arrays, f"{p}optim.{name}.{idx}.{key}", path) for key in keys}
            for idx, keys in om["state_keys"].items()
        }
        st.optim[name] = {"state": state, "param_groups": groups}
    r = m["rng"]
    st.rng = {
        "torch": _array(arrays, p + "rng.torch", path).astype(np.uint8),
        "numpy": (r["numpy"]["kind"], _array(arrays, p + "rng.numpy", path).astype(np.uint32), int(r["numpy"]["pos"]),
                  int(r["numpy"]["has_gauss"]), float(r["numpy"]["cached_gaussian"])),
        "random": (int(r["random"]["version"]), tuple(int(v) for v in _array(arrays, p + "rng.random", path)),
                   r["random"]["gauss_next"]),
    }
    return st


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Read and validate a run directory's checkpoint.

    Raises
    ------
    ModelFileError
        If the directory holds no run or no checkpoint, or the checkpoint is corrupt, from another
        format version, inconsistent between its two files, or has arrays of the wrong shape.
    """
    run_dir = Path(run_dir)
    meta = _read_meta(run_dir)
    path = run_dir / CHECKPOINT_JSON
    try:
        config = RunConfig.from_saved(meta["config"])
        feats = meta["features"]
        k = int(feats["k"])
        arrays = _read_arrays(run_dir, str(meta["npz_sha256"]))
        fits = {}
        for kind, m in meta["fits"].items():
            if kind not in config.elbos or m["stop_reason"] not in STOP_REASONS:
                raise _bad(path, f"has an unexpected fit entry {kind!r} ({m.get('stop_reason')!r})")
            reason = "budget" if m["stop_reason"] == "max_steps" else m["stop_reason"]
            fits[kind] = FitCheckpoint(kind=kind, engine=str(m["engine"]), stop_reason=reason,
                                       state=_state_from_files(kind, m, arrays, k + 1, run_dir / CHECKPOINT_NPZ),
                                       convergence=dict(m.get("convergence") or {}))
        return Checkpoint(config=config, fits=fits, features_sha256=str(feats["sha256"]), n_train=int(feats["n_train"]),
                          k=k, source=run_dir)
    except ModelFileError:
        raise
    except ConfigError as exc:
        raise _bad(path, f"holds an invalid configuration ({exc})") from None
    except PyroSpamError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _bad(path, f"is incomplete or malformed ({type(exc).__name__}: {exc})") from None
