"""The registered optimizers (`stage.<stage>.optimizer`): torch only, so validating a config can list them."""

from __future__ import annotations

from typing import Any

import torch

from crt.registry import OPTIMIZERS


def _fused(fused: bool) -> dict[str, bool]:
    return {"fused": True} if fused and torch.cuda.is_available() else {}


@OPTIMIZERS.register("adam")
def adam(params: Any, lr: float, weight_decay: float, fused: bool = False, nesterov: bool = True) -> torch.optim.Optimizer:
    """Adam (`nesterov` does not apply)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **_fused(fused))


@OPTIMIZERS.register("adamw")
def adamw(params: Any, lr: float, weight_decay: float, fused: bool = False, nesterov: bool = True) -> torch.optim.Optimizer:
    """AdamW (`nesterov` does not apply)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **_fused(fused))


@OPTIMIZERS.register("sgd")
def sgd(params: Any, lr: float, weight_decay: float, fused: bool = False, nesterov: bool = True) -> torch.optim.Optimizer:
    """SGD with momentum 0.9, Nesterov unless `stage.<stage>.nesterov=false`."""
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9, nesterov=nesterov, **_fused(fused))


def make_optimizer(name: str, params: Any, lr: float, weight_decay: float, fused: bool = False,
                   nesterov: bool = True) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(name, "stage.<stage>.optimizer")(params, lr, weight_decay, fused, nesterov)
