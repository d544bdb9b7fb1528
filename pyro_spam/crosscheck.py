"""Pyro versus the hand-written ELBO (:mod:`pyro_spam.elbo_manual`), at a given guide (loc, scale).

Every estimator of :func:`pyro_spam.training.elbos.make_elbo` is checked against its plain-torch
twin: the course's pair (``trace``: ``Trace_ELBO``, ``meanfield``: ``TraceMeanField_ELBO``) in
depth, and ``stl``, ``rqmc``, ``iwae``, ``score`` and ``quad`` by value and gradient with the same
noise (``quad`` has none), plus the score estimator's decaying-average baseline over two
evaluations and the rqmc ELBO's closed-form KL.

Three kinds of comparison, each reported as a row
``{name, pyro, manual, abs_diff, tolerance, agree, kind, detail}``:

* ``kind="exact"``: both sides see the SAME noise ε, so they must agree to rounding
  (relative tolerance :data:`EXACT_RTOL` = 1e-5 of the larger magnitude). The noise is shared by
  tracing the package's guide inside Pyro's own ELBO (vectorised particles, exactly as in
  training), reading the sampled ``w`` back and passing ``ε = (w − loc)/scale`` to the manual
  code (for ``rqmc`` the ε are scrambled Sobol points; ``quad`` draws no noise and compares the
  deterministic quadrature ELBO). The comparisons run in float64 by default. float32 also passes
  for ``trace``/``meanfield`` (measured at N = 4500, K = 5, S = 64: values agree to ~1e-7
  relative, gradients to ~1e-6 relative, from differently ordered sums), but that uses a tenth of
  the margin (the other estimators pass too, iwae's log-sum-exp gradients using ~40 % of it); in
  float64 the differences are ~1e-14 relative (≤ 3e-13 for ``iwae``'s gradients, measured), so the
  1e-5 tolerance only ever sees genuine discrepancies.
* ``kind="statistical"``: independent noise (or random mini-batches); the two means must agree
  within :data:`SE_UNITS` = 4 Monte Carlo standard errors (see :func:`run_crosscheck`).
* the Monte Carlo KL against the closed form as S grows (:func:`mc_kl_error_vs_s`).

For rows that compare against a reference rather than a second implementation, ``pyro`` holds
the reference value and ``detail`` says what it is. This module may import Pyro; it reuses the
package's model, guide and ELBO factory rather than copying them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor
from torch.distributions import kl_divergence

from . import elbo_manual as em
from .guide import LOC, SCALE, SCALE_TRIL, make_guide
from .model import model
from .training.elbos import make_elbo
from .training.engines import torch_threads
from .training.manual import SCORE_BASELINE_BETA

EXACT_RTOL = 1e-5
SE_UNITS = 4.0
MANUAL_SEED_OFFSET = 1_000_003  # the manual side's noise stream is seeded apart from Pyro's
IMPLEMENTATIONS = ("Pyro Trace_ELBO", "Pyro TraceMeanField_ELBO", "manual MC KL", "manual analytic KL")
_PYRO_NAME = {"trace": IMPLEMENTATIONS[0], "meanfield": IMPLEMENTATIONS[1]}
_MANUAL_NAME = {"trace": IMPLEMENTATIONS[2], "meanfield": IMPLEMENTATIONS[3]}
ESTIMATOR_LABELS = {
    "stl": "stl: StlELBO vs manual elbo_stl",
    "rqmc": "rqmc: RqmcELBO vs manual elbo_analytic",
    "iwae": "iwae: IwaeELBO vs manual elbo_iwae",
    "score": "score: ScoreELBO vs manual elbo_score",
    "quad": "quad: QuadratureELBO vs manual elbo_quad",
}
"""The estimators beyond the course's pair and their row labels (``ELBO same noise (<label>)``)."""

__all__ = [
    "EXACT_RTOL",
    "SE_UNITS",
    "IMPLEMENTATIONS",
    "ESTIMATOR_LABELS",
    "SameNoise",
    "McKlError",
    "pyro_same_noise",
    "pyro_same_noise_sequence",
    "pyro_kl_analytic",
    "elbo_replicates",
    "summarize_replicates",
    "minibatch_manual",
    "mc_kl_error_vs_s",
    "closed_form_row",
    "run_crosscheck",
]


