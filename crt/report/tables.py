"""Paper tables from `results.json` files: mean ± std over seeds beside the published value.

A table is a list of cells (dataset, setting, method) and the metrics it reports. A cell names the Hydra
overrides its runs were launched with (e.g. `experiment=cifar100_erm`): every run folder whose overrides
are exactly those, once seed, trainer, logger and path overrides are set aside, gives one seed. Only
`<run_dir>/results.json` is read, plus, for the per-bucket metrics of Table S1, the test logits of the
stage outputs it points to. Cells without runs stay in the table with the reason ("n/a: data absent").
Output: `<out>/<name>.md`, `.tex` and `.csv` (one row per cell and metric), written atomically.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from crt.errors import ConfigError
from crt.utils import atomic_write_text

log = logging.getLogger(__name__)

PAPER_CSV = Path(__file__).with_name("paper_results.csv")
# The CIFAR-LT numbers of other papers (table LT), each row citing its paper, table and page (docs/longtail.md).
PAPER_LT_CSV = Path(__file__).with_name("paper_results_lt.csv")
REPO = Path(__file__).resolve().parents[2]

# Overrides that do not change what a run computes (or only where it runs): a cell ignores them.
IGNORED = ("seed", "progress", "skip_completed", "checkpoint_every", "checkpoint_interval_s", "logger", "paths.", "trainer",
           "cache", "hydra.", "hydra/")
# Table 1 datasets (experiment files `<dataset>_<method>.yaml`) and the paper's name for each.
T1_DATASETS = ("cifar100", "cifar100_r001", "tinyimagenet", "inat2019", "arxiv")
T1_METHODS = ("erm", "iw", "focal", "ldam", "ldam_drw", "vat", "gan", "smote", "crt", "ecrt_1p", "ecrt_mp")
PAPER_DATASET = {"cifar100": "cifar100", "tinyimagenet": "tinyimagenet", "inat2019": "inat2019", "arxiv": "arxiv"}
# Our method -> the paper's ids for it, first match wins (the papers' plain "ecrt" is the default ECRT-MP).
PAPER_METHOD = {"ecrt_mp": ("ecrt_mp", "ecrt")}
# Our metric -> the paper's ids for it (arXiv reports "acc" where the others report top-1).
PAPER_METRIC = {"top1": ("top1", "acc")}
EXTREME_GRID = (5, 10, 20, 50, 75, 100, 150)


# --------------------------------------------------------------------------------------------- runs
def split_overrides(tag: str) -> list[str]:
    """Split a run-folder tag `a=1,b=[0,1],c=x` on the commas that are not inside brackets or quotes."""
    out, depth, cur, quote = [], 0, "", ""
    for ch in tag:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    if cur:
        out.append(cur)
    return [o for o in out if o and o != "default"]


def normalise_overrides(items: Iterable[str]) -> dict[str, str]:
    """`key=value` strings -> {key: value}, without `+`/`++` prefixes and the overrides in IGNORED."""
    out: dict[str, str] = {}
    for item in items:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if key and not key.startswith(IGNORED):
            out[key] = value.strip()
    return out


@dataclass
class Run:
    """One run folder: its overrides and, when it finished, its results."""

    folder: Path
    overrides: dict[str, str]
    results: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.results is not None

    @property
    def seed(self) -> int | None:
        if self.results is not None:
            return int(self.results.get("seed", 0))
        m = re.fullmatch(r"seed(\d+)", self.folder.name)
        return int(m.group(1)) if m else None

    @property
    def config(self) -> dict[str, Any]:
        return (self.results or {}).get("config", {}) or {}


def _read_overrides(folder: Path) -> dict[str, str]:
    f = folder / ".hydra" / "overrides.yaml"
    if f.exists():
        import yaml

        try:
            return normalise_overrides(yaml.safe_load(f.read_text()) or [])
        except yaml.YAMLError:
            pass
    return normalise_overrides(split_overrides(folder.parent.name))


def find_runs(root: str | Path) -> list[Run]:
    """Every run folder under `root` (a folder with results.json, or a Hydra job folder that never finished)."""
    root = Path(root)
    if not root.exists():
        return []
    folders = {p.parent for p in root.rglob("results.json")}
    folders |= {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
    runs = []
    for folder in sorted(folders):
        results = None
        if (folder / "results.json").exists():
            try:
                results = json.loads((folder / "results.json").read_text())
            except (OSError, json.JSONDecodeError) as err:
                log.warning("unreadable %s: %s", folder / "results.json", err)
        runs.append(Run(folder, _read_overrides(folder), results))
    return runs


def select(runs: Sequence[Run], match: Mapping[str, str]) -> list[Run]:
    """The runs whose overrides are exactly `match`: complete ones, one per seed (the newest)."""
    want = {k: str(v) for k, v in match.items()}
    best: dict[int | None, Run] = {}
    for r in runs:
        if not r.complete or r.overrides != want:
            continue
        old = best.get(r.seed)
        if old is None or str(r.results.get("created", "")) > str(old.results.get("created", "")):
            best[r.seed] = r
    return [best[s] for s in sorted(best, key=lambda s: -1 if s is None else s)]


def incomplete(runs: Sequence[Run], match: Mapping[str, str]) -> list[Run]:
    want = {k: str(v) for k, v in match.items()}
    return [r for r in runs if not r.complete and r.overrides == want]


# -------------------------------------------------------------------------------------------- paper
def load_paper(path: str | Path = PAPER_CSV, extra: Sequence[str | Path] = (PAPER_LT_CSV,)) -> pd.DataFrame:
    """The papers' numbers: table, dataset, method, setting, metric, value (T1/ABL/LT top-k in percent).

    The rows of `extra` (the cited CIFAR-LT numbers) follow those of `path`; their `printed` (the number as the
    paper prints it) and `source` (paper, table, page) columns are empty for the rows of `path`.
    """
    frames = []
    for p in (path, *extra):
        if not Path(p).exists():
            name = Path(p).name
            raise ConfigError(f"The papers' numbers are missing: {p} does not exist. Fix: restore "
                              f"crt/report/{name} from git (git checkout -- crt/report/{name}).")
        frames.append(pd.read_csv(p, dtype=str, keep_default_na=False))
    df = pd.concat(frames, ignore_index=True).fillna("")
    df["value"] = pd.to_numeric(df["value"])
    return df


def paper_value(paper: pd.DataFrame, tables: Sequence[str], dataset: str | None, setting: str,
                methods: Sequence[str], metrics: Sequence[str]) -> float | None:
    """The first published value for any of the method/metric aliases, or None."""
    if dataset is None:
        return None
    sub = paper[paper["table"].isin(tables) & (paper["dataset"] == dataset) & (paper["setting"] == setting)]
    for m in methods:
        for k in metrics:
            hit = sub[(sub["method"] == m) & (sub["metric"] == k)]
            if len(hit):
                return float(hit["value"].iloc[0])
    return None


# ---------------------------------------------------------------------------------------- the tables
Extractor = Callable[["Run", "Cell"], dict[str, float]]


def _from_metrics(run: Run, cell: Cell) -> dict[str, float]:
    m = run.results["metrics"]
    out = {}
    for key, val in m.items():
        if key.startswith("test/"):
            out[key[5:]] = float(val)
    if "top1" not in out and "acc" in out:
        out["top1"] = out["acc"]
    return out


@dataclass(frozen=True)
class Cell:
    """One row of a table: which runs fill it and where the paper's number comes from."""

    dataset: str                     # our dataset id (row label)
    method: str                      # our method label
    match: Mapping[str, str]         # the overrides its runs were launched with
    setting: str = ""                # the paper's setting ("minority=1", "n=5", ...)
    paper_dataset: str | None = None
    paper_methods: tuple[str, ...] = ()
    status: str = ""                 # why no run can exist (e.g. "n/a: data absent"); "" when it can run
    label: str = ""                  # shown instead of the dataset id (e.g. "cifar100 [smoke: toy_henon]")


