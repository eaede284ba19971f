"""The trained pipeline as a file set in the run folder, and `crt.load(run_dir)` to use it.

At the end of a run, `save_model` writes `<run_dir>/model/` (a temp folder renamed into place):
`weights.pt` holds only state dicts (encoder, pretrain head, flow, source prior, refine predictor; read
back with `torch.load(..., weights_only=True)`), `model.json` the architecture needed to rebuild the
networks, the class mapping, the resolved config and the seed. Nothing points at the stage cache, so the
folder stays usable after the cache is deleted and when it is copied elsewhere.

`load(run_dir)` rebuilds the networks and returns a `TrainedPipeline` with `predict`, `predict_proba`,
`logits`, `features` (z) and `sources` (s); `evaluate(x, y)` computes results.json's metrics.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from crt.errors import ConfigError
from crt.utils import atomic_folder

log = logging.getLogger(__name__)
MODEL_DIR = "model"
FORMAT_VERSION = 1
BATCH = 4096  # the chunk size the stages evaluate in, so loaded logits equal the run's bit for bit


def _arch(cfg: DictConfig, split: Any, stages: list[str], outputs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Everything `load` needs to rebuild the networks, read from the run's resolved config and data."""
    from crt.losses import build_loss
    from crt.stages import loss_name

    plain = OmegaConf.to_container(cfg, resolve=True)
    m, data, model, st = plain["method"], plain["data"], plain["model"], plain["stage"]
    counts = split.train_counts

    def head_info(loss: str, kwargs: dict[str, Any] | None) -> dict[str, Any]:
        lo = build_loss(loss_name(split, loss), counts, **(kwargs or {}))
        return {"cosine": bool(lo.cosine_head), "logit_scale": float(lo.logit_scale)}

    d = int(data["feature_dim"])
    arch: dict[str, Any] = {
        "input_shape": list(split.x_test.shape[1:]), "input_dtype": str(split.x_test.dtype).replace("torch.", ""),
        "input_dim": int(split.input_dim), "feature_dim": d, "num_classes": int(split.num_classes),
        "multilabel": bool(split.multilabel), "stages": stages,
        "encoder": data["encoder"],
        "head": {"hidden": list(model["head"]["hidden"]), **head_info(m["pretrain_loss"], m.get("pretrain_loss_kwargs"))},
        "last": "refine" if "refine" in stages else "pretrain",
        "space": m.get("refine_space", "source") if "refine" in stages else "feature",
    }
    if "demix" in stages:
        fl = st["demix"]["flow"]
        arch["flow"] = {k: fl[k] for k in ("blocks", "hidden", "made_layers", "batch_norm")}
        arch["prior"] = {"kind": m["prior"]}
    if "refine" in stages and not m.get("decoupled"):
        arch["predictor"] = {"hidden": list(model["predictor"]["hidden"]),
                             **head_info(m["refine_loss"], m.get("refine_loss_kwargs"))}
    if "refine" in stages and m.get("decoupled"):  # cRT / LWS / tau-norm / post-hoc on the stage-1 head
        out = outputs["refine"]
        kind = m["decoupled"]["kind"]
        arch["decoupled"] = {"kind": kind, "tau": out.get("tau"),
                             "prior_counts": out["prior_counts"].tolist() if "prior_counts" in out else None}
        arch["predictor"] = {"hidden": list(model["head"]["hidden"]), "cosine": False, "logit_scale": 1.0}
        if kind == "posthoc":
            del arch["predictor"]
    return arch


