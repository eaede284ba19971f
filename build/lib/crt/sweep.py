"""Hydra callback for multiruns (configs/hydra/default.yaml): a folder per sweep, and its summary table.

When a multirun starts, `<paths.output_dir>/sweeps/<time>-<pid>/` is created with the sweep's own
`multirun.yaml` (Hydra's copy in the shared sweep dir `outputs/runs/` is overwritten by the next sweep), and
`CRT_SWEEP` names it for the jobs (the W&B group). Every job appends its run folder and status to
`jobs.jsonl` there. When the multirun ends, the mean ± std over seeds of those runs, grouped by the other
overrides, is printed and written as `summary.csv` and `summary.md` (crt.report.summary).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.paths.output_dir)) / "sweeps"
        name = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{os.getpid()}"
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, folder / "multirun.yaml")
        (folder / "jobs.jsonl").touch()
        os.environ["CRT_SWEEP"], os.environ["CRT_SWEEP_DIR"] = name, str(folder.resolve())

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        folder = os.environ.get("CRT_SWEEP_DIR")
        if not folder:
            return
        run_dir = str(Path(job_return.hydra_cfg.hydra.runtime.output_dir).resolve())
        line = json.dumps({"run_dir": run_dir, "status": getattr(job_return.status, "name", str(job_return.status)),
                           "overrides": list(job_return.overrides or [])})
        with open(Path(folder) / "jobs.jsonl", "a") as fh:  # one short line per job: appends do not interleave
            fh.write(line + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = os.environ.pop("CRT_SWEEP_DIR", None)
        os.environ.pop("CRT_SWEEP", None)
        if not folder:
            return
        from crt.report.summary import sweep_runs, write_summary

        runs = sweep_runs(folder)
        df, md = write_summary(runs, folder, title=f"Sweep {Path(folder).name}")
        print(f"\nSweep summary (mean ± std over seeds; {len(runs)} runs):\n{md}{Path(folder) / 'summary.md'}\n", flush=True)
