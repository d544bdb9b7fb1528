"""The iterate convergence monitor (:mod:`pyro_spam.training.convergence`) on synthetic iterate
sequences whose truth is known: no optimiser, so every test is fast and exact about what it feeds."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest

from pyro_spam.training.convergence import ConvergenceConfig, IterateConvergence

K1 = 4  # coefficients (bias + 3 terms)
LOC = np.array([-2.0, 1.0, 0.5, -0.3])
SCALE = np.array([0.1, 0.05, 0.2, 0.08])


class _Chain:
    """AR(1) iterates around (LOC, log SCALE): ``θ_t = θ* + bias·lr + e_t``, with
    ``e_t = φ e_{t−1} + sqrt(1 − φ²)·sd·sqrt(lr/lr0)·ξ_t`` in posterior units (loc: times SCALE),
    i.e. a stationary spread ``sd`` at the initial rate that shrinks like sqrt(rate), as
    constant-rate stochastic optimisers do."""

    def __init__(self, sd: float, phi: float = 0.6, seed: int = 0, lr0: float = 0.1, bias: float = 0.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.sd, self.phi, self.lr0, self.bias = sd, phi, lr0, bias
        self.e = np.zeros(2 * K1)

    def next(self, lr: float) -> tuple[np.ndarray, np.ndarray]:
        innov = np.sqrt(1 - self.phi**2) * self.sd * np.sqrt(lr / self.lr0) * self.rng.normal(size=2 * K1)
        self.e = self.phi * self.e + innov
        off = self.e + self.bias * lr
        return LOC + SCALE * off[:K1], np.log(SCALE) + off[K1:]


def _run(mon: IterateConvergence, chain: _Chain, steps: int, start: int = 0) -> list[str]:
    out = []
    for t in range(start, start + steps):
        v = mon.update(t, *chain.next(mon.lr))
        out.append(v)
        if v == "converged":
            break
    return out


def test_stationary_ar1_converges_with_accurate_average() -> None:
    """Stationary AR(1) noise (φ = 0.6, spread 0.2 posterior sd) around a known point converges
    without any decay, and the average is within 4 of its own reported MCSEs of the truth in
    every parameter (a 4-sigma bound: the monitor's MCSE must be honest, ~1e-4 per-parameter
    failure probability for a correct MCSE; the seed is fixed)."""
    mon = IterateConvergence(0.1)
    verdicts = _run(mon, _Chain(sd=0.2), 2000)
    assert verdicts[-1] == "converged" and "decay" not in verdicts
    loc, scale = mon.average()
    ev = mon.evidence()["final_check"]
    mcse_rel = np.asarray(ev["mcse_rel"])
    err = np.concatenate([np.abs(loc - LOC) / SCALE, np.abs(np.log(scale / SCALE))])
    assert np.all(err <= 4.0 * mcse_rel + 1e-12), (err, mcse_rel)
    assert mcse_rel.max() <= mon.config.mcse_rel_max


def test_drifting_sequence_never_converges() -> None:
    """A steady drift (0.01 posterior sd per step, 30 sd in 3000 steps) plus noise never counts
    as converged, whatever the rate: split-R̂ sees the segments disagree."""
    mon = IterateConvergence(0.1)
    chain = _Chain(sd=0.2, seed=1)
    verdicts = []
    for t in range(3000):
        loc, log_scale = chain.next(mon.lr)
        verdicts.append(mon.update(t, loc + 0.01 * t * SCALE, log_scale + 0.002 * t))
    assert "converged" not in verdicts


def test_wide_spread_decays_learning_rate_by_factor() -> None:
    """Stationary but wide iterates (spread 1.5 sd > spread_max) ask for a decay; lr is then
    exactly lr0 · lr_factor, and the window restarts at the decay step."""
    cfg = ConvergenceConfig(lr_factor=0.25)
    mon = IterateConvergence(0.2, cfg)
    verdicts = _run(mon, _Chain(sd=1.5, seed=2, lr0=0.2), 400)
    assert "decay" in verdicts
    first = verdicts.index("decay")
    assert mon.evidence()["lr_decays"][0]["lr_to"] == pytest.approx(0.2 * 0.25)
    assert mon.evidence()["lr_decays"][0]["step"] == first + 1
    assert mon.phase_start == mon.evidence()["lr_decays"][-1]["step"]


def test_delta_path_converges_when_a_smaller_rate_does_not_move_the_average() -> None:
    """With the spread shortcut switched off (spread_max tiny) convergence needs two successive
    accurate averages within delta_tol: an unbiased chain gets there after one or more decays,
    and the accepted change is ≤ delta_tol."""
    cfg = ConvergenceConfig(spread_max=1e-6)
    mon = IterateConvergence(0.1, cfg)
    verdicts = _run(mon, _Chain(sd=0.3, seed=3), 6000)
    assert verdicts[-1] == "converged" and verdicts.count("decay") >= 1
    final = mon.evidence()["final_check"]
    assert final["accepted_by"] == "delta" and final["delta"] <= cfg.delta_tol


def test_state_dict_round_trip_resumes_identically() -> None:
    """Save the state mid-run (through np.savez, as a checkpoint would), restore it, and feed
    both monitors the same iterates: every decision, the average and the evidence are
    bit-for-bit identical."""
    cfg = ConvergenceConfig()
    a = IterateConvergence(0.1, cfg)
    chain = _Chain(sd=0.8, seed=4)
    _run(a, chain, 137)
    buf = io.BytesIO()
    np.savez(buf, **a.state_dict())
    buf.seek(0)
    with np.load(buf) as npz:
        b = IterateConvergence.from_state(dict(npz), cfg)
    rng_state = chain.rng.bit_generator.state
    e_state = chain.e.copy()
    va = _run(a, chain, 800, start=137)
    chain.rng.bit_generator.state, chain.e = rng_state, e_state
    vb = _run(b, chain, 800, start=137)
    assert va == vb
    for x, y in zip(a.average(), b.average()):
        np.testing.assert_array_equal(x, y)
    assert json.dumps(a.evidence()) == json.dumps(b.evidence())


def test_evidence_is_json_serialisable() -> None:
    """evidence() holds plain JSON values only (no NaN/inf, no numpy types), before any check,
    mid-run and after convergence."""
    mon = IterateConvergence(0.1)
    json.dumps(mon.evidence(), allow_nan=False)
    chain = _Chain(sd=0.2, seed=5)
    _run(mon, chain, 30)
    json.dumps(mon.evidence(), allow_nan=False)
    _run(mon, chain, 2000, start=30)
    ev = mon.evidence()
    text = json.dumps(ev, allow_nan=False)
    assert ev["status"] == "converged" and "criterion" in json.loads(text)
    assert ev["averaging_window"][1] > ev["averaging_window"][0]


def test_same_inputs_same_decisions() -> None:
    """Determinism: two monitors fed the same iterates make the same decisions at the same steps."""
    runs = []
    for _ in range(2):
        mon = IterateConvergence(0.1)
        runs.append((_run(mon, _Chain(sd=0.9, seed=6), 600), mon.lr))
    assert runs[0] == runs[1]


def test_rejects_non_consecutive_steps_and_non_finite_iterates() -> None:
    """update() insists on consecutive steps (a resumed fit must continue where it stopped) and
    finite parameters (a NaN iterate is the training loop's error, not a chain sample)."""
    mon = IterateConvergence(0.1)
    mon.update(0, LOC, np.log(SCALE))
    with pytest.raises(ValueError, match="consecutive"):
        mon.update(2, LOC, np.log(SCALE))
    with pytest.raises(ValueError, match="non-finite"):
        mon.update(1, LOC * np.nan, np.log(SCALE))


@pytest.mark.parametrize("n", [8, 9, 41, 400])
def test_vectorised_split_rhat_equals_arviz(n: int) -> None:
    """The stop rule's all-columns classic split-R̂ equals ArviZ's per-column ``rhat(method="split")``
    to 1e-12 (rounding of the reductions only), for even and odd window lengths and a constant column."""
    import arviz as az

    from pyro_spam.training.convergence import _split_rhat

    rng = np.random.default_rng(n)
    w = np.cumsum(rng.normal(size=(n, 6)), axis=0) * rng.uniform(0.1, 3.0, size=6) + rng.normal(size=(n, 6))
    w[:, 3] = 0.7  # no movement at all: R̂ = 1
    half = n // 2
    chains = np.stack([w[n - 2 * half : n - half], w[n - half :]])
    with warnings.catch_warnings():  # ArviZ on the constant column: 0/0
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = [float(np.asarray(az.rhat(chains[:, :, j], method="split")).reshape(-1)[0]) for j in range(6)]
    expected[3] = 1.0  # the monitor's rule (ArviZ says sqrt((m − 1)/m) or nan)
    np.testing.assert_allclose(_split_rhat(w), expected, rtol=1e-12, atol=0)


def test_config_docstring_states_the_defaults_the_code_uses() -> None:
    """Every ``name : type, default=value`` line of ConvergenceConfig's docstring matches its field."""
    import dataclasses
    import re

    from pyro_spam.training.convergence import ConvergenceConfig

    documented = dict(re.findall(r"^\s{4}(\w+) : \w+, default=([^\s]+)$", ConvergenceConfig.__doc__ or "", re.M))
    fields = {f.name: f.default for f in dataclasses.fields(ConvergenceConfig)}
    assert set(documented) == set(fields)
    for name, text in documented.items():
        assert float(text) == float(fields[name]), f"{name}: documented {text}, code {fields[name]}"
