"""Will the run fit? An estimate of its peak memory, checked after the data are read and before any training.

Every trained network is built on the `meta` device (no storage is allocated) and run on one meta batch,
so the estimate counts exactly the parameters and activations the stages will create: weights, gradients
and two Adam moments per parameter, every layer's output kept for the backward pass and its gradient, the
features and sources of every split, and the d x d matrices of the diagnostics. A run whose estimate exceeds
the memory available (RAM on CPU, free memory on the GPU) is refused with the estimate and its largest part.
The estimate errs low (allocator overheads, Lightning's own buffers are not counted), so what it refuses
cannot fit.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from crt.errors import ConfigError

FLOAT = 4  # bytes: float32 weights and activations
TRAIN_COPIES = 4  # weight, gradient, Adam's two moments


def _activation_bytes(net: nn.Module, *inputs: torch.Tensor) -> int:
    """Bytes of every leaf module's output for one meta batch, twice (kept for backward, and its gradient)."""
    total = 0

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        net(*inputs)
    finally:
        for h in handles:
            h.remove()
    return 2 * total


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters()) * FLOAT * TRAIN_COPIES


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def stage_estimates(run_cfg: Any, split: Any) -> dict[str, tuple[int, str]]:
    """{part: (bytes, what it is)} for the stages of `run_cfg` on `split` (see the module docstring)."""
    from crt.models import build_encoder, build_maf
    from crt.models.critic import BatchedCritic
    from crt.models.mlp import build_predictor
    from crt.registry import as_dict
    from crt.usercode import is_import_path

    parts: dict[str, tuple[int, str]] = {}
    stages = run_cfg.stages
    k, n_all = int(split.num_classes), len(split.y_train) + len(split.y_val) + len(split.y_test)
    input_dim, input_shape, n_train = int(split.input_dim), tuple(split.x_train.shape[1:]), len(split.y_train)
    truth = (getattr(split, "sources", None) or {}).get("test")
    with torch.device("meta"):
        if "pretrain" in stages:
            c = stages["pretrain"]
            d, b = c.feature_dim, min(c.train.batch_size, n_train)
            key = "_target_" if is_import_path(c.encoder.name) else "name"
            if key == "name":  # user code is not run for an estimate
                net = nn.Sequential(build_encoder({"name": c.encoder.name, **as_dict(c.encoder.options)},
                                                  input_dim, d), build_predictor(d, k, list(c.head_hidden)))
                x = torch.empty(b, *input_shape)
                parts["pretrain"] = (_params(net) + _activation_bytes(net, x),
                                     f"encoder and head: weights, gradients, Adam state, activations of a batch of {b}")
            parts["features"] = (n_all * d * FLOAT * 2, f"features (and sources) of {n_all} samples x {d} dims")
        if "demix" in stages:
            c = stages["demix"]
            d, b, f, cr = c.feature_dim, min(c.train.batch_size, n_train), c.train.flow, c.train.critic
            flow = build_maf(d, f.blocks, f.hidden, f.made_layers, f.batch_norm)
            critic = BatchedCritic(d, int(cr.embed_dim or k), cr.hidden)
            z = torch.empty(b, d)
            act = _activation_bytes(flow, z) + 2 * b * d * (2 * cr.hidden + int(cr.embed_dim or k)) * FLOAT
            parts["demix"] = (_params(flow) + _params(critic) + act,
                              f"flow and critic ({d} dims x {cr.hidden} hidden): weights, gradients, Adam state, "
                              f"activations of a batch of {b}")
            if truth is not None and truth.shape[1] == d:  # source recovery: a d x d matching (crt.diagnostics.mcc)
                parts["diagnostics"] = (3 * d * d * 8, f"the {d} x {d} correlation matrices of the MCC diagnostic")
        if "refine" in stages and getattr(stages["refine"], "predictor_hidden", None) is not None:
            c = stages["refine"]
            b, d = min(c.train.batch_size, n_train), stages["pretrain"].feature_dim
            net = build_predictor(d, k, list(c.predictor_hidden))
            parts["refine"] = (_params(net) + _activation_bytes(net, torch.empty(2 * b, d)),
                               f"predictor: weights, gradients, Adam state, activations of a batch of {2 * b}")
    return parts


def available_bytes(device: torch.device) -> int:
    """Free memory on the GPU, or the RAM the kernel reports available (MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


FIXES = {
    "pretrain": "a smaller encoder (data.encoder.*), model.head.hidden or stage.pretrain.batch_size",
    "features": "a smaller data.feature_dim",
    "demix": "a smaller data.feature_dim, stage.demix.critic.hidden, stage.demix.flow.hidden or stage.demix.batch_size",
    "diagnostics": "a smaller data.feature_dim",
    "refine": "a smaller model.predictor.hidden or stage.refine.batch_size",
}


def check_fits(run_cfg: Any, split: Any, device: torch.device) -> dict[str, int]:
    """Raise a ConfigError when the run's estimated peak memory exceeds what `device` has; else the estimate."""
    parts = stage_estimates(run_cfg, split)
    resident = parts.get("features", (0, ""))[0]
    peaks = {s: b + (resident if s != "features" else 0) for s, (b, _) in parts.items()}
    have = available_bytes(device)
    worst = max(peaks, key=peaks.get) if peaks else None
    if worst is not None and peaks[worst] > have:
        need, what = parts[worst]
        where = "GPU memory free" if device.type == "cuda" else "memory available"
        raise ConfigError(f"this run cannot fit: stage {worst} needs about {_gib(peaks[worst])} ({what}: "
                          f"{_gib(need)}{', plus the features held meanwhile' if worst != 'features' else ''}), and "
                          f"this machine has {_gib(have)} of {where}. Fix: use {FIXES[worst]}, or a machine with more "
                          "memory.")
    return {s: int(b) for s, (b, _) in parts.items()}
