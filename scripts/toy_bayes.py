"""What the best classifiers can do on the Hénon toy: the Bayes rule, and LDAM's population optimum.

The toy's generative model is known (crt/data/toy.py): x = A z + ε with z the standardised Hénon image of a
class-conditional Gaussian source and ε ~ N(0, I). So ẑ = (AᵀA)⁻¹Aᵀx is sufficient for y, ẑ | z ~ N(z, (AᵀA)⁻¹),
and p(ẑ | y) is estimated by Monte Carlo over z ~ p(z | y). On the balanced test set this prints, for the
minority class, the recall and F1 of

- the Bayes rule under the training priors (what ERM's cross-entropy optimum predicts) and under uniform priors
  (what a re-balancing method aims at), and
- LDAM's population optimum: per test point the logits z ∈ [−1, 1]^C (the cosine head's range) minimising the
  expected LDAM loss E_{y ~ p_train(y | x)} CE(s (z − Δ_y e_y), y), for each `--ldam s,max_m`.

    python scripts/toy_bayes.py                       # default toy, data_seed 0
    python scripts/toy_bayes.py --ldam 30,0.5 30,0 10,0.5
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crt.data import build_split  # noqa: E402
from crt.data.toy import henon_features, henon_sources  # noqa: E402
from crt.losses.imbalance import ldam_margins  # noqa: E402


def toy_model(cfg: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A, and the mean and std that standardise z, re-drawn as load_toy_henon draws them (checked against it)."""
    from crt.data.toy import load_toy_henon

    g = torch.Generator().manual_seed(10_000 + int(cfg["data_seed"]))
    a = torch.randn(int(cfg["input_dim"]), 2, generator=g)
    s_tr, _ = henon_sources(int(cfg["n_per_class"]), g)
    s_te, _ = henon_sources(int(cfg["n_test_per_class"]), g)
    z_tr = henon_features(s_tr, float(cfg["rotation_deg"]), float(cfg["scale"]))
    mean, std = z_tr.mean(0), z_tr.std(0)
    x_tr = ((z_tr - mean) / std) @ a.T + float(cfg["noise"]) * torch.randn(len(z_tr), a.shape[0], generator=g)
    from crt.data import loader_options

    raw = load_toy_henon(**loader_options({**cfg, "name": "toy_henon"}))
    if not torch.equal(x_tr, raw.x_train):
        raise RuntimeError("crt/data/toy.py draws the toy differently from this script; update toy_model().")
    return a, mean, std


def class_log_likelihoods(cfg: dict, x: torch.Tensor, mc: int, seed: int = 5) -> torch.Tensor:
    """log p(x | y) up to a constant shared by the classes, [n, C], by Monte Carlo over `mc` sources per class."""
    a, mean, std = toy_model(cfg)
    noise = float(cfg["noise"])
    prec = a.T @ a / noise**2  # precision of ẑ around z
    chol = torch.linalg.cholesky(prec)
    z_hat = x @ torch.linalg.solve(a.T @ a, a.T).T
    s, y = henon_sources(mc, torch.Generator().manual_seed(seed))
    z = (henon_features(s, float(cfg["rotation_deg"]), float(cfg["scale"])) - mean) / std
    num_classes = int(y.max()) + 1
    out = torch.empty(len(x), num_classes)
    for c in range(num_classes):
        zc = z[y == c]
        for i in range(0, len(x), 500):
            d = (z_hat[i:i + 500, None, :] - zc[None]) @ chol
            out[i:i + 500, c] = torch.logsumexp(-0.5 * (d**2).sum(-1), 1) - math.log(len(zc))
    return out


def minority_scores(pred: torch.Tensor, y: torch.Tensor, c: int) -> tuple[float, float, float]:
    """Recall and F1 of class c, and balanced accuracy."""
    recall = float((pred[y == c] == c).float().mean())
    tp = int(((pred == c) & (y == c)).sum())
    f1 = 2 * tp / max(1, int((pred == c).sum()) + int((y == c).sum()))
    bal = float(torch.stack([(pred[y == k] == k).float().mean() for k in y.unique()]).mean())
    return recall, f1, bal


def ldam_optimum(posterior: torch.Tensor, counts: torch.Tensor, s: float, max_m: float, steps: int = 1500) -> torch.Tensor:
    """Per point, argmin over z ∈ [−1, 1]^C of Σ_y p(y | x) CE(s (z − Δ_y e_y), y), by Adam on z = tanh(u)."""
    delta = torch.diag_embed(ldam_margins(counts, max_m))[None]  # [1, y, C]: the margin row used for label y
    u = torch.zeros_like(posterior, requires_grad=True)
    opt = torch.optim.Adam([u], lr=0.05)
    for _ in range(steps):
        logits = s * (torch.tanh(u)[:, None, :] - delta)  # [n, y, C]
        loss = -(posterior * F.log_softmax(logits, -1).diagonal(dim1=1, dim2=2)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.tanh(u).detach()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--mc", type=int, default=4000, help="Monte Carlo sources per class")
    ap.add_argument("--ldam", nargs="*", default=["30,0.5", "30,0", "10,0.5"], help="s,max_m pairs")
    args = ap.parse_args(argv)
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "data" / "toy_henon.yaml"))
    cfg["data_seed"] = args.data_seed
    split = build_split(cfg)
    counts = split.train_counts
    c = split.minority_classes[0]
    loglik = class_log_likelihoods(cfg, split.x_test, args.mc)
    print(f"toy_henon data_seed {args.data_seed}: training counts {counts.tolist()}, minority class {c}, "
          f"test {len(split.y_test)} (balanced)")
    print("| classifier | minority recall | minority F1 | balanced accuracy |\n|---|---|---|---|")
    posterior = None
    for name, prior in (("Bayes rule, training priors", counts.float()), ("Bayes rule, uniform priors",
                                                                             torch.ones(len(counts)))):
        post = (loglik + prior.log()).softmax(1)
        posterior = post if posterior is None else posterior
        r, f1, bal = minority_scores(post.argmax(1), split.y_test, c)
        print(f"| {name} | {r:.3f} | {f1:.3f} | {bal:.3f} |")
    for pair in args.ldam:
        s, max_m = (float(v) for v in pair.split(","))
        z = ldam_optimum(posterior, counts, s, max_m)
        r, f1, bal = minority_scores(z.argmax(1), split.y_test, c)
        print(f"| LDAM population optimum, s = {s:g}, max_m = {max_m:g} | {r:.3f} | {f1:.3f} | {bal:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
