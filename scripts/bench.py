"""Benchmark the pipeline: steady-state throughput per stage and the time projected at the full epoch budget.

  python scripts/bench.py --experiment cifar100_ecrt_mp          # exactly what that experiment file runs
  python scripts/bench.py                                        # ECRT-MP, fast vs naive settings
  python scripts/bench.py --size tiny --device cpu --epochs 2    # CI size (tests/test_bench.py)
  python scripts/bench.py --gpu-check --write docs/gpu.md        # make gpu-check: the GPU figures (<= 8 min)
  python scripts/bench.py --gpu-check --dry --write /tmp/gpu.md  # the same steps at tiny size on the CPU (CI)
  python scripts/bench.py --checkpoint-cost                      # what one mid-stage checkpoint costs, old vs new

What is measured:
- every setting runs the whole pipeline (pretrain, demix, augment, refine) for `--epochs` epochs per trained
  stage, early stopping off; one untimed warm-up run of the first setting comes first (CUDA start-up, cuDNN
  autotuning, imports), then the settings alternate for `--repeats` rounds (A B, B A, ...) and the median is
  reported;
- per stage: steady-state samples/s (training samples over the training part of the epochs after the first
  `--warmup-epochs`), the projected time at the full budget = fixed costs (set-up, feature extraction) + the
  warm-up epochs as measured + the remaining epochs at the steady epoch time (with validation), and peak GPU
  memory;
- `--experiment NAME` composes configs/experiment/NAME.yaml as `python run.py experiment=NAME` does and projects
  its own epoch budget. Its dataset is replaced by synthetic images of the same shape and class sizes
  (crt/data/synthetic.py; no download) unless `--real-data`. `--size tiny` shrinks classes and network for CI.
  On a machine without a GPU the experiment's `trainer.accelerator` becomes cpu (everything else is kept).

Without --experiment the settings are `fast` (bf16 autocast on GPU, channels_last, fused Adam, batch 512 with
the learning rate scaled from 128, batched critic) and `naive` (fp32, batch 128, NCHW, per-dimension critic
loop), on CIFAR-100-shaped synthetic images; the projection uses the paper's budget (200/100/100 epochs).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crt.config import register_resolvers  # noqa: E402
from crt.pipeline import run  # noqa: E402

PAPER_EPOCHS = {"pretrain": 200, "demix": 100, "refine": 100}  # budget of the papers' CIFAR runs
TRAINED = ("pretrain", "demix", "refine")
SIZES = {  # per-class sizes: majority, test; step ratio 0.1 gives the minority
    "full": {"data.n_per_class": 500, "data.n_max": 500, "data.n_test_per_class": 100},
    "tiny": {"data.n_per_class": 20, "data.n_max": 20, "data.n_test_per_class": 2, "data.num_classes": 20,
             "data.encoder.width": 16},
}
NAIVE = ["trainer.precision=32-true", "trainer.fused=false", "trainer.compile=false", "data.encoder.channels_last=false",
         "stage.pretrain.batch_size=128", "stage.demix.batch_size=128", "stage.refine.batch_size=128",
         "stage.pretrain.lr_ref_batch=128", "stage.refine.lr_ref_batch=128", "stage.demix.critic.impl=loop"]


def fast_settings(device: str, compile_: bool) -> list[str]:
    gpu = device == "cuda"
    return [f"trainer.precision={'bf16-mixed' if gpu else '32-true'}", f"trainer.fused={str(gpu).lower()}",
            f"trainer.compile={'reduce-overhead' if compile_ else 'false'}", "data.encoder.channels_last=true",
            "stage.pretrain.batch_size=512", "stage.demix.batch_size=512", "stage.refine.batch_size=512",
            "stage.pretrain.lr_ref_batch=128", "stage.refine.lr_ref_batch=128", "stage.demix.critic.impl=batched"]


def _set(cfg: Any, dotted: str, value: Any) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    with open_dict(node):
        node[leaf] = value


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(text, text)


def compose_setting(base: list[str], edits: list[str], out: Path) -> Any:
    """The config `python run.py <base>` would see, then `edits` (key=value) applied on top (keys may be new)."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=base)
    for edit in edits:
        key, _, value = edit.partition("=")
        _set(cfg, key, _value(value))
    if any(e.startswith("data.name=") for e in edits):
        _drop_unread_data_keys(cfg)
    _set(cfg, "paths.output_dir", str(out))
    _set(cfg, "paths.cache_dir", str(out / "cache"))
    return cfg


