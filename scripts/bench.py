"""Benchmark the ECRT-MP pipeline on CIFAR-100-shaped synthetic data: fast path vs naive settings.

Prints, per stage and setting: throughput (samples/s over the training epochs), wall time, the time
projected at the paper-scale epoch budget, and peak GPU memory; then the speed-up of fast over naive.

  python scripts/bench.py                       # GPU if present (full CIFAR-100 size), else CPU tiny size
  python scripts/bench.py --size tiny --device cpu --epochs 1
  python scripts/bench.py --no-naive --compile  # fast path only, with torch.compile

Fast: bf16 autocast (GPU), channels_last, fused Adam, batch 512 (lr scaled from 128), batched critic.
Naive: fp32, eager, batch 128, contiguous NCHW, the critic as a Python loop over dimensions.
Images are uint8 tensors on the device with on-device crop/flip in both settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crt.config import register_resolvers  # noqa: E402
from crt.pipeline import run  # noqa: E402

# Epochs per stage taken as the paper-scale budget for the projection (the papers do not list all of them;
# these are the budgets of our CIFAR-100 experiment files).
PAPER_EPOCHS = {"pretrain": 200, "demix": 100, "refine": 100}
SIZES = {  # per-class sizes: majority, test; step ratio 0.1 gives the minority
    "full": {"data.n_per_class": 500, "data.n_max": 500, "data.n_test_per_class": 100},
    "tiny": {"data.n_per_class": 10, "data.n_max": 10, "data.n_test_per_class": 2, "data.num_classes": 20,
             "+data.encoder.width": 16},
}


def settings(fast: bool, device: str, compile_: bool) -> list[str]:
    gpu = device == "cuda"
    common = [f"trainer={'gpu' if gpu else 'cpu'}", "stage.pretrain.lr_ref_batch=128", "stage.refine.lr_ref_batch=128"]
    if fast:
        return common + [
            f"trainer.precision={'bf16-mixed' if gpu else '32-true'}", f"trainer.fused={str(gpu).lower()}",
            f"trainer.compile={str(compile_).lower()}", "+data.encoder.channels_last=true",
            "stage.pretrain.batch_size=512", "stage.demix.batch_size=512", "stage.refine.batch_size=512",
            "stage.demix.critic.impl=batched",
        ]
    return common + [
        "trainer.precision=32-true", "trainer.fused=false", "trainer.compile=false",
        "+data.encoder.channels_last=false", "stage.pretrain.batch_size=128", "stage.demix.batch_size=128",
        "stage.refine.batch_size=128", "stage.demix.critic.impl=loop",
    ]


def bench_once(name: str, overrides: list[str], out: Path) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    cfg.paths.output_dir = str(out)
    cfg.paths.cache_dir = str(out / "cache")
    t0 = time.perf_counter()
    res = run(cfg, run_dir=out / name, progress=False)
    res["wall"] = time.perf_counter() - t0
    return res


def rows_of(name: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for stage, st in res["stages"].items():
        sel = st.get("selected") or {}
        epochs = int(sel.get("epochs_run") or 0)
        n = int(st.get("n_train") or 0)
        fit = float(sel.get("fit_seconds") or 0.0)
        thr = epochs * n / fit if epochs and fit > 0 else float("nan")  # training + held-out evaluation time
        proj = st["seconds"] / epochs * PAPER_EPOCHS[stage] if epochs and stage in PAPER_EPOCHS else st["seconds"]
        rows.append({"setting": name, "stage": stage, "epochs": epochs, "samples_per_s": thr,
                     "seconds": st["seconds"], "projected_s": proj, "peak_gpu_mb": st.get("peak_gpu_mb")})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--size", choices=list(SIZES), default=None, help="full (CIFAR-100) or tiny; default by device")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per trained stage")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive settings")
    ap.add_argument("--compile", action="store_true", help="torch.compile the encoder in the fast setting")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    size = args.size or ("full" if device == "cuda" else "tiny")
    register_resolvers()
    base = ["data=synthetic_images", "method=ecrt_mp", "logger=none", "cache=false", "skip_completed=false",
            *(f"{k}={v}" for k, v in SIZES[size].items()),
            *(f"stage.{s}.epochs={args.epochs}" for s in ("pretrain", "demix", "refine")),
            *(f"stage.{s}.patience=null" for s in ("pretrain", "demix", "refine"))]
    rows: list[dict[str, Any]] = []
    totals: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="crt-bench-") as tmp:
        for name, fast in (("fast", True), ("naive", False)):
            if name == "naive" and args.no_naive:
                continue
            res = bench_once(name, base + settings(fast, device, args.compile), Path(tmp))
            r = rows_of(name, res)
            rows += r
            totals[name] = sum(x["projected_s"] for x in r)
            print(f"[bench] {name}: top1 {res['metrics']['test/top1']:.3f}, wall {res['wall']:.1f} s", flush=True)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none"
    print(f"\nECRT-MP on synthetic CIFAR-100-shaped data ({size}); device {device} ({gpu}); torch {torch.__version__}; "
          f"{args.epochs} epochs per stage; projection at {PAPER_EPOCHS}")
    print(f"{'setting':<8}{'stage':<10}{'epochs':>7}{'samples/s':>12}{'wall s':>9}{'projected s':>13}{'peak MB':>9}")
    for x in rows:
        mb = f"{x['peak_gpu_mb']:.0f}" if x["peak_gpu_mb"] is not None else "-"
        print(f"{x['setting']:<8}{x['stage']:<10}{x['epochs']:>7}{x['samples_per_s']:>12.0f}{x['seconds']:>9.2f}"
              f"{x['projected_s']:>13.1f}{mb:>9}")
    for name, t in totals.items():
        print(f"whole pipeline, {name}: {t:.1f} s projected at the paper budget")
    if "naive" in totals and totals.get("fast"):
        print(f"speed-up fast / naive: {totals['naive'] / totals['fast']:.2f}x")
        for st in ("pretrain", "demix", "refine"):
            f = next((x for x in rows if x["setting"] == "fast" and x["stage"] == st), None)
            n = next((x for x in rows if x["setting"] == "naive" and x["stage"] == st), None)
            if f and n and n["samples_per_s"] == n["samples_per_s"] and n["samples_per_s"] > 0:
                print(f"  {st}: {f['samples_per_s'] / n['samples_per_s']:.2f}x samples/s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "totals": totals, "device": device, "size": size}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
