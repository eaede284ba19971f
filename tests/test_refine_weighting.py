"""The refine weighting by hand: every sample on the same per-sample scale (spec, stage 4)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from crt.losses import build_loss
from crt.stages.modules import ClassifierData, ClassifierModule, Optim


def _ce(logits: list[float], y: int) -> float:
    return math.log(sum(math.exp(v) for v in logits)) - logits[y]


def _module(w: list[float], extra_weight: float) -> ClassifierModule:
    """Identity 'network' on 2-D inputs (the inputs are the logits); 4 real samples in one batch, 2 augmented
    samples in batches of 1 (an extra batch 4x smaller than the real one, as with 1 minority of 4 classes)."""
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 0, 1, 1])
    x_aug, y_aug = torch.tensor([[0.5, 0.0], [0.0, 2.0]]), torch.tensor([1, 1])
    loss = build_loss("ce", torch.tensor([2, 2]))
    data = ClassifierData(train=(x, y, torch.tensor(w)), val=(x, y), extra=(x_aug, y_aug), extra_weight=extra_weight,
                          extra_batch=1)
    return ClassifierModule(net, loss, 2, data, Optim(batch_size=4), prefix="refine")


REAL = [_ce([2, 0], 0), _ce([0, 1], 0), _ce([1, 1], 1), _ce([0, 3], 1)]
AUG = {0.5: _ce([0.5, 0], 1), 2.0: _ce([0, 2], 1)}  # the two augmented samples' losses, keyed by x[0]


@pytest.mark.parametrize("weighting", ["code", "paper"])
def test_two_batches_weigh_every_sample_on_the_real_per_sample_scale(weighting: str) -> None:
    lam = 1e-3
    # samples 0,1 are majority (class 0), 2,3 minority (class 1)
    w, extra_weight = ([1.0, 1.0, lam, lam], 1.0) if weighting == "code" else ([1.0] * 4, lam)
    module = _module(w, extra_weight)
    loader = module.train_dataloader()  # one real batch per epoch; the extra stream goes on across epochs
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        for step in range(2):
            seen.append(module.training_step(next(iter(loader)), step).item())
    total = sum(seen)
    real = sum(wi * li for wi, li in zip(w, REAL)) / 4
    # each step: weighted real sum / 4 + extra_weight * (one augmented loss) / 4
    expected_steps = sorted(real + extra_weight * a / 4 for a in AUG.values())
    assert sorted(seen) == pytest.approx(expected_steps, rel=1e-6)
    # over the two steps each augmented sample counted once with weight extra_weight on the real scale
    assert total == pytest.approx(2 * real + extra_weight * sum(AUG.values()) / 4, rel=1e-6)
    # the old form (mean over the extra batch times extra_weight) would have weighed each augmented sample 4x
    old_total = 2 * real + extra_weight * sum(AUG.values())
    assert abs(total - old_total) > 0.5 * extra_weight * sum(AUG.values())
