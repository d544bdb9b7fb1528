"""The vectorised PSIS paths give ArviZ's numbers (and those of the implementations they replaced).

``loo_summary`` against ``az.loo`` (the same numbers to 1e-9, the same Pareto-k counts, flag and
warning messages), the block smoothing against ``az.psislw`` (float64 and float32 rows, heavy
tails, ties, non-finite values, too few draws), ``vi_corrected_loo`` against its former
``az.psislw`` + ``scipy.special.logsumexp`` form, and ``loglik_sum`` against ``logsigmoid``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import logsumexp

from pyro_spam.diagnostics import psis
from pyro_spam.diagnostics.psis import loo_summary, psis_rows, vi_corrected_loo
from pyro_spam.inference_data import az
from pyro_spam.posterior import loglik_sum


def _az_loo_summary(idata):
    """What ``loo_summary`` returned when it called ``az.loo`` (the reference)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = az.loo(idata, pointwise=True)
    k = np.asarray(res.pareto_k)
    good_k = float(res.good_k)
    n = int(res.n_data_points)
    return {
        "elpd": float(res.elpd_loo), "se": float(res.se), "p_loo": float(res.p_loo),
        "elpd_per_message": float(res.elpd_loo) / n, "warning": bool(res.warning),
        "warning_messages": sorted({str(w.message).split(". ")[0] for w in caught}), "n_obs": n,
        "n_draws": int(res.n_samples), "good_k": good_k, "k_max": float(np.max(k)),
        "pareto_k_counts": {f"k<={good_k:.2f}": int(np.sum(k <= good_k)),
                            f"{good_k:.2f}<k<=1": int(np.sum((k > good_k) & (k <= 1))), "k>1": int(np.sum(k > 1))},
    }


def _assert_same(new: dict, ref: dict, rtol: float = 1e-9) -> None:
    assert new.keys() == ref.keys()
    for key, want in ref.items():
        got = new[key]
        if isinstance(want, float):
            if np.isfinite(want):
                assert got == pytest.approx(want, rel=rtol, abs=0), key
            else:
                assert (np.isnan(got) and np.isnan(want)) or got == want, key
        else:
            assert got == want, key


def _idata(ll: np.ndarray) -> az.InferenceData:
    """One- or several-chain InferenceData around a (chain, draw, obs) log-likelihood."""
    w = np.zeros(ll.shape[:2] + (2,))
    return az.from_dict(posterior={"w": w}, log_likelihood={"y": ll})


def _logistic_loglik(n: int, draws: int, seed: int, outliers: int = 0, spread: float = 0.15) -> np.ndarray:
    """(draws, n) pointwise log-likelihoods of a 3-coefficient logistic model at Gaussian draws."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    w_true = np.array([-1.0, 2.0, -1.5])
    y = (rng.random(n) < 1 / (1 + np.exp(-(w_true[0] + x @ w_true[1:])))).astype(float)
    x[:outliers] *= 4.0
    y[:outliers] = 1.0 - y[:outliers]  # influential, mislabelled: high Pareto k
    w = w_true + spread * rng.normal(size=(draws, 3))
    z = w[:, :1] + w[:, 1:] @ x.T
    return -np.logaddexp(0.0, np.where(y > 0, -z, z))


def _loo_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    ll = _logistic_loglik(600, 1000, seed=1)
    cases = {
        "logistic float32": ll.astype(np.float32)[None],
        "logistic float64": ll[None],
        "outliers (k > good_k)": _logistic_loglik(300, 1000, seed=2, outliers=12, spread=0.5).astype(np.float32)[None],
        "heavy tails (k > 1)": (-np.abs(rng.standard_cauchy((1, 1000, 200))) * 3.0).astype(np.float32),
        "ties": np.round(ll[:, :200], 2).astype(np.float32)[None],
        "400 draws": ll[:400, :150].astype(np.float32)[None],
        "15 draws (no fit)": ll[:15, :50].astype(np.float32)[None],
    }
    bad = ll[:, :100].copy()
    bad[3, 7] = -np.inf  # a zero-likelihood draw: ArviZ's own floating-point warnings
    bad[:, 11] = bad[0, 11]  # a constant column
    cases["non-finite and constant"] = bad[None]
    cases["one observation"] = ll[:, :1][None]
    return cases


@pytest.mark.parametrize("name", list(_loo_cases()))
def test_loo_summary_equals_az_loo(name: str) -> None:
    idata = _idata(_loo_cases()[name])
    _assert_same(loo_summary(idata), _az_loo_summary(idata))


@pytest.mark.parametrize("name", ["logistic float32", "outliers (k > good_k)"])
def test_loo_summary_of_an_array_equals_that_of_its_inference_data(name: str) -> None:
    """The run passes the (n_draws, n_obs) float32 matrix itself: the same numbers and warnings."""
    ll = _loo_cases()[name]
    assert loo_summary(ll[0]) == loo_summary(_idata(ll))
    with pytest.raises(ValueError, match="n_draws, n_obs"):
        loo_summary(ll)


def test_loo_summary_cases_cover_the_warnings() -> None:
    """The cases above exercise the Pareto warning, k > 1, ArviZ's fallback rows and its numpy warnings."""
    cases = _loo_cases()
    out = {name: loo_summary(_idata(ll)) for name, ll in cases.items()}
    assert not out["logistic float32"]["warning"]
    assert out["outliers (k > good_k)"]["warning"] and out["heavy tails (k > 1)"]["pareto_k_counts"]["k>1"] > 0
    assert out["15 draws (no fit)"]["k_max"] == np.inf
    assert any("encountered" in m for m in out["non-finite and constant"]["warning_messages"])
    assert any("point-wise LOO is the same" in m for m in out["one observation"]["warning_messages"])


