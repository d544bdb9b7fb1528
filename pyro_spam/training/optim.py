"""Adam for :class:`pyro.optim.PyroOptim` without ``torch.optim.Optimizer``'s import of ``torch._dynamo``.

The first ``torch.optim.Optimizer`` created in a process, and every ``step()``, import
``torch._dynamo`` (to mark code the compiler must skip): 1.1–1.3 s measured here, more than a
whole fit on the default data (~0.8 s). Nothing in this package compiles with dynamo, so
:class:`Adam` performs ``torch.optim.Adam``'s default CPU update (the single-tensor path, no
weight decay, no AMSGrad) with the same tensor operations in the same order, giving the same
numbers bit for bit (``tests/test_fast_path.py``), and keeps its ``state_dict`` layout, so
checkpoints written with either load into the other. :func:`pyro_spam.training.svi.PyroAdam` wraps it like
``pyro.optim.Adam``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["Adam"]


class Adam:
    """``torch.optim.Adam(params, lr, betas, eps)`` on CPU, without ``torch.optim``.

    params : iterable of Tensor
        Leaf tensors updated in place from their ``.grad``.
    lr : float, default=1e-3
    betas : tuple of float, default=(0.9, 0.999)
    eps : float, default=1e-8
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        self.param_groups: list[dict[str, Any]] = [{
            "params": params, "lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": 0,
            "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
            "differentiable": False, "fused": None, "decoupled_weight_decay": False,
        }]
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient (torch's ``_single_tensor_adam``)."""
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {
                        "step": torch.tensor(0.0, dtype=torch.float32),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
                step_t, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                step_t += 1
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = step_t.item()
                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                step_size = lr / bias_correction1
                bias_correction2_sqrt = bias_correction2**0.5
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Optimizer.state_dict``'s layout: state keyed by parameter index."""
        index = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index[p] = len(index)
                ids.append(index[p])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[p]: {k: v.clone() for k, v in s.items()} for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state written by :meth:`state_dict` or by ``torch.optim.Adam``."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(g["params"]) != len(own["params"]) for g, own in zip(groups, self.param_groups)
        ):
            raise ValueError("loaded state dict does not match this optimizer's parameter groups")
        by_index = {}
        for g, own in zip(groups, self.param_groups):
            for i, p in zip(g["params"], own["params"]):
                by_index[i] = p
            own.update({k: (tuple(v) if k == "betas" else v) for k, v in g.items() if k != "params"})
        self.state = {}
        for i, s in state_dict["state"].items():
            p = by_index[int(i)]
            self.state[p] = {
                "step": torch.as_tensor(s["step"], dtype=torch.float32).clone(),
                "exp_avg": torch.as_tensor(s["exp_avg"], dtype=p.dtype).clone(),
                "exp_avg_sq": torch.as_tensor(s["exp_avg_sq"], dtype=p.dtype).clone(),
            }