def _drop_unread_data_keys(cfg: Any) -> None:
    """After swapping the dataset (e.g. CIFAR-100 -> synthetic images of its shape): drop the data keys only the
    original loader reads (download, ...), which the new one would reject."""
    from dataclasses import fields

    from crt.config import METHOD_DEFAULT_KEYS, STAGE_DATA_KEYS, Protocol
    from crt.registry import DATASETS

    entry = DATASETS.entry(str(cfg.data.name), "data.name")
    known = {f.name for f in fields(entry.options)} | {f.name for f in fields(Protocol)}
    known |= set(STAGE_DATA_KEYS) | set(METHOD_DEFAULT_KEYS)
    with open_dict(cfg.data):
        for k in [k for k in cfg.data if k not in known]:
            del cfg.data[k]


def bench_once(cfg: Any, run_dir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = run(cfg, run_dir=run_dir, progress=False)
    res["wall"] = time.perf_counter() - t0
    return res


def stage_rows(name: str, res: dict[str, Any], budget: dict[str, int], warmup: int) -> list[dict[str, Any]]:
    rows = []
    for stage, st in res["stages"].items():
        sel = st.get("selected") or {}
        epoch_s, train_s = sel.get("epoch_s") or [], sel.get("train_s") or []
        n = int(st.get("n_train") or 0)
        row = {"setting": name, "stage": stage, "epochs": len(epoch_s), "seconds": st["seconds"],
               "samples_per_s": float("nan"), "projected_s": st["seconds"], "peak_gpu_mb": st.get("peak_gpu_mb"),
               "steady_epochs": 0, "epoch_s": epoch_s, "train_s": train_s}
        if epoch_s and stage in budget:
            w = warmup if len(epoch_s) > warmup else 0  # too few epochs: no warm-up can be excluded
            steady_epoch, steady_train = epoch_s[w:], train_s[w:]
            fixed = max(0.0, st["seconds"] - sum(epoch_s))
            per_epoch = statistics.fmean(steady_epoch)
            row.update(samples_per_s=n * len(steady_train) / sum(steady_train) if sum(steady_train) > 0 else float("nan"),
                       projected_s=fixed + sum(epoch_s[:w]) + max(0, budget[stage] - w) * per_epoch,
                       steady_epochs=len(steady_epoch), fixed_s=fixed, steady_epoch_s=per_epoch)
        rows.append(row)
    return rows


def run_order(names: list[str], repeats: int) -> list[tuple[int, str]]:
    """(round, setting) in the order they run: the settings alternate, reversed every other round (A B, B A, ...)."""
    return [(r, n) for r in range(repeats) for n in (names if r % 2 == 0 else names[::-1])]


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (setting, stage): the median over repeats of throughput and projection."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key in dict.fromkeys((r["setting"], r["stage"]) for r in rows):
        group = [r for r in rows if (r["setting"], r["stage"]) == key]
        row = dict(group[0])
        for k in ("samples_per_s", "projected_s", "seconds"):
            vals = [r[k] for r in group if r[k] == r[k]]
            row[k] = statistics.median(vals) if vals else float("nan")
        mbs = [r["peak_gpu_mb"] for r in group if r["peak_gpu_mb"] is not None]
        row["peak_gpu_mb"] = max(mbs) if mbs else None
        row["repeats"] = len(group)
        out[key] = row
    return list(out.values())


GPU_EXPERIMENT = "cifar100_ecrt_mp"


def _agreement(device: str) -> dict[str, float]:
    """bf16 autocast against fp32 on the experiment's ResNet-18 encoder + head, one batch of CIFAR-shaped inputs."""
    from crt.models import build_encoder
    from crt.models.mlp import build_predictor

    torch.manual_seed(0)
    net = torch.nn.Sequential(build_encoder({"name": "resnet18_cifar"}, 3072, 32), build_predictor(32, 100, [64]))
    net = net.to(device).eval()
    x = torch.rand(256, 3, 32, 32, device=device)
    with torch.no_grad():
        ref = net(x).float()
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            low = net(x).float()
    return {"max_abs_diff": float((low - ref).abs().max()), "rel_diff": float((low - ref).norm() / ref.norm()),
            "argmax_agreement": float((low.argmax(1) == ref.argmax(1)).float().mean())}


def _nccl_start(device: str) -> str:
    """A one-process DDP group (NCCL on a GPU, gloo on the CPU): init, all_reduce, barrier, destroy."""
    import socket

    import torch.distributed as dist

    backend = "nccl" if device == "cuda" else "gloo"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.perf_counter()
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        t = torch.ones(4, device=device)
        dist.all_reduce(t)
        dist.barrier()
        ok = bool(t.sum().item() == 4)
    finally:
        dist.destroy_process_group()
    return f"{backend}: init + all_reduce + barrier {'ok' if ok else 'WRONG RESULT'} in {time.perf_counter() - t0:.2f} s"


def gpu_check(dry: bool, write: Path | None, epochs: int) -> int:
    """`make gpu-check`: device, per-stage throughput of cifar100_ecrt_mp at its real shapes eager vs compiled
    (CUDA graphs), a 1-epoch pipeline under trainer=gpu, bf16 vs fp32 agreement, a one-process DDP start.
    `dry`: the same steps at tiny size on the CPU (the compiled setting eager), figures marked unmeasured."""
    if not dry and not torch.cuda.is_available():
        print("error: no CUDA device here. Fix: run `make gpu-check` on a GPU machine, or add --dry for the CPU "
              "rehearsal (figures unmeasured).", file=sys.stderr)
        return 2
    device = "cpu" if dry else "cuda"
    register_resolvers()
    t_start = time.perf_counter()
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run)"
    lines = [f"- device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"cuDNN {torch.backends.cudnn.version() if device == 'cuda' else '-'}"]
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        lines.append(f"- GPU memory: {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free at start)")
    base = [f"experiment={GPU_EXPERIMENT}", "logger=none", "skip_completed=false", "progress=false",
            *(f"stage.{s}.patience=null" for s in TRAINED)]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        exp = compose(config_name="config", overrides=base[:1])
    edits = ["data.name=synthetic_images", f"data.n_per_class={int(exp.data.get('n_max') or 500)}", "data.n_test_per_class=100"]
    if dry:
        edits += [f"{k}={v}" for k, v in SIZES["tiny"].items()]
        edits += ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto", "trainer.precision=32-true",
                  "trainer.fused=false"]
    # dry: the "compiled" setting stays eager (inductor on a CPU ResNet-18 takes minutes; tests/test_fast_path.py
    # runs the demix and refine steps compiled on the CPU)
    compiled = "trainer.compile=" + ("false" if dry else "reduce-overhead")
    budget = {s: int(exp.stage[s].epochs) for s in TRAINED if s in exp.method.stages}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="crt-gpu-check-") as tmp:
        one = compose_setting(base + [f"stage.{s}.epochs=1" for s in TRAINED], edits, Path(tmp) / "one")
        res = bench_once(one, Path(tmp) / "one-epoch")  # also the warm-up of what follows
        lines.append(f"- 1-epoch pipeline under trainer={'gpu' if not dry else 'cpu'} ({GPU_EXPERIMENT}, synthetic images of "
                     f"its shape): {res['wall']:.1f} s, test/top1 {res['metrics']['test/top1']:.3f} "
                     "(" + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in res["stages"].items()) + ")")
        for setting, extra in (("eager", ["trainer.compile=false"]), ("compiled", [compiled])):
            cfg = compose_setting(base + [f"stage.{s}.epochs={epochs}" for s in TRAINED], edits + extra,
                                  Path(tmp) / setting)
            rows += stage_rows(setting, bench_once(cfg, Path(tmp) / setting), budget, warmup=1)
    agree = _agreement(device)
    lines.append(f"- bf16 autocast vs fp32 (ResNet-18 + head, 256 CIFAR-shaped inputs): max |diff| "
                 f"{agree['max_abs_diff']:.3g}, relative {agree['rel_diff']:.3g}, argmax agreement {agree['argmax_agreement']:.3f}")
    lines.append(f"- one-process DDP start: {_nccl_start(device)}")
    table = ["| stage | eager samples/s | compiled samples/s | speed-up | eager projected s | compiled projected s |",
             "|---|---|---|---|---|---|"]
    for st in TRAINED:
        e = next((r for r in rows if r["setting"] == "eager" and r["stage"] == st), None)
        c = next((r for r in rows if r["setting"] == "compiled" and r["stage"] == st), None)
        if e and c:
            table.append(f"| {st} | {e['samples_per_s']:.0f} | {c['samples_per_s']:.0f} | "
                         f"{c['samples_per_s'] / e['samples_per_s']:.2f}x | {e['projected_s']:.0f} | {c['projected_s']:.0f} |")
    status = ("**Unmeasured**: this is the dry run on a CPU at tiny size (it checks that the steps run); the GPU "
              "figures are written by `make gpu-check` on a GPU machine." if dry else
              f"**Measured** on {name}, {time.strftime('%Y-%m-%d')}, in {time.perf_counter() - t_start:.0f} s.")
    text = "\n".join([
        "# GPU check (`make gpu-check`)", "", status, "",
        f"`python scripts/bench.py --gpu-check`: {GPU_EXPERIMENT} on synthetic images of its real shapes "
        f"(CIFAR-100: 100 classes, 3 x 32 x 32, its class sizes), {epochs} epochs per stage for the throughput "
        f"(first left out), compiled = `{compiled}`, projection at the experiment's budget {budget}.", "",
        *lines, "", *table, ""])
    print(text)
    if write is not None:
        write.parent.mkdir(parents=True, exist_ok=True)
        write.write_text(text)
        print(f"wrote {write}")
    return 0