def save_model(run_dir: str | os.PathLike, cfg: DictConfig, split: Any, outputs: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write `<run_dir>/model/{weights.pt, model.json}` atomically (temp folder, then rename)."""
    stages = [s for s in cfg.method.stages if s in outputs]
    names = {"pretrain": ("encoder", "head"), "demix": ("flow", "prior"), "refine": ("predictor",)}
    weights = {k: {n: t.detach().cpu() for n, t in outputs[s][k].items()}
               for s in stages for k in names.get(s, ()) if k in outputs[s]}
    meta = {
        "format": FORMAT_VERSION, "name": f"{cfg.data.name}-{cfg.method.name}", "seed": int(cfg.seed),
        "arch": _arch(cfg, split, stages, outputs),
        "classes": {"names": split.class_names or [str(c) for c in range(split.num_classes)],
                    "minority": split.minority_classes, "majority": split.majority.tolist(),
                    "train_counts": split.train_counts.tolist(), "groups": list(split.groups)},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    final = Path(run_dir) / MODEL_DIR
    with atomic_folder(final) as tmp:
        torch.save(weights, tmp / "weights.pt")
        meta["check"] = _check(meta, tmp, split, outputs)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return final


def _check(meta: dict[str, Any], folder: Path, split: Any, outputs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Rebuild the pipeline from the files just written and compare its test logits with the run's."""
    last = [s for s in meta["arch"]["stages"] if "logits_test" in outputs[s]][-1]
    want = outputs[last]["logits_test"].float().cpu()
    try:
        got = TrainedPipeline(meta, torch.load(folder / "weights.pt", weights_only=True)).logits(split.x_test)
    except Exception as err:  # noqa: BLE001 - recorded, and the run's results stay valid
        log.warning("model export: the saved pipeline cannot be rebuilt (%s: %s)", type(err).__name__, err)
        return {"test_logits_equal": False, "error": f"{type(err).__name__}: {err}"}
    equal = bool(got.shape == want.shape and torch.equal(got, want))
    diff = float((got - want).abs().max()) if got.shape == want.shape and len(want) else None
    if not equal:
        log.warning("model export: reloaded test logits differ from the run's (max abs diff %s)", diff)
    return {"test_logits_equal": equal, "max_abs_diff": diff}


class TrainedPipeline(nn.Module):
    """A run's encoder, flow, prior and predictor, in eval mode on the CPU (`.to(device)` moves it).

    Inputs are arrays or tensors shaped like the dataset's samples (N x D features, N x C x H x W images).
    """

    def __init__(self, meta: dict[str, Any], weights: dict[str, dict[str, torch.Tensor]]):
        super().__init__()
        from crt.models import build_encoder, build_maf
        from crt.models.mlp import build_predictor
        from crt.models.prior import ClassPrior

        self.meta, self.arch = meta, meta["arch"]
        a, d, k = self.arch, self.arch["feature_dim"], self.arch["num_classes"]
        self.config: dict[str, Any] = meta["config"]
        self.class_names: list[str] = meta["classes"]["names"]
        self.encoder = build_encoder(a["encoder"], a["input_dim"], d)
        self.head = build_predictor(d, k, a["head"]["hidden"], cosine=a["head"]["cosine"])
        self.flow = build_maf(d, **a["flow"]) if "flow" in a else None
        self.prior = ClassPrior(a["prior"]["kind"], d, k) if "prior" in a else None
        self.predictor: nn.Module | None = None
        dec = a.get("decoupled") or {}
        if dec.get("kind") in ("lws", "tau_norm"):
            from crt.stages.decoupled import ScaledHead, TauNormHead

            frozen = build_predictor(d, k, a["head"]["hidden"], cosine=a["head"]["cosine"])
            self.predictor = ScaledHead(frozen, k) if dec["kind"] == "lws" else TauNormHead(frozen, dec["tau"])
        elif "predictor" in a:
            self.predictor = build_predictor(d, k, a["predictor"]["hidden"], cosine=a["predictor"]["cosine"])
        for name, sd in weights.items():
            getattr(self, name).load_state_dict(sd)
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _tensor(self, x: Any) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if t.is_floating_point() and t.dtype != torch.float32:
            t = t.float()
        return t

    def _chunked(self, fn: Any, x: torch.Tensor) -> torch.Tensor:  # chunked like the stages
        from crt.stages import apply_batched

        return apply_batched(fn, x, self.device, batch=BATCH)

    @torch.no_grad()
    def features(self, x: Any) -> torch.Tensor:
        """z: the encoder's features."""
        return self._chunked(self.encoder, self._tensor(x))

    @torch.no_grad()
    def sources(self, x: Any) -> torch.Tensor:
        """s = f(z): the demixed sources (runs that trained the flow only)."""
        if self.flow is None:
            raise ConfigError(f"run {self.meta['name']} has no demix stage, so it has no sources. Fix: use "
                              "features(x), or a method with demix (ecrt_mp, ecrt_1p, crt).")
        return self._chunked(lambda z: self.flow(z)[0], self.features(x))

    @torch.no_grad()
    def logits(self, x: Any) -> torch.Tensor:
        """The logits results.json's metrics are computed from (scaled like the loss's, e.g. LDAM's s)."""
        a = self.arch
        dec = a.get("decoupled") or {}
        if a["last"] == "pretrain" or dec.get("kind") == "posthoc":
            logits = self._chunked(self.head, self.features(x)) * a["head"]["logit_scale"]
            if dec.get("kind") == "posthoc":
                from crt.losses.adjusted import posthoc_adjust

                logits = posthoc_adjust(logits, torch.tensor(dec["prior_counts"]), dec["tau"])
            return logits
        inputs = self.sources(x) if a["space"] == "source" else self.features(x)
        return self._chunked(self.predictor, inputs) * a["predictor"]["logit_scale"]

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities (softmax; per-label sigmoid on multi-label data), N x classes."""
        lg = self.logits(x)
        return (torch.sigmoid(lg) if self.arch["multilabel"] else torch.softmax(lg, 1)).numpy()

    def predict(self, x: Any) -> np.ndarray:
        """Class indices (multi-label: an N x classes 0/1 matrix, labels with probability > 0.5)."""
        lg = self.logits(x)
        return (lg > 0).long().numpy() if self.arch["multilabel"] else lg.argmax(1).numpy()

    def evaluate(self, x: Any, y: Any, prefix: str = "test") -> dict[str, float]:
        """results.json's metrics on (x, y)."""
        c = self.meta["classes"]
        if self.arch["multilabel"]:
            from crt.metrics.multilabel import multilabel_metrics as metrics_fn
        else:
            from crt.metrics import classification_metrics as metrics_fn
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
        out, _ = metrics_fn(self.logits(x), y, torch.tensor(c["train_counts"]), torch.tensor(c["majority"]),
                            c["groups"], prefix=prefix)
        return out


def load(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainedPipeline:
    """The trained pipeline of a run folder (or of its `model/` subfolder)."""
    path = Path(run_dir)
    folder = path if (path / "model.json").exists() else path / MODEL_DIR
    if not (folder / "model.json").exists():
        raise ConfigError(f"{path} holds no trained model ({MODEL_DIR}/model.json is missing). Fix: pass a run "
                          "folder written by `python run.py` (outputs/runs/<data>/<method>/<overrides>/seed<k>/) "
                          "after the run finished; runs from before model export must be rerun.")
    meta = json.loads((folder / "model.json").read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{folder} has model format {meta.get('format')!r}; this crt reads {FORMAT_VERSION}. "
                          "Fix: rerun the run with this version of crt.")
    weights = torch.load(folder / "weights.pt", map_location=map_location, weights_only=True)
    return TrainedPipeline(meta, weights).to(map_location)
