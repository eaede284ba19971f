"""The trained pipeline as a file set in the run folder, and `crt.load(run_dir)` to use it.

At the end of a run, `save_model` writes `<run_dir>/model/` (a temp folder renamed into place): `weights.pt`
holds only tensors (the state dicts of the encoder, pretrain head, flow, source prior and refine predictor,
and `check`: the first test inputs and their logits), `model.json` the spec the networks are rebuilt from
(registered component names with typed options), the class mapping, the resolved config and the seed.
Nothing points at the stage cache. The folder is loaded back through `load` before it is renamed into
place, and the run's metrics are computed by that model (crt.pipeline.run).

A model folder is data with a closed spec (docs: architecture.md, Boundaries), so `load` checks it before
building anything: model.json against the dataclasses below; the networks are built on the meta device and
their tensors compared with weights.pt's, whose zip records are bounded by the bytes the spec implies before
torch reads them (weights-only, memory-mapped); extra, missing or non-finite tensors are refused, and the
recorded check is recomputed. An encoder given by import path (user code) is refused unless the caller
passes `trust_code`. Every failure is one ConfigError naming the file and the fix.

`load(run_dir)` returns a `TrainedPipeline` with `predict`, `predict_proba`, `logits`, `features` (z) and
`sources` (s); `evaluate(x, y)` computes results.json's metrics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import zipfile
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from crt.errors import ConfigError
from crt.registry import ENCODERS, build
from crt.utils import atomic_folder, torch_save

log = logging.getLogger(__name__)
MODEL_DIR = "model"
FORMAT_VERSION = 2  # 2: closed spec, the check's inputs and logits in weights.pt
BATCH = 4096  # the chunk size the stages evaluate in, so loaded logits equal the run's bit for bit
CHECK_INPUTS = 32  # test inputs (and their logits) recorded at export and recomputed by every load
PARTS = ("encoder", "head", "flow", "prior", "predictor")
MAX_JSON = 64 << 20  # bytes of model.json (the resolved config and class names; far below this)
SLACK, PER_TENSOR = 64 << 10, 1 << 10  # bytes of weights.pt beyond its tensors: the pickle and zip headers
RTOL = ATOL = 1e-3  # logits on other kernels (a GPU, another CPU) may differ this much; in the job they are equal
FIX = ("Fix: take model/ again from its run folder (copied whole and unedited), or rerun the run with the same "
       "overrides: a run whose model/ is missing or invalid is redone, reusing its cached stages")
Tensors = dict[str, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class HeadSpec:
    """A predictor MLP (crt.models.mlp.build_predictor) and the scale its loss puts on the logits."""

    hidden: tuple[int, ...] = field(metadata={"ge": 1})
    cosine: bool = False
    logit_scale: float = field(default=1.0, metadata={"gt": 0})


@dataclass(frozen=True)
class FlowSpec:
    """The demixing flow (crt.models.flow.build_maf)."""

    blocks: int = field(metadata={"ge": 1})
    hidden: int = field(metadata={"ge": 1})
    made_layers: int = field(metadata={"ge": 1})
    batch_norm: bool


@dataclass(frozen=True)
class PriorSpec:
    kind: Literal["single", "multi"]


@dataclass(frozen=True)
class DecoupledSpec:
    """cRT / LWS / tau-norm / post-hoc adjustment on the stage-1 head (crt/stages/decoupled.py)."""

    kind: Literal["crt", "lws", "tau_norm", "posthoc"]
    tau: float | None = None
    prior_counts: tuple[float, ...] | None = field(default=None, metadata={"ge": 0})


@dataclass(frozen=True)
class ArchSpec:
    """What the networks are rebuilt from; `encoder` is checked against crt.registry.ENCODERS (`_encoder`)."""

    input_shape: tuple[int, ...] = field(metadata={"ge": 1})
    input_dtype: Literal["float32", "float64", "float16", "bfloat16", "uint8", "int8", "int16", "int32", "int64"]
    input_dim: int = field(metadata={"ge": 1})
    feature_dim: int = field(metadata={"ge": 1})
    num_classes: int = field(metadata={"ge": 2})
    multilabel: bool
    stages: tuple[Literal["pretrain", "demix", "augment", "refine"], ...]
    encoder: Any
    head: HeadSpec
    last: Literal["pretrain", "refine"]
    space: Literal["source", "feature"]
    flow: FlowSpec | None = None
    prior: PriorSpec | None = None
    predictor: HeadSpec | None = None
    decoupled: DecoupledSpec | None = None

    def __post_init__(self) -> None:
        kind = self.decoupled.kind if self.decoupled else None
        for ok, what in ((self.input_dim == math.prod(self.input_shape), "input_dim is not the product of input_shape"),
                         (self.last == ("refine" if "refine" in self.stages else "pretrain"), "last does not match stages"),
                         (("demix" in self.stages) == (self.flow is not None and self.prior is not None),
                          "flow and prior are given exactly when stages has demix"),
                         (self.space == "feature" or self.flow is not None, "space=source needs a flow"),
                         ((self.last == "refine" and kind != "posthoc") == (self.predictor is not None),
                          "predictor is given exactly when the refine stage trained one"),
                         (kind not in ("tau_norm", "posthoc") or self.decoupled.tau is not None, "decoupled.tau is missing"),
                         (kind != "posthoc" or len(self.decoupled.prior_counts or ()) == self.num_classes,
                          "decoupled.prior_counts needs one count per class")):
            if not ok:
                raise ConfigError(f"model.arch is inconsistent: {what}")


@dataclass(frozen=True)
class ClassesSpec:
    names: tuple[str, ...]
    minority: tuple[int, ...] = field(metadata={"ge": 0})
    majority: tuple[bool, ...]
    train_counts: tuple[int, ...] = field(metadata={"ge": 0})
    groups: tuple[str, ...]


@dataclass(frozen=True)
class CheckSpec:
    inputs: int = field(metadata={"ge": 1, "le": 4096})  # rows of weights.pt's check.inputs / check.logits


@dataclass(frozen=True)
class ModelSpec:
    """model.json, checked: nothing in it is imported or called (an encoder `_target_` only with trust_code)."""

    format: int
    name: str
    seed: int
    arch: ArchSpec
    classes: ClassesSpec
    config: Any  # the run's resolved config, for reference and predict's data settings (checked where used)
    check: CheckSpec

    def __post_init__(self) -> None:
        k, c = self.arch.num_classes, self.classes
        if not isinstance(self.config, Mapping) or not all(len(v) == k for v in (c.names, c.majority, c.train_counts)):
            raise ConfigError(f"model.classes (names, majority, train_counts) must have one entry per class ({k}) and "
                              "model.config must be a mapping")


def _bad(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path} {what}. {FIX}.")


def read_spec(file: Path, trust_code: bool | str = False) -> ModelSpec:
    """model.json checked against ModelSpec; an encoder `_target_` is refused unless trusted (see `load`)."""
    if not file.is_file():
        raise _bad(file, "is missing")
    if file.stat().st_size > MAX_JSON:
        raise _bad(file, f"is {file.stat().st_size} bytes, more than a model spec can be ({MAX_JSON})")
    try:
        raw = json.loads(file.read_bytes(), parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise _bad(file, f"is not valid JSON ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(raw, dict):
        raise _bad(file, f"holds a JSON {type(raw).__name__}, not the object of a model spec")
    if raw.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{file} has model format {raw.get('format')!r}; this crt reads {FORMAT_VERSION}. Fix: rerun "
                          "the run with this version of crt (it rebuilds model/ from the cached stages).")
    try:
        spec = build(ModelSpec, raw, "model")
        _encoder(spec.arch.encoder)
    except ConfigError as err:
        raise _bad(file, f"does not match the model spec: {str(err).split(' Fix: ')[0].rstrip('.')}; the folder was "
                         "edited, damaged or written by other code") from None
    target = spec.arch.encoder.get("_target_")
    if target is not None:
        from crt.usercode import allow_user_code

        allow_user_code(target, "arch.encoder._target_", file, trust_code)
    return spec


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _encoder(spec: Any) -> None:
    """arch.encoder: a registered encoder with its typed options (or user code, checked by read_spec)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"model.arch.encoder={spec!r} is not a mapping")
    if "_target_" in spec:
        return
    import crt.models  # noqa: F401 - registers the encoders

    opts = dict(spec)
    name = opts.pop("name", "mlp")
    ENCODERS.entry(name, "model.arch.encoder.name")
    ENCODERS.options(name, opts, "model.arch.encoder")


