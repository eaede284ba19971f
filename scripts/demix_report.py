"""Does demix recover the sources? Table and figure from the `diagnostics` of finished runs.

    python scripts/demix_report.py --runs outputs/demix/runs --out outputs/demix

Reads every results.json under --runs, prints (and writes <out>/demix_mcc.md) one row per run: dataset, the
run folder's overrides, MCC (Pearson, Spearman) of s and of z against the true sources (test split),
within-class |corr| and distance correlation of s, z and the true sources, and the demix epoch it selected;
draws <out>/demix_mcc_by_epoch.{png,pdf}: MCC of s on the held-out split after every demix epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

COLS = [("mcc_s", "MCC s"), ("mcc_z", "MCC z"), ("mcc_spearman_s", "Spearman s"), ("mcc_spearman_z", "Spearman z"),
        ("within_abs_corr_s", "|corr| s"), ("within_abs_corr_z", "|corr| z"), ("within_abs_corr_true", "|corr| true"),
        ("within_dcor_s", "dCor s"), ("within_dcor_z", "dCor z"), ("within_dcor_true", "dCor true")]


# Overrides that change where or how a run is made, not what it computes: never part of a row's label.
RUN_ONLY = {"seed", "progress", "logger", "skip_completed", "paths.output_dir", "paths.data_dir", "cache.allow_other_code"}
COMMON = RUN_ONLY | {"method", "stage.pretrain.epochs", "stage.refine.epochs", "stage.demix.epochs"}  # the same in every run


def run_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of a run: .hydra/overrides.yaml, else the folder name (long names are hashed)."""
    f = run_dir / ".hydra" / "overrides.yaml"
    if f.exists():
        import yaml

        return [str(o) for o in yaml.safe_load(f.read_text()) or []]
    return run_dir.parent.name.split(",")


def load(root: Path) -> list[dict]:
    rows = []
    for p in sorted(root.rglob("results.json")):  # run folders are named by their overrides (hydra dir config)
        r = json.loads(p.read_text())
        d = r.get("diagnostics") or {}
        if "mcc_s" not in d:
            continue
        sel = (r["stages"].get("demix") or {}).get("selected") or {}
        overrides = dict(kv.split("=", 1) for kv in run_overrides(p.parent) if "=" in kv)
        dataset = overrides.pop("data", r["dataset"])  # the data config (toy_henon_identity is a toy_henon variant)
        variant = ", ".join(f"{k}={v}" for k, v in overrides.items() if k not in COMMON) or "default"
        epochs = (((r.get("config") or {}).get("stage") or {}).get("demix") or {}).get("epochs")
        rows.append({"dataset": dataset, "variant": variant, "seed": r["seed"], **d, "epochs": epochs,
                     "best_epoch": sel.get("best_epoch", sel.get("epoch"))})
    return rows


def markdown(rows: list[dict]) -> str:
    head = ["dataset", "variant", "seed", "demix epochs", *[c[1] for c in COLS], "sel. epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else "" for k, _ in COLS]
        lines.append("| " + " | ".join([r["dataset"], r["variant"].replace("|", "/"), str(r["seed"]),
                                        str(r.get("epochs", "")), *vals,
                                        str(r.get("best_epoch", ""))]) + " |")
    return "\n".join(lines)


def figure(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crt.report.figures import save

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for r in rows:
            if r["dataset"] == ds and r.get("mcc_s_val_by_epoch"):
                h = r["mcc_s_val_by_epoch"]
                ax.plot(range(1, len(h) + 1), h, label=f"{r['variant'][:60]} s{r['seed']}")
                ax.axhline(r["mcc_z"], color="grey", lw=0.5, ls=":")
        ax.set(title=f"{ds} (dotted: MCC of z)", xlabel="demix epoch", ylabel="MCC of s, held-out split",
               ylim=(0, 1))
        ax.legend(fontsize=5)
    return save(fig, out, "demix_mcc_by_epoch")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="outputs/demix/runs")
    ap.add_argument("--out", default="outputs/demix")
    args = ap.parse_args(argv)
    rows = load(Path(args.runs))
    if not rows:
        print(f"no results.json with diagnostics/mcc_s under {args.runs}", file=sys.stderr)
        return 1
    md = markdown(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from crt.utils import atomic_write_text

    atomic_write_text(out / "demix_mcc.md", md + "\n")
    print(md)
    print("wrote", out / "demix_mcc.md", *figure(rows, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
