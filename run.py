"""Entry point: `python run.py [experiment=...] [key=value ...]` (Hydra); `-m` for sweeps."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from crt.config import register_resolvers
from crt.errors import ConfigError

register_resolvers()
log = logging.getLogger("crt")


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from crt.pipeline import format_results, run

    try:
        results = run(cfg, run_dir=HydraConfig.get().runtime.output_dir)
    except ConfigError as err:
        print(f"\nerror: {err}\n", file=sys.stderr)
        sys.exit(2)
    print("\n" + format_results(results))
    print(f"results: {results['run_dir']}/results.json")
    return results["metrics"].get(str(cfg.get("objective", "val/bal_acc")))


if __name__ == "__main__":
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    main()
