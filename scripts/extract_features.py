"""Precompute the frozen features the papers train on, once per dataset.

    python scripts/extract_features.py tinyimagenet   # ResNet-18 (ImageNet), 512-d  -> tiny-imagenet-200/features_resnet18.npz
    python scripts/extract_features.py inat2019       # Inception-V3 (ImageNet), 2048-d -> inat2019/features_inception_v3.npz
    python scripts/extract_features.py arxiv --model scibert   # mean-pooled SciBERT -> arxiv/features_scibert.npz

Batched, on the GPU when there is one, and resumable: rows are done in shards written atomically to
`<output>.parts/`, finished shards are skipped on a rerun, and the final `.npz` (the `features` format:
X, y, split, class_names; for arXiv X, ids, categories) appears by atomic rename only when complete.
Pretrained weights come through torchvision / transformers; when they cannot be downloaded the script
says so and stops. `--random-init` (tests only) uses random weights; `--model tfidf` embeds text with
TF-IDF + truncated SVD (scikit-learn, offline).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

TEXT_MODELS = {"scibert": "allenai/scibert_scivocab_uncased", "bert": "bert-base-uncased"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ExtractError(RuntimeError):
    """A step failed for a reason the user can fix; the message says how."""


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """np.savez to a temp file beside `path`, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_sharded(n: int, shard_size: int, parts: Path, manifest: dict[str, Any],
                compute: Callable[[int, int], np.ndarray], dtype: str = "float32") -> np.ndarray:
    """Rows 0..n-1 in shards of `shard_size`, each saved to `parts/`; shards already there are reused."""
    mpath = parts / "manifest.json"
    if parts.exists():
        try:
            same = json.loads(mpath.read_text()) == manifest
        except (OSError, ValueError):
            same = False
        if not same:  # shards of another model / file list: start over
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not mpath.exists():
        mpath.write_text(json.dumps(manifest, sort_keys=True))
    out = []
    n_shards = -(-n // shard_size) if n else 0
    for k in range(n_shards):
        f = parts / f"shard_{k:05d}.npz"
        if f.exists():
            with np.load(f) as z:
                out.append(z["X"])
            continue
        start, stop = k * shard_size, min(n, (k + 1) * shard_size)
        x = compute(start, stop).astype(dtype)
        atomic_savez(f, X=x)
        out.append(x)
        print(f"  shard {k + 1}/{n_shards}: rows {start}..{stop - 1}", flush=True)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=dtype)


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def image_model(kind: str, random_init: bool) -> Any:
    """Backbone with its classifier removed: ResNet-18 (512-d) or Inception-V3 pooled features (2048-d)."""
    from torch import nn
    from torchvision import models

    try:
        if kind == "resnet18":
            net = models.resnet18(weights=None if random_init else models.ResNet18_Weights.IMAGENET1K_V1)
        else:
            if random_init:
                net = models.inception_v3(weights=None, aux_logits=False, init_weights=False)
            else:
                net = models.inception_v3(weights=models.Inception_V3_Weights.IMAGENET1K_V1)
    except Exception as err:  # noqa: BLE001  (no network, proxy, disk ...)
        raise ExtractError(
            f"could not download the pretrained {kind} weights ({type(err).__name__}: {err}). Fix: run once on a "
            "machine with network access (torchvision caches them in $TORCH_HOME/hub/checkpoints), or copy the "
            "checkpoint file there by hand."
        ) from None
    net.fc = nn.Identity()
    return net.eval()


class _Images:
    """Map-style dataset: path -> normalised float tensor (resize, centre crop)."""

    def __init__(self, paths: Sequence[Path], resize: int, crop: int):
        from torchvision import transforms as T

        self.paths = list(paths)
        self.tf = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB"))


