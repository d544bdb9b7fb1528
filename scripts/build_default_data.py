#!/usr/bin/env python
"""Build the shipped default data set: SMS Spam Collection → all-MiniLM-L6-v2 embeddings.

Run from the repository root (needs the ``[embed]`` extra; nothing is downloaded):

    .venv/bin/python scripts/build_default_data.py

It reads ``../shared/data/SMSSpamCollection`` (or ``--collection``), checks its md5, embeds every
message with the bundled all-MiniLM-L6-v2 (masked mean pooling + the model's L2 Normalize),
cross-checks a sample against sentence-transformers, measures what storing float16 instead of
float32 changes (raw values, cosine similarities, and the scale → PCA(5) → scale features the
model uses), then writes ``pyro_spam/data/384d_sms_spam_all-MiniLM-L6-v2.npz`` and a ``.json``
sidecar with the same metadata (including those measurements).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_spam.collection import read_collection  # noqa: E402
from pyro_spam.data import DEFAULT_DATA_NAME, load_npz  # noqa: E402
from pyro_spam.embed import (  # noqa: E402
    MINILM_NAME,
    build_meta,
    embed_texts,
    file_md5,
    load_encoder,
    minilm_path,
    read_meta,
    write_course_npz,
    write_sidecar,
)
from pyro_spam.errors import PyroSpamError  # noqa: E402

EXPECTED_MD5 = "1949b64a224790d01335c2bf8a0e48b2"
DEFAULT_COLLECTION = Path("../shared/data/SMSSpamCollection")
DEFAULT_OUT = Path("pyro_spam/data") / DEFAULT_DATA_NAME
PCA_K = 5
# float16 is kept when the PCA(5) features (in standard-deviation units; degenerate columns
# treated as constant) move by less than this.
FLOAT16_TOLERANCE = 1e-3
CHECK_SAMPLE = 64
DEGENERATE_REL = 1e-6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--collection", type=Path, default=DEFAULT_COLLECTION,
                   help="raw SMSSpamCollection file (relative paths: from the repo root; default %(default)s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="output .npz (relative paths: from the repo root; default %(default)s)")
    p.add_argument("--dtype", choices=("auto", "float16", "float32"), default="auto",
                   help="storage dtype of X; auto = float16 if the PCA(5) features move by less than "
                        f"{FLOAT16_TOLERANCE:g} (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--expected-md5", default=EXPECTED_MD5, help="md5 the collection must have ('' to skip)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def degenerate_columns(X: np.ndarray) -> np.ndarray:
    """Columns whose spread is numerical noise (std <= DEGENERATE_REL × the largest column std).

    all-MiniLM-L6-v2 has such "dead" dimensions (std ~1e-33 and ~1e-8 against ~0.05 for the
    others); a plain ``std > 0`` standardisation would blow that noise up to unit variance.
    """
    std = X.astype(np.float64).std(0)
    return np.nonzero(std <= DEGENERATE_REL * std.max())[0]


def pca_features(X: np.ndarray, k: int = PCA_K, *, guard: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """scale → PCA(k) → scale, fitted on all rows in float64; returns (features, explained ratio).

    ``guard=True`` treats degenerate columns as constant (centred, not divided by their tiny std);
    ``guard=False`` is the naive ``std > 0`` rule.
    """
    from sklearn.decomposition import PCA

    X = X.astype(np.float64)
    std = X.std(0)
    ok = std > (DEGENERATE_REL * std.max() if guard else 0.0)
    Z = (X - X.mean(0)) / np.where(ok, std, 1.0)
    pca = PCA(n_components=k, svd_solver="full").fit(Z)
    F = pca.transform(Z)
    return F / F.std(0), pca.explained_variance_ratio_


def _aligned_max_diff(A: np.ndarray, B: np.ndarray) -> float:
    signs = np.sign((A * B).sum(0))  # a component's sign is arbitrary; align before comparing
    return float(np.abs(A - B * signs).max())


def max_cosine_diff(A: np.ndarray, B: np.ndarray, block: int = 1024) -> float:
    """Max |cos(a_i, a_j) - cos(b_i, b_j)| over all pairs, computed blockwise in float64."""
    A = A.astype(np.float64)
    B = B.astype(np.float64)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    worst = 0.0
    for s in range(0, A.shape[0], block):
        worst = max(worst, float(np.abs(A[s:s + block] @ A.T - B[s:s + block] @ B.T).max()))
    return worst


def compare_dtypes(X32: np.ndarray) -> dict[str, object]:
    """How much a float16 round trip changes the data and the model's PCA(5) inputs."""
    X16 = X32.astype(np.float16).astype(np.float32)
    F32, r32 = pca_features(X32)
    F16, r16 = pca_features(X16)
    N32, _ = pca_features(X32, guard=False)
    N16, _ = pca_features(X16, guard=False)
    return {
        "X_max_abs_error": float(np.abs(X16 - X32).max()),
        "X_max_abs_value": float(np.abs(X32).max()),
        "cosine_max_abs_diff": max_cosine_diff(X32, X16),
        "degenerate_columns": degenerate_columns(X32).tolist(),
        "pca5_features_max_abs_diff": _aligned_max_diff(F32, F16),
        "pca5_explained_variance_ratio_float32": [round(float(v), 6) for v in r32],
        "pca5_explained_variance_ratio_max_abs_diff": float(np.abs(r16 - r32).max()),
        "naive_std_gt_0_pca5_features_max_abs_diff": _aligned_max_diff(N32, N16),
        "naive_vs_guarded_pca5_features_max_abs_diff_float32": _aligned_max_diff(F32, N32),
    }