@dataclass
class TableSpec:
    """A table: its cells, metrics, the paper tables its numbers come from, units and notes."""

    name: str
    title: str
    cells: list[Cell]
    metrics: tuple[str, ...]
    paper_tables: tuple[str, ...]
    percent: tuple[str, ...] = ()    # metrics shown in percent (as the paper prints them)
    decimals: int | Mapping[str, int] = 4  # per table, or per metric
    notes: list[str] = field(default_factory=list)
    extract: Extractor = _from_metrics


def _expected_seeds(seeds: str | Sequence[int] | None) -> int | None:
    if seeds is None:
        return None
    if isinstance(seeds, str):
        return len([s for s in seeds.split(",") if s.strip()])
    return len(seeds)


def aggregate(spec: TableSpec, runs: Sequence[Run], paper: pd.DataFrame | None = None,
              status: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per (cell, metric): n seeds, mean, std (sample, ddof=1), the paper's value, ours − paper, status.

    `status` maps a dataset id to the reason its cells could not run (from the run step); it is shown only
    for cells that have no finished run.
    """
    paper = load_paper() if paper is None else paper
    status = dict(status or {})
    rows = []
    for cell in spec.cells:
        chosen = select(runs, cell.match)
        values: dict[str, list[float]] = {m: [] for m in spec.metrics}
        errors = []
        for r in chosen:
            try:
                got = spec.extract(r, cell)
            except (OSError, KeyError, RuntimeError, ValueError) as err:
                errors.append(f"{r.folder}: {err}")
                continue
            for m in spec.metrics:
                v = got.get(m)
                if v is not None and not math.isnan(v):
                    values[m].append(float(v) * (100.0 if m in spec.percent else 1.0))
        if errors:
            log.warning("could not read %d run(s) of %s/%s: %s", len(errors), cell.dataset, cell.method, errors[0])
        stand_in = any(((r.results or {}).get("data") or {}).get("stand_in") for r in chosen)
        label = (cell.label or cell.dataset) + (" [STAND-IN data: not a result]" if stand_in else "")
        if chosen and not errors:
            why = ""
        elif chosen:
            why = "n/a: results unreadable"
        elif incomplete(runs, cell.match):
            why = "n/a: run failed or unfinished"
        else:
            why = cell.status or status.get(cell.dataset, "").split(" (")[0] or "n/a: not run"
        for m in spec.metrics:
            vals = values[m]
            n = len(vals)
            mean = sum(vals) / n if n else math.nan
            std = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0) if n else math.nan
            pv = paper_value(paper, spec.paper_tables, cell.paper_dataset, cell.setting,
                             cell.paper_methods or (cell.method,), PAPER_METRIC.get(m, (m,)))
            rows.append({
                "table": spec.name, "dataset": cell.dataset, "label": label,
                "setting": cell.setting, "method": cell.method, "metric": m, "n_seeds": n,
                "seeds": ",".join(str(r.seed) for r in chosen), "mean": mean, "std": std if n else math.nan,
                "paper": math.nan if pv is None else pv,
                "diff": mean - pv if (pv is not None and n) else math.nan,
                "unit": "%" if m in spec.percent else "", "status": why if not n else "",
            })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ rendering
def _fmt(v: float, d: int) -> str:
    """`d` decimals; two more for small values (arXiv's NLL 0.0407 stays readable at d = 2)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{d + 2 if 0 < abs(v) < 10 ** (1 - d) else d}f}"


def _wide(df: pd.DataFrame, spec: TableSpec, pm: str = "±") -> tuple[list[str], list[list[str]]]:
    has_setting = bool((df["setting"] != "").any())
    header = ["dataset"] + (["setting"] if has_setting else []) + ["method"]
    for m in spec.metrics:
        unit = " (%)" if m in spec.percent else ""
        header += [f"{m}{unit} ours", f"{m} paper", f"{m} Δ"]
    header.append("seeds")
    body = []
    for (_, _, _), g in df.groupby(["label", "setting", "method"], sort=False):
        first = g.iloc[0]
        row = [first["label"]] + ([first["setting"]] if has_setting else []) + [first["method"]]
        for m in spec.metrics:
            d = spec.decimals if isinstance(spec.decimals, int) else int(spec.decimals.get(m, 4))
            r = g[g["metric"] == m].iloc[0]
            if r["n_seeds"] == 0:
                ours = r["status"] or "n/a"
            elif r["n_seeds"] == 1:
                ours = _fmt(r["mean"], d)
            else:
                ours = f"{_fmt(r['mean'], d)} {pm} {_fmt(r['std'], d)}"
            if r["n_seeds"] and math.isnan(r["mean"]):
                ours = "n/a: metric not logged"
            diff = "—" if math.isnan(r["diff"]) else ("+" if r["diff"] >= 0 else "") + _fmt(r["diff"], d)
            row += [ours, _fmt(r["paper"], d), diff]
        row.append(str(int(g["n_seeds"].max())))
        body.append(row)
    return header, body


def to_markdown(df: pd.DataFrame, spec: TableSpec) -> str:
    header, body = _wide(df, spec)
    lines = [f"## {spec.title}", ""] + [f"> {n}" for n in spec.notes] + ([""] if spec.notes else [])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i < 3 else "---:" for i, _ in enumerate(header)) + "|")
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "Δ": r"$\Delta$", "±": r"$\pm$",
        "—": "--", "−": "-"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(df: pd.DataFrame, spec: TableSpec) -> str:
    header, body = _wide(df, spec)
    cols = "l" * (len(header) - 1 - 3 * len(spec.metrics)) + "r" * (3 * len(spec.metrics)) + "r"
    lines = [f"% {spec.title}", *[f"% {n}" for n in spec.notes], r"\begin{tabular}{" + cols + "}", r"\toprule",
             " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, spec: TableSpec, out_dir: str | Path) -> list[Path]:
    """`<out_dir>/<name>.md`, `.tex`, `.csv` (the CSV is long: one row per cell and metric)."""
    out_dir = Path(out_dir)
    paths = [out_dir / f"{spec.name}.{ext}" for ext in ("md", "tex", "csv")]
    atomic_write_text(paths[0], to_markdown(df, spec))
    atomic_write_text(paths[1], to_latex(df, spec))
    atomic_write_text(paths[2], df.to_csv(index=False, float_format="%.6g"))
    return paths


# ------------------------------------------------------------------------------------- table specs
def configs_dir() -> Path:
    """The packaged configs, crt/configs (the checkout's configs/): crt.cli.CONFIGS, not imported from there
    because crt.cli dispatches to crt.report."""
    return Path(__file__).resolve().parents[1] / "configs"


def has_config(group: str, name: str, root: Path | None = None) -> bool:
    return ((root or configs_dir()) / group / f"{name}.yaml").exists()


def _common_notes(seeds: str | Sequence[int] | None) -> list[str]:
    n = _expected_seeds(seeds)
    return [(f"ours: mean ± sample std over {'the' if n is None else n} seeds; paper: the published value; "
            "Δ = ours − paper. Cells without a finished run say why (n/a: ...).")]


def table1_spec(datasets: Sequence[str] = T1_DATASETS, methods: Sequence[str] = T1_METHODS,
                profile: str = "full", seeds: str | Sequence[int] | None = None,
                root: Path | None = None) -> TableSpec:
    """ECRT Table 1 (top-1/top-5/NLL, in percent as printed), macro-F1 (ECRT's F1 table) and the CRT ablation.

    full: the cell of (dataset, method) is `experiment=<dataset>_<method>`; smoke: every dataset row is
    filled from `experiment=smoke_table1 method=<method>` (toy Hénon, tiny sizes), labelled as such.
    """
    if profile not in ("full", "smoke", "scale"):
        raise ConfigError(f"PROFILE={profile!r} is unknown. Fix: use PROFILE=full (the paper's experiments), "
                          "PROFILE=smoke (toy data standing in for every dataset, a minute on a CPU) or PROFILE=scale "
                          "(the runs of scripts/scale_probe.py: full-size data, a cut budget).")
    cells = []
    for d in datasets:
        rows = [(m, "", {}) for m in methods]
        if d == "cifar100" and "ecrt_1p" in methods:  # CRT ablation: pretrain on all classes
            rows.append(("ecrt_1p", "pretrain_all_classes", {"method.pretrain_classes": "all"}))
        for m, setting, extra in rows:
            if profile == "smoke":
                match = {"experiment": "smoke_table1", "method": m, **extra}
                status = "" if has_config("method", m, root) else "n/a: method config absent"
                label = f"{d} [smoke: toy_henon]"
            else:
                match = {"experiment": f"{d}_{m}", **extra, **({"debug": "scale"} if profile == "scale" else {})}
                status = "" if has_config("experiment", f"{d}_{m}", root) else "n/a: no experiment file"
                label = d + (" [scale probe: cut budget]" if profile == "scale" else "")
            pm = PAPER_METHOD.get(m, (m,))
            if setting == "pretrain_all_classes":
                pm = ("ecrt",)
            cells.append(Cell(d, m, match, setting, PAPER_DATASET.get(d), pm, status, label))
    notes = _common_notes(seeds) + [
        ("top1/top5 in percent as the paper prints them (arXiv: the paper's 'acc' in the top1 column); "
        "NLL in nats; macro_f1 is ECRT's F1 table (CIFAR-100 only; its 'ecrt' is our ecrt_mp)."),
        "The row 'ecrt_1p / pretrain_all_classes' is the CRT ablation (encoder pretrained on all classes).",
    ]
    if profile == "smoke":
        notes.insert(0, "SMOKE RUN (PROFILE=smoke): the toy Hénon data at tiny sizes (debug=tiny) stands in for "
                        "every dataset, so every dataset row shows the same runs; only the paper columns are real. "
                        "Not a reproduction: run `make table1` (PROFILE=full) for that.")
    if profile == "scale":
        notes.insert(0, "SCALE PROBE (PROFILE=scale): each cell is `experiment=<dataset>_<method> debug=scale`, the "
                        "real data size with every trained stage cut to 2 epochs of 3 batches (scripts/scale_probe.py). "
                        "It shows the pipeline and this table work at that size; its numbers are not results.")
    return TableSpec({"full": "table1", "smoke": "table1_smoke", "scale": "table1_scale"}[profile],
                     "ECRT Table 1: imbalanced benchmarks" + {"full": "", "smoke": " (SMOKE)", "scale": " (SCALE PROBE)"}[profile],
                     cells, ("top1", "top5", "nll", "macro_f1"), ("T1", "F1", "ABL"),
                     percent=("top1", "top5"), decimals={"top1": 2, "top5": 2, "nll": 2, "macro_f1": 3},
                     notes=notes)


S7_METHODS = ("erm", "ldam", "crt", "ecrt_mp")


def table_s7_spec(methods: Sequence[str] = S7_METHODS, seeds: str | Sequence[int] | None = None,
                  root: Path | None = None, note: str = "") -> TableSpec:
    """CRT Table S7: MNIST with one (digit 0) or five (digits 0-4) minority digits at 1/5 of the majority size."""
    cells = []
    for k in (1, 5):
        for m in methods:
            exp = f"table_s7_{k}_{m}"
            status = "" if has_config("experiment", exp, root) and has_config("method", m, root) \
                else "n/a: method config absent"
            cells.append(Cell("mnist", m, {"experiment": exp}, f"minority={k}", "mnist", (m,), status))
    notes = _common_notes(seeds) + [
        ("Fractions, NLL in nats; minority=1: digit 0 at 1200 training images vs 6000 for the others; "
        "minority=5: digits 0-4 at 1200. The paper reports no ECRT-MP row here (our addition).")]
    if note:
        notes.append(note)
    return TableSpec("table_s7", "CRT Table S7: MNIST with minority digits", cells,
                     ("top1", "nll", "minority_f1", "macro_f1"), ("S7",), decimals=4, notes=notes)


S1_METHODS = ("erm", "crt_noaug", "crt")


def bucket_of(count: int, grid: Sequence[int] = EXTREME_GRID) -> int:
    """The grid value nearest to `count` (boundaries at the midpoints between grid values)."""
    grid = sorted(grid)
    for lo, hi in itertools.pairwise(grid):
        if count <= (lo + hi) / 2:
            return lo
    return grid[-1]


@lru_cache(maxsize=8)
def _test_labels(data_json: str, data_dir: str) -> Any:
    from crt.data import build_split

    return build_split(json.loads(data_json), data_dir).y_test


def _resolve_cache(entry: Mapping[str, Any], stage: str, runs_root: Path | None) -> Path:
    cands = [Path(str(entry.get("cache", "")))]
    if not cands[0].is_absolute():
        cands.append(REPO / cands[0])
    if runs_root is not None:
        cands.append(runs_root.parent / "cache" / stage / str(entry.get("key", "")))
    for c in cands:
        if (c / "outputs.pt").exists():
            return c / "outputs.pt"
    raise FileNotFoundError(f"stage outputs of {stage} not found (looked in {', '.join(map(str, cands))})")


def logits_and_labels(run: Run, runs_root: Path | None = None) -> tuple[Any, Any]:
    """(logits_test, y_test) of a run: the last predicting stage's cached logits and the rebuilt test labels."""
    from crt.cache import load_stage_file

    stages = run.results["stages"]
    order = list(run.config.get("method", {}).get("stages", stages.keys()))
    for stage in reversed(order):
        path = _resolve_cache(stages[stage], stage, runs_root)
        out = load_stage_file(path)
        if "logits_test" in out:
            data = run.config["data"]
            y = _test_labels(json.dumps(data, sort_keys=True), str(run.config.get("paths", {}).get("data_dir", "")))
            return out["logits_test"].float(), y
    raise KeyError("no stage with test logits")


def bucket_metrics(run: Run, grid: Sequence[int] = EXTREME_GRID, runs_root: Path | None = None
                   ) -> dict[int, dict[str, float]]:
    """top-1, top-5 and NLL over the test samples of the classes in each per-class-size bucket (CRT Fig. 6/S1).

    A class's size is its protocol count (training + held-out samples); it falls in the bucket of the
    nearest grid value. Without the cached logits only top-1 (from the per-class accuracies) is available.
    """
    import torch
    import torch.nn.functional as F

    counts = run.results["data"]["counts"]
    bucket = torch.tensor([bucket_of(int(c), grid) for c in counts])
    out: dict[int, dict[str, float]] = {}
    try:
        logits, y = logits_and_labels(run, runs_root)
    except (FileNotFoundError, KeyError) as err:
        log.warning("%s: %s; top-5 and NLL per bucket unavailable", run.folder, err)
        acc = torch.tensor([r["acc"] for r in run.results["per_class"]])
        for n in grid:
            sel = bucket == n
            out[n] = {"top1": float(acc[sel].mean()) if sel.any() else math.nan, "n_classes": int(sel.sum())}
        return out
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    for n in grid:
        sel = (bucket == n)[y]
        if not sel.any():
            out[n] = {"n_classes": 0}
            continue
        lg, yy = logits[sel], y[sel]
        out[n] = {"top1": float((lg.argmax(1) == yy).float().mean()),
                  "top5": float((top5[sel] == yy[:, None]).any(1).float().mean()),
                  "nll": float(F.cross_entropy(lg, yy)), "n_classes": int((bucket == n).sum())}
    return out


def table_s1_spec(seeds: str | Sequence[int] | None = None, runs_root: Path | None = None,
                  grid: Sequence[int] = EXTREME_GRID, note: str = "") -> TableSpec:
    """CRT Table S1 (supplement D.2): extreme classification, metrics per per-class sample size n."""
    cells = []
    for n in grid:
        for m in S1_METHODS:
            cells.append(Cell("toy_extreme", m, {"experiment": f"table_s1_{m}"}, f"n={n}", "toy_extreme", (m,)))

    cache: dict[Path, dict[int, dict[str, float]]] = {}

    def extract(run: Run, cell: Cell) -> dict[str, float]:
        if run.folder not in cache:
            cache[run.folder] = bucket_metrics(run, grid, runs_root)
        return cache[run.folder][int(cell.setting.split("=")[1])]

    notes = _common_notes(seeds) + [
        ("One run per method and seed trains on 1000 classes whose sizes are drawn uniformly from 5..150; "
        "row n reports the test samples (20 per class, balanced) of the classes whose size is nearest to n "
        "(buckets split at the midpoints: 5-7, 8-15, 16-35, 36-62, 63-87, 88-125, 126-150). "
        "top-1/top-5 over all 1000 classes, NLL in nats; fractions. crt_noaug is `method=crt method.augment=none`."),
    ]
    if note:
        notes.append(note)
    return TableSpec("table_s1", "CRT Table S1: extreme classification (toy, 1000 classes)", cells,
                     ("top1", "top5", "nll"), ("S1",), decimals=4, notes=notes, extract=extract)


def read_status(out_dir: str | Path, table: str) -> dict[str, str]:
    f = Path(out_dir) / "status.json"
    if not f.exists():
        return {}
    try:
        return dict(json.loads(f.read_text()).get(table, {}))
    except (OSError, json.JSONDecodeError):
        return {}


def write_status(out_dir: str | Path, table: str, status: Mapping[str, str]) -> None:
    """Remember why cells of `table` could not run (read back when the table is built)."""
    from crt.utils import atomic_write_json

    f = Path(out_dir) / "status.json"
    allst: dict[str, Any] = {}
    if f.exists():
        try:
            allst = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            allst = {}
    allst[table] = dict(status)
    atomic_write_json(f, allst)


# ------------------------------------------------------------------------------------ running cells
def multirun(overrides: Sequence[str], python: str | None = None, dry_run: bool = False) -> int:
    """`crt run -m <overrides>` (python -m crt; finished runs are skipped), in the current folder."""
    import shlex
    import subprocess
    import sys

    cmd = [python or sys.executable, "-m", "crt", "run", "-m", *overrides]
    print("+ " + shlex.join(cmd), flush=True)
    if dry_run:
        return 0
    return subprocess.run(cmd, check=False).returncode


def data_absent(experiment: str, data_dir: str) -> str | None:
    """Why the dataset of `experiment` cannot be read (None when its loader finds the files).

    Composes the experiment as run.py would and calls its loader with downloads off, so a missing dataset
    is found in seconds instead of failing a multirun.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from crt.config import register_resolvers
    from crt.data import get_data_loader, loader_options, takes
    from crt.errors import DataNotFoundError

    register_resolvers()
    with initialize_config_dir(config_dir=str(configs_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", f"paths.data_dir={data_dir}"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    loader = get_data_loader(data)
    kwargs = {**loader_options(data), **({"data_dir": data_dir} if takes(loader, "data_dir") else {})}
    if "download" in kwargs:
        kwargs["download"] = False
    try:
        loader(**kwargs)
    except (DataNotFoundError, FileNotFoundError) as err:
        first = str(err).split(". ")[0]
        return f"n/a: data absent ({first})"
    return None


def launch_cells(name: str, exps: Sequence[str], common: Sequence[str], data_dir: str, status: dict[str, str],
                 dry_run: bool = False) -> int:
    """One multirun over the experiment files `exps` of dataset `name`, unless there are none or their data is
    absent (then `status[name]` says why). Returns 1 if the multirun failed, else 0."""
    if not exps:
        status[name] = "n/a: no experiment file"
        return 0
    why = data_absent(exps[0], data_dir)
    if why:
        print(f"skip {name}: {why}", flush=True)
        status[name] = why
        return 0
    return int(multirun([f"experiment={','.join(exps)}", *common], dry_run=dry_run) != 0)


def run_table1(datasets: Sequence[str], methods: Sequence[str], seeds: str, profile: str, output_dir: str,
               data_dir: str, extra: Sequence[str] = (), dry_run: bool = False) -> tuple[dict[str, str], int]:
    """Launch every Table 1 cell as Hydra multiruns (one per dataset).

    Returns ({dataset: why it did not run}, number of multiruns that failed).
    """
    common = [f"seed={seeds}", f"paths.output_dir={output_dir}", f"paths.data_dir={data_dir}", *extra]
    if profile == "scale":  # the probe's cut budget on the CPU (trainer is not part of a cell's match)
        common = ["debug=scale", "trainer=cpu", *common]
    status: dict[str, str] = {}
    failed = 0
    if profile == "smoke":
        have = [m for m in methods if has_config("method", m)]
        if have:
            failed += multirun(["experiment=smoke_table1", f"method={','.join(have)}", *common], dry_run=dry_run) != 0
            if "cifar100" in datasets and "ecrt_1p" in have:
                failed += multirun(["experiment=smoke_table1", "method=ecrt_1p", "method.pretrain_classes=all",
                                    *common], dry_run=dry_run) != 0
        return status, failed
    for d in datasets:
        exps = [f"{d}_{m}" for m in methods if has_config("experiment", f"{d}_{m}")]
        failed += launch_cells(d, exps, common, data_dir, status, dry_run)
        if d == "cifar100" and d not in status and f"{d}_ecrt_1p" in exps:
            failed += multirun([f"experiment={d}_ecrt_1p", "method.pretrain_classes=all", *common],
                               dry_run=dry_run) != 0
    return status, failed


def run_cells(table: str, experiments: Sequence[str], dataset: str, seeds: str, output_dir: str, data_dir: str,
              extra: Sequence[str] = (), dry_run: bool = False) -> tuple[dict[str, str], int]:
    """Launch the experiments of a supplement table as one multirun (after a data check).

    Returns ({dataset: why it did not run}, number of multiruns that failed).
    """
    have = [e for e in experiments if has_config("experiment", e)]
    if not have:
        return {dataset: "n/a: no experiment file"}, 0
    why = data_absent(have[0], data_dir)
    if why:
        print(f"skip {table}: {why}", flush=True)
        return {dataset: why}, 0
    rc = multirun([f"experiment={','.join(have)}", f"seed={seeds}", f"paths.output_dir={output_dir}",
                   f"paths.data_dir={data_dir}", *extra], dry_run=dry_run)
    return {}, int(rc != 0)