def checkpoint_cost(repeats: int = 5, interval_s: float = 300.0) -> int:
    """Time one mid-stage checkpoint (model, Adam state, KeepBest's best-weights copy) for the toy's networks and
    CIFAR's ResNet-18 (save, fsync, sha256), and its cost per epoch under the old policy (every epoch) and the new
    one (at most one per `interval_s`), for the epoch times given (the toy's on this CPU, CIFAR's on record for an
    H100, docs: README Performance)."""
    from crt.cache import sha256_file
    from crt.models import build_encoder
    from crt.models.mlp import build_predictor
    from crt.utils import torch_save

    def state(net: torch.nn.Module) -> dict[str, Any]:
        opt = torch.optim.Adam(net.parameters())
        net(torch.randn(8, *shape)).sum().backward()
        opt.step()
        return {"state_dict": net.state_dict(), "optimizer": opt.state_dict(),
                "best": {k: v.clone() for k, v in net.state_dict().items()}}

    def save(obj: Any, path: Path) -> None:  # what StageCheckpoint.save does: write + fsync, then the sha256
        torch_save(obj, path)
        sha256_file(path)

    # epoch seconds: the toy's pretrain epoch on this CPU; CIFAR-100's pretrain epoch on an H100 as projected in
    # issue 21 (0.3-0.4 s; unmeasured until make gpu-check)
    cases = {"toy (MLP 32-32-2 + head)": ((2,), {"name": "mlp"}, 2, 7, 0.094),  # default run, median pretrain epoch
             "CIFAR-100 (ResNet-18 + head)": ((3, 32, 32), {"name": "resnet18_cifar"}, 32, 100, 0.35)}
    print(f"{'networks':<30}{'MiB':>7}{'save ms':>9}{'epoch s':>9}{'before %/epoch':>16}{'now %/epoch':>13}")
    with tempfile.TemporaryDirectory(prefix="crt-ckpt-") as tmp:
        for name, (shape, enc, d, k, epoch_s) in cases.items():
            in_dim = int(torch.tensor(shape).prod())
            net = torch.nn.Sequential(build_encoder(enc, in_dim, d), build_predictor(d, k, [64]))
            obj = state(net)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                save(obj, Path(tmp) / "epoch.ckpt")
                times.append(time.perf_counter() - t0)
            mib = (Path(tmp) / "epoch.ckpt").stat().st_size / 2**20
            cost = statistics.median(times)
            per_epoch_now = cost / max(1.0, interval_s / epoch_s)  # one save per max(1, interval / epoch) epochs
            print(f"{name:<30}{mib:>7.1f}{cost * 1e3:>9.1f}{epoch_s:>9.2f}"
                  f"{100 * cost / epoch_s:>15.1f}%{100 * per_epoch_now / epoch_s:>12.2f}%")
    print(f"(before: a checkpoint every epoch; now: every due epoch at most once per {interval_s:.0f} s; "
          f"median of {repeats})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default=None, help="bench configs/experiment/<name>.yaml as run.py runs it")
    ap.add_argument("--real-data", action="store_true", help="with --experiment: its real dataset, not synthetic")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--size", choices=list(SIZES), default=None, help="full (CIFAR-100 sizes) or tiny; default by device")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per trained stage in every measured run")
    ap.add_argument("--warmup-epochs", type=int, default=1, help="first epochs of each stage left out of the steady state")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of the alternated settings (median reported)")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive settings")
    ap.add_argument("--compile", action="store_true", help="fast setting: trainer.compile=reduce-overhead")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--gpu-check", action="store_true", help="the GPU check (make gpu-check); see the module docstring")
    ap.add_argument("--dry", action="store_true", help="with --gpu-check: tiny sizes on the CPU, figures unmeasured")
    ap.add_argument("--write", type=Path, default=None, help="with --gpu-check: write the report (Markdown) here")
    ap.add_argument("--checkpoint-cost", action="store_true", help="time one mid-stage checkpoint, before vs now")
    args = ap.parse_args(argv)
    if args.checkpoint_cost:
        return checkpoint_cost()
    if args.gpu_check:
        return gpu_check(args.dry, args.write, args.epochs)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    size = args.size or ("full" if device == "cuda" else "tiny")
    register_resolvers()

    # the stage cache on (a fresh one per run), so each run pays what a real run pays: storing the outputs and the
    # mid-stage checkpoints of the default policy (checkpoint_every, checkpoint_interval_s)
    common = ["logger=none", "skip_completed=false", "progress=false",
              *(f"stage.{s}.epochs={args.epochs}" for s in TRAINED), *(f"stage.{s}.patience=null" for s in TRAINED)]
    if args.experiment:
        base = [f"experiment={args.experiment}"]
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            exp = compose(config_name="config", overrides=base)
        budget = {s: int(exp.stage[s].epochs) for s in TRAINED if s in exp.method.stages}
        edits = []
        if not args.real_data:
            edits += ["data.name=synthetic_images", f"data.n_per_class={int(exp.data.get('n_max') or 500)}",
                      "data.n_test_per_class=100"]
        if size == "tiny" and not args.real_data:
            edits += [f"{k}={v}" for k, v in SIZES["tiny"].items()]
        if device == "cpu":
            edits += ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto"]
        settings = [("experiment", edits)] + ([] if args.no_naive else [("naive", edits + NAIVE)])
        title = f"experiment={args.experiment}" + ("" if args.real_data else " on synthetic images of its shape")
    else:
        base = ["data=synthetic_images", "method=ecrt_mp", f"trainer={'gpu' if device == 'cuda' else 'cpu'}"]
        budget = dict(PAPER_EPOCHS)
        edits = [f"{k}={v}" for k, v in SIZES[size].items()]
        settings = [("fast", edits + fast_settings(device, args.compile))]
        settings += [] if args.no_naive else [("naive", edits + NAIVE)]
        title = "ECRT-MP on CIFAR-100-shaped synthetic images"
    base = base + common
    print(f"[bench] {title}: python run.py {' '.join(base)}; then {' '.join(edits) or 'nothing'}", flush=True)

    rows: list[dict[str, Any]] = []
    metrics: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="crt-bench-") as tmp:
        first_name, first_edits = settings[0]
        warm = compose_setting(base, first_edits + [f"stage.{s}.epochs=1" for s in TRAINED], Path(tmp) / "warmup")
        bench_once(warm, Path(tmp) / "warmup")  # untimed: start-up costs do not land on the first setting
        for r, name in run_order([n for n, _ in settings], args.repeats):
            cfg = compose_setting(base, dict(settings)[name], Path(tmp) / f"{name}-{r}")
            res = bench_once(cfg, Path(tmp) / f"{name}-{r}")
            rows += [dict(x, round=r) for x in stage_rows(name, res, budget, args.warmup_epochs)]
            metrics.setdefault(name, []).append(res["metrics"]["test/bal_acc"])
            print(f"[bench] round {r + 1} {name}: test/bal_acc {res['metrics']['test/bal_acc']:.3f}, "
                  f"wall {res['wall']:.1f} s", flush=True)
    table = median_rows(rows)
    totals = {name: sum(x["projected_s"] for x in table if x["setting"] == name) for name, _ in settings}
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none"
    print(f"\n{title} ({size}); device {device} ({gpu}); torch {torch.__version__}; {args.epochs} epochs per stage, "
          f"first {args.warmup_epochs} left out of the steady state; {args.repeats} round(s), median; "
          f"projection at {budget} epochs")
    print(f"{'setting':<11}{'stage':<10}{'samples/s':>11}{'wall s':>9}{'projected s':>13}{'peak MB':>9}")
    for x in table:
        mb = f"{x['peak_gpu_mb']:.0f}" if x["peak_gpu_mb"] is not None else "-"
        print(f"{x['setting']:<11}{x['stage']:<10}{x['samples_per_s']:>11.0f}{x['seconds']:>9.2f}"
              f"{x['projected_s']:>13.1f}{mb:>9}")
    for name, t in totals.items():
        print(f"whole pipeline, {name}: {t:.1f} s projected at the full budget")
    print(f"peak host memory (max RSS of this process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    names = [n for n, _ in settings]
    if len(names) == 2 and totals.get(names[0]):
        a, b = names
        print(f"speed-up {a} / {b}: {totals[b] / totals[a]:.2f}x")
        for st in TRAINED:
            fa = next((x for x in table if x["setting"] == a and x["stage"] == st), None)
            fb = next((x for x in table if x["setting"] == b and x["stage"] == st), None)
            if fa and fb and fb["samples_per_s"] == fb["samples_per_s"] and fb["samples_per_s"] > 0:
                print(f"  {st}: {fa['samples_per_s'] / fb['samples_per_s']:.2f}x samples/s")
    if args.json:
        args.json.write_text(json.dumps({"rows": table, "runs": rows, "totals": totals, "device": device, "size": size,
                                         "budget": budget, "test_bal_acc": metrics, "title": title}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
