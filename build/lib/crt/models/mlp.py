"""MLP encoders and predictors, and the encoder factory the configs name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from crt.errors import ConfigError
from crt.registry import ENCODERS, as_dict


class MLP(nn.Sequential):
    """in_dim -> hidden... -> out_dim with ReLU between layers (inputs of any shape are flattened)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, batch_norm: bool = False):
        layers: list[nn.Module] = [nn.Flatten()]
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b)] + ([nn.BatchNorm1d(b)] if batch_norm else []) + [nn.ReLU()]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)
        self.out_dim = out_dim


register_encoder = ENCODERS.register


@register_encoder("mlp")
def _mlp_encoder(in_dim: int, out_dim: int, hidden: Sequence[int] = (32, 32), batch_norm: bool = False) -> nn.Module:
    return MLP(in_dim, list(hidden), out_dim, batch_norm=batch_norm)


@register_encoder("identity")
def _identity_encoder(in_dim: int, out_dim: int) -> nn.Module:
    """z = x: the setting of the authors' toy code (demix works on the observed, already d-dim, data)."""
    if in_dim != out_dim:
        raise ConfigError(f"data.encoder.name=identity needs input dim = data.feature_dim, got {in_dim} vs {out_dim}. "
                          "Fix: set data.feature_dim to the input dimension, or use data.encoder.name=mlp.")
    return nn.Identity()


def build_encoder(spec: Mapping[str, Any], in_dim: int, out_dim: int, trust_code: bool = True) -> nn.Module:
    """Build the encoder named by spec['name'] (mlp, resnet18_cifar, ...) mapping inputs to R^out_dim; the other
    entries of `spec` are its typed options (`data.encoder.*`). With `_target_`, user code (crt/usercode.py),
    imported only when `trust_code` (a config the user gave; crt.load passes its own opt-in)."""
    if spec.get("_target_"):  # user code: data.encoder._target_=my_pkg.Enc
        from crt.usercode import allow_user_code, import_object

        allow_user_code(spec["_target_"], "data.encoder._target_", "the encoder spec", trust_code, quiet=True)
        cls = import_object(str(spec["_target_"]), "data.encoder._target_", "an encoder class (nn.Module)")
        kwargs = {k: v for k, v in spec.items() if k not in ("name", "_target_")}
        return cls(in_dim=in_dim, out_dim=out_dim, **kwargs)
    spec = dict(spec)
    name = spec.pop("name", "mlp")
    options = ENCODERS.options(name, spec, "data.encoder")
    return ENCODERS.get(name, "data.encoder.name")(in_dim=in_dim, out_dim=out_dim, **as_dict(options))


class NormedLinear(nn.Module):
    """Cosine-similarity last layer: logits_c = <x / |x|, w_c / |w_c|> in [-1, 1] (LDAM's head)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # unit-norm columns at initialisation, as LDAM's reference head: the forward pass only sees directions,
        # and an optimiser step turns a column by about (step / |w_c|), so the initial norm sets how fast it learns
        w = torch.empty(in_dim, out_dim).uniform_(-1, 1)
        self.weight = nn.Parameter(w / w.norm(dim=0, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in float32 even under bf16/fp16 autocast: LDAM multiplies these cosines by s = 30, which would turn
        # bf16's rounding of about 0.004 into about 0.1 of a logit
        with torch.autocast(device_type=x.device.type, enabled=False):
            return nn.functional.normalize(x.float(), dim=1) @ nn.functional.normalize(self.weight.float(), dim=0)


def build_predictor(in_dim: int, num_classes: int, hidden: Sequence[int], cosine: bool = False) -> nn.Module:
    """MLP predictor; `cosine` swaps its last layer for a cosine-normalised one."""
    net = MLP(in_dim, list(hidden), num_classes)
    if cosine:
        net[-1] = NormedLinear(net[-1].in_features, num_classes)
    return net


__all__ = ["MLP", "NormedLinear", "build_encoder", "build_predictor", "register_encoder"]
