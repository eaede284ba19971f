"""Multi-process runs started by a launcher (torchrun, srun, the submitit launcher): ranks and the I/O guard.

Under `torchrun --nproc_per_node=N run.py trainer=ddp ...` or `srun` (one SLURM task per GPU) every process
runs the whole pipeline and trains every stage as one DDP rank (Lightning's `ddp` strategy joins the
processes the launcher started). The pipeline's own I/O is done once: rank 0 holds the run lock and the
stage-cache locks, decides whether a stage is reused, and writes cache entries and results.json; the other
ranks follow its decisions, wait for it at a barrier and then read the entry it wrote.

The process group is created here, before the first stage (Lightning finds it initialised and keeps it), so
that the ranks can agree between stages. Control messages go over gloo (a side group when training uses NCCL).

Teardown. A process must destroy its process groups before the interpreter finalises: a gloo worker thread can
still hold the last reference to a finished collective whose tensors belong to Python objects (Lightning's
`self.log(sync_dist=True)`, torchmetrics' sync and `reduce_boolean_decision` all reduce Python temporaries). When
that thread lets go during `Py_FinalizeEx` it needs the GIL, CPython ends the thread with `pthread_exit`, and the
forced unwind through the C++ destructor aborts the process: "terminate called without an active exception",
SIGABRT. Lightning destroys the group only for NCCL (an atexit handler), never for gloo. So:
- `EndSpawnedGroup` (a callback on every stage Trainer): in a process that Lightning spawned for one fit
  (`ddp_spawn`, CPU DDP of `trainer=ddp_sim`), a barrier (no rank closes its connections while another still
  has a collective in flight) and `destroy_process_group()` when fitting ends. By then Lightning has dropped its
  DDP wrapper, so this drops the last reference to the group: its destructor drains the queue and joins the
  gloo threads while the interpreter is fully alive (tests/test_ddp.py checks the threads are gone).
- `setup()` registers the same destruction at exit for the groups it creates under torchrun/srun (they are
  kept across stages, so they can only go when the process ends; atexit handlers run before finalisation).
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict

from crt.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Ranks:
    """This process's place among the launched processes (rank 0 of 1 when nothing launched it)."""

    rank: int = 0
    world: int = 1
    launcher: str = "none"
    group: Any = None  # gloo group for control messages (None: the default group)

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (the argument of the other ranks is ignored)."""
        if self.world == 1:
            return obj
        buf = [obj]
        dist.broadcast_object_list(buf, src=0, group=self.group)
        return buf[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier(group=self.group)


def launcher_environment() -> Any:
    """Lightning's cluster environment of the launcher that started this process (SLURM first, as Lightning
    checks), or None when the process was started plainly."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for env_type in (SLURMEnvironment, TorchElasticEnvironment):
        if env_type.detect():
            return env_type()
    return None


def _process_count(trainer_cfg: DictConfig) -> int:
    """How many processes the trainer settings ask for on this node (Lightning's reading of `devices`)."""
    devices = trainer_cfg.get("devices", 1)
    acc = str(trainer_cfg.get("accelerator", "cpu"))
    if isinstance(devices, int) and devices > 0:
        return devices
    if not isinstance(devices, (int, str)):  # a list of device ids
        return len(list(devices))
    if str(devices).isdigit():
        return int(devices)
    if acc in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.device_count()  # -1 / "auto": every GPU
    return 1


def setup(cfg: DictConfig) -> Ranks:
    """Join the launched processes (when there are several) and make `trainer.strategy` fit how we were started.

    - Started by torchrun / srun with more than one process: needs strategy `ddp`; creates the process group.
    - Started plainly with strategy `ddp` and several devices: Lightning would re-run the script once per device,
      each copy doing the pipeline's I/O; the stages then fit with `ddp_spawn` instead (same training, one
      pipeline process), and this is logged.
    """
    tr = cfg.trainer
    strategy = str(tr.get("strategy", "auto"))
    env = launcher_environment()
    world = env.world_size() if env is not None else 1
    if env is None or world <= 1:
        if strategy == "ddp" and int(tr.get("num_nodes", 1) or 1) > 1:
            raise ConfigError(f"trainer.num_nodes={tr.num_nodes} needs a launcher that starts one process per "
                              "device on every node. Fix: run under srun / hydra/launcher=submitit_slurm, or "
                              "torchrun --nnodes=... --nproc_per_node=...")
        if strategy == "ddp" and _process_count(tr) > 1:
            log.info("trainer.strategy=ddp without a launcher (torchrun/srun): fitting with ddp_spawn so that "
                     "one process runs the pipeline")
            with open_dict(cfg):
                cfg.trainer.strategy = "ddp_spawn"
        return Ranks()
    name = type(env).__name__.replace("Environment", "").lower()
    if not strategy.startswith("ddp") or "spawn" in strategy:
        raise ConfigError(f"This process is one of {world} started by {name}, but trainer.strategy={strategy!r}. "
                          "Fix: add trainer=ddp (strategy ddp), with trainer.devices equal to the processes per "
                          "node; for one process per job launch without torchrun/srun.")
    backend = "nccl" if str(tr.get("accelerator")) in ("gpu", "cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank())
    if not dist.is_initialized():
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        dist.init_process_group(backend, rank=env.global_rank(), world_size=world)
        atexit.register(destroy_groups)  # ours: gone before the interpreter finalises (module docstring)
    group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    ranks = Ranks(rank=dist.get_rank(), world=dist.get_world_size(), launcher=name, group=group)
    log.info("rank %d of %d (%s, %s): %s", ranks.rank, ranks.world, name, backend,
             "writes cache entries and results.json" if ranks.is_zero else "reads what rank 0 writes")
    return ranks


def destroy_groups() -> None:
    """Destroy every process group of this process (the default one and e.g. the gloo side group), if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class EndSpawnedGroup(Callback):
    """In a process Lightning spawned for one fit, destroy the process group when fitting ends (module docstring).

    Runs in the `teardown` hook, after Lightning's own teardown and `on_fit_end`; nothing after it in the spawned
    process communicates (the results go back to the main process through a queue). A process that did not come
    from Lightning's multiprocessing launcher (one process, torchrun/srun ranks) keeps its group.
    """

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

        if not isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher):
            return
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank has finished every collective before any rank tears down
            destroy_groups()
