"""Decoupled classifier learning (Kang et al., ICLR 2020) and post-hoc logit adjustment, as refine variants.

Stage 1 (pretrain) is ERM with instance-balanced sampling; its encoder is never touched again: every variant
works on the cached features z = encoder(x) of the pretrain stage (`method.refine_space=feature`).
`method.decoupled.kind` picks the variant:

- `crt`: classifier re-training. A freshly initialised classifier of the stage-1 head's architecture
  (model.head) is trained on z with class-balanced sampling (stage.refine: epochs, lr, batch, sampler).
- `lws`: learnable weight scaling. The stage-1 head is frozen; only per-class scales f_c are learnt, logits
  f_c · h(z)_c, with class-balanced sampling (Kang's LWS classifier: fc(z) * scales).
- `tau_norm`: τ-normalisation, no training. The last linear layer's rows become w_c / ‖w_c‖^τ and its bias is
  dropped (Kang's τ-normalisation scores z · w̃_c); τ is chosen on the held-out split (balanced accuracy)
  from `tau_grid` unless `tau` is given.
- `posthoc`: post-hoc logit adjustment (Menon et al. 2021, eq. 9), no training: the stage-1 logits minus
  τ · log π with π the stage-1 training prior; τ = 1 when not given, chosen on the held-out split from
  `tau_grid` when `tau: null`. Every class must have stage-1 training samples (a class the head never saw
  would get +τ·log N, which is an error rather than a number).

Differences from the papers: cRT/LWS train on cached features, so the images are not re-augmented (Kang et
al. re-extract features of augmented images every epoch); options are validated (unknown keys are errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from crt.errors import ConfigError
from crt.losses.adjusted import posthoc_adjust
from crt.models.mlp import build_predictor
from crt.registry import SAMPLERS
from crt.stages.common import Context, apply_batched, build_stage_loss, class_mask, fit, monitor, optim
from crt.stages.configs import DEFAULT_TAU_GRID, KINDS, DecoupledOptions, RefineConfig
from crt.stages.modules import ClassifierData, ClassifierModule

__all__ = ["DEFAULT_TAU_GRID", "KINDS", "DecoupledOptions", "ScaledHead", "TauNormHead", "run_decoupled",
           "tau_normalised_weight"]


class ScaledHead(nn.Module):
    """LWS: a frozen classifier h whose logits are scaled per class, f_c · h(z)_c; only f is trainable."""

    def __init__(self, head: nn.Module, num_classes: int):
        super().__init__()
        self.head = head
        for p in self.head.parameters():
            p.requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(num_classes))

    def train(self, mode: bool = True) -> ScaledHead:
        super().train(mode)
        self.head.eval()  # frozen: batch-norm statistics of the head do not move either
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z) * self.scales


def tau_normalised_weight(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """Rows w_c / ‖w_c‖^τ (Kang et al. 2020, sec. 4: τ = 1 is L2 normalisation, τ = 0 leaves W as is)."""
    norms = weight.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return weight / norms.pow(float(tau))


class TauNormHead(nn.Module):
    """The stage-1 head with its last linear layer τ-normalised and without bias (no trainable state)."""

    def __init__(self, head: nn.Sequential, tau: float):
        super().__init__()
        last = head[-1]
        if not isinstance(last, nn.Linear):
            raise ConfigError("method.decoupled.kind=tau_norm needs a linear last layer in the stage-1 head; "
                              "this head ends in a cosine layer (LDAM), whose rows are already normalised. Fix: "
                              "use pretrain_loss ce (or logit_adjust / balanced_softmax).")
        self.body = nn.Sequential(*list(head.children())[:-1])
        self.register_buffer("weight", tau_normalised_weight(last.weight.detach(), tau))
        self.tau = float(tau)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z) @ self.weight.T


def balanced_accuracy(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Mean per-class recall over the classes present in y (the held-out selection metric)."""
    pred = logits.argmax(1).cpu()
    y = y.cpu()
    hits = torch.bincount(y[pred == y], minlength=num_classes).float()
    n = torch.bincount(y, minlength=num_classes).float()
    present = n > 0
    return float((hits[present] / n[present]).mean())


def _select_tau(grid: Sequence[float], make_logits: Any, y_val: torch.Tensor, num_classes: int
                ) -> tuple[float, float]:
    """The τ of `grid` with the best held-out balanced accuracy (the smallest τ on ties)."""
    best_tau, best = float(grid[0]), -1.0
    for tau in grid:
        acc = balanced_accuracy(make_logits(float(tau)), y_val, num_classes)
        if acc > best + 1e-12:
            best_tau, best = float(tau), acc
    return best_tau, best


