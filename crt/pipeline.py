"""Run a method's stages in order with the shared stage cache, evaluate, and write results.json."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import crt
from crt import tracking
from crt.cache import StageCache
from crt.config import RunConfig, validate
from crt.data import Split, build_split
from crt.data.validate import check_split
from crt.distributed import setup as setup_ranks
from crt.errors import ConfigError
from crt.export import check_model, save_model
from crt.interrupt import Interrupted, signals_raise
from crt.metrics import classification_metrics
from crt.registry import as_dict
from crt.sizes import check_fits
from crt.stages import RUNNERS, Context
from crt.stages.training import check_accelerator, trainer_options
from crt.utils import (atomic_write_json, file_lock, git_sha, is_under, remove_tree, reported, safe_path, seed_everything,
                       stable_hash)

log = logging.getLogger(__name__)
for _noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)
CACHE_VERSION = 3  # bump when stage outputs change meaning (2: LDAM logits scaled by s; 3: typed stage configs)
PACKAGE = Path(crt.__file__).resolve().parent


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def pick_device(trainer_cfg: DictConfig) -> torch.device:
    acc = str(trainer_cfg.get("accelerator", "cpu"))
    if acc in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@contextmanager
def run_lock(run_dir: Path, root: str | os.PathLike | None = None) -> Iterator[None]:
    """One job per run folder: a second job on the same folder stops with a clear error. The folder (and its
    lock file) must be no symbolic link and, when it lies in `root` (paths.output_dir), resolve inside it."""
    run_dir = safe_path(run_dir, "run folder", root if root is not None and is_under(run_dir, root) else None)
    with reported(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    safe_path(run_dir / "logs", "log folder")

    def busy() -> None:
        raise ConfigError(f"Another job is writing {run_dir}. Fix: wait for it, or change an override "
                          "(e.g. seed=...) so that this run gets its own folder.")

    with ExitStack() as held:
        with reported(run_dir / ".lock"):  # the lock's own errors only, not the run's
            held.enter_context(file_lock(run_dir / ".lock", "run lock file", busy))
        yield


@lru_cache(maxsize=1)
def code_version() -> str:
    """crt's version and a hash of the source of every module a stage can run (crt/**/*.py but crt/report/)."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE.rglob("*.py")):
        rel = f.relative_to(PACKAGE).as_posix()
        if rel.startswith("report/"):
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return f"{crt.__version__}+{h.hexdigest()[:16]}"


def data_fingerprint(split: Split) -> str:
    """Hash of the data every stage reads: the split's tensors (so of what the loader read, after the protocol)."""
    h = hashlib.sha256()
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "counts", "majority"):
        t = getattr(split, name).detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def stage_keys(run_cfg: RunConfig, data_fp: str, code: str | None) -> dict[str, str]:
    """Cache key of every stage: its typed config, the data config and fingerprint, the keys of the stages before
    it, the seed, the code version (code=None: the code-free key, for `cache.allow_other_code`) and the source
    of every module of user code the stage (or the data) names by import path."""
    from crt.usercode import named_user_code, source_fingerprint

    keys: dict[str, str] = {}
    data = {"config": as_dict(run_cfg.data), "fingerprint": data_fp}
    if user := named_user_code(data["config"]):  # a user loader: its source is part of every stage's data
        data["user_code"] = source_fingerprint(user)
    for stage, config in run_cfg.stages.items():
        plain = as_dict(config)
        user = source_fingerprint(named_user_code(plain))  # user encoders/losses: an edit retrains this stage on
        keys[stage] = stable_hash({"stage": stage, "config": plain, "data": data, "inputs": dict(keys),
                                   "seed": run_cfg.seed, "code": code, "v": CACHE_VERSION,
                                   **({"user_code": user} if user else {}),
                                   **({"training": run_cfg.training} if run_cfg.training else {})})
    return keys