@dataclass(frozen=True)
class SameNoise:
    """One Pyro ELBO evaluation and the noise it used.

    elbo : float
        Minus the Pyro loss.
    loglik : float
        Its log-likelihood part (the observed site's ``log_prob_sum``, particle mean, N/B-scaled).
    grad_loc, grad_scale : Tensor of shape (K+1,)
        Gradient of the ELBO (minus the loss gradient) w.r.t. the constrained guide parameters.
    eps : Tensor of shape (S, K+1) or None
        ``(w − loc) / scale`` of the sampled particles; None for ``quad`` (no particles).
    loc, scale : Tensor of shape (K+1,)
        The guide parameters as Pyro used them (``scale`` after the exp transform round trip).
    """

    elbo: float
    loglik: float
    grad_loc: Tensor
    grad_scale: Tensor
    eps: Tensor | None
    loc: Tensor
    scale: Tensor


class McKlError(NamedTuple):
    """RMS error of the Monte Carlo KL against the closed form, per number of draws S.

    S : ndarray of int
    rms : ndarray of float, nats
        ``sqrt(mean_r (KL_mc,r − KL)²)`` over ``reps`` independent estimates.
    slope, intercept : float
        Least-squares fit ``log rms = intercept + slope · log S`` (theory: slope −½).
    kl : float
        The closed-form KL, nats.
    reps : int
    """

    S: np.ndarray
    rms: np.ndarray
    slope: float
    intercept: float
    kl: float
    reps: int


def _one_thread(fn):
    """Run ``fn`` on one torch thread (see ``train.torch_threads``: these tensors are tiny)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(1):
            return fn(*args, **kwargs)

    return wrapper


def _as(t: Any, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.asarray(t) if not torch.is_tensor(t) else t, dtype=dtype).detach()


def _guide_for(loc: Tensor, scale: Tensor):
    """The package's guide at (loc, scale): mean-field for a vector of sds, full rank for a lower-triangular factor."""
    if scale.dim() == 2:
        return make_guide(init_loc=loc, kind="fullrank", init_scale_tril=scale)
    return make_guide(init_loc=loc, init_scale_vec=scale)


def pyro_same_noise(
    kind: str,
    x: Tensor,
    y: Tensor,
    loc: Tensor,
    scale: Tensor,
    *,
    particles: int,
    prior_scale: float = 1.0,
    subsample: Tensor | None = None,
    seed: int = 0,
) -> SameNoise:
    """Evaluate Pyro's ELBO (``make_elbo(kind)``, as in training) once and return its noise.

    The package guide runs inside Pyro's ELBO under a nested ``poutine.trace`` so that the
    sampled ``w`` and the very parameter tensors it was built from can be read back; the
    gradient is taken w.r.t. those constrained tensors (``w_loc``, ``w_scale``). For ``quad``
    the ELBO has no particles and ``eps`` is None.
    Uses a private param store scope and RNG fork: the caller's state is untouched.
    """
    (pn,) = pyro_same_noise_sequence(kind, x, y, loc, scale, particles=particles, prior_scale=prior_scale,
                                     subsample=subsample, seed=seed, evaluations=1)
    return pn


def pyro_same_noise_sequence(
    kind: str,
    x: Tensor,
    y: Tensor,
    loc: Tensor,
    scale: Tensor,
    *,
    particles: int,
    prior_scale: float = 1.0,
    subsample: Tensor | None = None,
    seed: int = 0,
    evaluations: int = 2,
) -> list[SameNoise]:
    """``evaluations`` consecutive evaluations of one Pyro ELBO object at the same guide parameters,
    sharing one param store, as consecutive training steps do (without the update): what an
    estimator carries from step to step, e.g. the ``score`` ELBO's decaying-average baseline, is
    carried here too. Each evaluation as in :func:`pyro_same_noise`; fresh noise per evaluation.
    Uses a private param store scope and RNG fork: the caller's state is untouched.
    """
    store = pyro.get_param_store()
    out: list[SameNoise] = []
    with store.scope(), torch.random.fork_rng(devices=[]):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        guide = _guide_for(loc, scale)
        rec: dict[str, Any] = {}

        def recording_guide(*args, **kwargs):
            tr = poutine.trace(guide).get_trace(*args, **kwargs)
            rec["trace"] = tr
            return tr.nodes["_RETURN"]["value"]

        elbo = make_elbo(kind, particles)
        for _ in range(evaluations):
            loss, loglik = elbo.loss_and_loglik(model, recording_guide, x, y, subsample, prior_scale)
            tr = rec["trace"]
            loc_t, scale_t = tr.nodes[LOC]["value"], tr.nodes[SCALE_TRIL if scale.dim() == 2 else SCALE]["value"]
            g_loc, g_scale = torch.autograd.grad(loss, [loc_t, scale_t])
            eps = None
            if kind != "quad":
                w = tr.nodes["w"]["value"].detach()
                # S > 1 vectorised particles: (S, 1, K+1); Pyro adds no particle plate for S = 1: (K+1,)
                ok = w.shape == (particles, 1, loc.shape[0]) or (particles == 1 and w.shape == loc.shape)
                assert ok, f"unexpected particle shape {tuple(w.shape)}"
                if scale.dim() == 2:  # full rank: ε = L⁻¹(w − loc)
                    dw = (w - loc_t.detach()).reshape(particles, -1)
                    eps = torch.linalg.solve_triangular(scale_t.detach(), dw.T, upper=False).T
                else:
                    eps = ((w - loc_t.detach()) / scale_t.detach()).reshape(particles, -1)
            out.append(SameNoise(
                elbo=-float(loss.detach()),
                loglik=float(loglik),
                grad_loc=-g_loc,
                grad_scale=-g_scale,
                eps=eps,
                loc=loc_t.detach().clone(),
                scale=scale_t.detach().clone(),
            ))
    return out


