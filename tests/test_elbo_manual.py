"""The hand-written ELBO: shapes, closed forms, N/B scaling, gradients; no Pyro involved."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from pyro_spam import elbo_manual as em

DT = torch.float64


def _problem(n: int = 300, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, k), generator=g, dtype=DT)
    w_true = torch.linspace(-1.0, 1.0, k + 1, dtype=DT)
    y = torch.bernoulli(torch.sigmoid(w_true[0] + x @ w_true[1:]), generator=g)
    loc = w_true + 0.1
    scale = torch.linspace(0.05, 0.5, k + 1, dtype=DT)
    return x, y, loc, scale, g


def test_pure_torch_modules_do_not_import_pyro():
    """elbo_manual and the manual engine (training.manual) load without importing Pyro (checked in a fresh interpreter)."""
    code = ("import sys, pyro_spam.elbo_manual, pyro_spam.training.manual; "
            "assert not [m for m in sys.modules if m == 'pyro' or m.startswith('pyro.')], 'pyro imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_gradients_do_not_import_torch_dynamo():
    """elbo_grad, the batched MC KL and a manual-engine fit run without torch.func, which imports
    torch._dynamo on first use (1.1 s and 80 MB in every ``pyro-spam run``)."""
    code = (
        "import sys, numpy as np, torch\n"
        "from pyro_spam import elbo_manual as em\n"
        "from pyro_spam.config import TrainConfig\n"
        "from pyro_spam.crosscheck import mc_kl_error_vs_s\n"
        "from pyro_spam.training.manual import fit_manual\n"
        "x = torch.randn(50, 2, dtype=torch.float64); y = (x[:, 0] > 0).double()\n"
        "loc, scale = torch.full((3,), 0.3, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)\n"
        "for kind in em.ELBO_KINDS:\n"
        "    em.elbo_grad(kind, loc, scale, torch.randn(4, 3, dtype=torch.float64), x, y)\n"
        "mc_kl_error_vs_s(loc.numpy(), scale.numpy(), S_values=(4, 16), reps=5)\n"
        "fit_manual(x.numpy(), y.numpy(), TrainConfig(elbo='trace', engine='manual', max_steps=3, particles=2))\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_log_lik_is_bernoulli_log_prob():
    """log_lik equals the sum of Bernoulli(logits) log-probabilities and the course's eq. 6."""
    x, y, loc, _, _ = _problem(seed=1)
    z = loc[0] + x @ loc[1:]
    ref = Bernoulli(logits=z).log_prob(y).sum()
    p = torch.sigmoid(z)
    eq6 = (y * torch.log(p) + (1 - y) * torch.log(1 - p)).sum()  # fine here: |z| is moderate
    # float64 sums of 300 terms of size ~1: agreement to ~1e-12 is rounding only.
    assert torch.allclose(em.log_lik(loc, x, y), ref, rtol=1e-12)
    assert torch.allclose(em.log_lik(loc, x, y), eq6, rtol=1e-10)


def test_log_lik_is_finite_and_exact_for_extreme_logits():
    """With |z| = 1000 the log-likelihood is exactly −1000 per wrong label, never −inf (no clamping)."""
    x = torch.tensor([[1.0], [1.0]], dtype=DT)
    w = torch.tensor([0.0, 1000.0], dtype=DT)
    y = torch.tensor([0.0, 1.0], dtype=DT)  # first label badly wrong, second right
    ll = em.log_lik(w, x, y)
    # Exact: log(1 − s(1000)) = −1000 − log1p(e^−1000) = −1000 in float64; log s(1000) = 0.
    assert ll.item() == pytest.approx(-1000.0, abs=1e-9)


def test_draw_is_reparameterised():
    """draw returns loc + scale·ε with shape (S, K+1) and asserts on mismatched shapes."""
    _, _, loc, scale, g = _problem(seed=2)
    eps = torch.randn((7, loc.shape[0]), generator=g, dtype=DT)
    w = em.draw(loc, scale, eps)
    assert w.shape == (7, loc.shape[0])
    assert torch.equal(w, loc + scale * eps)
    with pytest.raises(AssertionError):
        em.draw(loc, scale, eps[:, :-1])


def test_expected_log_lik_vmap_equals_loop_and_scales_by_n_over_b():
    """The vmapped particle mean equals a Python loop; a batch of B out of N is scaled by N/B."""
    x, y, loc, scale, g = _problem(seed=3)
    w = em.draw(loc, scale, torch.randn((5, loc.shape[0]), generator=g, dtype=DT))
    loop = torch.stack([em.log_lik(ws, x, y) for ws in w]).mean()
    assert torch.allclose(em.expected_log_lik(w, x, y), loop, rtol=1e-12)  # rounding only
    b = 60
    batch = em.expected_log_lik(w, x[:b], y[:b], n_total=x.shape[0])
    unscaled = em.expected_log_lik(w, x[:b], y[:b])
    assert torch.allclose(batch, unscaled * x.shape[0] / b, rtol=1e-12)