def keys_for(cfg: DictConfig) -> dict[str, str]:
    """The cache keys `run(cfg)` will use (reads the data to fingerprint it)."""
    run_cfg = validate(cfg)
    split = build_split(cfg.data, str(cfg.paths.data_dir))
    return stage_keys(run_cfg, data_fingerprint(split), code_version())


def _still_current(done: dict[str, Any], cfg: DictConfig, path: Path) -> dict[str, Any] | None:
    """A finished run's results, if its stage keys are the ones this configuration and code give; else None.

    A run folder is named by its command-line overrides only, so after a default, the code or the data
    changes, the same folder holds results of another configuration: those are redone, not shown again. A run
    whose model/ is missing or fails crt.load's checks is redone too (its stages come from the cache).
    """
    try:
        check_model(path.parent, cfg)
    except ConfigError as err:
        log.warning("%s: model/ is missing or invalid, redoing the run: %s", path.parent, err)
        return None
    want = keys_for(cfg)
    have = {s: (v or {}).get("key") for s, v in (done.get("stages") or {}).items()}
    if have == want:
        return done
    stale = [s for s in want if have.get(s) != want[s]] or sorted(set(have) - set(want))
    log.warning("%s was made with another configuration, code or data (stage keys of %s differ): redoing the run",
                path, ", ".join(stale))
    return None