def extract_images(args: argparse.Namespace) -> Path:
    import torch

    data_dir = Path(args.data_dir).expanduser()
    if args.dataset == "tinyimagenet":
        from crt.data import tinyimagenet as ds

        root, kind, default_size = data_dir / ds.FOLDER, "resnet18", 224
    else:
        from crt.data import inat as ds

        root, kind, default_size = data_dir / ds.FOLDER, "inception_v3", 299
    tr_paths, tr_y, te_paths, te_y, names = ds.list_images(root)
    paths = tr_paths + te_paths
    missing = [p for p in paths[:: max(1, len(paths) // 100)] if not p.is_file()]
    if missing:
        raise ExtractError(f"image files are missing, e.g. {missing[0]}. Fix: unpack the complete dataset into {root}.")
    out = Path(args.out) if args.out else root / ds.FEATURES
    size = args.image_size or default_size
    resize = size if kind == "resnet18" else round(size * 8 / 7)
    device = _device(args.device)
    net = image_model(kind, args.random_init).to(device)
    images = _Images(paths, resize, size)
    digest = hashlib.sha256("\n".join(str(p.relative_to(root)) for p in paths).encode()).hexdigest()
    manifest = {"model": kind, "random_init": bool(args.random_init), "size": size, "files": digest,
                "n": len(paths), "shard_size": args.shard_size, "dtype": args.dtype}

    @torch.inference_mode()
    def compute(start: int, stop: int) -> np.ndarray:
        sub = torch.utils.data.Subset(images, range(start, stop))
        loader = torch.utils.data.DataLoader(sub, batch_size=args.batch_size, num_workers=args.workers,
                                             pin_memory=device.type == "cuda")
        feats = [net(b.to(device, non_blocking=True)).float().cpu() for b in loader]
        return torch.cat(feats).numpy()

    print(f"{args.dataset}: {len(paths)} images -> {kind} features on {device}")
    x = run_sharded(len(paths), args.shard_size, out.with_name(out.name + ".parts"), manifest, compute, args.dtype)
    split = np.array(["train"] * len(tr_paths) + ["test"] * len(te_paths))
    atomic_savez(out, X=x, y=np.asarray(tr_y + te_y, dtype=np.int64), split=split,
                 class_names=np.asarray(names, dtype=str), model=np.asarray(kind))
    shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
    return out


def read_arxiv_metadata(path: Path, max_docs: int | None = None) -> tuple[list[str], list[str], list[str]]:
    """(ids, categories, abstracts) of the papers with an abstract, in file order."""
    if not path.is_file():
        raise ExtractError(f"{path} not found. Fix: download the arXiv metadata snapshot by hand from "
                           "https://www.kaggle.com/datasets/Cornell-University/arxiv and put it there.")
    ids, cats, texts = [], [], []
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            abstract = " ".join(str(rec.get("abstract") or "").split())
            if not abstract or not str(rec.get("categories") or "").strip():
                continue
            ids.append(str(rec.get("id", len(ids))))
            cats.append(" ".join(str(rec["categories"]).split()))
            texts.append(abstract)
            if max_docs and len(ids) >= max_docs:
                break
    return ids, cats, texts


def embed_tfidf(texts: Sequence[str], dim: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(max_features=50_000, sublinear_tf=True, stop_words="english").fit_transform(texts)
    k = max(1, min(dim, tfidf.shape[1] - 1, len(texts) - 1))
    return TruncatedSVD(n_components=k, random_state=0).fit_transform(tfidf).astype(np.float32)


def text_model(name: str, device: Any) -> tuple[Any, Any]:
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise ExtractError("BERT-family embeddings need the `transformers` package. Fix: `pip install "
                           "transformers` (or `pip install -e .[text]`), or use --model tfidf.") from None
    repo = TEXT_MODELS.get(name, name)
    try:
        tok = AutoTokenizer.from_pretrained(repo)
        model = AutoModel.from_pretrained(repo)
    except Exception as err:  # noqa: BLE001  (no network, unknown model id, ...)
        raise ExtractError(f"could not download the text model {repo} ({type(err).__name__}: {err}). Fix: run "
                           "once on a machine with network access (Hugging Face caches it in $HF_HOME), or pass "
                           "--model with a local folder.") from None
    return tok, model.to(device).eval()


def extract_arxiv(args: argparse.Namespace) -> Path:
    import torch

    root = Path(args.data_dir).expanduser() / "arxiv"
    ids, cats, texts = read_arxiv_metadata(root / "arxiv-metadata-oai-snapshot.json", args.max_docs)
    slug = args.model.rstrip("/").split("/")[-1]
    out = Path(args.out) if args.out else root / f"features_{slug}.npz"
    print(f"arxiv: {len(texts)} abstracts -> {args.model} embeddings")
    if args.model == "tfidf":
        x = embed_tfidf(texts, args.dim)
    else:
        device = _device(args.device)
        tok, model = text_model(args.model, device)
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
        manifest = {"model": args.model, "n": len(texts), "ids": digest, "shard_size": args.shard_size,
                    "max_length": args.max_length, "pooling": args.pooling, "dtype": args.dtype}

        @torch.inference_mode()
        def compute(start: int, stop: int) -> np.ndarray:
            feats = []
            for i in range(start, stop, args.batch_size):
                enc = tok(texts[i:min(stop, i + args.batch_size)], padding=True, truncation=True,
                          max_length=args.max_length, return_tensors="pt").to(device)
                h = model(**enc).last_hidden_state
                if args.pooling == "cls":
                    feats.append(h[:, 0].float().cpu())
                else:
                    m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
                    feats.append(((h * m).sum(1) / m.sum(1).clamp(min=1)).float().cpu())
            return torch.cat(feats).numpy()

        x = run_sharded(len(texts), args.shard_size, out.with_name(out.name + ".parts"), manifest, compute, args.dtype)
    atomic_savez(out, X=x.astype(args.dtype), ids=np.asarray(ids, dtype=str), categories=np.asarray(cats, dtype=str),
                 model=np.asarray(args.model))
    shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=["tinyimagenet", "inat2019", "arxiv"])
    p.add_argument("--data-dir", default=os.environ.get("CRT_DATA_DIR", "data"),
                   help="root of the datasets (default: $CRT_DATA_DIR or data/)")
    p.add_argument("--out", default=None, help="output .npz (default: the file the data loader reads)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=20_000, help="rows per resumable shard")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="image decoding processes")
    p.add_argument("--image-size", type=int, default=None, help="crop size (default 224 ResNet, 299 Inception)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="storage type of X")
    p.add_argument("--random-init", action="store_true", help="random weights (tests only; no download)")
    p.add_argument("--model", default="scibert",
                   help="arxiv: scibert | bert | tfidf | any Hugging Face model id or local folder")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls"], help="arxiv: token pooling")
    p.add_argument("--max-length", type=int, default=256, help="arxiv: tokens per abstract")
    p.add_argument("--max-docs", type=int, default=None, help="arxiv: only the first N papers")
    p.add_argument("--dim", type=int, default=768, help="arxiv --model tfidf: SVD dimensions")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `crt` from a source checkout
    try:
        out = extract_arxiv(args) if args.dataset == "arxiv" else extract_images(args)
    except ExtractError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # the loaders' DataNotFoundError and friends: a message, not a traceback
        from crt.errors import ConfigError

        if not isinstance(err, ConfigError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