def run_decoupled(ctx: Context, cfg: RefineConfig, prev: dict[str, Any]) -> dict[str, Any]:
    """The refine stage of a decoupled method: a classifier on the frozen stage-1 features (see module doc)."""
    dec = cfg.decoupled
    assert dec is not None
    opts, sp = dec.options, ctx.split
    if sp.multilabel:
        raise ConfigError("method.decoupled supports single-label data only. Fix: use method.decoupled=null.")
    pre = prev["pretrain"]
    y_pre = sp.y_train[class_mask(sp, sp.y_train, dec.pretrain_classes)]
    pre_counts = sp.class_counts(y_pre)
    pre_loss = build_stage_loss(sp, dec.pretrain_loss, pre_counts)
    d = pre["z_train"].shape[1]
    hidden = list(dec.head_hidden)
    z = {k: pre[f"z_{k}"] for k in ("train", "val", "test")}
    selected: dict[str, Any] = {"kind": opts.kind}

    if opts.kind == "posthoc":
        absent = torch.nonzero(pre_counts == 0).flatten().tolist()
        if absent:
            raise ConfigError(f"post-hoc logit adjustment needs stage-1 training samples of every class, but classes "
                              f"{absent} have none (method.pretrain_classes={dec.pretrain_classes!r}): their "
                              "logits would be raised by tau*log(N) for a class the head never learnt. Fix: use "
                              "method.pretrain_classes=all (the method's default).")

        def make(tau: float, part: str = "val") -> torch.Tensor:
            return posthoc_adjust(pre[f"logits_{part}"], pre_counts, tau)

        tau = opts.tau
        if tau is None:
            tau, selected["val_bal_acc"] = _select_tau(opts.tau_grid, make, sp.y_val, sp.num_classes)
        selected["tau"] = tau
        return {"selected": selected, "n_train": 0, "tau": tau, "prior_counts": pre_counts.clone(),
                "logits_val": make(tau, "val"), "logits_test": make(tau, "test")}

    head = build_predictor(d, sp.num_classes, hidden, cosine=pre_loss.cosine_head)
    head.load_state_dict(pre["head"])
    head.eval()

    if opts.kind == "tau_norm":
        def make_t(tau: float, part: str = "val") -> torch.Tensor:
            return apply_batched(TauNormHead(head, tau).to(ctx.device), z[part], ctx.device)

        tau = opts.tau
        if tau is None:
            tau, selected["val_bal_acc"] = _select_tau(opts.tau_grid, make_t, sp.y_val, sp.num_classes)
        selected["tau"] = tau
        final = TauNormHead(head, tau)
        return {"selected": selected, "n_train": 0, "tau": tau, "predictor": final.state_dict(),
                "logits_val": make_t(tau, "val"), "logits_test": make_t(tau, "test")}

    # crt / lws: trained on the features with class-balanced sampling (stage.refine), cross-entropy
    tr = cfg.train
    if opts.kind == "crt":
        net: nn.Module = build_predictor(d, sp.num_classes, hidden)  # fresh initialisation
    else:
        net = ScaledHead(head, sp.num_classes)
    y = sp.y_train
    assert cfg.loss is not None
    loss = build_stage_loss(sp, cfg.loss, sp.class_counts(y))
    if loss.cosine_head or loss.logit_scale != 1.0:
        raise ConfigError(f"method.refine_loss={cfg.loss.name!r} needs a cosine head, which {opts.kind} does not "
                          "build. Fix: use refine_loss ce (Kang et al.), or logit_adjust / balanced_softmax with "
                          "stage.refine.sampler=natural (with the class-balanced sampler they adjust twice).")
    data = ClassifierData(train=(z["train"], y, torch.ones(len(y))), val=(z["val"], sp.y_val),
                          sampler_weights=SAMPLERS.get(tr.sampler)(sp, y))
    module = ClassifierModule(net, loss, sp.num_classes, data, optim(tr, cfg.numerics), prefix="refine",
                              seed=ctx.seed, compile=cfg.numerics.compile)
    selected.update(fit(ctx, module, "refine", tr, cfg.numerics, monitor("refine", cfg.selection)))
    net = module.net.eval()
    logits = {k: apply_batched(net, z[k], ctx.device) for k in ("val", "test")}
    out = {"predictor": net.state_dict(), "selected": selected, "n_train": len(y),
           **{f"logits_{k}": v for k, v in logits.items()}}
    if opts.kind == "lws":
        out["scales"] = net.scales.detach().cpu().clone()
    return out