def run(cfg: DictConfig, run_dir: str | os.PathLike | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Execute every stage of cfg.method (reusing cached ones), evaluate and write `<run_dir>/results.json`."""
    run_cfg = validate(cfg)
    check_accelerator(trainer_options(cfg.trainer)[1])  # no GPU for trainer=gpu|ddp: one paragraph, before the data
    ranks = setup_ranks(cfg)  # under torchrun/srun: every rank trains, rank 0 alone writes
    run_dir = Path(run_dir or cfg.paths.get("run_dir") or Path(cfg.paths.output_dir) / "runs" / "manual")
    results_path = run_dir / "results.json"
    progress = bool(cfg.get("progress", True)) if progress is None else progress
    done = None
    if ranks.is_zero and cfg.get("skip_completed", False) and (results_path.exists() or results_path.is_symlink()):
        done = read_results(results_path)  # None when damaged: reported, moved aside, and the run redone
        if done is not None:
            done = _still_current(done, cfg, results_path)
    done = ranks.broadcast(done)
    if done is not None:
        log.info("already complete, skipping: %s (skip_completed=false runs it again, e.g. to log it with another "
                 "logger=...: its stages then come from the cache and their curves are replayed)", results_path)
        return done
    with signals_raise(), run_lock(run_dir, cfg.paths.output_dir) if ranks.is_zero else nullcontext(), \
            tracking.job(cfg, run_dir) as job:  # job's loggers
        t_start = time.perf_counter()
        seed_everything(int(cfg.seed))
        split = build_split(cfg.data, str(cfg.paths.data_dir))
        check_split(split, cfg)
        log.info(split.summary())
        load_rss = peak_rss_mb()  # after loading and the protocol (docs/scale.md)
        device = pick_device(cfg.trainer)
        check_fits(run_cfg, split, device)  # sizes that cannot fit are refused now, with the estimate
        ctx = Context.from_cfg(cfg, split, str(run_dir), device=device, progress=progress)
        ctx.checkpoint_every = int(cfg.get("checkpoint_every", 1) or 0)
        ctx.checkpoint_interval_s = float(cfg.get("checkpoint_interval_s", 0) or 0)
        cache = StageCache(cfg.paths.cache_dir, enabled=run_cfg.cache.enabled)
        data_fp, code = data_fingerprint(split), code_version()
        keys = stage_keys(run_cfg, data_fp, code)
        free_keys = stage_keys(run_cfg, data_fp, None)
        prev: dict[str, dict[str, Any]] = {}
        stages: dict[str, dict[str, Any]] = {}
        for stage, stage_cfg in run_cfg.stages.items():
            t0 = time.perf_counter()
            if ctx.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            key, other = keys[stage], None
            other_free = free_keys[stage] if run_cfg.cache.allow_other_code else None
            with cache.lock(stage, keys[stage], other_free) if ranks.is_zero else nullcontext():
                out = cache.load(stage, key) if ranks.is_zero else None
                if out is None and ranks.is_zero and cache.enabled and run_cfg.cache.allow_other_code:
                    found = cache.find_other_code(stage, free_keys[stage])
                    out = cache.load(stage, found) if found else None
                    if out is not None:
                        other = {"key": found, "code_version": (cache.meta(stage, found) or {}).get("code_version")}
                        key = found
                        log.warning("stage %s: reusing cache entry %s written by other code (%s; this code is %s) "
                                    "because cache.allow_other_code=true", stage, found, other["code_version"], code)
                reused = ranks.broadcast(out is not None)  # rank 0 decides for all
                key = ranks.broadcast(key)
                if not reused:
                    log.info("stage %s: training (key %s)", stage, key)
                    seed_everything(run_cfg.seed + len(prev))
                    ctx.checkpoint_dir = str(cache.partial(stage, key)) if cache.enabled else None
                    ctx.history = []
                    with interrupted_stage(stage, key, ctx.checkpoint_dir):
                        out = RUNNERS[stage](ctx, stage_cfg, prev)  # every rank: the stage fits as one DDP job
                        if ranks.is_zero:
                            cache.save(stage, key, out, {"stage": stage, "config": as_dict(stage_cfg),
                                                         "seed": run_cfg.seed, "data_fingerprint": data_fp,
                                                         "code_version": code, "code_free_key": free_keys[stage],
                                                         "created": _now(), "history": ctx.history})
                else:
                    log.info("stage %s: reused from cache (key %s)", stage, key)
                    if ranks.is_zero:  # its logged curves into this job's loggers, marked <stage>/reused = 1
                        job.replay(stage, (cache.meta(stage, key) or {}).get("history"))
                ranks.barrier()  # the entry is complete before the other ranks read it
            if not ranks.is_zero and (reused or cache.enabled):
                out = _read_rank_zero_entry(cache, stage, key)
            prev[stage] = out
            stages[stage] = {"seconds": round(time.perf_counter() - t0, 3), "reused": reused, "key": key,
                             "cache": str(cache.folder(stage, key)), "selected": out.get("selected"),
                             "n_train": int(out.get("n_train", 0))}
            if other is not None:
                stages[stage]["other_code"] = other
            if ctx.device.type == "cuda":
                stages[stage]["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            stages[stage]["peak_rss_mb"] = peak_rss_mb()  # the process's peak so far (docs/scale.md)
        tc = split.train_counts
        if split.multilabel:
            from crt.metrics.multilabel import multilabel_metrics as evaluate
        else:
            evaluate = classification_metrics
        scored = None
        if ranks.is_zero:  # <run_dir>/model/ (crt.load); the metrics are computed by it, rebuilt from its files
            _, logits = save_model(run_dir, cfg, split, prev, device=ctx.device,
                                   entries={s: v["cache"] for s, v in stages.items()})
            metrics, per_class = evaluate(logits["test"], split.y_test, tc, split.majority, split.groups, prefix="test")
            val_metrics, _ = evaluate(logits["val"], split.y_val, tc, split.majority, split.groups, prefix="val")
            metrics.update({k: v for k, v in val_metrics.items() if k in ("val/bal_acc", "val/nll", "val/top1")})
            scored = (metrics, per_class)
        metrics, per_class = ranks.broadcast(scored)
        from crt.diagnostics import run_diagnostics  # source recovery / dependence / augmentation quality

        refine = run_cfg.stages.get("refine")
        diagnostics = run_diagnostics(split, prev, refine.space if refine is not None else "source")
        results = {
            "name": f"{cfg.data.name}-{cfg.method.name}",
            "dataset": str(cfg.data.name), "method": str(cfg.method.name), "seed": int(cfg.seed),
            "data_seed": run_cfg.data.protocol.data_seed, "git_sha": git_sha(), "code_version": code,
            "data_fingerprint": data_fp, "cache_allow_other_code": run_cfg.cache.allow_other_code, "created": _now(),
            "run_dir": str(run_dir), "seconds": round(time.perf_counter() - t_start, 3), "world_size": ranks.world,
            "stages": stages, "metrics": metrics, "per_class": per_class, "diagnostics": diagnostics,
            "data": {"counts": split.counts.tolist(), "train_counts": tc.tolist(),
                     "minority_classes": split.minority_classes, "n_train": len(split.y_train),
                     "n_val": len(split.y_val), "n_test": len(split.y_test), "stand_in": split.stand_in,
                     "peak_rss_mb": load_rss},
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        if ranks.is_zero:
            job.log_results(metrics)  # final metrics to every logger
            atomic_write_json(results_path, results)
        ranks.barrier()
    return results


def _read_rank_zero_entry(cache: StageCache, stage: str, key: str) -> dict[str, Any]:
    """A stage's outputs as rank 0 stored them (ranks > 0 of a launched DDP job)."""
    out = cache.load(stage, key)
    if out is None:
        raise RuntimeError(f"stage {stage}: rank 0 reported cache entry {cache.folder(stage, key)} but it cannot "
                           "be read here. Fix: put paths.cache_dir on a file system every node shares.")
    return out


def read_results(path: Path) -> dict[str, Any] | None:
    """A finished run's results.json, or None when it is damaged: then it is reported, moved aside to
    `results.json.damaged` (kept for inspection) and the run is redone."""
    import json

    safe_path(path.parent, "run folder")  # nothing is read or moved through a link
    try:
        if path.is_symlink():
            raise ValueError(f"a symbolic link (to {os.readlink(path)}), not the run's own file")
        res = json.loads(path.read_text())
        if not (isinstance(res, dict) and isinstance(res.get("metrics"), dict) and res["metrics"]
                and isinstance(res.get("stages"), dict)):
            raise ValueError("no metrics/stages")
        return res
    except (OSError, ValueError, UnicodeDecodeError) as err:
        aside = path.with_name(path.name + ".damaged")
        log.warning("%s is damaged or unreadable (%s: %s); moved to %s and the run is redone", path,
                    type(err).__name__, str(err)[:120], aside.name)
        with reported(aside):
            remove_tree(aside)
            os.replace(path, aside)  # a link is moved, not followed
        return None


@contextmanager
def interrupted_stage(stage: str, key: str, checkpoint_dir: str | None) -> Iterator[None]:
    """Name the stage (and its last checkpoint) in an Interrupted raised while it trains."""
    try:
        yield
    except Interrupted as err:
        err.stage, err.key = stage, key
        if checkpoint_dir:
            from crt.stages.checkpoint import StageCheckpoint

            err.checkpoint_epoch = StageCheckpoint(checkpoint_dir, stage).saved_epoch()
        raise


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def format_results(results: dict[str, Any]) -> str:
    """A short human-readable table of the run's headline metrics and stage times."""
    m = results["metrics"]
    keys = ["test/top1", "test/top5", "test/nll", "test/macro_f1", "test/minority_f1", "test/bal_acc"]
    lines = [f"{results['name']}  (seed {results['seed']})", f"{'metric':<20}{'value':>10}"]
    lines += [f"{k:<20}{m[k]:>10.4f}" for k in keys if k in m]
    lines.append(f"{'stage':<20}{'seconds':>10}  reused")
    lines += [f"{s:<20}{v['seconds']:>10.2f}  {v['reused']}" for s, v in results["stages"].items()]
    return "\n".join(lines)
