"""How long crt takes to answer before any training, against `python -c "import torch"`, and how much a run prints.

    python scripts/startup_check.py              # 3 rounds, interleaved, medians and ratios
    python scripts/startup_check.py --rounds 5 --lines

Each round runs, back to back, `import torch`, a misspelt component name (`method.refine_loss=ldamm`: crt's
one-paragraph error, exit 2), `--cfg job` of a Table S7 cell, and `python -m crt --help`; the figures are the
medians over the rounds, and each command's time is given as a ratio to the torch import of the same rounds.
`--lines` also counts the lines a default toy run (`trainer=cpu`) prints when piped. A figure, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], expect: int | None = None, cwd: Path = ROOT) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if expect is not None and proc.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}, expected {expect}:\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout + proc.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lines", action="store_true", help="also count the lines of a default run, piped")
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the checkout to time (e.g. an older commit's)")
    args = ap.parse_args(argv)
    py = sys.executable
    with tempfile.TemporaryDirectory() as out:
        cmds = {
            "import torch": ([py, "-c", "import torch"], 0),
            "typo in a component name": ([py, "run.py", "method.refine_loss=ldamm", "trainer=cpu",
                                          f"paths.output_dir={out}"], 2),
            "--cfg job": ([py, "run.py", "experiment=table_s7_1_erm", "--cfg", "job"], 0),
            "crt --help": ([py, "-m", "crt", "--help"], 0),
        }
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.rounds):
            for name, (cmd, code) in cmds.items():
                times[name].append(timed(cmd, code, args.checkout)[0])
        base = statistics.median(times["import torch"])
        print(f"{'command':<28} {'median s':>9} {'x import torch':>15}")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:<28} {med:>9.2f} {med / base:>15.2f}")
        if args.lines:
            _, text = timed([py, "run.py", "trainer=cpu", f"paths.output_dir={out}"], 0, args.checkout)
            print(f"\ndefault run (trainer=cpu), piped: {len(text.splitlines())} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
