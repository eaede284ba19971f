"""Dataset loaders on small files written in the real on-disk formats (pickles, JPEG trees, JSON, npz)."""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from crt.data import apply_protocol, build_split
from crt.data.arxiv import build_arxiv, choose_categories, load_arxiv
from crt.data.cifar import load_cifar10, load_cifar100
from crt.data.features import load_features
from crt.data.inat import load_inat2019
from crt.data.tinyimagenet import load_tinyimagenet
from crt.errors import ConfigError, DataNotFoundError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


# --- writers of the real formats ------------------------------------------------------------------


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _images(labels: Sequence[int], seed: int) -> np.ndarray:
    """Row-major CIFAR rows (N x 3072 uint8); class c has mean brightness about 2.5 c, so it is learnable."""
    g = np.random.default_rng(seed)
    base = (np.asarray(labels)[:, None] * 2.5).astype(np.int64)
    return np.clip(base + g.integers(0, 64, (len(labels), 3072)), 0, 255).astype(np.uint8)


def write_cifar100(root: Path, per_class: int = 10, test_per_class: int = 2) -> Path:
    """`<root>/cifar-100-python/{train,test,meta}` with the keys of the official pickles."""
    folder = root / "cifar-100-python"
    for name, n in (("train", per_class), ("test", test_per_class)):
        y = np.tile(np.arange(100), n)  # interleaved classes, as in the real file
        _pickle(folder / name, {
            b"filenames": [f"img_{i}.png".encode() for i in range(len(y))], b"batch_label": name.encode(),
            b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist(), b"data": _images(y, len(name)),
        })
    _pickle(folder / "meta", {b"fine_label_names": [f"class{c:02d}".encode() for c in range(100)],
                              b"coarse_label_names": [f"super{c}".encode() for c in range(20)]})
    return folder


def write_cifar10(root: Path, per_batch_class: int = 2, test_per_class: int = 3) -> Path:
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        y = np.tile(np.arange(10), per_batch_class)
        _pickle(folder / f"data_batch_{i}", {b"batch_label": b"training batch", b"labels": y.tolist(),
                                             b"data": _images(y, i), b"filenames": [b"x.png"] * len(y)})
    y = np.tile(np.arange(10), test_per_class)
    _pickle(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": y.tolist(),
                                    b"data": _images(y, 9), b"filenames": [b"x.png"] * len(y)})
    _pickle(folder / "batches.meta", {b"label_names": [f"c{c}".encode() for c in range(10)],
                                      b"num_cases_per_batch": 20, b"num_vis": 3072})
    return folder


