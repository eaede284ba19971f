"""Projected GPU time of each Table 1 cell (ECRT-MP), from the FLOPs of one training step at the real shapes.

    python scripts/project_gpu.py                         # the five Table 1 datasets, markdown to stdout
    python scripts/project_gpu.py --tflops 250 --floor-ms 11

For each trained stage the experiment's own networks are built from its validated config at the dataset's
real input size and class count, and one training step (forward and backward of the stage's loss, at the
stage's batch size) is counted with `torch.utils.flop_counter.FlopCounterMode` on the CPU. The projected time
of a step is max(FLOPs / achieved rate, a per-step floor (launch-bound eager steps)); the stage's time is that times its steps per
epoch (its real training-set size over its batch size) times its epochs. Evaluation, diagnostics and data
loading are left out. Both constants are assumptions, printed with the table: until `make gpu-check`
measures them on a GPU, every figure here is PROJECTED, not measured.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

# Real training-set sizes after each experiment's protocol (from scripts/scale_probe.py runs on the
# full-size stand-ins, results.json data.n_train) and input sizes; the refine stage adds the augmented minority.
SHAPES = {
    "cifar100": {"n_train": 22000, "in": (3, 32, 32), "classes": 100},
    "cifar100_r001": {"n_train": 20200, "in": (3, 32, 32), "classes": 100},
    "tinyimagenet": {"n_train": 39600, "in": (512,), "classes": 200},
    "inat2019": {"n_train": 212175, "in": (2048,), "classes": 1010},
    "arxiv": {"n_train": 102394, "in": (768,), "classes": 152},
}


def step_flops(fn) -> int:
    """FLOPs of fn() (which runs a forward pass and returns a scalar loss) plus its backward pass."""
    with FlopCounterMode(display=False) as counter:
        fn().backward()
    return int(counter.get_total_flops())


def project(experiment: str, shape: dict, configs_dir: str) -> dict[str, dict[str, float]]:
    from hydra import compose, initialize_config_dir

    from crt.config import register_resolvers, validate
    from crt.models import build_encoder, build_maf
    from crt.models.mlp import build_predictor
    from crt.registry import as_dict
    from crt.stages.modules import DemixData, DemixModule, DemixObjective

    register_resolvers()
    with initialize_config_dir(config_dir=configs_dir, version_base="1.3"):
        rc = validate(compose("config", overrides=[f"experiment={experiment}_ecrt_mp"]))
    k, dims = shape["classes"], shape["in"]
    in_dim = math.prod(dims)
    out: dict[str, dict[str, float]] = {}
    pre = rc.stages["pretrain"]
    enc = build_encoder({"name": pre.encoder.name, **as_dict(pre.encoder.options)}, in_dim, pre.feature_dim)
    head = build_predictor(pre.feature_dim, k, list(pre.head_hidden))
    b = pre.train.batch_size
    x = torch.randn(b, *dims) if len(dims) > 1 else torch.randn(b, in_dim)
    y = torch.randint(0, k, (b,))
    out["pretrain"] = {"flops": step_flops(lambda: torch.nn.functional.cross_entropy(head(enc(x)), y)),
                       "batch": b, "epochs": pre.train.epochs}
    dm = rc.stages["demix"]
    f = dm.train.flow
    flow = build_maf(dm.feature_dim, f.blocks, f.hidden, f.made_layers, f.batch_norm)
    b = dm.train.batch_size
    z, y = torch.randn(b, dm.feature_dim), torch.randint(0, k, (b,))
    module = DemixModule(flow, k, DemixData(train=(z, y), val=(z, y)),
                         DemixObjective(loss=dm.loss, prior=dm.prior, rho=dm.rho, critic=dm.train.critic))
    out["demix"] = {"flops": step_flops(lambda: module.objective(z, y)["loss"]), "batch": b,
                    "epochs": dm.train.epochs}
    rf = rc.stages["refine"]
    b = rf.train.batch_size
    pred = build_predictor(dm.feature_dim, k, list(rf.predictor_hidden))
    s, y = torch.randn(b, dm.feature_dim), torch.randint(0, k, (b,))
    out["refine"] = {"flops": step_flops(lambda: torch.nn.functional.cross_entropy(pred(s), y)), "batch": b,
                     "epochs": rf.train.epochs}
    return out


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tflops", type=float, default=200.0,
                    help="assumed achieved bf16 TFLOP/s of one H100 on these steps (default 200, ~20%% of peak)")
    ap.add_argument("--floor-ms", type=float, default=11.0,
                    help="assumed demix per-step floor in ms (default 11: an eager demix step is launch-bound, "
                         "issue 21's figure; ~1.5 with CUDA graphs)")
    ap.add_argument("--classifier-floor-ms", type=float, default=3.0,
                    help="assumed per-step floor of the pretrain and refine steps in ms (default 3)")
    ap.add_argument("--datasets", default=",".join(SHAPES))
    args = ap.parse_args(argv)
    configs = str(Path(__file__).resolve().parents[1] / "configs")
    torch.manual_seed(0)
    print(f"PROJECTED, not measured: {args.tflops:g} TFLOP/s achieved, per-step floors {args.floor_ms:g} ms (demix) "
          f"and {args.classifier_floor_ms:g} ms (pretrain, refine): assumptions until `make gpu-check` measures them.\n")
    print("| experiment | stage | GFLOP/step | steps/epoch | epochs | projected s |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.datasets.split(","):
        shape = SHAPES[name]
        total = 0.0
        for stage, r in project(name, shape, configs).items():
            steps = max(1, shape["n_train"] // r["batch"])
            floor = (args.floor_ms if stage == "demix" else args.classifier_floor_ms) / 1000
            sec = steps * r["epochs"] * max(r["flops"] / (args.tflops * 1e12), floor)
            total += sec
            print(f"| {name}_ecrt_mp | {stage} | {r['flops'] / 1e9:.1f} | {steps} | {r['epochs']} | {sec:.0f} |")
        print(f"| {name}_ecrt_mp | **all trained stages** | | | | **{total:.0f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
