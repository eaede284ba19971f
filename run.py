"""Entry point: `python run.py [experiment=...] [key=value ...]` (Hydra); `-m` for sweeps."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from crt.config import register_resolvers
from crt.errors import ConfigError
from crt.interrupt import Interrupted

register_resolvers()
log = logging.getLogger("crt")
CONFIGS = Path(__file__).resolve().parent / "configs"
CHECKED_GROUPS = ("data", "method", "model", "trainer", "logger", "callbacks", "experiment", "stage", "debug", "sweep")
FAILED: list[str] = []  # jobs of an in-process multirun that stopped on a ConfigError


def check_group_choices(argv: list[str]) -> None:
    """Unknown `group=choice` overrides get a one-paragraph error instead of Hydra's search-path dump."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in CHECKED_GROUPS or value in ("null", ""):
            continue
        options = sorted(p.stem for p in (CONFIGS / key).glob("*.yaml"))
        for choice in value.strip("[]").split(","):  # multirun lists, and lists of options (logger=[csv,wandb])
            if choice not in options:
                print(f"\nerror: unknown {key} {choice!r}. Fix: choose {key}=<name> with one of "
                      f"{', '.join(options)} (files under configs/{key}/).\n", file=sys.stderr)
                sys.exit(2)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from crt.pipeline import format_results, run

    try:
        results = run(cfg, run_dir=HydraConfig.get().runtime.output_dir)
    except ConfigError as err:
        if not _in_process_multirun():
            print(f"\nerror: {err}\n", file=sys.stderr)
            sys.exit(2)
        job = HydraConfig.get().job  # a sweep goes on with its other jobs and lists the failures at the end
        FAILED.append(f"job #{job.num} ({job.override_dirname or 'no overrides'}): {err}")
        print(f"\nerror in job #{job.num}: {err}\n", file=sys.stderr)
        return float("nan")  # Optuna records the trial as failed
    except Interrupted as err:
        print(f"\n{err.message()}\n", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    print("\n" + format_results(results))
    print(f"results: {results['run_dir']}/results.json")
    return results["metrics"].get(str(cfg.get("objective", "val/bal_acc")))


def _in_process_multirun() -> bool:
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return hc.mode == RunMode.MULTIRUN and "BasicLauncher" in str(hc.launcher.get("_target_", ""))


if __name__ == "__main__":
    sys.path.insert(1, os.getcwd())  # user code named by _target_ (crt/usercode.py) may live in the working directory
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    check_group_choices(sys.argv[1:])
    main()
    if FAILED:
        print(f"\n{len(FAILED)} job(s) of the multirun failed; the others ran:", file=sys.stderr)
        for line in FAILED:
            print(f"  - {line}", file=sys.stderr)
        sys.exit(2)
