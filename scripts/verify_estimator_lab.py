"""Recompute two numbers of ``pyro-spam compare``'s estimator lab independently.

Usage: ``python scripts/verify_estimator_lab.py RUN_DIR`` (a run that ``compare`` has seen).

* the Trace_ELBO gradient variance at the reported fitted guide, from Pyro's own ``Trace_ELBO``
  (300 replicates, gradients w.r.t. the unconstrained loc and log-scale), against the lab's
  (64 replicates of the plain-torch estimator): a ratio within ~30 % (the lab's variance has a
  relative standard error of ~18 %);
* the exact ELBO at both guides from :mod:`pyro_spam.exact` (numpy quadrature) against the lab's
  (torch quadrature), in nats.
"""

from __future__ import annotations

import sys

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO

from pyro_spam import exact
from pyro_spam.guide import LOC, SCALE, make_guide
from pyro_spam.io.run_reader import read_run
from pyro_spam.model import model

REPS = 300


def pyro_trace_grad_variance(x: torch.Tensor, y: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, S: int) -> tuple[float, float]:
    """Summed variance of Pyro Trace_ELBO's gradient w.r.t. loc and log-scale (the param store's unconstrained scale)."""
    g_loc, g_log_scale = [], []
    for r in range(REPS):
        pyro.clear_param_store()
        pyro.set_rng_seed(10_000 + r)
        guide = make_guide(init_loc=loc, init_scale_vec=scale)
        loss = Trace_ELBO(num_particles=S, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(model, guide, x, y)
        params = dict(pyro.get_param_store().named_parameters())
        a, b = torch.autograd.grad(loss, [params[LOC], params[SCALE]])
        g_loc.append(a.numpy())
        g_log_scale.append(b.numpy())
    return float(np.var(g_loc, axis=0, ddof=1).sum()), float(np.var(g_log_scale, axis=0, ddof=1).sum())


def main(run_dir: str) -> None:
    torch.set_num_threads(1)
    run = read_run(run_dir)
    est, feats = run.summary["estimators"], run.features
    x = torch.tensor(feats["X_train"], dtype=torch.float32)
    y = torch.tensor(feats["y_train"], dtype=torch.float32)
    fitted = est["guides"]["fitted"]
    loc, scale = torch.tensor(fitted["loc"], dtype=torch.float32), torch.tensor(fitted["scale"], dtype=torch.float32)
    table = {(r["estimator"], r["S"], r["guide"]): r for r in est["table"]}
    for S in (16, 64):
        v_loc, v_ls = pyro_trace_grad_variance(x, y, loc, scale, S)
        rep = table[("trace", S, "fitted")]
        print(f"S={S}: Pyro Trace_ELBO ({REPS} reps) Var d/dloc {v_loc:.4g}, Var d/dlog-scale {v_ls:.4g}; "
              f"lab {rep['grad_var_loc']:.4g}, {rep['grad_var_log_scale']:.4g}; "
              f"lab / Pyro {rep['grad_var_loc'] / v_loc:.3f}, {rep['grad_var_log_scale'] / v_ls:.3f}")
    xd, yd = np.asarray(feats["X_train"], dtype=np.float64), np.asarray(feats["y_train"], dtype=np.float64)
    for name, g in est["guides"].items():
        e = exact.exact_elbo(xd, yd, np.asarray(g["loc"]), np.log(np.asarray(g["scale"])))
        print(f"{name} guide: exact.py ELBO {e:.6f}, lab {est['exact'][name]['elbo']:.6f}, "
              f"difference {e - est['exact'][name]['elbo']:.1e} nats")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/default")
