"""`python -m crt ...`: the `crt` command (crt/cli.py)."""

import sys

from crt.cli import main

sys.exit(main())
