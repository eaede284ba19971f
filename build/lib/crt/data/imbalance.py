"""Imbalance protocols, in one place for every dataset.

Every imbalanced training set is built the same way (the LDAM-DRW protocol): a seeded shuffle of each
class's indices, then the first n_c of them. `target_counts` says what n_c is under each protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from crt.errors import ConfigError

PROTOCOLS = ("step", "exp", "minority", "natural")


def check_ratio(ratio: float) -> None:
    if not (isinstance(ratio, (int, float)) and 0.0 < float(ratio) <= 1.0):
        raise ConfigError(
            f"data.ratio={ratio!r} is invalid: it is the minority class size divided by the majority class "
            "size and must lie in (0, 1]. Fix: pass e.g. data.ratio=0.1 (ten times fewer minority samples)."
        )


def check_classes(classes: Sequence[int], num_classes: int, key: str = "data.minority_classes") -> list[int]:
    out = []
    for c in classes:
        if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < num_classes:
            raise ConfigError(
                f"{key} contains {c!r}, but this dataset has classes 0..{num_classes - 1}. "
                f"Fix: pass class ids in that range, e.g. {key}=[0]."
            )
        out.append(int(c))
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}={list(classes)} repeats a class. Fix: list each class once.")
    return out


def default_minority(protocol: str, num_classes: int) -> list[int]:
    """Minority classes when none are named: the second half (step) of the classes."""
    if protocol == "step":
        return list(range(num_classes - num_classes // 2, num_classes))
    return []


def target_counts(
    protocol: str,
    available: torch.Tensor,
    ratio: float = 1.0,
    minority_classes: Sequence[int] | None = None,
    n_max: int | None = None,
) -> torch.Tensor:
    """Per-class training sizes n_c under `protocol`, capped by what each class has.

    step: majority classes at n_max, minority classes (default: the second half) at int(n_max * ratio).
    exp: n_c = int(n_max * ratio ** (c / (M - 1))), the long-tail profile of Cui et al. / LDAM.
    minority: the named classes at int(n_max * ratio), the rest at n_max.
    natural: every class as it is.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"data.imbalance={protocol!r} is unknown. Fix: choose one of {', '.join(PROTOCOLS)}."
        )
    available = available.long()
    m = available.numel()
    if protocol == "natural":
        return available.clone()
    check_ratio(ratio)
    n_max = int(n_max) if n_max is not None else int(available.max())
    if protocol == "exp":
        counts = torch.tensor([int(n_max * ratio ** (c / max(m - 1, 1))) for c in range(m)])
    else:
        minority = list(minority_classes) if minority_classes else default_minority(protocol, m)
        if protocol == "minority" and not minority:
            raise ConfigError(
                "data.imbalance=minority needs data.minority_classes. Fix: pass e.g. data.minority_classes=[0]."
            )
        minority = check_classes(minority, m)
        counts = torch.full((m,), n_max, dtype=torch.long)
        counts[minority] = max(1, int(math.floor(n_max * ratio + 1e-9)))
    return torch.minimum(counts, available)


def select_indices(y: torch.Tensor, counts: torch.Tensor, seed: int) -> torch.Tensor:
    """Seeded per-class shuffle, then the first counts[c] indices of class c (in class order)."""
    g = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in range(counts.numel()):
        idx = torch.nonzero(y == c, as_tuple=False).flatten()
        perm = idx[torch.randperm(idx.numel(), generator=g)]
        picked.append(perm[: int(counts[c])])
    return torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)


def stratified_holdout(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split positions 0..len(y)-1 into (train, held-out), `fraction` of every class held out.

    A class keeps at least one training sample; classes with two or more give at least one held-out sample.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"data.val_fraction={fraction} must lie in [0, 1). Fix: use e.g. 0.2.")
    g = torch.Generator().manual_seed(int(seed) + 7919)
    train, val = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c, as_tuple=False).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        n_val = int(round(fraction * idx.numel()))
        if fraction > 0 and idx.numel() >= 2:
            n_val = min(max(n_val, 1), idx.numel() - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def majority_mask(
    protocol: str,
    counts: torch.Tensor,
    minority_classes: Sequence[int] | None = None,
    majority_min_count: int | None = None,
) -> torch.Tensor:
    """Boolean mask over classes: True for majority classes.

    Named minority classes win; else a count threshold (`majority_min_count`, iNat's 120) if given;
    else, for step, the default minority of `target_counts` (the second half); for exp and natural,
    the more frequent half.
    """
    m = counts.numel()
    mask = torch.ones(m, dtype=torch.bool)
    if minority_classes:
        mask[list(minority_classes)] = False
    elif majority_min_count is not None:
        mask = counts >= int(majority_min_count)
    elif protocol == "step":  # the classes target_counts made minority, even where a majority class is short
        mask[default_minority(protocol, m)] = False
    elif protocol in ("exp", "natural"):
        order = torch.argsort(counts, descending=True, stable=True)
        mask = torch.zeros(m, dtype=torch.bool)
        mask[order[: (m + 1) // 2]] = True
    if mask.all() and protocol != "natural" and counts.min() < counts.max():
        mask = counts >= counts.max()
    return mask


def shot_groups(counts: torch.Tensor, many: int = 100, few: int = 20) -> list[str]:
    """many (> many), medium, few (< few) shots per class, the OLTR convention."""
    return ["many" if n > many else "few" if n < few else "medium" for n in counts.tolist()]
