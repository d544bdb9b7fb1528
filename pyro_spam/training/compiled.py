"""Compiled (``torch.jit.trace``) Pyro ELBOs that also return the log-likelihood part.

Pyro's own JIT ELBOs cannot be used as they are:

* ``JitTraceMeanField_ELBO`` (Pyro 1.9.2) looks for its compiled function under
  ``_loss_and_surrogate_loss`` but stores it under ``_differentiable_loss``, so it traces the
  model and guide again on every step (measured here: 44 ms/step instead of 6).
* Both keep one closure over the first ``(model, guide)`` pair they see, and ``loss_and_grads``
  returns a Python float (a host sync per step) and nothing else, so the per-step split of the
  ELBO into log-likelihood and KL (kept in :class:`pyro_spam.types.ElboHistory`) is lost.

:class:`JitTraceELBO` and :class:`JitMeanFieldELBO` compile once per (model, guide, number of
positional tensors, keyword arguments) and return ``(loss, loglik)`` as tensors from the
compiled graph. The loss is the same surrogate Pyro differentiates; the model, the guide, the
param store, the vectorised particles and the noise stream (the global torch generator, drawn
in the same order) are Pyro's own, so a compiled step gives the same numbers as the
corresponding non-JIT ELBO (checked in ``tests/test_fast_path.py``).

Memory: torch.jit keeps every traced graph, with its executor's state, in its global
compilation unit after the ELBO is gone: ~20 MB per compiled fit on the default data, ~200 MB
at 10x N full batch (measured). Within a fit memory stays flat. Many full-batch fits on a large
N in one process: use the plain ELBOs (``TrainConfig(jit=False)``). (Running the graph with
``torch.jit.optimized_execution(False)`` was ~20% faster per step and avoids the per-fit growth,
but its peak memory within a fit reached ~0.6 GB on the default data: not used.)

Only fully reparameterised guides with static structure are supported (the package's guide).
Non-tensor model inputs must be keyword arguments (each distinct value compiles once more).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import pyro
import pyro.ops.jit
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_identically_zero
from torch import Tensor

OBSERVED = "y"

__all__ = ["JitTraceELBO", "JitMeanFieldELBO", "OBSERVED"]


class _CompiledLossAndLoglik:
    """Mixin: ``loss_and_loglik`` through one compiled function per (model, guide) pair.

    The host class provides ``_particle_loss(model_trace, guide_trace) -> (loss, surrogate)``
    for one (vectorised) trace pair: ``loss`` carries the value, ``surrogate`` the gradient.
    """

    _compiled: dict[tuple[int, int], pyro.ops.jit.CompiledFunction]

    def loss_and_loglik(self, model: Callable, guide: Callable, *args: Tensor, **kwargs) -> tuple[Tensor, Tensor]:
        """The differentiable loss (−ELBO estimate) and its log-likelihood part, both 0-dim tensors.

        ``loss.backward()`` gives the gradient of −ELBO; ``loglik`` is detached: the particle mean
        of the observed site's ``log_prob_sum`` (already scaled by N/B under subsampling).
        """
        compiled = self.__dict__.setdefault("_compiled", {})
        key = (id(model), id(guide))
        fn = compiled.get(key)
        if fn is None:
            fn = pyro.ops.jit.trace(
                self._traced(model, guide), ignore_warnings=self.ignore_jit_warnings, jit_options=self.jit_options
            )
            compiled[key] = fn
        seen = self.__dict__.setdefault("_signatures", set())
        try:
            signature = (key, len(args), tuple(sorted(kwargs.items())))
            first = signature not in seen
            seen.add(signature)
        except TypeError:  # unhashable keyword value: cannot tell, so treat every call as a first one
            first = True
        if not first:
            loss, loglik = fn(*args, **kwargs)
            return loss, loglik.detach()
        # Compiling runs the model and guide twice (param capture, then the trace) before the
        # compiled graph runs, drawing noise each time. Compile on a copy of the generator state,
        # then rewind, so the first compiled step draws the same noise as a non-JIT step would.
        rng = torch.get_rng_state()
        with warnings.catch_warnings():
            # torch 2.13 deprecates torch.jit.trace in favour of torch.compile, whose CPU compile
            # takes seconds: far more than a whole fit here. Pyro's jit still uses trace.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated", category=DeprecationWarning)
            fn(*args, **kwargs)
        torch.set_rng_state(rng)
        loss, loglik = fn(*args, **kwargs)
        return loss, loglik.detach()  # the history keeps it: it must not hold the step's autograd graph

    def _traced(self, model: Callable, guide: Callable) -> Callable[..., tuple[Tensor, Tensor]]:
        weakself = weakref.ref(self)  # the compiled graph must not keep the ELBO alive

        def loss_and_loglik(*args: Tensor, **kwargs) -> tuple[Tensor, Tensor]:
            elbo = weakself()
            loss = surrogate = loglik = torch.zeros(())
            for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
                particle_loss, particle_surrogate = elbo._particle_loss(model_trace, guide_trace)
                loss = loss + particle_loss / elbo.num_particles
                surrogate = surrogate + particle_surrogate / elbo.num_particles
                loglik = loglik + model_trace.nodes[OBSERVED]["log_prob_sum"].detach() / elbo.num_particles
            return loss.detach() + (surrogate - surrogate.detach()), loglik

        return loss_and_loglik

    def _vectorized_num_particles(self, fn: Callable) -> Callable:
        # Pyro's particle plate, with its size given as a plain int: otherwise the trace records
        # the plate's scale S/S as a tensor and every log-probability is multiplied by it.
        if self.num_particles == 1:
            return fn
        return pyro.plate("num_particles_vectorized", self.num_particles, subsample_size=self.num_particles,
                          dim=-self.max_plate_nesting)(fn)

    @property
    def compilations(self) -> int:
        """How many graphs have been traced so far (one per model/guide pair and argument signature)."""
        return sum(len(fn.compiled) for fn in self.__dict__.get("_compiled", {}).values())

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> Tensor:
        """−ELBO estimate with Pyro's gradient (compiled)."""
        return self.loss_and_loglik(model, guide, *args, **kwargs)[0]

    def loss_and_grads(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """Pyro's ``SVI.step`` interface: backpropagate and return the loss as a float."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())

    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The −ELBO estimate as a float, without gradients."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


class JitTraceELBO(_CompiledLossAndLoglik, Trace_ELBO):
    """Compiled ``Trace_ELBO`` (Monte Carlo KL inside the expectation) returning the loglik part too."""

    def _particle_loss(self, model_trace, guide_trace) -> tuple[Tensor, Tensor]:
        # Trace_ELBO._differentiable_loss_particle calls .item() on each term, which a trace would
        # freeze into constants; this is the same sum kept in tensors (as Pyro's JitTrace_ELBO does).
        elbo = surrogate = torch.zeros(())
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"]
                surrogate = surrogate + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                _, score_function_term, entropy_term = site["score_parts"]
                if not is_identically_zero(score_function_term):
                    raise NotImplementedError(f"site {site['name']!r} is not reparameterised; use Trace_ELBO")
                elbo = elbo - site["log_prob_sum"]
                if not is_identically_zero(entropy_term):
                    surrogate = surrogate - entropy_term.sum()
        return -elbo, -surrogate


class JitMeanFieldELBO(_CompiledLossAndLoglik, TraceMeanField_ELBO):
    """Compiled ``TraceMeanField_ELBO`` (analytic KL where registered) returning the loglik part too."""

    def _particle_loss(self, model_trace, guide_trace) -> tuple[Tensor, Tensor]:
        # Under tracing Pyro's own particle loss keeps its terms as tensors (it detaches instead of .item()).
        return self._differentiable_loss_particle(model_trace, guide_trace)
