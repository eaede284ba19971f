"""The `crt` command (also `python -m crt`): run experiments, predict with a trained run, build reports.

    crt run [key=value ...]          what `python run.py` does in a checkout, from any folder (Hydra: -m for
                                     sweeps, --cfg job, --config-dir DIR or hydra.searchpath=[file://DIR] for
                                     your own config folder beside crt's)
    crt predict run=DIR [...]        python -m crt.predict (crt predict --help)
    crt report summarize FOLDER      python -m crt.report (tables: crt report table --help)
    crt --help

The Hydra configs travel inside the package (`crt/configs`, the checkout's top-level `configs/`), so an
installed crt needs no checkout. User code named by `_target_` is imported from the working directory too.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"
CHECKED_GROUPS = ("data", "method", "model", "trainer", "logger", "callbacks", "experiment", "stage", "debug", "sweep")
FAILED: list[str] = []  # jobs of an in-process multirun that stopped on a ConfigError
USAGE = __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1]


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


def check_folder_names(argv: list[str]) -> None:
    """Names given on the command line that become run-folder parts (every value of a sweep) are checked before
    Hydra starts, so a sweep with a bad one runs no job; other values are checked by ${crt.name:...} (configs/hydra)."""
    from crt.config import check_name
    from crt.errors import ConfigError

    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in ("data.name", "method.name", "seed") and not set(value) & set("()[]{}$'\""):
            for part in value.split(","):
                try:
                    check_name(key, part)
                except ConfigError as err:
                    print(f"\nerror: {err}\n", file=sys.stderr)
                    sys.exit(2)


def override_error(err: BaseException, argv: list[str]) -> str | None:
    """crt's paragraph for Hydra's "Key 'lamda' is not in struct" (an override of a key the config does not have,
    e.g. method.lamda=0.1), naming the closest keys beside it; None for any other error."""
    import difflib

    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = err.__cause__
    if not (isinstance(err, ConfigCompositionException) and isinstance(cause, (ConfigAttributeError, ConfigKeyError))
            and "not in struct" in str(cause) and getattr(cause, "full_key", None)):
        return None
    key = str(cause.full_key)
    value = next((a.partition("=")[2] for a in argv if a.lstrip("+~").partition("=")[0] == key), "...")
    parent_key, _, leaf = key.rpartition(".")
    parent = getattr(cause, "parent_node", None)
    keys = sorted(str(k) for k in parent.keys()) if parent is not None else []  # type: ignore[union-attr]
    near = difflib.get_close_matches(leaf, keys, n=3, cutoff=0.5)
    where = f"{parent_key}." if parent_key else ""
    fix = f"{where}{near[0]}={value}" if near else f"one of the keys of {parent_key or 'the config'}"
    listed = f"; the keys of {parent_key or 'the config'} are {', '.join(keys)}" if keys and len(keys) <= 40 else ""
    return (f"{key}={value}: the config has no key {key}" + (f" (did you mean {', '.join(where + k for k in near)}?)"
            if near else "") + f". Fix: use {fix}{listed}. (+{key}=... would add it, and then stop the run as a key "
            "that nothing reads.)")


def _hydra_report(err: BaseException) -> None:
    """What Hydra prints for an error before a job starts when HYDRA_FULL_ERROR is unset; then exit 1."""
    import traceback

    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, CompactHydraException):
        sys.stderr.write(str(err) + os.linesep)
        if isinstance(err.__cause__, OmegaConfBaseException):
            sys.stderr.write(str(err.__cause__) + os.linesep)
    else:
        traceback.print_exception(err)
    sys.exit(1)


_FULL_ERROR: list[str | None] = []  # HYDRA_FULL_ERROR as the user set it, while run_main composes


def _restore_full_error() -> None:
    """From the first job on, Hydra reports errors as the user's HYDRA_FULL_ERROR says."""
    if _FULL_ERROR:
        user = _FULL_ERROR.pop()
        if user is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user


def _in_process_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return hc.mode == RunMode.MULTIRUN and "BasicLauncher" in str(hc.launcher.get("_target_", ""))


def _job(cfg: object) -> float | None:
    """One Hydra job: crt.pipeline.run, its errors as one paragraph (exit 2), interruptions as 130/143."""
    from hydra.core.hydra_config import HydraConfig

    from crt.config import validate
    from crt.errors import ConfigError
    from crt.interrupt import Interrupted

    _restore_full_error()
    try:
        validate(cfg)  # a config mistake is reported before crt.pipeline imports Lightning (seconds)
        from crt.pipeline import format_results, run

        results = run(cfg, run_dir=HydraConfig.get().runtime.output_dir)  # type: ignore[arg-type]
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
    return results["metrics"].get(str(cfg.get("objective", "val/bal_acc")))  # type: ignore[attr-defined]


def run_main(argv: list[str] | None = None, prog: str = "crt run") -> None:
    """`crt run` / `python run.py`: compose configs/ with the overrides in `argv` (Hydra's command line)."""
    import hydra

    from crt.config import NameRefused, register_resolvers

    argv = sys.argv[1:] if argv is None else argv
    register_resolvers()
    sys.path.insert(1, os.getcwd())  # user code named by _target_ (crt/usercode.py) may live in the working directory
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    check_group_choices(argv)
    check_folder_names(argv)
    main = hydra.main(config_path=str(CONFIGS), config_name="config", version_base="1.3")(_job)
    sys.argv = [prog, *argv]
    # Errors of composition come back here, not through Hydra's report (exit 1), so that an override of a key the
    # config lacks (method.lamda=0.1) gets crt's paragraph; the first job restores the user's setting.
    _FULL_ERROR[:] = [os.environ.get("HYDRA_FULL_ERROR")]
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except NameRefused as err:  # raised while Hydra names the run folder, so before it creates anything
        print(f"\nerror: {err.error}\n", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # noqa: BLE001 - Hydra's own errors before the first job
        user_full = _FULL_ERROR[0] if _FULL_ERROR else os.environ.get("HYDRA_FULL_ERROR")
        _restore_full_error()
        message = override_error(err, argv)
        if message is not None:
            print(f"\nerror: {message}\n", file=sys.stderr)
            sys.exit(2)
        if user_full:
            raise
        _hydra_report(err)
    finally:
        _restore_full_error()
    if FAILED:
        print(f"\n{len(FAILED)} job(s) of the multirun failed; the others ran:", file=sys.stderr)
        for line in FAILED:
            print(f"  - {line}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    """The `crt` command's dispatcher (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        run_main(rest)
        return 0
    if cmd == "predict":
        from crt.errors import ConfigError
        from crt.predict import main as predict

        try:
            predict(rest)
        except ConfigError as err:
            print(f"\nerror: {err}\n", file=sys.stderr)
            return 2
        return 0
    if cmd == "report":
        from crt.report.__main__ import main as report

        return report(rest)
    print(f"error: unknown command {cmd!r}. Fix: use crt run, crt predict or crt report (crt --help).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