def pyro_kl_analytic(x: Tensor, y: Tensor, loc: Tensor, scale: Tensor, prior_scale: float = 1.0) -> float:
    """``kl_divergence(guide site "w", model site "w")``: exactly what ``TraceMeanField_ELBO`` calls
    (guide traced, model replayed against it, the two sites' distribution objects compared)."""
    store = pyro.get_param_store()
    with store.scope(), torch.random.fork_rng(devices=[]):
        pyro.clear_param_store()
        guide = _guide_for(loc, scale)
        g_tr = poutine.trace(guide).get_trace(x, y, None, prior_scale)
        m_tr = poutine.trace(poutine.replay(model, trace=g_tr)).get_trace(x, y, None, prior_scale)
        q, p = g_tr.nodes["w"]["fn"], m_tr.nodes["w"]["fn"]
        assert isinstance(q, (dist.Independent, dist.MultivariateNormal)) and isinstance(p, dist.Independent)
        return float(kl_divergence(q, p).detach())


@_one_thread
def elbo_replicates(
    x: Any,
    y: Any,
    loc: Any,
    scale: Any,
    *,
    particles: int = 64,
    prior_scale: float = 1.0,
    seed: int = 0,
    n_rep: int = 100,
    dtype: torch.dtype = torch.float64,
) -> dict[str, np.ndarray]:
    """``n_rep`` independent full-data ELBO estimates (S = ``particles``) from each implementation.

    Keys are :data:`IMPLEMENTATIONS`. Pyro draws from the global torch stream seeded with ``seed``
    (inside an RNG fork); the manual side draws from a private generator seeded with
    ``seed + MANUAL_SEED_OFFSET``, so Pyro's and the manual estimates are independent. The two
    manual variants share each replicate's ε (they are never compared with each other here).
    """
    xt, yt, lt, st = _as(x, dtype), _as(y, dtype), _as(loc, dtype), _as(scale, dtype)
    out: dict[str, np.ndarray] = {}
    store = pyro.get_param_store()
    with store.scope(), torch.random.fork_rng(devices=[]), torch.no_grad():
        for kind in ("trace", "meanfield"):
            pyro.clear_param_store()
            pyro.set_rng_seed(seed + (kind == "meanfield"))
            guide = _guide_for(lt, st)
            elbo = make_elbo(kind, particles)
            out[_PYRO_NAME[kind]] = np.array([-float(elbo.loss(model, guide, xt, yt, None, prior_scale)) for _ in range(n_rep)])
    gen = torch.Generator().manual_seed(seed + MANUAL_SEED_OFFSET)
    mc, an = np.empty(n_rep), np.empty(n_rep)
    for r in range(n_rep):
        eps = torch.randn((particles, lt.shape[0]), generator=gen, dtype=dtype)
        mc[r] = float(em.elbo_mc(lt, st, eps, xt, yt, prior_scale=prior_scale).elbo)
        an[r] = float(em.elbo_analytic(lt, st, eps, xt, yt, prior_scale=prior_scale).elbo)
    out[_MANUAL_NAME["trace"]], out[_MANUAL_NAME["meanfield"]] = mc, an
    return {k: out[k] for k in IMPLEMENTATIONS}