def test_loo_summary_skips_az_loo_for_one_chain(monkeypatch) -> None:
    """A one-chain posterior never reaches ``az.loo``; two chains (ESS-based efficiency) do, unchanged."""
    ll = _logistic_loglik(200, 600, seed=4).astype(np.float32)
    two_chains = _idata(ll.reshape(2, 300, 200))
    ref = _az_loo_summary(two_chains)

    def boom(*args, **kwargs):
        raise AssertionError("az.loo called")

    monkeypatch.setattr(az, "loo", boom)
    loo_summary(_idata(ll[None]))
    with pytest.raises(AssertionError, match="az.loo called"):
        loo_summary(two_chains)
    monkeypatch.undo()
    _assert_same(loo_summary(two_chains), ref)


def test_loo_summary_follows_arviz_scale_setting() -> None:
    """With another ``stats.ic_scale`` than "log", ``az.loo`` itself answers, as before."""
    idata = _idata(_logistic_loglik(100, 300, seed=9).astype(np.float32)[None])
    with az.rc_context({"stats.ic_scale": "deviance"}):
        out, ref = loo_summary(idata), _az_loo_summary(idata)
    _assert_same(out, ref)
    assert out["elpd"] > 0  # deviance: −2 × the log score


def _block_psis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The block smoother over all rows of ``x`` in its dtype (what ``loo_summary`` runs on float32)."""
    out = np.array(x, copy=True)
    smoother = psis._BlockPsis(x.shape[1])
    k = np.concatenate([smoother.smooth(out[lo : lo + psis._PSIS_CHUNK], lambda i, lo=lo: x[lo + i].copy())
                        for lo in range(0, x.shape[0], psis._PSIS_CHUNK)])
    return out, k


def _psislw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lw, k = az.psislw(x.copy())
    return np.asarray(lw), np.asarray(k)


def _psis_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    nonfinite = rng.standard_t(3, size=(12, 500))
    nonfinite[1, 3], nonfinite[2, :] = np.nan, 0.0
    nonfinite[4, 5], nonfinite[5, 9] = np.inf, -np.inf
    return {
        "t3": rng.standard_t(3, size=(300, 1000)),
        "wide t2": 10 * rng.standard_t(2, size=(40, 1000)),
        "light": 0.3 * rng.normal(size=(60, 200)),
        "ties": np.round(rng.normal(size=(40, 100)), 1),
        "short": rng.normal(size=(5, 12)),
        "non-finite": nonfinite,
        "logistic loo": -_logistic_loglik(400, 1000, seed=6).T,
    }


@pytest.mark.parametrize("name", list(_psis_cases()))
def test_psis_rows_and_float32_blocks_equal_psislw(name: str) -> None:
    x = _psis_cases()[name]
    lw, k = psis_rows(x)
    ref, kref = _psislw(x)
    np.testing.assert_allclose(lw, ref, atol=1e-10, rtol=0)
    np.testing.assert_allclose(k, kref, atol=1e-10, rtol=0)
    x32 = x.astype(np.float32)
    lw32, k32 = _block_psis(x32)
    ref32, kref32 = _psislw(x32)
    assert lw32.dtype == np.float32
    np.testing.assert_allclose(lw32, ref32, atol=2e-6, rtol=0)  # a float32 rounding at most
    np.testing.assert_allclose(k32, kref32, atol=1e-10, rtol=0)


def test_psis_rows_leaves_its_input_alone() -> None:
    x = np.random.default_rng(7).standard_t(3, size=(20, 300))
    before = x.copy()
    psis_rows(x)
    np.testing.assert_array_equal(x, before)


def _reference_vi_corrected_loo(ll: np.ndarray, log_ratio: np.ndarray) -> dict[str, float]:
    """The former formulation: per-row ``az.psislw`` and ``scipy.special.logsumexp`` over draws."""
    lr = log_ratio - log_ratio.max()
    lw, k = _psislw((lr[:, None] - ll).T)
    lw_full, _ = _psislw(lr[None, :])
    elpd_i = logsumexp(lw.T + ll, axis=0)
    lppd_i = logsumexp(lw_full[0][:, None] + ll, axis=0)
    n = ll.shape[1]
    return {"elpd": float(elpd_i.sum()), "se": float(np.sqrt(n * np.var(elpd_i))),
            "p_loo": float(lppd_i.sum() - elpd_i.sum()), "k": k}


@pytest.mark.parametrize("seed", [0, 1])
def test_vi_corrected_loo_equals_the_former_formulation(seed: int) -> None:
    ll = _logistic_loglik(700, 1000, seed=seed, outliers=5)
    rng = np.random.default_rng(seed)
    for log_ratio in (np.zeros(1000), 2.0 * rng.standard_t(4, size=1000)):
        new, ref = vi_corrected_loo(ll, log_ratio), _reference_vi_corrected_loo(ll, log_ratio)
        assert new["elpd"] == pytest.approx(ref["elpd"], rel=1e-12, abs=0)
        assert new["se"] == pytest.approx(ref["se"], rel=1e-12, abs=0)
        assert new["p_loo"] == pytest.approx(ref["p_loo"], rel=0, abs=1e-12 * abs(ref["elpd"]))
        assert new["k_max"] == pytest.approx(float(ref["k"].max()), rel=0, abs=1e-12)
        assert new["pareto_k_counts"]["k>1"] == int(np.sum(ref["k"] > 1))
        assert new["pareto_k_counts"]["k<=0.70"] == int(np.sum(ref["k"] <= 0.7))


def _loglik_sum_logsigmoid(w, x, y) -> np.ndarray:
    """The former ``loglik_sum``: ``logsigmoid(±logits)`` summed over messages."""
    z = torch.as_tensor(w)[:, :1] + torch.as_tensor(w)[:, 1:] @ torch.as_tensor(x, dtype=torch.float64).T
    sign = 2.0 * torch.as_tensor(y, dtype=torch.float64) - 1.0
    return F.logsigmoid(sign * z).sum(dim=1).numpy()


@pytest.mark.parametrize("chunk", [1, 7, 16, 5000])
def test_loglik_sum_equals_logsigmoid(chunk: int) -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(900, 4)).astype(np.float32)
    y = (rng.random(900) < 0.3).astype(np.float32)
    w = rng.normal(size=(53, 5)) * np.array([[1.0], [1.0], [30.0]] * 17 + [[1.0]] * 2)  # some |logits| in the hundreds
    np.testing.assert_allclose(loglik_sum(w, x, y, chunk=chunk), _loglik_sum_logsigmoid(w, x, y), rtol=1e-12, atol=0)
    assert loglik_sum(w[:0], x, y).shape == (0,)
    yb = y.astype(bool)
    np.testing.assert_allclose(loglik_sum(w, x, yb, chunk=chunk), _loglik_sum_logsigmoid(w, x, y), rtol=1e-12, atol=0)


def test_loglik_matrix_float32_is_the_rounded_float64_matrix() -> None:
    """The ArviZ stage makes the LOO's float32 matrix directly (no float64 one beside it): it must be
    exactly what ``astype(np.float32)`` of the float64 matrix was, including across chunk edges."""
    from pyro_spam.posterior import loglik_matrix

    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (rng.random(300) < 0.3).astype(np.float32)
    w = rng.normal(size=(150, 5)) * 3.0  # 150 draws: more than two chunks of 64
    full = loglik_matrix(w, x, y)
    low = loglik_matrix(w, x, y, np.float32)
    assert full.dtype == np.float64 and low.dtype == np.float32
    np.testing.assert_array_equal(low, full.astype(np.float32))
