"""SIGTERM / SIGINT end a run with exit status 143 / 130 and a line naming the interrupted stage.

Lightning turns SIGTERM into a bare `SystemExit` (status 0) and Ctrl-C into `sys.exit(1)`, so schedulers
took a preempted job for a finished one. `signals_raise()` installs handlers that raise `Interrupted`
instead (a BaseException: no `except Exception` swallows it). Lightning keeps calling the handler
installed before `fit` after its own, so the exception also leaves a running `trainer.fit`; every
temporary file is then removed by the atomic writers, and the stage's last mid-stage checkpoint stays
in the cache for the rerun.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(BaseException):
    """Raised by the signal handler; the pipeline adds which stage was running."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.stage: str | None = None
        self.key: str | None = None
        self.checkpoint_epoch: int | None = None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        name = signal.Signals(self.signum).name
        if self.stage is None:
            return (f"interrupted by {name} outside a training stage (loading data, evaluating or writing results); "
                    "finished stages are in the cache. Rerun the same command to complete the run.")
        where = (f"it resumes stage {self.stage} from its checkpoint after epoch {self.checkpoint_epoch}"
                 if self.checkpoint_epoch else f"it reruns stage {self.stage} from its start (no mid-stage checkpoint yet)")
        return (f"interrupted by {name} during stage {self.stage} (cache key {self.key}). Finished stages are in the "
                f"cache; rerun the same command and {where}.")


def _raise(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_raise(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, the given signals raise Interrupted (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
