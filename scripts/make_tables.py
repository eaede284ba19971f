"""`python scripts/make_tables.py ...` in a checkout: the same as `crt report table ...` (crt/report/build.py)."""

import sys

from crt.report.build import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/make_tables.py"))
