"""Entry point in a checkout: `python run.py [experiment=...] [key=value ...]` (Hydra); `-m` for sweeps.

Installed, the same command is `crt run ...` from any folder (crt/cli.py holds both).
"""

from __future__ import annotations

import sys

from crt.cli import run_main

if __name__ == "__main__":
    run_main(sys.argv[1:], prog=sys.argv[0])
