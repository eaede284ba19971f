"""arXiv abstracts, multi-label over 152 subject categories, on precomputed text embeddings.

Source: the arXiv metadata snapshot (Kaggle "Cornell-University/arxiv", one JSON object per line with
`id`, `abstract` and `categories`, a space-separated string such as "cs.LG stat.ML"), expected at
`<data_dir>/arxiv/arxiv-metadata-oai-snapshot.json`. `scripts/extract_features.py arxiv --model scibert`
embeds every abstract once and writes `<data_dir>/arxiv/features_<model>.npz` with `X` (N x D),
`ids` and `categories` (the raw strings), so the label set can change without re-embedding.

Label set (`choose_categories`): if `data.categories_file` names a text file, its categories (one per
line, in that order); otherwise the `data.num_categories` (152) categories listed by the most papers,
a paper counting once for each category it lists, ties broken by category name, class 0 the most
frequent. Papers with none of the chosen categories are dropped; targets are N x 152 multi-hot floats.
Evaluation set: a held-out `test_fraction` (20%) of the papers, stratified by each paper's rarest chosen
category and drawn with `data_seed`.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from crt.data.base import STAND_IN_KEY, RawData, register
from crt.data.imbalance import stratified_holdout
from crt.errors import ConfigError, DataNotFoundError

FOLDER = "arxiv"
METADATA = "arxiv-metadata-oai-snapshot.json"


def choose_categories(categories: Iterable[str], num: int = 152, categories_file: str | Path | None = None
                      ) -> list[str]:
    """The label set: the explicit list of `categories_file`, else the `num` most frequent (ties by name)."""
    if categories_file:
        path = Path(categories_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.categories_file={path} does not exist. Fix: give a text file with one "
                              "arXiv category per line, or set data.categories_file=null for the most frequent.")
        chosen = [c.strip() for c in path.read_text().splitlines() if c.strip() and not c.startswith("#")]
        if len(set(chosen)) != len(chosen):
            raise ConfigError(f"{path} lists a category twice. Fix: list each category once.")
        return chosen
    counts = Counter(c for doc in categories for c in set(doc.split()))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [c for c, _ in ranked[: int(num)]]


def multi_hot(categories: Sequence[str], chosen: Sequence[str]) -> torch.Tensor:
    """N x len(chosen) float 0/1 targets."""
    index = {c: i for i, c in enumerate(chosen)}
    y = torch.zeros(len(categories), len(chosen))
    for n, doc in enumerate(categories):
        for c in doc.split():
            if c in index:
                y[n, index[c]] = 1.0
    return y


def rarest_label(y: torch.Tensor) -> torch.Tensor:
    """Per row, the positive label with the fewest positives overall (ties: lower index)."""
    freq = y.sum(0)
    score = torch.where(y > 0, freq.expand_as(y), torch.full_like(y, float("inf")))
    return score.argmin(1)


def build_arxiv(x: torch.Tensor, categories: Sequence[str], num_categories: int = 152,
                categories_file: str | Path | None = None, test_fraction: float = 0.2,
                data_seed: int = 0) -> RawData:
    """Label set, multi-hot targets and the held-out evaluation split (module docstring)."""
    chosen = choose_categories(categories, num_categories, categories_file)
    y = multi_hot(categories, chosen)
    keep = y.sum(1) > 0
    x, y = x[keep], y[keep]
    if len(y) == 0:
        raise ConfigError("No paper has any of the chosen arXiv categories. Fix: check data.categories_file.")
    tr, te = stratified_holdout(rarest_label(y), float(test_fraction), int(data_seed) + 1)
    return RawData(x[tr], y[tr], x[te], y[te], num_classes=len(chosen), class_names=list(chosen), multilabel=True)


def features_path(data_dir: str | Path, model: str) -> Path:
    return Path(data_dir).expanduser() / FOLDER / f"features_{model}.npz"


@register("arxiv")
def load_arxiv(data_dir: str = "data", features_model: str = "scibert", num_categories: int = 152,
               categories_file: str | None = None, test_fraction: float = 0.2, data_seed: int = 0) -> RawData:
    """Embedded abstracts and multi-hot category targets (module docstring)."""
    path = features_path(data_dir, features_model)
    root = path.parent
    if not path.is_file():
        have = "present" if (root / METADATA).is_file() else "absent"
        raise DataNotFoundError(
            f"arXiv features not found: expected {path}, embedded once from {root / METADATA} (currently "
            f"{have}). Fix: if absent, download the metadata snapshot by hand from "
            "https://www.kaggle.com/datasets/Cornell-University/arxiv and put the JSON file there; then run "
            f"`python scripts/extract_features.py arxiv --model {features_model} --data-dir {root.parent}` "
            "(needs `pip install transformers` for BERT-family models)."
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            x = torch.from_numpy(np.ascontiguousarray(f["X"], dtype=np.float32))
            cats = [str(c) for c in f["categories"].tolist()]
            stand_in = str(f[STAND_IN_KEY]) if STAND_IN_KEY in f.files else None
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataNotFoundError(
            f"{path} could not be read as arXiv features ({type(err).__name__}: {err}); it needs arrays X and "
            f"categories. Fix: delete it and rerun `python scripts/extract_features.py arxiv --model "
            f"{features_model} --data-dir {root.parent}`."
        ) from None
    raw = build_arxiv(x, cats, num_categories, categories_file, test_fraction, data_seed)
    raw.stand_in = stand_in
    return raw