def _read_weights(path: Path, want: dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]]) -> Tensors:
    """weights.pt, refused unread when its records hold more bytes than `want` implies (or are compressed);
    then read weights-only and memory-mapped, and checked tensor by tensor: names, shapes, dtypes, finite."""
    n = sum(len(v) for v in want.values())
    limit = sum(math.prod(s) * d.itemsize for v in want.values() for s, d in v.values()) + SLACK + PER_TENSOR * n
    if not path.is_file():
        raise _bad(path, "is missing")
    if path.stat().st_size > limit:
        raise _bad(path, f"is {path.stat().st_size} bytes, more than the {limit} its spec in model.json implies; it "
                         "was not read")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise _bad(path, f"is not a complete weights file ({type(err).__name__}: {err}): truncated or damaged") from None
    total = sum(i.file_size for i in infos)
    if total > limit or len(infos) > n + 16:
        raise _bad(path, f"expands to {total} bytes in {len(infos)} records, more than the {limit} bytes its spec in "
                         "model.json implies; it was not read")
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        raise _bad(path, "holds compressed records, which crt never writes; it was not read")
    try:
        w = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise _bad(path, "holds pickled objects other than tensors; it was not loaded") from None
    except Exception as err:  # noqa: BLE001 - RuntimeError of the zip reader, EOFError, ...
        raise _bad(path, f"cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"
                   ) from None
    if not isinstance(w, dict) or set(w) != set(want):
        got = sorted(map(str, w)) if isinstance(w, dict) else type(w).__name__
        raise _bad(path, f"holds the parts {got}; its spec in model.json implies {sorted(want)}")
    for part, tensors in want.items():
        got = w[part] if isinstance(w[part], dict) else {}
        extra, missing = sorted(set(map(str, got)) - set(tensors)), sorted(set(tensors) - set(got))
        if extra or missing:
            raise _bad(path, f"holds {part} tensors the spec in model.json does not imply ({', '.join(extra[:3])})"
                       if extra else f"lacks {part} tensors the spec in model.json implies ({', '.join(missing[:3])})")
        for k, (shape, dtype) in tensors.items():
            t = got[k]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != dtype:
                what = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
                raise _bad(path, f"holds {part}.{k} as {what}; the spec in model.json implies {shape} {dtype}")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise _bad(path, f"holds NaN or inf in {part}.{k}")
    return w


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


