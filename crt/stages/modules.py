"""LightningModules of the trained stages: a classifier (pretrain, refine) and the demixer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from crt.losses import ClassLoss
from crt.models.demixer import DemixObjectiveMixin
from crt.stages.accel import Compiled, compile_mode, running_mean, static_batches
from crt.stages.configs import CriticSpec
from crt.stages.optim import make_optimizer
from crt.stages.schedule import LRSchedule
from crt.stages.training import ChunkedSteps, TensorBatches, cap_log_interval


@dataclass(frozen=True)
class Optim:
    """Optimizer, learning-rate schedule and batching of a stage module (from the stage's typed `Train`)."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    fused: bool = False
    nesterov: bool = True
    lr_schedule: LRSchedule | None = None


@dataclass
class ClassifierData:
    """What a ClassifierModule trains and selects on.

    train: (x, y, w) with per-sample weights w; val: (x, y); extra: an optional second stream of (augmented)
    samples appended to every real batch, `extra_batch` at a time, each with weight `extra_weight`;
    sampler_weights: per-sample weights of a sampler with replacement (None: shuffle); transform: a batch
    transform of x (image augmentation); multilabel: y is N x M multi-hot.
    """

    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    extra: tuple[torch.Tensor, torch.Tensor] | None = None
    extra_weight: float = 1.0
    extra_batch: int = 0
    sampler_weights: torch.Tensor | None = None
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    multilabel: bool = False


@dataclass
class DemixData:
    """What a DemixModule trains and selects on: (z, y) pairs, and optionally a probe (z, true sources) of
    held-out samples whose MCC with the flow's sources is logged after every epoch (synthetic data)."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    probe: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class DemixObjective:
    """What the demixer minimises: `loss` (gcl | fdv) with `critic`, plus rho times the NLL under `prior`."""

    loss: str = "fdv"
    prior: str = "multi"
    rho: float = 1e-2
    critic: CriticSpec = CriticSpec(hidden=512, embed_dim=None, normalize=True, negatives="batch",
                                    exclude_true=False, clamp=(-5.0, 15.0), impl="batched")


class ClassifierModule(ChunkedSteps, pl.LightningModule):
    """A network trained by a per-sample classification loss on in-memory tensors.

    Training batches are (x, y, w) with per-sample weights w; an optional second stream of extra
    (augmented) samples is appended to every real batch, each extra sample with weight `extra_weight`.
    Every sample is on the same per-sample scale: the loss is
    (sum_i w_i l_i + extra_weight * sum_j l_j) / B_real, the extra losses summed (not averaged) so that an
    extra batch smaller than the real one does not weigh each augmented sample B_real / B_extra times a real
    one. `code` weighting sets w = 1 for majority and lambda for real minority samples and extra_weight = 1;
    `paper` weighting sets w = 1 and extra_weight = lambda (lambda per augmented sample).
    Model selection: balanced accuracy or cross-entropy on the held-out split (`<prefix>/val/...`).
    """

    def __init__(self, net: nn.Module, loss: ClassLoss, num_classes: int, data: ClassifierData,
                 optim: Optim = Optim(), *, prefix: str, seed: int = 0, compile: bool | str = False):
        super().__init__()
        self.multilabel = data.multilabel
        self.lr_schedule, self.nesterov = optim.lr_schedule, optim.nesterov  # crt.stages.schedule.LRSchedule | None
        self.net, self.loss_fn, self.prefix = net, loss, prefix
        self.train_data, self.val_data, self.extra = data.train, data.val, data.extra
        self.extra_weight, self.extra_batch = float(data.extra_weight), int(data.extra_batch)
        self.batch_size, self.lr, self.weight_decay = optim.batch_size, optim.lr, optim.weight_decay
        self.optimizer_name, self.fused = optim.name, optim.fused
        self.sampler_weights, self.seed, self.transform = data.sampler_weights, seed, data.transform
        self.val_bal_acc = MulticlassAccuracy(num_classes, average="macro")
        self.val_ce = running_mean()
        self.val_hit = running_mean()
        self.train_loss = running_mean()  # no host sync per step (crt.stages.accel)
        self._compiled: Compiled | None = None
        self.compile = compile  # trainer.compile: false | true | default | reduce-overhead | max-autotune
        self._extra_stream: TensorBatches | None = None
        self._extra_step = 0  # batches drawn from the extra stream (restarts at the global step on resume)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_start(self) -> None:
        self._extra_step = self.global_step  # after a checkpoint restore: continue the extra stream there
        static = static_batches(self.trainer.train_dataloader) and (
            self._extra_stream is None or static_batches(self._extra_stream))
        self._compiled = Compiled(self.net, compile_mode(self.compile), device=self.device, static_shapes=static,
                                  what=f"{self.prefix} network")

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network under `trainer.compile` (crt.stages.accel.Compiled: eager, with the reason, when it cannot)."""
        return self._compiled(x) if self._compiled is not None else self.net(x)

    def train_dataloader(self) -> TensorBatches:
        x, y, w = (t.to(self.device) for t in self.train_data)
        self._extra_stream, self._extra_step = None, 0
        if self.extra is not None and len(self.extra[0]) and self.extra_batch > 0:
            ex = tuple(t.to(self.device) for t in self.extra)
            self._extra_stream = TensorBatches(*ex, batch_size=self.extra_batch, seed=self.seed + 1,
                                               drop_last=len(ex[0]) >= self.extra_batch)
        batches = TensorBatches(x, y, w, batch_size=self.batch_size, seed=self.seed, weights=self.sampler_weights,
                                transform=self.transform, drop_last=len(x) > self.batch_size)
        cap_log_interval(self, len(self.chunked(batches)))
        return batches

    def val_dataloader(self) -> TensorBatches:
        x, y = (t.to(self.device) for t in self.val_data)
        return TensorBatches(x, y, batch_size=max(self.batch_size, 1024), shuffle=False)

    def _next_extra(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The extra (augmented) stream's next batch: it cycles independently of the real one; batch k of the
        endless stream is a function of k, so a resumed run (k = the restored global step) continues it."""
        if self._extra_stream is None:
            return None
        self._extra_step += 1
        return self._extra_stream.batch_at(self._extra_step - 1)

    def on_train_epoch_start(self) -> None:
        self.loss_fn.on_epoch(self.current_epoch, self.trainer.max_epochs or 1)

    def step_loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:  # of one batch (ChunkedSteps)
        x, y, w = batch
        logits = self._train_forward(x)
        n = self.loss_fn.batch_weight(y)  # the batch size (a weighted-mean loss: the sum of its class weights)
        loss = (w * self.loss_fn(logits, y)).sum() / n
        loss = loss + self.loss_fn.regularizer(self.net, x, logits)
        extra = self._next_extra()
        if extra is not None:  # summed and divided by the real batch's n: each extra sample weighs extra_weight
            loss = loss + self.extra_weight * self.loss_fn(self._train_forward(extra[0]), extra[1]).sum() / n
        self.train_loss.update(loss.detach())  # accumulated on the device, logged once per epoch
        return loss

    def on_train_epoch_end(self) -> None:  # one self.log per epoch: per step it costs ~20% of a small step
        self.log(f"{self.prefix}/train/loss", self.train_loss, prog_bar=True)
        self.step_schedules()

    def validation_step(self, batch: tuple[torch.Tensor, ...], _: int) -> None:
        x, y = batch
        logits = self.net(x) * self.loss_fn.logit_scale  # cosine heads (LDAM): the logits the loss trains
        if self.multilabel:  # ACC (top-1 label is a true label) and BCE summed over labels
            from crt.metrics.multilabel import multilabel_acc, multilabel_nll

            self.val_hit.update(multilabel_acc(logits, y))
            self.val_ce.update(multilabel_nll(logits, y))
            return
        self.val_bal_acc.update(logits, y)
        self.val_ce.update(nn.functional.cross_entropy(logits.float(), y, reduction="none"))

    def on_validation_epoch_end(self) -> None:  # logged once per epoch (a self.log of a metric costs ~1 ms)
        if self.multilabel:
            self.log(f"{self.prefix}/val/bal_acc", self.val_hit)
        else:
            self.log(f"{self.prefix}/val/bal_acc", self.val_bal_acc, prog_bar=True)
        self.log(f"{self.prefix}/val/ce", self.val_ce)

    def configure_optimizers(self) -> Any:
        opt = make_optimizer(self.optimizer_name, [p for p in self.parameters() if p.requires_grad], self.lr,
                             self.weight_decay, self.fused, self.nesterov)
        return opt if self.lr_schedule is None else {"optimizer": opt, "lr_scheduler": self.lr_schedule.scheduler(opt)}


class DemixModule(ChunkedSteps, DemixObjectiveMixin, pl.LightningModule):
    """Nonlinear ICA by contrastive learning: flow f (z -> s), per-dimension critic, class priors.

    Objective (CRT eq. 1 / ECRT eq. 4 plus the likelihood term): `DemixObjectiveMixin.objective`
    (crt/models/demixer.py, shared with crt.CausalResampler).
    """

    def __init__(self, flow: nn.Module, num_classes: int, data: DemixData, objective: DemixObjective = DemixObjective(),
                 optim: Optim = Optim(batch_size=512), *, seed: int = 0, compile: bool | str = False):
        super().__init__()
        c = objective.critic
        self.init_demixer(flow, num_classes, int(data.train[0].shape[1]), loss=objective.loss, prior=objective.prior,
                          rho=objective.rho, hidden=c.hidden, embed_dim=c.embed_dim, normalize=c.normalize,
                          negatives=c.negatives, exclude_true=c.exclude_true, clamp=c.clamp, impl=c.impl)
        self.train_data, self.val_data = data.train, data.val
        self.batch_size, self.lr, self.weight_decay, self.seed = optim.batch_size, optim.lr, optim.weight_decay, seed
        self.fused, self.optimizer_name, self.nesterov = optim.fused, optim.name, optim.nesterov
        self.m_train = nn.ModuleDict({k: running_mean() for k in ("loss", "contrastive", "nll")})  # no host syncs
        self.m_val = nn.ModuleDict({k: running_mean() for k in ("loss", "contrastive", "nll")})
        self.compile, self._step = compile, None
        self.probe = data.probe  # (z, true sources) of held-out samples: MCC of the flow's s after every epoch
        self.mcc_history: list[float] = []

    def on_train_start(self) -> None:
        self._step = Compiled(self.objective, compile_mode(self.compile), device=self.device, what="demix step",
                              static_shapes=static_batches(self.trainer.train_dataloader))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow(z)[0]

    def train_dataloader(self) -> TensorBatches:
        z, y = (t.to(self.device) for t in self.train_data)
        batches = TensorBatches(z, y, batch_size=self.batch_size, seed=self.seed, drop_last=len(z) > self.batch_size)
        cap_log_interval(self, len(self.chunked(batches)))
        return batches

    def val_dataloader(self) -> TensorBatches:
        z, y = (t.to(self.device) for t in self.val_data)
        return TensorBatches(z, y, batch_size=max(self.batch_size, 2048), shuffle=False)

    def step_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:  # of one batch (ChunkedSteps)
        out = (self._step or self.objective)(*batch)
        for k, m in self.m_train.items():
            m.update(out[k].detach())  # logged once per epoch (on_train_epoch_end)
        return out["loss"]

    def on_train_epoch_end(self) -> None:
        for k, m in self.m_train.items():
            self.log(f"demix/train/{self._name(k)}", m, prog_bar=k == "loss")
        self.step_schedules()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        out = self.objective(*batch)
        for k, m in self.m_val.items():
            m.update(out[k])

    def on_validation_epoch_end(self) -> None:
        for k, m in self.m_val.items():  # logged once per epoch
            self.log(f"demix/val/{self._name(k)}", m, prog_bar=k == "loss")
        if self.probe is None or self.trainer.sanity_checking:
            return
        from crt.diagnostics import mcc

        was_training = self.flow.training
        self.flow.eval()
        with torch.no_grad():
            s = self.flow(self.probe[0].to(self.device))[0]
        self.flow.train(was_training)
        self.mcc_history.append(mcc(s, self.probe[1]))
        self.log("demix/val/mcc", self.mcc_history[-1])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # a resumed stage keeps its whole history
        checkpoint["mcc_history"] = [float(v) for v in self.mcc_history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.mcc_history = [float(v) for v in checkpoint.get("mcc_history", [])]

    def _name(self, k: str) -> str:
        return f"{self.loss_name}_loss" if k == "contrastive" else k

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer_name, self.parameters(), self.lr, self.weight_decay, self.fused,
                              self.nesterov)