def summarize_replicates(reps: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """``[{name, mean, se, n}]`` per implementation; ``se = sd(ddof=1) / sqrt(n)`` (nats)."""
    return [
        {"name": k, "mean": float(np.mean(v)), "se": float(np.std(v, ddof=1) / math.sqrt(len(v))), "n": int(len(v))}
        for k, v in reps.items()
    ]


def minibatch_manual(
    x: Tensor,
    y: Tensor,
    loc: Tensor,
    scale: Tensor,
    eps: Tensor,
    *,
    batch_size: int,
    n_batches: int,
    kind: str = "trace",
    prior_scale: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Manual ELBO estimates on ``n_batches`` uniform random mini-batches (without replacement),
    all with the same ε, so their mean estimates the full-data ELBO at that ε without bias."""
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed + MANUAL_SEED_OFFSET)
    out = np.empty(n_batches)
    for r in range(n_batches):
        idx = torch.randperm(n, generator=gen)[:batch_size]
        out[r] = float(em.elbo(kind, loc, scale, eps, x[idx], y[idx], n_total=n, prior_scale=prior_scale).elbo)
    return out


def _pyro_minibatch(
    x: Tensor, y: Tensor, loc: Tensor, scale: Tensor, *, kind: str, particles: int, batch_size: int, n_batches: int, prior_scale: float, seed: int
) -> np.ndarray:
    """Pyro ELBO estimates with ``pyro.plate(subsample=…)`` on random batches and fresh noise."""
    n = x.shape[0]
    store = pyro.get_param_store()
    out = np.empty(n_batches)
    with store.scope(), torch.random.fork_rng(devices=[]), torch.no_grad():
        pyro.clear_param_store()
        pyro.set_rng_seed(seed + 2)
        gen = torch.Generator().manual_seed(seed + 2)
        guide = _guide_for(loc, scale)
        elbo = make_elbo(kind, particles)
        for r in range(n_batches):
            idx = torch.randperm(n, generator=gen)[:batch_size]
            out[r] = -float(elbo.loss(model, guide, x, y, idx, prior_scale))
    return out


@_one_thread
def mc_kl_error_vs_s(
    loc: Any,
    scale: Any,
    S_values: Sequence[int] = (4, 16, 64, 256, 1024, 4096),
    reps: int = 200,
    *,
    prior_scale: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> McKlError:
    """RMS error of :func:`elbo_manual.kl_mc` with S draws against :func:`elbo_manual.kl_analytic`,
    from ``reps`` independent estimates per S, and the fitted log-log slope (theory: −½, since the
    estimator is a mean of S i.i.d. terms with finite variance)."""
    lt, st = _as(loc, dtype), _as(scale, dtype)
    kl = float(em.kl_analytic(lt, st, prior_scale))
    gen = torch.Generator().manual_seed(seed)
    s_arr = np.asarray(S_values, dtype=np.int64)
    rms = np.empty(len(s_arr))
    for i, s in enumerate(s_arr):
        # one estimate per replicate, a few replicates at a time: (reps, 4096, K+1) blocks are 40 MB each.
        # torch fills normals in groups of 16: blocks of a multiple of 16 numbers continue the stream
        # exactly as one draw of all of them would (tests/test_crosscheck.py); otherwise one block.
        step = max(1, (1 << 16) // int(s))
        if (step * int(s) * lt.shape[0]) % 16:
            step = reps
        est = torch.cat([em.kl_mc(lt + st * torch.randn((min(step, reps - i), int(s), lt.shape[0]), generator=gen, dtype=dtype),
                                  lt, st, prior_scale) for i in range(0, reps, step)])
        assert est.shape == (reps,)
        rms[i] = float(torch.sqrt(torch.mean((est - kl) ** 2)))
    slope, intercept = np.polyfit(np.log(s_arr), np.log(rms), 1)
    return McKlError(S=s_arr, rms=rms, slope=float(slope), intercept=float(intercept), kl=kl, reps=reps)


def _exact_row(name: str, pyro_v: float, manual_v: float, detail: str, scale_v: float | None = None) -> dict[str, Any]:
    diff = abs(pyro_v - manual_v)
    tol = EXACT_RTOL * max(abs(pyro_v), abs(manual_v), scale_v or 0.0, 1e-12)
    return {"name": name, "pyro": pyro_v, "manual": manual_v, "abs_diff": diff, "tolerance": tol, "agree": bool(diff <= tol),
            "kind": "exact", "detail": detail}


def _stat_row(name: str, pyro_v: float, manual_v: float, se: float, detail: str) -> dict[str, Any]:
    diff = abs(pyro_v - manual_v)
    tol = SE_UNITS * se
    return {
        "name": name,
        "pyro": pyro_v,
        "manual": manual_v,
        "abs_diff": diff,
        "tolerance": tol,
        "agree": bool(diff < tol),
        "kind": "statistical",
        "detail": f"{detail}; |diff| = {diff / se:.2f} SE" if se > 0 else detail,
    }


def closed_form_row(pn: SameNoise, prior_scale: float = 1.0, name: str = "TraceMeanField_ELBO uses the closed-form KL") -> dict[str, Any]:
    """Does a ``TraceMeanField_ELBO`` evaluation ``pn`` (or one of a subclass, e.g. the rqmc ELBO:
    pass another ``name``) use the closed-form KL?

    The KL its loss implies (``loglik − ELBO``, both Pyro's) must equal :func:`kl_analytic` to
    :data:`EXACT_RTOL`, and be more than 10 tolerances away from the Monte Carlo KL of the same
    draws, which is what Pyro silently computes instead when no KL is registered for the pair of
    distributions. Without that separation the check has no power and reports disagreement.
    """
    assert pn.eps is not None, "closed_form_row needs an evaluation with particles"
    implied = pn.loglik - pn.elbo
    mc_same = float(em.kl_mc(em.draw(pn.loc, pn.scale, pn.eps), pn.loc, pn.scale, prior_scale))
    row = _exact_row(
        name,
        implied,
        float(em.kl_analytic(pn.loc, pn.scale, prior_scale)),
        f"pyro = KL implied by its loss (loglik − ELBO); MC KL of the same draws = {mc_same:.6g}",
    )
    power = abs(implied - mc_same) > 10 * row["tolerance"]
    row["detail"] += "; " + ("differs from MC KL: closed form in use" if power else "NOT distinguishable from the MC KL")
    row["agree"] = bool(row["agree"] and power)
    return row


def _grad_rows(kind: str, label: str, pn: SameNoise, g_loc: Tensor, g_scale: Tensor) -> list[dict[str, Any]]:
    rows = []
    for pname, gp, gm in (("loc", pn.grad_loc, g_loc), ("scale", pn.grad_scale, g_scale)):
        big = max(float(gp.abs().max()), float(gm.abs().max()))
        row = _exact_row(
            f"grad wrt {pname}, same noise ({label})",
            float(gp.abs().max()),
            float(gm.abs().max()),
            "pyro/manual hold max|grad|; abs_diff is max_j |grad_pyro_j − grad_manual_j|",
        )
        diff = float((gp - gm).abs().max())
        row["abs_diff"], row["tolerance"] = diff, EXACT_RTOL * max(big, 1e-12)
        row["agree"] = bool(diff <= row["tolerance"])
        rows.append(row)
    return rows


def _score_baseline_row(first: SameNoise, second: SameNoise, x: Tensor, y: Tensor, prior_scale: float) -> dict[str, Any]:
    """The score ELBO's decaying-average baseline: Pyro's gradient at the second of two evaluations
    (same parameters, one param store) against :func:`elbo_manual.elbo_score` with the baseline
    ``b = (1 − β) f_1`` that the first evaluation leaves (the average starts at 0; ``f_1`` are its
    per-particle costs, :func:`elbo_manual.score_costs`). One row over the concatenated (loc,
    scale) gradient; it also needs power: the gradient without baseline must be > 10 tolerances away."""
    assert first.eps is not None and second.eps is not None
    f1 = em.score_costs(first.loc, first.scale, first.eps, x, y, prior_scale=prior_scale)
    b = (1.0 - SCORE_BASELINE_BETA) * f1

    def manual(baseline: Tensor | None) -> Tensor:
        (g_loc, g_scale), _ = em.elbo_grad("score", second.loc, second.scale, second.eps, x, y, prior_scale=prior_scale,
                                           baseline=baseline)
        return torch.cat([g_loc, g_scale])

    gp, gm = torch.cat([second.grad_loc, second.grad_scale]), manual(b)
    diff, unbaselined = float((gp - gm).abs().max()), float((gp - manual(None)).abs().max())
    tol = EXACT_RTOL * max(float(gp.abs().max()), float(gm.abs().max()), 1e-12)
    power = unbaselined > 10 * tol
    return {
        "name": (f"grad wrt (loc, scale), 2nd evaluation with the decaying-average baseline ({ESTIMATOR_LABELS['score']}, "
                 f"b = {1.0 - SCORE_BASELINE_BETA:.2g}·f_1)"),
        "pyro": float(gp.abs().max()),
        "manual": float(gm.abs().max()),
        "abs_diff": diff,
        "tolerance": tol,
        "agree": bool(diff <= tol and power),
        "kind": "exact",
        "detail": (f"pyro/manual hold max|grad|; abs_diff is max_j |grad_pyro_j − grad_manual_j|; baseline b = (1 − β)·f_1, β = "
                   f"{SCORE_BASELINE_BETA}, f_1 the first evaluation's per-particle costs; without the baseline the manual "
                   f"gradient is {unbaselined:.3g} away: " + ("baseline in use" if power else "NOT distinguishable from no baseline")),
    }


def _estimator_rows(x: Tensor, y: Tensor, loc: Tensor, scale: Tensor, *, particles: int, prior_scale: float,
                    seed: int) -> list[dict[str, Any]]:
    """Same-noise value and gradient rows for :data:`ESTIMATOR_LABELS` (full data), the score
    baseline row and the rqmc closed-form-KL row (see :func:`run_crosscheck`)."""
    rows: list[dict[str, Any]] = []
    for i, (kind, label) in enumerate(ESTIMATOR_LABELS.items()):
        s = 1 << (particles.bit_length() - 1) if kind == "rqmc" else particles  # Sobol points balance for powers of two
        common = dict(particles=s, prior_scale=prior_scale, seed=seed + 30 + i)
        if kind == "score":  # two evaluations: the second one sees the baseline the first one left
            pn, second = pyro_same_noise_sequence(kind, x, y, loc, scale, evaluations=2, **common)
        else:
            pn = pyro_same_noise(kind, x, y, loc, scale, **common)
        (g_loc, g_scale), parts = em.elbo_grad(kind, pn.loc, pn.scale, pn.eps, x, y, prior_scale=prior_scale)
        if kind == "quad":
            detail = (f"exact ELBO, Gauss–Hermite with {em.QUAD_NODES} nodes, no noise, full data, nats; QuadratureELBO reuses "
                      "elbo_manual's logit_moments/quad_log_lik, so this checks its KL, N/B scaling and guide wiring, not the quadrature")
        elif kind == "rqmc":
            detail = f"S={s} (the largest power of two ≤ particles={particles}), scrambled Sobol ε, full data, nats"
        else:
            detail = f"S={s}, full data, nats" + ("; first evaluation: baseline 0" if kind == "score" else "")
        rows.append(_exact_row(f"ELBO same noise ({label})", pn.elbo, float(parts.elbo), detail))
        rows.extend(_grad_rows(kind, label, pn, g_loc, g_scale))
        if kind == "rqmc":
            rows.append(closed_form_row(pn, prior_scale, name="RqmcELBO uses the closed-form KL"))
        if kind == "score":
            rows.append(_score_baseline_row(pn, second, x, y, prior_scale))
    return rows


FULLRANK_KINDS = {"trace": "Trace_ELBO vs manual MC KL", "meanfield": "TraceMeanField_ELBO vs manual analytic KL",
                  "quad": "QuadratureELBO vs manual elbo_quad"}
"""The estimators cross-checked with the full-rank guide."""


def fullrank_rows(x: Tensor, y: Tensor, loc: Tensor, scale_tril: Tensor, *, particles: int, prior_scale: float,
                  seed: int) -> list[dict[str, Any]]:
    """Same-noise rows for the full-rank guide ``N(loc, L Lᵀ)``: KL, value and gradients (w.r.t. loc and
    the lower triangle of L) of ``Trace_ELBO``, ``TraceMeanField_ELBO`` (whose closed-form KL needs
    this package's registered pair) and the quadrature ELBO against the manual module."""
    rows = [_exact_row("KL analytic, full-rank guide (Pyro kl_divergence vs manual)", pyro_kl_analytic(x, y, loc, scale_tril, prior_scale),
                       float(em.kl_analytic(loc, scale_tril, prior_scale)), "closed form, nats")]
    for i, (kind, label) in enumerate(FULLRANK_KINDS.items()):
        pn = pyro_same_noise(kind, x, y, loc, scale_tril, particles=particles, prior_scale=prior_scale, seed=seed + 60 + i)
        (g_loc, g_tril), parts = em.elbo_grad(kind, pn.loc, pn.scale, pn.eps, x, y, prior_scale=prior_scale)
        label = f"full-rank guide, {label}"
        rows.append(_exact_row(f"ELBO same noise ({label})", pn.elbo, float(parts.elbo),
                               "no noise, full data, nats" if kind == "quad" else f"S={particles}, full data, nats"))
        pn_tril = dataclasses.replace(pn, grad_scale=torch.tril(pn.grad_scale))  # the upper triangle of L is not a parameter
        rows.extend(_grad_rows(kind, label, pn_tril, g_loc, torch.tril(g_tril)))
        if kind == "meanfield":
            rows.append(closed_form_row(pn, prior_scale, name="TraceMeanField_ELBO uses the closed-form KL (full-rank guide)"))
    return rows


@_one_thread
def run_crosscheck(
    x: Any,
    y: Any,
    loc: Any,
    scale: Any,
    *,
    particles: int = 64,
    prior_scale: float = 1.0,
    seed: int = 0,
    n_rep: int = 100,
    batch_size: int | None = None,
    n_batches: int = 200,
    dtype: torch.dtype = torch.float64,
    replicates: dict[str, np.ndarray] | None = None,
    kl_error: McKlError | None = None,
    scale_tril: Any | None = None,
) -> list[dict[str, Any]]:
    """Compare Pyro with the manual ELBO at the guide ``(loc, scale)`` on data ``x`` (N, K), ``y`` (N,).
    With ``scale_tril`` (a full-covariance fit's Cholesky factor) the full-rank guide's rows
    (:func:`fullrank_rows`) are added at ``(loc, scale_tril)``.

    Rows (see the module docstring for the fields):

    * analytic KL: Pyro's ``kl_divergence`` of the guide vs prior sites vs :func:`kl_analytic`;
    * ELBO with the same noise: ``Trace_ELBO`` vs the manual MC-KL ELBO, ``TraceMeanField_ELBO``
      vs the manual analytic-KL ELBO, full data and a mini-batch of ``batch_size`` rows
      (default N // 10; checks the N/B scaling), plus the recorded log-likelihood part;
    * ``TraceMeanField_ELBO`` really uses the closed form: the KL its loss implies equals the
      analytic KL and is far (> 10 × tolerance) from the MC KL of the same draws (the trap: it
      silently falls back to MC when no KL is registered for the pair of distributions);
    * gradients w.r.t. loc and scale with the same noise, both variants (max-abs difference);
    * the other estimators, full data, same noise: ELBO value and gradients w.r.t. loc and scale of
      ``stl``, ``rqmc``, ``iwae``, ``score`` (S = ``particles``; for ``rqmc`` the largest power of two
      ≤ ``particles``) and ``quad`` (no noise) against :func:`elbo_manual.elbo` / :func:`elbo_manual.elbo_grad`
      of the same kind (:data:`ESTIMATOR_LABELS`); ``score`` at its first evaluation (baseline 0), then
      one row for its second evaluation, whose decaying-average baseline is ``0.1·f_1`` (the first
      evaluation's per-particle costs); and ``RqmcELBO`` uses the closed-form KL (as for ``TraceMeanField_ELBO``).
      Pyro's ``QuadratureELBO`` computes its expected log-likelihood with the manual module's own
      quadrature functions, so its rows check the KL, the N/B scaling and the guide wiring, not the
      quadrature itself (``tests/test_quadrature.py`` does);
    * independent noise, both variants: ``n_rep`` replicates per implementation
      (:func:`elbo_replicates`, or pass ``replicates``). The Monte Carlo SE of the difference of
      the two means is ``SE = sqrt(var_pyro / n + var_manual / n)`` with the per-replicate sample
      variances (ddof = 1); agree if ``|diff| < 4 SE``;
    * mini-batch unbiasedness: (i) manual batch ELBOs over ``n_batches`` random batches with the
      ε of the full-data same-noise row average to Pyro's full-data ELBO at that ε
      (SE = sd / sqrt(n_batches)); (ii) Pyro ``Trace_ELBO`` estimates with ``plate(subsample=…)``
      and fresh noise average to the manual full-data MC-KL replicates
      (SE = sqrt(var_batch / n_batches + var_full / n_rep));
    * if ``kl_error`` is given: its log-log slope against the theoretical −½ (tolerance 0.1).
    """
    xt, yt, lt, st = _as(x, dtype), _as(y, dtype), _as(loc, dtype), _as(scale, dtype)
    n, k = xt.shape
    assert yt.shape == (n,) and lt.shape == st.shape == (k + 1,), "x (N, K), y (N,), loc/scale (K+1,)"
    b = batch_size if batch_size is not None else max(1, n // 10)
    rows: list[dict[str, Any]] = []

    kl_m = float(em.kl_analytic(lt, st, prior_scale))
    rows.append(_exact_row("KL analytic (Pyro kl_divergence vs manual)", pyro_kl_analytic(xt, yt, lt, st, prior_scale), kl_m, "closed form, nats"))

    same: dict[str, SameNoise] = {}
    for i, (kind, label) in enumerate((("trace", "Trace_ELBO vs manual MC KL"), ("meanfield", "TraceMeanField_ELBO vs manual analytic KL"))):
        pn = pyro_same_noise(kind, xt, yt, lt, st, particles=particles, prior_scale=prior_scale, seed=seed + 10 * i)
        same[kind] = pn
        (g_loc, g_scale), parts = em.elbo_grad(kind, pn.loc, pn.scale, pn.eps, xt, yt, prior_scale=prior_scale)
        rows.append(_exact_row(f"ELBO same noise ({label})", pn.elbo, float(parts.elbo), f"S={particles}, full data, nats"))
        if kind == "trace":
            rows.append(_exact_row("log-likelihood part same noise (Trace_ELBO record vs manual)", pn.loglik, float(parts.loglik),
                                   "the history's loglik split, nats"))
        else:
            rows.append(closed_form_row(pn, prior_scale))
        rows.extend(_grad_rows(kind, label, pn, g_loc, g_scale))

    gen = torch.Generator().manual_seed(seed + 3)
    idx = torch.randperm(n, generator=gen)[:b]
    for i, (kind, label) in enumerate((("trace", "Trace_ELBO vs manual MC KL"), ("meanfield", "TraceMeanField_ELBO vs manual analytic KL"))):
        pn = pyro_same_noise(kind, xt, yt, lt, st, particles=particles, prior_scale=prior_scale, subsample=idx, seed=seed + 20 + i)
        parts = em.elbo(kind, pn.loc, pn.scale, pn.eps, xt[idx], yt[idx], n_total=n, prior_scale=prior_scale)
        rows.append(_exact_row(f"ELBO same noise, mini-batch B={b} of N={n} ({label})", pn.elbo, float(parts.elbo),
                               "checks the N/B scaling, nats"))

    rows.extend(_estimator_rows(xt, yt, lt, st, particles=particles, prior_scale=prior_scale, seed=seed))
    if scale_tril is not None:
        rows.extend(fullrank_rows(xt, yt, lt, _as(scale_tril, dtype), particles=particles, prior_scale=prior_scale, seed=seed))

    reps = replicates if replicates is not None else elbo_replicates(x, y, loc, scale, particles=particles, prior_scale=prior_scale,
                                                                     seed=seed, n_rep=n_rep, dtype=dtype)
    for kind in ("trace", "meanfield"):
        a, m = reps[_PYRO_NAME[kind]], reps[_MANUAL_NAME[kind]]
        se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(m, ddof=1) / len(m))
        rows.append(_stat_row(f"ELBO independent noise ({_PYRO_NAME[kind]} vs {_MANUAL_NAME[kind]})", float(a.mean()), float(m.mean()), se,
                              f"means of {len(a)} and {len(m)} replicates, S={particles}, nats"))

    pn = same["trace"]
    mb = minibatch_manual(xt, yt, pn.loc, pn.scale, pn.eps, batch_size=b, n_batches=n_batches, kind="trace",
                          prior_scale=prior_scale, seed=seed)
    se = float(np.std(mb, ddof=1) / math.sqrt(n_batches))
    rows.append(_stat_row(f"mini-batch mean = full-data ELBO, same ε (Pyro full vs manual B={b})", pn.elbo, float(mb.mean()), se,
                          f"{n_batches} batches, SE = sd/sqrt(n_batches)"))

    pb = _pyro_minibatch(xt, yt, lt, st, kind="trace", particles=particles, batch_size=b, n_batches=n_batches,
                         prior_scale=prior_scale, seed=seed)
    full = reps[_MANUAL_NAME["trace"]]
    se = math.sqrt(np.var(pb, ddof=1) / len(pb) + np.var(full, ddof=1) / len(full))
    rows.append(_stat_row(f"mini-batch mean = full-data ELBO (Pyro B={b} vs manual full)", float(pb.mean()), float(full.mean()), se,
                          f"{n_batches} Pyro batches vs {len(full)} manual full-data replicates"))

    if kl_error is not None:
        diff = abs(kl_error.slope + 0.5)
        rows.append(
            {
                "name": "MC KL error slope vs S (theory −0.5)",
                "pyro": -0.5,
                "manual": kl_error.slope,
                "abs_diff": diff,
                "tolerance": 0.1,
                "agree": bool(diff <= 0.1),
                "kind": "statistical",
                "detail": f"pyro = theoretical slope; log-log fit over S={kl_error.S.tolist()}, {kl_error.reps} reps each",
            }
        )
    return rows