def save_model(run_dir: str | os.PathLike, cfg: DictConfig, split: Any, outputs: Mapping[str, Mapping[str, Any]],
               device: str | torch.device = "cpu", entries: Mapping[str, str] | None = None,
               ) -> tuple[TrainedPipeline, dict[str, torch.Tensor]]:
    """Write `<run_dir>/model/{weights.pt, model.json}`, load it back through `load` (on `device`) and return it
    with its logits of the test and val splits, the ones the run's metrics are computed from. They must be the
    logits the last stage recorded, else a ConfigError names its cache entry (`entries`: stage -> folder) and
    model/ is left as it was."""
    stages = [s for s in cfg.method.stages if s in outputs]
    names = {"pretrain": ("encoder", "head"), "demix": ("flow", "prior"), "refine": ("predictor",)}
    weights = {k: {n: t.detach().to("cpu", copy=True).contiguous() for n, t in outputs[s][k].items()}
               for s in stages for k in names.get(s, ()) if k in outputs[s]}
    meta = {
        "format": FORMAT_VERSION, "name": f"{cfg.data.name}-{cfg.method.name}", "seed": int(cfg.seed),
        "arch": _arch(cfg, split, stages, outputs),
        "classes": {"names": split.class_names or [str(c) for c in range(split.num_classes)],
                    "minority": split.minority_classes, "majority": split.majority.tolist(),
                    "train_counts": split.train_counts.tolist(), "groups": list(split.groups)},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "check": {"inputs": min(CHECK_INPUTS, len(split.x_test))},
    }
    trust = meta["arch"]["encoder"].get("_target_") or False  # the run's own user code, named in its command
    x = split.x_test[:meta["check"]["inputs"]].clone()
    with torch.random.fork_rng(devices=[]):  # building the networks draws initial weights: not the run's numbers
        model = TrainedPipeline(build(ModelSpec, meta, "model"), weights, trust_code=trust)
        weights["check"] = {"inputs": x, "logits": model._logits(x)}
    last = [s for s in stages if "logits_test" in outputs[s]][-1]
    with atomic_folder(Path(run_dir) / MODEL_DIR) as tmp:
        torch_save(weights, tmp / "weights.pt")  # a write error names its errno and the path
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        model = load(tmp, map_location=device, trust_code=trust)
        logits = {k: model._logits(getattr(split, f"x_{k}")) for k in ("test", "val")}
        for k, got in logits.items():
            want = outputs[last][f"logits_{k}"].float().cpu()
            if not _same(got, want, exact=model.device.type == "cpu"):
                entry = (entries or {}).get(last, f"<cache_dir>/{last}/<key>")
                raise ConfigError(
                    f"the cache entry of stage {last} ({entry}) is inconsistent with its weights: the model rebuilt "
                    f"from them gives other {k} logits than the entry records ({_diff(got, want)}), so the entry was "
                    "changed after it was written or is damaged; no metrics were computed from it and results.json "
                    f"and model/ were left as they were. Fix: delete {entry} (and the entries of the stages before it "
                    "if that recurs) and rerun.")
    return model, logits


