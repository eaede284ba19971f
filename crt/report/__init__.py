"""The papers' tables and figures, rebuilt from `results.json` files (and the stage outputs they point to).

`crt.report.tables` finds and selects run folders (`find_runs`), aggregates seeds beside the published
numbers and writes Markdown, LaTeX and CSV; `crt.report.figures` draws the figures with matplotlib (Agg);
`crt.report.longtail` builds the long-tail tables and `crt.report.summary` the summary of a sweep folder.
The CLIs are `crt report table` (crt/report/build.py; `scripts/make_tables.py` in a checkout) and
`scripts/make_figures.py`; `make table1 table-s1 table-s7 figures`
run the experiments first.
"""

from crt.report.tables import (
    Cell,
    TableSpec,
    aggregate,
    find_runs,
    load_paper,
    table1_spec,
    table_s1_spec,
    table_s7_spec,
    write_table,
)

__all__ = [
    "Cell",
    "TableSpec",
    "aggregate",
    "find_runs",
    "load_paper",
    "table1_spec",
    "table_s1_spec",
    "table_s7_spec",
    "write_table",
]
