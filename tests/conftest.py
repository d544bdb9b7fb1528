"""Shared fixtures. Pyro validation is on for every test; seeds are explicit per test."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pyro
import pytest
import torch

from pyro_spam.types import Dataset

# The tensors in these tests are tiny: a second intra-op thread costs more in synchronisation
# than it saves (about 10x slower per step on a loaded 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _pyro_validation():
    pyro.enable_validation(True)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def make_dataset(n: int = 600, dim: int = 20, spam_rate: float = 0.2, seed: int = 0, signal: float = 2.5) -> Dataset:
    """A small synthetic course-format data set whose labels depend on the first direction of X."""
    rng = np.random.default_rng(seed)
    # Three latent factors with decreasing strength, seen through random loadings plus noise:
    # correlated dimensions, so PCA after per-dimension scaling finds an anisotropic spectrum.
    factors = rng.normal(size=(n, 3)) * np.array([3.0, 2.0, 1.5])
    X = factors @ rng.normal(size=(3, dim)) + rng.normal(size=(n, dim))
    z = np.log(spam_rate / (1 - spam_rate)) + signal * factors[:, 0] / 3.0
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    msg = np.array([f"message {i}" for i in range(n)])
    return Dataset(X=X.astype(np.float32), y=y, msg=msg, source="synthetic")


@pytest.fixture
def synthetic_npz(tmp_path):
    """Write a synthetic course-format .npz and return its path."""
    ds = make_dataset()
    path = tmp_path / "synthetic.npz"
    np.savez(path, X=ds.X, y=ds.y, msg=ds.msg)
    return path
