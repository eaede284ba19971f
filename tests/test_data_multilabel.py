"""Multi-label ACC / NLL (crt.metrics.multilabel) and the BCE loss, checked by hand."""

from __future__ import annotations

import math

import torch

from crt.losses import build_loss
from crt.losses.classification import LOSSES
from crt.losses.multilabel import BCELoss
from crt.metrics.multilabel import multilabel_acc, multilabel_metrics, multilabel_nll

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [-1.0, 1.0, 3.0], [0.0, -2.0, 1.0], [1.0, 2.0, -3.0]])
Y = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])


def _bce(f: float, y: float) -> float:
    p = 1 / (1 + math.exp(-f))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_acc_is_top1_among_true_labels() -> None:
    # top-1: 0 (true), 2 (false), 2 (true), 1 (true)
    assert multilabel_acc(LOGITS, Y).tolist() == [1.0, 0.0, 1.0, 1.0]


def test_nll_is_bce_summed_over_labels() -> None:
    expected = [sum(_bce(float(f), float(y)) for f, y in zip(fr, yr)) for fr, yr in zip(LOGITS, Y)]
    torch.testing.assert_close(multilabel_nll(LOGITS, Y), torch.tensor(expected))


def test_metrics_by_hand() -> None:
    majority = torch.tensor([True, True, False])
    out, rows = multilabel_metrics(LOGITS, Y, torch.tensor([5, 4, 1]), majority, ["medium", "few", "few"])
    assert out["test/top1"] == 0.75
    assert math.isclose(out["test/nll"], float(multilabel_nll(LOGITS, Y).mean()), rel_tol=1e-6)
    # class-conditional ACC: class 0 -> samples 0, 1 -> hits 1, 0; class 1 -> 0, 3 -> 1, 1; class 2 -> 2, 3 -> 1, 1
    assert [r["acc"] for r in rows] == [0.5, 1.0, 1.0]
    assert math.isclose(out["test/bal_acc"], 2.5 / 3, rel_tol=1e-6)
    # decisions logit > 0: class 0 tp 1 fp 1 fn 1 -> F1 1/2; class 1 tp 2 fp 1 fn 0 -> 4/5; class 2 tp 1 fp 1 fn 1 -> 1/2
    torch.testing.assert_close(torch.tensor([r["f1"] for r in rows]), torch.tensor([0.5, 0.8, 0.5]))
    assert math.isclose(out["test/macro_f1"], 0.6, rel_tol=1e-6)
    assert math.isclose(out["test/micro_f1"], 2 * 4 / (2 * 4 + 3 + 2), rel_tol=1e-6)
    assert out["test/minority_f1"] == 0.5 and out["test/minority_acc"] == 1.0
    assert math.isclose(out["test/majority_f1"], 0.65, rel_tol=1e-6)
    assert out["test/acc_few"] == 1.0 and out["test/acc_medium"] == 0.5 and "test/acc_many" not in out
    assert rows[0]["train_count"] == 5 and rows[2]["support"] == 2


def test_bce_loss_registered_per_sample() -> None:
    assert LOSSES["bce"] is BCELoss
    loss = build_loss("bce", torch.tensor([3, 2, 2]))
    per = loss(LOGITS, Y)
    assert per.shape == (4,)
    torch.testing.assert_close(per, multilabel_nll(LOGITS, Y))
    # integer labels are one-hot encoded
    torch.testing.assert_close(loss(LOGITS, torch.tensor([0, 2, 2, 1])),
                               multilabel_nll(LOGITS, torch.eye(3)[[0, 2, 2, 1]]))
    weighted = build_loss("bce", torch.tensor([3, 2, 2]), class_weights=torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(weighted(LOGITS, Y), torch.tensor([_bce(float(f), float(y)) for f, y in zip(LOGITS[:, 0], Y[:, 0])]))
