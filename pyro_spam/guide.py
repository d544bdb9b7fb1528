"""The hand-written mean-field guide q(w) = N(loc, diag(scale²)), sites in the model's order."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from torch import Tensor
from torch.distributions import constraints

LOC = "w_loc"
SCALE = "w_scale"


def make_guide(init_scale: float = 0.1, init_loc: Tensor | None = None, init_scale_vec: Tensor | None = None):
    """Build the guide. Initial loc is 0 (the prior mean) unless given; scale ``init_scale``.

    A small initial scale keeps early gradient noise low; the optimiser widens it where the
    data are uninformative.
    """

    def guide(x: Tensor, y: Tensor | None = None, subsample: Tensor | None = None, prior_scale: float = 1.0) -> Tensor:
        k1 = x.shape[-1] + 1
        loc = pyro.param(LOC, lambda: init_loc.clone() if init_loc is not None else x.new_zeros(k1))
        scale = pyro.param(
            SCALE,
            lambda: init_scale_vec.clone() if init_scale_vec is not None else x.new_full((k1,), init_scale),
            constraint=constraints.positive,
        )
        return pyro.sample("w", dist.Normal(loc, scale).to_event(1))

    return guide


guide = make_guide()