def _jpeg(path: Path, color: Sequence[int], size: int, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    arr = np.clip(np.asarray(color)[None, None, :] + g.integers(-30, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=85)


def write_tinyimagenet(root: Path, wnids: Sequence[str] = ("n01443537", "n01629819", "n01641577", "n01644900"),
                       per_class: int = 10, val_per_class: int = 3, size: int = 64) -> Path:
    """`tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/...}` (official layout)."""
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # official file is not sorted
    (folder / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)))
    ann, k = [], 0
    for c, w in enumerate(wnids):
        color = [60 * c % 256, 255 - 50 * c % 256, 40 + 30 * c]
        for i in range(per_class):
            _jpeg(folder / "train" / w / "images" / f"{w}_{i}.JPEG", color, size, 100 * c + i)
        (folder / "train" / w / f"{w}_boxes.txt").write_text("".join(f"{w}_{i}.JPEG\t0\t0\t63\t63\n"
                                                                    for i in range(per_class)))
        for _ in range(val_per_class):
            _jpeg(folder / "val" / "images" / f"val_{k}.JPEG", color, size, 10_000 + k)
            ann.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
            k += 1
    (folder / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return folder


def write_inat2019(root: Path, train_counts: Sequence[int] = (12, 10, 8, 4, 3, 2), val_per_class: int = 3,
                   size: int = 80) -> Path:
    """`inat2019/{train2019.json,val2019.json,train_val2019/...}`: COCO-style JSON, JPEG files."""
    folder = root / "inat2019"
    cat_ids = [400 + 7 * c for c in range(len(train_counts))]  # ids need not be contiguous
    cats = [{"id": cid, "name": f"Species {cid}", "kingdom": "Plants", "supercategory": "Plants"}
            for cid in cat_ids]
    next_id = 0
    for split, counts in (("train", train_counts), ("val", [val_per_class] * len(train_counts))):
        images, anns = [], []
        for c, (cid, n) in enumerate(zip(cat_ids, counts)):
            for i in range(n):
                fname = f"train_val2019/Plants/{cid}/{split}_{c}_{i}.jpg"
                _jpeg(folder / fname, [40 * c, 200 - 30 * c, 90], size, next_id)
                images.append({"id": next_id, "file_name": fname, "width": size, "height": size, "license": 1})
                anns.append({"id": next_id, "image_id": next_id, "category_id": cid})
                next_id += 1
        doc = {"info": {"year": 2019}, "images": images[::-1], "annotations": anns, "categories": cats,
               "licenses": [{"id": 1, "name": "CC"}]}
        (folder / f"{split}2019.json").write_text(json.dumps(doc))
    return folder


ARXIV_CATS = ["cs.LG", "stat.ML", "math.PR", "hep-th", "astro-ph.GA", "q-bio.NC", "cs.CV", "econ.EM"]


def write_arxiv(root: Path, n: int = 200, seed: int = 0) -> Path:
    """`arxiv/arxiv-metadata-oai-snapshot.json`: one JSON object per line, like the Kaggle snapshot."""
    g = np.random.default_rng(seed)
    words = {c: [f"{c.replace('.', '').replace('-', '')}w{i}" for i in range(12)] for c in ARXIV_CATS}
    path = root / "arxiv" / "arxiv-metadata-oai-snapshot.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    freq = np.linspace(1.0, 0.1, len(ARXIV_CATS))
    lines = []
    for i in range(n):
        k = 1 + int(g.integers(0, 3))
        cats = list(dict.fromkeys(g.choice(ARXIV_CATS, size=k, p=freq / freq.sum()).tolist()))
        text = " ".join(g.choice(words[c]) for c in cats for _ in range(15))
        lines.append(json.dumps({"id": f"{1000 + i}.{i:05d}", "submitter": "A", "authors": "A, B",
                                 "title": "T", "comments": None, "journal-ref": None, "doi": None,
                                 "categories": " ".join(cats), "license": None, "abstract": f"  {text}\n",
                                 "versions": [{"version": "v1"}], "update_date": "2020-01-01"}))
    lines.insert(3, json.dumps({"id": "no.abstract", "categories": "cs.LG", "abstract": ""}))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_features_npz(path: Path, m: int = 4, per_class: int = 30, d: int = 6, split: str | None = "strings",
                       seed: int = 0) -> Path:
    g = np.random.default_rng(seed)
    y = np.repeat(np.arange(m), per_class)
    x = g.normal(size=(len(y), d)).astype(np.float32) + 3 * np.eye(m, d)[y]
    arrays = {"X": x, "y": y}
    test = (np.arange(len(y)) % per_class) < per_class // 5
    if split == "strings":
        arrays["split"] = np.where(test, "test", "train")
    elif split == "ints":
        arrays["split"] = test.astype(np.int64)
    np.savez(path, **arrays)
    return path


# --- CIFAR ----------------------------------------------------------------------------------------


def test_cifar100_reads_official_pickles(tmp_path: Path) -> None:
    write_cifar100(tmp_path, per_class=6, test_per_class=2)
    raw = load_cifar100(data_dir=str(tmp_path), download=False)
    assert raw.x_train.shape == (600, 3, 32, 32) and raw.x_train.dtype == torch.uint8
    assert raw.x_test.shape == (200, 3, 32, 32) and raw.y_train.dtype == torch.long
    assert torch.bincount(raw.y_train).tolist() == [6] * 100 and raw.num_classes == 100
    assert raw.class_names[:2] == ["class00", "class01"]
    # pixel layout: the first 1024 bytes of a row are the red plane
    with open(tmp_path / "cifar-100-python" / "train", "rb") as fh:
        row = pickle.load(fh, encoding="bytes")[b"data"][7]
    assert torch.equal(raw.x_train[7, 0].flatten(), torch.from_numpy(row[:1024]))


def test_cifar10_reads_five_batches(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    raw = load_cifar10(data_dir=str(tmp_path), download=False)
    assert raw.x_train.shape == (100, 3, 32, 32) and raw.x_test.shape == (30, 3, 32, 32)
    assert torch.bincount(raw.y_train).tolist() == [10] * 10 and raw.class_names[9] == "c9"


def test_cifar100_protocols_on_real_format(make_cfg, tmp_path: Path) -> None:
    write_cifar100(tmp_path, per_class=10, test_per_class=1)
    cfg = make_cfg("data=cifar100", "data.n_max=10", "data.ratio=0.2", "data.download=false")
    split = build_split(cfg.data, str(tmp_path))
    assert split.counts.tolist() == [10] * 50 + [2] * 50
    assert split.minority_classes == list(range(50, 100))
    assert split.x_train.dtype == torch.uint8 and len(split.y_val) == 50 * 2 + 50 * 1
    cfg = make_cfg("data=cifar100", "data.imbalance=exp", "data.ratio=0.1", "data.n_max=10", "data.download=false")
    split = build_split(cfg.data, str(tmp_path))
    assert split.counts[0] == 10 and split.counts[-1] == 1


def test_cifar_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_cifar100(data_dir=str(tmp_path), download=False)
    msg = str(err.value)
    assert str(tmp_path / "cifar-100-python") in msg and "scripts/prepare_data.py cifar100" in msg


def test_cifar_download_failure_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    import crt.data.download as dl

    def offline(*_, **__):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    with pytest.raises(DataNotFoundError, match="download failed: PrepareError: could not download .*network unreach"):
        load_cifar100(data_dir=str(tmp_path), download=True)
    assert not list(tmp_path.iterdir())


def test_cifar_corrupt_pickle(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path, per_class=1, test_per_class=1)
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataNotFoundError, match="could not be read"):
        load_cifar100(data_dir=str(tmp_path), download=False)


class _Exploit:
    """A pickle payload that would create a marker file when unpickled without restriction."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("where", ["train", "meta", "data"])
def test_cifar_pickle_with_reduce_is_refused_unread(tmp_path: Path, where: str) -> None:
    folder = write_cifar100(tmp_path / "data", per_class=1, test_per_class=1)
    marker = tmp_path / "pwned"
    if where == "meta":
        _pickle(folder / "meta", {b"fine_label_names": [_Exploit(marker)] * 100})
    elif where == "data":  # an object array whose element is the payload
        _pickle(folder / "train", {b"fine_labels": [0], b"data": np.array([_Exploit(marker)], dtype=object)})
    else:
        _pickle(folder / "train", {b"data": _Exploit(marker), b"fine_labels": []})
    with pytest.raises(DataNotFoundError, match="refused unread") as err:
        load_cifar100(data_dir=str(tmp_path / "data"), download=False)
    assert not marker.exists()
    assert "\n" not in str(err.value) and "prepare_data.py cifar100" in str(err.value)


def test_cifar_wrong_contents_are_a_clear_error(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path, per_class=1, test_per_class=1)
    _pickle(folder / "test", {b"data": np.zeros((100, 3072), np.uint8), b"fine_labels": [100] * 100})
    with pytest.raises(DataNotFoundError, match="is not one class id in 0..99"):
        load_cifar100(data_dir=str(tmp_path), download=False)


# --- features npz ---------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["strings", "ints"])
def test_features_with_split(tmp_path: Path, split: str) -> None:
    path = write_features_npz(tmp_path / "f.npz", split=split)
    raw = load_features(path=str(path), data_dir="unused")
    assert raw.x_train.shape == (4 * 24, 6) and raw.x_test.shape == (4 * 6, 6) and raw.num_classes == 4
    assert raw.x_train.dtype == torch.float32


def test_features_without_split_holds_out_stratified_20_percent(tmp_path: Path) -> None:
    path = write_features_npz(tmp_path / "f.npz", split=None)
    a = load_features(path="f.npz", data_dir=str(tmp_path), data_seed=0)  # relative to data_dir
    b = load_features(path=str(path), data_seed=0)
    c = load_features(path=str(path), data_seed=3)
    assert torch.bincount(a.y_test).tolist() == [6] * 4 and torch.bincount(a.y_train).tolist() == [24] * 4
    assert torch.equal(a.x_test, b.x_test) and not torch.equal(a.x_test, c.x_test)


def test_features_protocol_from_config(make_cfg, tmp_path: Path) -> None:
    path = write_features_npz(tmp_path / "f.npz", split=None, per_class=50)
    cfg = make_cfg("data=features", f"data.path={path}", "data.imbalance=step", "data.ratio=0.1")
    split = build_split(cfg.data, str(tmp_path))
    assert split.counts.tolist() == [40, 40, 4, 4] and split.minority_classes == [2, 3]


def test_features_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.path"):
        load_features(path=None)
    with pytest.raises(DataNotFoundError, match="not found"):
        load_features(path=str(tmp_path / "absent.npz"))
    np.savez(tmp_path / "bad.npz", features=np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="lacks"):
        load_features(path=str(tmp_path / "bad.npz"))
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(DataNotFoundError, match="not a readable"):
        load_features(path=str(tmp_path / "junk.npz"))
    path = write_features_npz(tmp_path / "f.npz")
    with pytest.raises(ConfigError, match="num_classes"):
        load_features(path=str(path), num_classes=10)


# --- Tiny ImageNet, iNaturalist: images -> extract_features --random-init -> loader ------------------


def extract(*argv: str) -> int:
    import extract_features

    return extract_features.main(list(argv))


def test_tinyimagenet_missing_features_names_both_commands(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_tinyimagenet(data_dir=str(tmp_path))
    msg = str(err.value)
    assert "features_resnet18.npz" in msg and "tiny-imagenet-200" in msg
    assert "prepare_data.py tinyimagenet" in msg and "extract_features.py tinyimagenet" in msg


def test_tinyimagenet_listing_follows_official_layout(tmp_path: Path) -> None:
    from crt.data.tinyimagenet import list_images

    root = write_tinyimagenet(tmp_path, per_class=2, val_per_class=1, size=8)
    tr, ytr, va, yva, wnids = list_images(root)
    assert wnids == sorted(wnids) and len(tr) == 8 and ytr == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [p.name for p in va] == ["val_0.JPEG", "val_1.JPEG", "val_2.JPEG", "val_3.JPEG"] and yva == [0, 1, 2, 3]
    assert all(p.is_file() for p in tr + va)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class tiny-imagenet-200 tree of real JPEGs, with features from a random-init ResNet-18."""
    root = tmp_path_factory.mktemp("tiny")
    write_tinyimagenet(root, per_class=10, val_per_class=3, size=64)
    rc = extract("tinyimagenet", "--data-dir", str(root), "--random-init", "--image-size", "32",
                 "--device", "cpu", "--workers", "0", "--batch-size", "16", "--shard-size", "16")
    assert rc == 0
    return root


@pytest.fixture(scope="module")
def inat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-class iNat 2019 tree (JSON + JPEGs), with features from a random-init Inception-V3."""
    root = tmp_path_factory.mktemp("inat")
    write_inat2019(root, train_counts=(8, 6, 5, 3, 2, 2), val_per_class=2)
    rc = extract("inat2019", "--data-dir", str(root), "--random-init", "--image-size", "75",
                 "--device", "cpu", "--workers", "0", "--batch-size", "64")
    assert rc == 0
    return root


def test_tinyimagenet_extract_then_load(make_cfg, tiny_dir: Path) -> None:
    out = tiny_dir / "tiny-imagenet-200" / "features_resnet18.npz"
    assert out.is_file() and not (tiny_dir / "tiny-imagenet-200" / "features_resnet18.npz.parts").exists()
    raw = load_tinyimagenet(data_dir=str(tiny_dir), num_classes=4)
    assert raw.x_train.shape == (40, 512) and raw.x_test.shape == (12, 512)
    assert torch.bincount(raw.y_test).tolist() == [3] * 4
    cfg = make_cfg("data=tinyimagenet", "data.num_classes=4", "data.n_max=9", "data.ratio=0.34")
    split = build_split(cfg.data, str(tiny_dir))
    assert split.counts.tolist() == [9, 9, 3, 3] and split.minority_classes == [2, 3]
    with pytest.raises(ConfigError, match="num_classes"):  # the real config expects 200 classes
        build_split(make_cfg("data=tinyimagenet").data, str(tiny_dir))


def test_inat_missing_features_and_json(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_inat2019(data_dir=str(tmp_path))
    msg = str(err.value)
    assert "features_inception_v3.npz" in msg and "train2019.json" in msg and "extract_features.py inat2019" in msg
    assert extract("inat2019", "--data-dir", str(tmp_path), "--random-init") == 1  # no JSON: message, rc 1


def test_inat_extract_then_load(make_cfg, inat_dir: Path) -> None:
    raw = load_inat2019(data_dir=str(inat_dir), num_classes=6)
    assert raw.x_train.shape == (26, 2048) and raw.x_test.shape == (12, 2048)
    assert torch.bincount(raw.y_train).tolist() == [8, 6, 5, 3, 2, 2]
    assert raw.class_names[0] == "Species 400"
    cfg = make_cfg("data=inat2019", "data.num_classes=6", "data.majority_min_count=5")
    split = build_split(cfg.data, str(inat_dir))
    assert split.counts.tolist() == [8, 6, 5, 3, 2, 2]
    assert split.majority.tolist() == [True, True, True, False, False, False]


class Killed(Exception):
    pass


def test_extract_resumes_from_finished_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import extract_features

    calls: list[tuple[int, int]] = []
    kill_at = [3]

    def compute(a: int, b: int) -> np.ndarray:
        calls.append((a, b))
        if len(calls) == kill_at[0]:
            raise Killed  # killed in the third shard
        return np.full((b - a, 2), a, dtype=np.float32)

    parts, manifest = tmp_path / "x.npz.parts", {"model": "m", "n": 10}
    with pytest.raises(Killed):
        extract_features.run_sharded(10, 3, parts, manifest, compute)
    assert sorted(p.name for p in parts.glob("shard_*")) == ["shard_00000.npz", "shard_00001.npz"]
    assert not list(parts.glob(".*tmp"))  # nothing half-written
    calls.clear()
    kill_at[0] = 0
    x = extract_features.run_sharded(10, 3, parts, manifest, compute)
    assert calls == [(6, 9), (9, 10)] and x[:, 0].tolist() == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]
    extract_features.run_sharded(10, 3, parts, {"model": "other", "n": 10}, lambda a, b: np.zeros((b - a, 2)))
    with np.load(parts / "shard_00000.npz") as z:  # another model: old shards discarded
        assert z["X"].sum() == 0


def test_extract_weights_unavailable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
                                     ) -> None:
    import extract_features
    from torchvision import models

    def offline(*_, **__):
        raise OSError("no network")

    monkeypatch.setattr(models, "resnet18", offline)
    write_tinyimagenet(tmp_path, per_class=1, val_per_class=1, size=8)
    assert extract_features.main(["tinyimagenet", "--data-dir", str(tmp_path), "--device", "cpu"]) == 1
    assert "could not download the pretrained resnet18 weights" in capsys.readouterr().err


# --- arXiv ----------------------------------------------------------------------------------------


def test_choose_categories_rule(tmp_path: Path) -> None:
    docs = ["a b", "b c", "c", "c d", "d", "e", "b", "a a"]  # a 2 (once per paper), b 3, c 3, d 2, e 1
    assert choose_categories(docs, 3) == ["b", "c", "a"]  # frequency, then name
    f = tmp_path / "cats.txt"
    f.write_text("# chosen\ne\nd\n")
    assert choose_categories(docs, 3, f) == ["e", "d"]
    with pytest.raises(ConfigError):
        choose_categories(docs, 3, tmp_path / "absent.txt")


def test_arxiv_multilabel_split() -> None:
    cats = ["a b", "b", "a", "c", "z", "a c"] * 10
    raw = build_arxiv(torch.arange(60.0)[:, None], cats, num_categories=3, test_fraction=0.2, data_seed=0)
    assert raw.multilabel and raw.num_classes == 3 and raw.class_names == ["a", "b", "c"]
    assert len(raw.y_train) + len(raw.y_test) == 50  # "z" papers dropped
    assert raw.y_train.dtype == torch.float32 and set(raw.y_train.unique().tolist()) == {0.0, 1.0}
    assert (raw.y_test.sum(0) > 0).all() and len(raw.y_test) == 10
    again = build_arxiv(torch.arange(60.0)[:, None], cats, num_categories=3, data_seed=0)
    assert torch.equal(raw.x_test, again.x_test)
    split = apply_protocol(raw, {"imbalance": "natural", "val_fraction": 0.2})
    assert split.multilabel and split.y_train.shape[1] == 3 and split.counts.tolist() == raw.y_train.sum(0).tolist()


def test_arxiv_extract_tfidf_then_load(make_cfg, tmp_path: Path) -> None:
    write_arxiv(tmp_path, n=200)
    assert extract("arxiv", "--data-dir", str(tmp_path), "--model", "tfidf", "--dim", "16") == 0
    with np.load(tmp_path / "arxiv" / "features_tfidf.npz") as f:
        assert f["X"].shape == (200, 16) and len(f["categories"]) == 200  # the paper without abstract skipped
    raw = load_arxiv(data_dir=str(tmp_path), features_model="tfidf", num_categories=5, data_seed=0)
    assert raw.num_classes == 5 and raw.y_train.shape[1] == 5 and raw.multilabel
    cfg = make_cfg("data=arxiv", "data.features_model=tfidf", "data.num_categories=5", "data.num_classes=5")
    split = build_split(cfg.data, str(tmp_path))
    assert split.multilabel and split.x_train.shape[1] == 16 and len(split.majority) == 5
    assert len(split.y_train) + len(split.y_val) + len(split.y_test) == len(raw.y_train) + len(raw.y_test)


def test_arxiv_missing(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_arxiv(data_dir=str(tmp_path))
    msg = str(err.value)
    assert "features_scibert.npz" in msg and "arxiv-metadata-oai-snapshot.json" in msg and "kaggle" in msg.lower()
    assert extract("arxiv", "--data-dir", str(tmp_path), "--model", "tfidf") == 1


# --- end to end: real-format files -> loader -> protocol -> pipeline (debug=tiny, CPU) -----------------

E2E = ("debug=tiny", "trainer=cpu", "logger=none")


def _run(make_cfg, tmp_path: Path, *overrides: str) -> dict:
    from crt.pipeline import run

    cfg = make_cfg(*overrides, *E2E)
    results = run(cfg, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "results.json").is_file()
    assert 0.0 <= results["metrics"]["test/top1"] <= 1.0 and np.isfinite(results["metrics"]["test/nll"])
    return results


@pytest.mark.slow
def test_e2e_cifar100(make_cfg, tmp_path: Path) -> None:
    write_cifar100(tmp_path / "data", per_class=10, test_per_class=2)
    r = _run(make_cfg, tmp_path, "data=cifar100", f"paths.data_dir={tmp_path / 'data'}", "method=ecrt_mp",
             "data.download=false", "data.n_max=10", "data.ratio=0.2",
             "data.encoder.name=mlp_image", "~data.encoder.channels_last",  # a ResNet-18 is too slow on a CPU;
             "+data.encoder.hidden=[16]")  # the MLP takes no ResNet options
    assert r["data"]["counts"] == [10] * 50 + [2] * 50 and r["data"]["n_test"] == 200
    assert r["data"]["minority_classes"] == list(range(50, 100))
    assert r["config"]["data"]["train_transform"] == "crop_flip"


@pytest.mark.slow
def test_e2e_tinyimagenet(make_cfg, tmp_path: Path, tiny_dir: Path) -> None:
    r = _run(make_cfg, tmp_path, "data=tinyimagenet", f"paths.data_dir={tiny_dir}", "method=ecrt_mp",
             "data.num_classes=4", "data.n_max=9", "data.ratio=0.34")
    assert r["data"]["counts"] == [9, 9, 3, 3] and r["data"]["n_test"] == 12


@pytest.mark.slow
def test_e2e_inat2019(make_cfg, tmp_path: Path, inat_dir: Path) -> None:
    r = _run(make_cfg, tmp_path, "data=inat2019", f"paths.data_dir={inat_dir}", "method=crt",
             "data.num_classes=6", "data.majority_min_count=5")
    assert r["data"]["counts"] == [8, 6, 5, 3, 2, 2] and r["data"]["minority_classes"] == [3, 4, 5]


@pytest.mark.slow
def test_e2e_features_npz(make_cfg, tmp_path: Path) -> None:
    path = write_features_npz(tmp_path / "feats.npz", m=4, per_class=50, split=None)
    r = _run(make_cfg, tmp_path, "data=features", f"data.path={path}", "data.imbalance=step", "data.ratio=0.1",
             "method=ecrt_1p")
    assert r["data"]["counts"] == [40, 40, 4, 4] and r["data"]["n_test"] == 40


# --- MNIST IDX files ------------------------------------------------------------------------------


def _write_mnist(root: Path, n_train: int = 60000, n_test: int = 10000) -> Path:
    import struct

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">4I", 2051, n, 28, 28) + bytes(n * 784))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">2I", 2049, n) + bytes(range(10)) * (n // 10))
    return raw


@pytest.mark.parametrize("damage,why", [
    ("truncated", "is 7839000 bytes, not 7840016 (truncated or padded)"),
    ("empty", "is 0 bytes, shorter than an IDX header"),
    ("magic", "has magic number 2049, not 2051"),
    ("shape", "has shape (10000, 28, 27), not (10000, 28, 28)"),
])
def test_damaged_mnist_is_named_not_missing(tmp_path: Path, damage: str, why: str) -> None:
    import struct

    from crt.data.mnist import load_mnist

    raw = _write_mnist(tmp_path)
    f = raw / "t10k-images-idx3-ubyte"
    data = f.read_bytes()
    f.write_bytes({"truncated": data[:7839000], "empty": b"",
                   "magic": struct.pack(">I", 2049) + data[4:],
                   "shape": data[:12] + struct.pack(">I", 27) + data[16:]}[damage])
    with pytest.raises(DataNotFoundError) as err:
        load_mnist(str(tmp_path), download=False)
    msg = str(err.value)
    assert f"MNIST under {raw} is damaged: t10k-images-idx3-ubyte {why}" in msg and "Fix:" in msg


def test_well_formed_mnist_files_load(tmp_path: Path) -> None:
    from crt.data.mnist import load_mnist

    _write_mnist(tmp_path)
    raw = load_mnist(str(tmp_path), download=False)
    assert raw.x_train.shape == (60000, 784) and torch.bincount(raw.y_test).tolist() == [1000] * 10