def _same(got: torch.Tensor, want: torch.Tensor, exact: bool) -> bool:
    if got.shape != want.shape:
        return False
    return torch.equal(got, want) if exact else torch.allclose(got, want, rtol=RTOL, atol=ATOL)


def _diff(got: torch.Tensor, want: torch.Tensor) -> str:
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)} vs {tuple(want.shape)}"
    return f"max abs difference {float((got - want).abs().max()) if got.numel() else 0.0:.3g}"


class TrainedPipeline(nn.Module):
    """A run's encoder, flow, prior and predictor, in eval mode on the CPU (`.to(device)` moves it), built from
    a checked ModelSpec (use `load`; `weights` are loaded as given).

    Inputs are arrays or tensors shaped like the dataset's samples (N x D features, N x C x H x W images).
    """

    def __init__(self, spec: ModelSpec, weights: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                 trust_code: bool | str = False):
        super().__init__()
        from crt.models import build_encoder, build_maf
        from crt.models.mlp import build_predictor
        from crt.models.prior import ClassPrior

        self.spec, self.arch = spec, spec.arch
        self.trust_code, self.source = trust_code, None  # source: the model folder, set by `load`
        a, d, k = spec.arch, spec.arch.feature_dim, spec.arch.num_classes
        self.config: dict[str, Any] = dict(spec.config)
        self.class_names: list[str] = list(spec.classes.names)
        self.encoder = build_encoder(a.encoder, a.input_dim, d, trust_code=bool(trust_code))
        self.head = build_predictor(d, k, a.head.hidden, cosine=a.head.cosine)
        self.flow = build_maf(d, a.flow.blocks, a.flow.hidden, a.flow.made_layers, a.flow.batch_norm) if a.flow else None
        self.prior = ClassPrior(a.prior.kind, d, k) if a.prior else None
        self.predictor: nn.Module | None = None
        kind = a.decoupled.kind if a.decoupled else None
        if kind in ("lws", "tau_norm"):
            from crt.stages.decoupled import ScaledHead, TauNormHead

            frozen = build_predictor(d, k, a.head.hidden, cosine=a.head.cosine)
            self.predictor = ScaledHead(frozen, k) if kind == "lws" else TauNormHead(frozen, a.decoupled.tau)
        elif a.predictor is not None:
            self.predictor = build_predictor(d, k, a.predictor.hidden, cosine=a.predictor.cosine)
        for name in self.parts if weights is not None else ():
            getattr(self, name).load_state_dict(weights[name])
        self.eval()

    @property
    def parts(self) -> tuple[str, ...]:
        """The networks this pipeline has (weights.pt holds one state dict for each)."""
        return tuple(n for n in PARTS if getattr(self, n) is not None)

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
    def _features(self, x: Any) -> torch.Tensor:
        return self._chunked(self.encoder, self._tensor(x))

    @torch.no_grad()
    def _sources(self, x: Any) -> torch.Tensor:
        if self.flow is None:
            raise ConfigError(f"run {self.spec.name} has no demix stage, so it has no sources. Fix: use "
                              "features(x), or a method with demix (ecrt_mp, ecrt_1p, crt).")
        return self._chunked(lambda z: self.flow(z)[0], self._features(x))

    @torch.no_grad()
    def _logits(self, x: Any) -> torch.Tensor:
        a = self.arch
        posthoc = a.decoupled is not None and a.decoupled.kind == "posthoc"
        if a.last == "pretrain" or posthoc:
            logits = self._chunked(self.head, self._features(x)) * a.head.logit_scale
            if posthoc:
                from crt.losses.adjusted import posthoc_adjust

                logits = posthoc_adjust(logits, torch.tensor(a.decoupled.prior_counts, dtype=torch.float64),
                                        a.decoupled.tau)
            return logits
        inputs = self._sources(x) if a.space == "source" else self._features(x)
        return self._chunked(self.predictor, inputs) * a.predictor.logit_scale

    # The public outputs are numpy arrays (float32; scikit-learn's convention), whatever the input's kind (a numpy
    # array, a tensor or a nested list); the torch versions above are what the metrics and the load check use.
    def features(self, x: Any) -> np.ndarray:
        """z: the encoder's features, N x d."""
        return self._features(x).numpy()

    def sources(self, x: Any) -> np.ndarray:
        """s = f(z): the demixed sources, N x d (runs that trained the flow only)."""
        return self._sources(x).numpy()

    def logits(self, x: Any) -> np.ndarray:
        """The logits results.json's metrics are computed from (scaled like the loss's, e.g. LDAM's s), N x classes."""
        return self._logits(x).numpy()

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities (softmax; per-label sigmoid on multi-label data), N x classes."""
        lg = self._logits(x)
        return (torch.sigmoid(lg) if self.arch.multilabel else torch.softmax(lg, 1)).numpy()

    def predict(self, x: Any) -> np.ndarray:
        """Class indices (multi-label: an N x classes 0/1 matrix, labels with probability > 0.5)."""
        lg = self._logits(x)
        return (lg > 0).long().numpy() if self.arch.multilabel else lg.argmax(1).numpy()

    def data_split(self, data_dir: str | os.PathLike | None = None) -> Any:
        """The run's data (a crt.data.Split: `x_train, y_train, x_val, y_val, x_test, y_test`, class counts),
        rebuilt from the data settings recorded in model.json exactly as the run built it. The files are read
        from `data_dir` (default `$CRT_DATA_DIR`, else ./data), never from a path recorded in the folder; a
        dataset given by a user loader (`data._target_`) only when the model was loaded with trust_code."""
        from crt.config import resolve_data
        from crt.data import build_split
        from crt.usercode import allow_user_code

        where = (self.source or Path(MODEL_DIR)) / "model.json"
        dcfg = self.config.get("data")
        if not isinstance(dcfg, Mapping) or not isinstance(dcfg.get("name"), str):
            raise ConfigError(f"{where}: config.data={dcfg!r} names no dataset. Fix: pass your own inputs "
                              "(an array, or data=<file>.npz with X and y to crt predict).")
        dcfg = dict(dcfg)
        if dcfg.get("_target_") is not None:
            allow_user_code(dcfg["_target_"], "config.data._target_", where, self.trust_code)
        try:
            resolve_data(dcfg)
        except ConfigError as err:
            raise ConfigError(f"{where}: its data config is not valid here: {err}") from None
        return build_split(dcfg, str(data_dir or os.environ.get("CRT_DATA_DIR") or "data"))

    def evaluate(self, x: Any, y: Any, prefix: str = "test") -> dict[str, float]:
        """results.json's metrics on (x, y)."""
        c = self.spec.classes
        if self.arch.multilabel:
            from crt.metrics.multilabel import multilabel_metrics as metrics_fn
        else:
            from crt.metrics import classification_metrics as metrics_fn
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
        out, _ = metrics_fn(self._logits(x), y, torch.tensor(c.train_counts), torch.tensor(c.majority),
                            list(c.groups), prefix=prefix)
        return out


