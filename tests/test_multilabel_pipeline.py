"""Multi-label data (arXiv) through every stage: BCE losses, ACC/NLL metrics, one-label augmentation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from crt.data import Split
from crt.stages import single_labels
from tests.test_datasets import extract, write_arxiv


def _split() -> Split:
    y = torch.tensor([[1, 0, 1], [0, 1, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.float)
    return Split(x_train=torch.zeros(4, 2), y_train=y, x_val=torch.zeros(0, 2), y_val=y[:0], x_test=torch.zeros(0, 2),
                 y_test=y[:0], num_classes=3, counts=y.sum(0).long(), majority=torch.tensor([True, True, False]),
                 multilabel=True)


def test_single_labels_prefer_frequent_majority_labels() -> None:
    sp = _split()
    # sample 2 has only the minority label 2; the others take their majority label (ties: more frequent)
    assert single_labels(sp, sp.y_train).tolist() == [0, 1, 2, 0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ecrt_mp", "erm"])
def test_arxiv_end_to_end(make_cfg, tmp_path: Path, method: str) -> None:
    from crt.pipeline import run

    write_arxiv(tmp_path, n=200)
    assert extract("arxiv", "--data-dir", str(tmp_path), "--model", "tfidf", "--dim", "16") == 0
    cfg = make_cfg("data=arxiv", f"paths.data_dir={tmp_path}", "data.features_model=tfidf", "data.num_categories=5",
                   "data.num_classes=5", f"method={method}", "debug=tiny", "logger=none")
    res = run(cfg, run_dir=tmp_path / "run")
    m = res["metrics"]
    assert 0.0 <= m["test/top1"] <= 1.0 and math.isfinite(m["test/nll"]) and "test/micro_f1" in m
    assert len(res["per_class"]) == 5
    if method == "ecrt_mp":
        assert list(res["stages"]) == ["pretrain", "demix", "augment", "refine"]