def check_against_sentence_transformers(texts: list[str], ours: np.ndarray) -> float | None:
    """Max abs difference to ``SentenceTransformer.encode`` on a sample (None if not installed)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    st = SentenceTransformer(str(minilm_path()), device="cpu")
    ref = st.encode(texts, normalize_embeddings=False, batch_size=16, show_progress_bar=False)
    return float(np.abs(ref - ours).max())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    collection = args.collection if args.collection.is_absolute() else ROOT / args.collection
    out = args.out if args.out.is_absolute() else ROOT / args.out
    command = " ".join(["python scripts/build_default_data.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        md5 = file_md5(collection) if collection.is_file() else None
        if md5 is None:
            raise PyroSpamError(f"collection {collection} not found; pass --collection PATH")
        if args.expected_md5 and md5 != args.expected_md5:
            raise PyroSpamError(
                f"{collection} has md5 {md5}, expected {args.expected_md5}: not the SMS Spam Collection "
                "v.1 this file is built from (pass --expected-md5 '' to build anyway)"
            )
        y, msg = read_collection(collection)
        print(f"read {y.size} messages ({int(y.sum())} spam) from {collection} (md5 {md5} ok)")

        t0 = time.perf_counter()
        enc = load_encoder("minilm")
        X32 = embed_texts(msg, enc, batch_size=args.batch_size, progress=not args.no_progress)
        t_embed = time.perf_counter() - t0
        print(f"embedded {X32.shape[0]} × {X32.shape[1]} in {t_embed:.1f} s ({enc.describe()['normalisation']})")

        sample = [str(m) for m in msg[:CHECK_SAMPLE]]
        st_diff = check_against_sentence_transformers(sample, X32[:CHECK_SAMPLE])
        if st_diff is not None:
            print(f"check: max |ours - SentenceTransformer.encode| on {CHECK_SAMPLE} messages = {st_diff:.2e}")
            if st_diff > 1e-4:
                raise PyroSpamError(f"embeddings differ from sentence-transformers by {st_diff:.2e}; not writing")

        cmp = compare_dtypes(X32)
        print("float16 vs float32:")
        for key, value in cmp.items():
            print(f"  {key}: {value}")
        if args.dtype == "auto":
            dtype = "float16" if cmp["pca5_features_max_abs_diff"] < FLOAT16_TOLERANCE else "float32"
        else:
            dtype = args.dtype
        print(f"chosen dtype: {dtype} (PCA(5) features, degenerate columns held constant, move by "
              f"{cmp['pca5_features_max_abs_diff']:.2e} "
              f"standard deviations; tolerance {FLOAT16_TOLERANCE:g})")

        meta = build_meta(enc, source=collection, build_command=command)
        meta["float16_vs_float32"] = cmp
        meta["sentence_transformers_max_abs_diff"] = st_diff
        meta["embed_seconds"] = round(t_embed, 1)
        meta["licence"] = "CC BY 4.0 (SMS Spam Collection v.1, Almeida, Gómez Hidalgo & Yamakami, DocEng 2011)"
        write_course_npz(out, X32, y, msg, embedder=MINILM_NAME, meta=meta, dtype=dtype)
        side = write_sidecar(out, read_meta(out))

        ds = load_npz(out)
        assert ds.embedder == MINILM_NAME and ds.X.shape == X32.shape
        print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} "
              f"({out.stat().st_size / 1e6:.1f} MB, {ds.n} × {ds.dim}, {int(ds.y.sum())} spam) and {side.name}")
        print(f"total {time.perf_counter() - t0:.1f} s")
    except PyroSpamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