def test_minibatches_of_a_partition_average_to_the_full_data_elbo():
    """With the same ε, the batch ELBOs over a random partition of the rows average to the full ELBO exactly."""
    x, y, loc, scale, g = _problem(n=300, seed=4)
    eps = torch.randn((16, loc.shape[0]), generator=g, dtype=DT)
    perm = torch.randperm(300, generator=g)
    for kind in (k for k in em.ELBO_KINDS if k != "iwae"):  # log-mean-exp is not linear in the rows
        full = em.elbo(kind, loc, scale, eps, x, y).elbo
        batches = [em.elbo(kind, loc, scale, eps, x[i], y[i], n_total=300).elbo for i in perm.split(50)]
        # Mean over the 6 batches of (N/B)·Σ_batch = Σ_full algebraically; float64 rounding ~1e-13.
        assert torch.allclose(torch.stack(batches).mean(), full, rtol=1e-10)


@pytest.mark.parametrize("prior_scale", [1.0, 2.5])
def test_kl_analytic_matches_torch_closed_form(prior_scale):
    """kl_analytic equals torch's Normal–Normal KL summed, and the course's formula when s = 1."""
    _, _, loc, scale, _ = _problem(seed=5)
    ref = kl_divergence(Normal(loc, scale), Normal(torch.zeros_like(loc), prior_scale)).sum()
    assert torch.allclose(em.kl_analytic(loc, scale, prior_scale), ref, rtol=1e-12)  # rounding only
    if prior_scale == 1.0:
        course = 0.5 * (loc**2 + scale**2 - 1 - torch.log(scale**2)).sum()
        assert torch.allclose(em.kl_analytic(loc, scale), course, rtol=1e-12)
    assert em.kl_analytic(torch.zeros(3, dtype=DT), torch.full((3,), prior_scale, dtype=DT), prior_scale).abs() < 1e-14


def test_log_q_is_the_normal_log_density():
    """log_normal (log q in the MC KL) equals torch's Normal log_prob, including the −½log(2πσ²) term."""
    _, _, loc, scale, g = _problem(seed=6)
    w = em.draw(loc, scale, torch.randn((9, loc.shape[0]), generator=g, dtype=DT))
    ref = Normal(loc, scale).log_prob(w).sum(-1)
    assert torch.allclose(em.log_normal(w, loc, scale), ref, rtol=1e-12)  # rounding only


def test_kl_mc_is_unbiased_for_the_analytic_kl():
    """The MC KL with S = 20000 draws is within 4 standard errors of the closed form."""
    _, _, loc, scale, g = _problem(seed=7)
    w = em.draw(loc, scale, torch.randn((20000, loc.shape[0]), generator=g, dtype=DT))
    terms = em.log_normal(w, loc, scale) - em.log_normal(w, 0.0, 2.0)
    se = terms.std() / math.sqrt(terms.shape[0])  # SE of a mean of i.i.d. draws
    # 4 SE: a false alarm has probability 6e-5; a wrong density constant shifts it by whole nats.
    assert abs(em.kl_mc(w, loc, scale, 2.0) - em.kl_analytic(loc, scale, 2.0)) < 4 * se


def test_elbo_parts_add_up_and_variants_share_the_likelihood():
    """Both variants return elbo = loglik − kl; with the same ε their loglik parts are identical."""
    x, y, loc, scale, g = _problem(seed=8)
    eps = torch.randn((32, loc.shape[0]), generator=g, dtype=DT)
    a = em.elbo_analytic(loc, scale, eps, x, y)
    m = em.elbo_mc(loc, scale, eps, x, y)
    assert torch.equal(a.loglik, m.loglik)
    for p in (a, m):
        assert torch.equal(p.elbo, p.loglik - p.kl)
    assert torch.equal(a.kl, em.kl_analytic(loc, scale))
    assert a.kl > 0 and a.loglik < 0
    with pytest.raises(ValueError, match="trace, meanfield"):
        em.elbo("both", loc, scale, eps, x, y)


@pytest.mark.parametrize("kind", ["trace", "meanfield"])
def test_grad_matches_torch_func_and_finite_differences(kind):
    """elbo_grad (torch.autograd) equals torch.func.grad of the ELBO and central finite differences."""
    from torch.func import grad

    x, y, loc, scale, g = _problem(seed=9)
    eps = torch.randn((8, loc.shape[0]), generator=g, dtype=DT)
    (g_loc, g_scale), parts = em.elbo_grad(kind, loc, scale, eps, x, y, n_total=1000)
    f_loc, f_scale = grad(lambda lo, sc: em.elbo(kind, lo, sc, eps, x, y, n_total=1000).elbo, argnums=(0, 1))(loc, scale)
    # Same graph, two autodiff front ends: rounding only.
    assert torch.allclose(g_loc, f_loc, rtol=1e-12, atol=1e-12)
    assert torch.allclose(g_scale, f_scale, rtol=1e-12, atol=1e-12)
    assert parts.elbo == em.elbo(kind, loc, scale, eps, x, y, n_total=1000).elbo
    h = 1e-6
    for j in range(loc.shape[0]):
        d = torch.zeros_like(loc)
        d[j] = h
        f = lambda lo, sc: em.elbo(kind, lo, sc, eps, x, y, n_total=1000).elbo  # noqa: E731
        fd_loc = (f(loc + d, scale) - f(loc - d, scale)) / (2 * h)
        fd_scale = (f(loc, scale + d) - f(loc, scale - d)) / (2 * h)
        # Central differences at h = 1e-6 on an ELBO of ~1e3 nats: error ~ 1e3·1e-16/1e-6 ≈ 1e-7 plus h² terms.
        assert fd_loc.item() == pytest.approx(g_loc[j].item(), rel=1e-5, abs=1e-5)
        assert fd_scale.item() == pytest.approx(g_scale[j].item(), rel=1e-5, abs=1e-5)