def load(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu",
         trust_code: bool | str = False) -> TrainedPipeline:
    """The trained pipeline of a run folder (or of its `model/` subfolder), checked before it is built (see the
    module docstring). `trust_code=True` lets an encoder given by import path (user code) be imported and run
    (a string: only that import path); without it such a model is refused and nothing is imported."""
    path = Path(run_dir)
    folder = path if (path / "model.json").exists() else path / MODEL_DIR
    if not (folder / "model.json").exists():
        raise ConfigError(f"{path} holds no trained model ({MODEL_DIR}/model.json is missing). Fix: pass a run "
                          "folder written by `python run.py` (outputs/runs/<data>/<method>/<overrides>/seed<k>/) "
                          "after the run finished; if its model/ was deleted, rerun the same command: a run whose "
                          "model/ is missing or invalid is redone, reusing its cached stages.")
    spec = read_spec(folder / "model.json", trust_code)
    n, a = spec.check.inputs, spec.arch
    with torch.random.fork_rng(devices=[]):
        try:  # on the meta device: the tensors the spec implies, with nothing allocated (user code: as it builds)
            with nullcontext() if "_target_" in a.encoder else torch.device("meta"):
                shell = TrainedPipeline(spec, trust_code=trust_code)
        except Exception as err:  # noqa: BLE001 - a spec the builders refuse
            raise _bad(folder / "model.json", f"describes networks that cannot be built ({type(err).__name__}: "
                                              f"{str(err).splitlines()[0][:300] if str(err) else ''})") from None
        want = {p: {k: (tuple(t.shape), t.dtype) for k, t in getattr(shell, p).state_dict().items()} for p in shell.parts}
        want["check"] = {"inputs": ((n, *a.input_shape), getattr(torch, a.input_dtype)),
                         "logits": ((n, a.num_classes), torch.float32)}
        weights = _read_weights(folder / "weights.pt", want)
        model = TrainedPipeline(spec, weights, trust_code=trust_code).to(map_location)
    model.source = folder
    check = weights["check"]
    try:
        got = model._logits(check["inputs"])
    except Exception as err:  # noqa: BLE001 - e.g. a permutation buffer with indices out of range
        raise _bad(folder / "weights.pt", f"fails its recorded check: the rebuilt model cannot compute it "
                                          f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"
                   ) from None
    # within a tolerance even on the CPU: a folder copied to another machine (other SIMD kernels) may differ in the
    # last bits; the job that wrote it compared exactly (save_model)
    if not _same(got, check["logits"], exact=False):
        raise _bad(folder / "weights.pt", f"fails its recorded check: the rebuilt model's logits of the {n} recorded "
                                          f"inputs are not the recorded ones ({_diff(got, check['logits'])}), so the "
                                          "weights, model.json or the check were changed after export")
    return model


def check_model(run_dir: str | os.PathLike, cfg: DictConfig) -> None:
    """ConfigError unless `run_dir` holds a model folder that `load` accepts (user code: only the encoder that
    `cfg` names is trusted). pipeline.run redoes a finished run whose model/ fails this."""
    target = (cfg.data.get("encoder") or {}).get("_target_")
    load(run_dir, trust_code=str(target) if target else False)
