"""iNaturalist 2019 (1010 species, natural long tail), trained on precomputed Inception-V3 features.

Layout: `<data_dir>/inat2019/train2019.json` and `val2019.json` (COCO style: `images` with `id` and
`file_name` relative to `<data_dir>/inat2019/`, `annotations` with `image_id` and `category_id`,
`categories` with `id` and `name`) and the images under `train_val2019/`. Class c is the c-th category id
in increasing order. The papers train an MLP (1024-512-32) on 2048-d pooled Inception-V3 features, which
`scripts/extract_features.py inat2019` writes once to `inat2019/features_inception_v3.npz` (the `features`
format). Protocol: natural imbalance; the majority classes are those with >= 120 training images
(data.majority_min_count); the official val set (3 per class) is the evaluation set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crt.data.base import RawData, register
from crt.data.features import read_features
from crt.errors import DataNotFoundError

FOLDER = "inat2019"
FEATURES = "features_inception_v3.npz"
ANNOTATIONS = {"train": "train2019.json", "test": "val2019.json"}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataNotFoundError(
            f"iNaturalist 2019 annotations not found: {path} is missing. Fix: download train2019.json, "
            "val2019.json and train_val2019.tar.gz by hand from the competition page "
            "(https://github.com/visipedia/inat_comp/tree/master/2019, or Kaggle's inaturalist-2019-fgvc6), "
            f"unpack them into {path.parent}, then run `python scripts/extract_features.py inat2019`."
        )
    with open(path) as fh:
        return json.load(fh)


def list_images(root: Path) -> tuple[list[Path], list[int], list[Path], list[int], list[str]]:
    """(train paths, labels, val paths, labels, class names) from the official JSON files under `root`."""
    data = {k: _read_json(root / f) for k, f in ANNOTATIONS.items()}
    cats = sorted({int(c["id"]): str(c.get("name", c["id"])) for c in data["train"]["categories"]}.items())
    index = {cid: i for i, (cid, _) in enumerate(cats)}
    out: list[Any] = []
    for k in ("train", "test"):
        label = {int(a["image_id"]): index[int(a["category_id"])] for a in data[k]["annotations"]}
        images = sorted(data[k]["images"], key=lambda im: int(im["id"]))
        out += [[root / im["file_name"] for im in images], [label[int(im["id"])] for im in images]]
    return out[0], out[1], out[2], out[3], [name for _, name in cats]


@register("inat2019")
def load_inat2019(data_dir: str = "data", features_file: str = FEATURES, num_classes: int | None = 1010) -> RawData:
    """Inception-V3 features of the official train and val images."""
    root = Path(data_dir).expanduser() / FOLDER
    path = root / features_file
    if not path.is_file():
        have = (root / ANNOTATIONS["train"]).is_file()
        raise DataNotFoundError(
            f"iNaturalist 2019 features not found: expected {path}, written once from {root}/train2019.json, "
            f"val2019.json and the images under {root}/train_val2019 (annotations currently "
            f"{'present' if have else 'absent'}). Fix: if absent, download them by hand (see "
            f"`python scripts/prepare_data.py inat2019`), then run `python scripts/extract_features.py inat2019 "
            f"--data-dir {root.parent}` (Inception-V3 ImageNet weights, GPU if present)."
        )
    return read_features(path, num_classes=num_classes,
                         hint=f"rerun `python scripts/extract_features.py inat2019 --data-dir {root.parent}`.")
