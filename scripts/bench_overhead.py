"""What crt's Lightning stages cost over a plain PyTorch loop with the same models, batches, steps and validation.

  python scripts/bench_overhead.py                     # the default run (ECRT-MP, toy Hénon), 3 rounds
  python scripts/bench_overhead.py --rounds 1 --whole  # ... plus the whole process against the plain parts
  python scripts/bench_overhead.py data=toy_ica        # any run.py overrides

How: one untimed warm-up run of the pipeline (cache off) records each trained stage's module as it was built
(initial weights, data, loss, optimizer settings) and how many epochs Lightning ran (early stopping included).
Then, for `--rounds` rounds, alternating which goes first: the pipeline again (each stage's `fit` seconds, from
`selected.fit_seconds`), and a plain loop over a fresh copy of every recorded module: the same `TensorBatches`,
the same loss (`training_step`'s sum, extra stream included), the module's own optimizer and schedule, the
same epochs, validation after every epoch with the same metrics (balanced accuracy and cross-entropy; demix:
its objective and the source MCC probe), and the best held-out epoch's weights kept. Ratios are crt / plain per
stage (medians over rounds); the plain loop's selected metric is printed beside crt's, as a check that the two
trained the same thing.

`--whole` also times `python run.py` (a fresh process, cache off, its own output folder) against the sum of what
a plain script doing the same training needs: `python -c "import torch"`, building the split, the plain loops and
augmentation (crt's stage seconds); crt's evaluation, diagnostics, export and results.json are on its side only.
Not a timed test: figures only. Pin it (`taskset -c 1`) and run nothing else beside it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ("pretrain", "demix", "refine")


def compose_run(overrides: list[str], out: Path) -> Any:
    from crt.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.cache_dir = str(out), str(out / "cache")
        cfg.cache.enabled, cfg.skip_completed, cfg.progress = False, False, False
    return cfg


class Recorder:
    """Wraps `crt.stages.fit`: a copy of every module before it trains, and what `fit` reports."""

    def __init__(self) -> None:
        self.modules: dict[str, Any] = {}
        self.selected: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> Recorder:
        import crt.stages as stages

        self._stages, self._fit = stages, stages.fit

        def fit(ctx: Any, module: Any, stage: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
            self.modules[stage] = copy.deepcopy(module)
            self.selected[stage] = self._fit(ctx, module, stage, *args, **kwargs)
            return self.selected[stage]

        stages.fit = fit
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stages.fit = self._fit


def crt_run(cfg: Any, out: Path) -> tuple[Recorder, dict[str, Any]]:
    from crt.pipeline import run

    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.cache_dir = str(out), str(out / "cache")
    with Recorder() as rec:
        t0 = time.perf_counter()
        result = run(cfg, progress=False)
        result["_wall"] = time.perf_counter() - t0
    return rec, result


def _optimizer(module: Any) -> tuple[torch.optim.Optimizer, Any]:
    opt = module.configure_optimizers()
    if isinstance(opt, dict):
        sched = opt["lr_scheduler"]
        return opt["optimizer"], sched["scheduler"] if isinstance(sched, dict) else sched
    return opt, None


def _bal_acc(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    pred = logits.argmax(1)
    seen = torch.bincount(y, minlength=num_classes)
    hit = torch.bincount(y[pred == y], minlength=num_classes)
    present = seen > 0
    return float((hit[present].float() / seen[present].float()).mean())


def plain_classifier(m: Any, epochs: int, grad_clip: float = 0.0) -> tuple[float, float]:
    """`m` (a ClassifierModule, never attached to a trainer) trained by hand; (seconds, selected metric)."""
    t0 = time.perf_counter()
    opt, sched = _optimizer(m)
    batches, val = m.train_dataloader(), m.val_dataloader()
    num_classes = m.val_bal_acc.num_classes
    selection = "ce" if getattr(m, "_selection", "bal_acc") == "ce" else "bal_acc"
    best, best_state = None, None
    for epoch in range(epochs):
        m.loss_fn.on_epoch(epoch, epochs)
        m.train()
        total = torch.zeros(())
        for x, y, w in batches:
            logits = m.net(x)
            n = m.loss_fn.batch_weight(y)
            loss = (w * m.loss_fn(logits, y)).sum() / n + m.loss_fn.regularizer(m.net, x, logits)
            extra = m._next_extra()
            if extra is not None:
                loss = loss + m.extra_weight * m.loss_fn(m.net(extra[0]), extra[1]).sum() / n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(m.parameters(), grad_clip)
            opt.step()
            total += loss.detach()
        if sched is not None:
            sched.step()
        m.eval()
        with torch.no_grad():
            outs = [(m.net(x) * m.loss_fn.logit_scale, y) for x, y in val]
            logits, y = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
            score = (_bal_acc(logits, y, num_classes) if selection == "bal_acc"
                     else -float(torch.nn.functional.cross_entropy(logits, y)))
            float(torch.nn.functional.cross_entropy(logits, y))  # logged by crt every epoch: computed here too
        if best is None or score > best:
            best, best_state = score, {k: t.detach().clone() for k, t in m.state_dict().items()}
    m.load_state_dict(best_state)
    return time.perf_counter() - t0, abs(best)


def plain_demix(m: Any, epochs: int, grad_clip: float = 0.0) -> tuple[float, float]:
    """`m` (a DemixModule) trained by hand: its objective, validation loss and MCC probe every epoch."""
    from crt.diagnostics import mcc

    t0 = time.perf_counter()
    opt, sched = _optimizer(m)
    batches, val = m.train_dataloader(), m.val_dataloader()
    best, best_state = None, None
    for _ in range(epochs):
        m.train()
        for z, y in batches:
            loss = m.objective(z, y)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(m.parameters(), grad_clip)
            opt.step()
        if sched is not None:
            sched.step()
        m.eval()
        with torch.no_grad():
            v = float(torch.stack([m.objective(z, y)["loss"] for z, y in val]).mean())  # batch mean, as running_mean
            if m.probe is not None:
                mcc(m.flow(m.probe[0])[0], m.probe[1])
        if best is None or v < best:
            best, best_state = v, {k: t.detach().clone() for k, t in m.state_dict().items()}
    m.load_state_dict(best_state)
    return time.perf_counter() - t0, best


def plain_stages(rec: Recorder, grad_clip: dict[str, float]) -> dict[str, tuple[float, float]]:
    out = {}
    for stage in TRAINED:
        if stage not in rec.modules:
            continue
        m = copy.deepcopy(rec.modules[stage])
        epochs = int(rec.selected[stage]["epochs_run"])
        fn = plain_demix if stage == "demix" else plain_classifier
        out[stage] = fn(m, epochs, grad_clip.get(stage, 0.0))
    return out


def whole(overrides: list[str], out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides, f"paths.output_dir={out}",
                    "cache.enabled=false", "skip_completed=false"], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def torch_import() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="run.py overrides (default: the default run)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--whole", action="store_true", help="also `python run.py` against the plain script's parts")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="crt-overhead-"))
    cfg = compose_run(args.overrides, tmp / "warm")
    from crt.config import validate

    run_cfg = validate(cfg)
    grad_clip = {s: float(getattr(getattr(run_cfg.stages.get(s), "train", None), "grad_clip", 0.0) or 0.0)
                 for s in TRAINED if s in run_cfg.stages}
    rec, _ = crt_run(cfg, tmp / "warm")  # warm-up: imports, first-touch allocations; records the modules
    for stage, m in rec.modules.items():  # what selects the classifier stages (bal_acc or ce)
        m._selection = rec.selected[stage]["monitor"].rsplit("/", 1)[-1]
    times: dict[str, dict[str, list[float]]] = {s: {"crt": [], "plain": []} for s in rec.modules}
    picked: dict[str, dict[str, float]] = {}
    wholes: list[float] = []
    for r in range(args.rounds):
        order = ("crt", "plain") if r % 2 == 0 else ("plain", "crt")
        for which in order:
            if which == "crt":
                rec_r, result = crt_run(cfg, tmp / f"round{r}")
                for s, sel in rec_r.selected.items():
                    times[s]["crt"].append(float(sel["fit_seconds"]))
                    picked.setdefault(s, {})["crt"] = float(sel["best"])
            else:
                for s, (secs, best) in plain_stages(rec, grad_clip).items():
                    times[s]["plain"].append(secs)
                    picked.setdefault(s, {})["plain"] = best
        if args.whole:
            wholes.append(whole(args.overrides, tmp / f"whole{r}"))
    print(f"crt / plain loop, {args.rounds} rounds (medians), torch threads {torch.get_num_threads()}")
    print(f"{'stage':<10}{'epochs':>7}{'crt s':>9}{'plain s':>9}{'ratio':>8}   selected (crt | plain)")
    crt_sum = plain_sum = 0.0
    for s in times:
        c, p = statistics.median(times[s]["crt"]), statistics.median(times[s]["plain"])
        crt_sum, plain_sum = crt_sum + c, plain_sum + p
        print(f"{s:<10}{rec.selected[s]['epochs_run']:>7}{c:>9.2f}{p:>9.2f}{c / p:>8.2f}   "
              f"{picked[s]['crt']:.4f} | {picked[s]['plain']:.4f}")
    print(f"{'trained':<10}{'':>7}{crt_sum:>9.2f}{plain_sum:>9.2f}{crt_sum / plain_sum:>8.2f}")
    if args.whole:
        from crt.data import build_split

        t0 = time.perf_counter()
        build_split(cfg.data, str(cfg.paths.data_dir))
        t_data = time.perf_counter() - t0
        t_torch = statistics.median(torch_import() for _ in range(3))
        aug = float(result["stages"]["augment"]["seconds"]) if "augment" in result.get("stages", {}) else 0.0
        plain_whole = t_torch + t_data + plain_sum + aug
        w = statistics.median(wholes)
        print(f"whole process: python run.py {w:.2f} s; plain parts {plain_whole:.2f} s (import torch {t_torch:.2f}, "
              f"split {t_data:.2f}, loops {plain_sum:.2f}, augment {aug:.2f}); ratio {w / plain_whole:.2f}")


if __name__ == "__main__":
    main()
