"""Download and unpack the datasets that can be downloaded; say where the others must be put by hand.

    python scripts/prepare_data.py cifar100 [--data-dir DIR]     # DIR defaults to $CRT_DATA_DIR or data/
    python scripts/prepare_data.py all

mnist, cifar10, cifar100 and tinyimagenet are fetched from their official URLs and checked against their
published md5; iNaturalist 2019 and the arXiv snapshot sit behind a licence click (Kaggle / competition
page) and are only described. Nothing half-written is ever left in place: downloads go to `<file>.part`
and are renamed when complete and verified, archives are unpacked into a temporary folder beside the
target and renamed into place.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from crt.data.download import ARCHIVES, PrepareError, prepare_archive, prepare_mnist

MANUAL = {
    "inat2019": (
        ("iNaturalist 2019 (licence click; about 82 GB of images):\n"
        "  get train2019.json.tar.gz, val2019.json.tar.gz and train_val2019.tar.gz from\n"
        "  https://github.com/visipedia/inat_comp/tree/master/2019 (or Kaggle: inaturalist-2019-fgvc6)\n"
        "  and unpack them so that these exist:\n"
        "    {d}/inat2019/train2019.json\n    {d}/inat2019/val2019.json\n    {d}/inat2019/train_val2019/...\n"
        "  then: python scripts/extract_features.py inat2019 --data-dir {d}"),
        ["inat2019/train2019.json", "inat2019/val2019.json"],
    ),
    "arxiv": (
        ("arXiv metadata snapshot (Kaggle account needed):\n"
        "  download https://www.kaggle.com/datasets/Cornell-University/arxiv (arxiv-metadata-oai-snapshot.json)\n"
        "  and put it at\n    {d}/arxiv/arxiv-metadata-oai-snapshot.json\n"
        "  then: python scripts/extract_features.py arxiv --model scibert --data-dir {d}"),
        ["arxiv/arxiv-metadata-oai-snapshot.json"],
    ),
}
DATASETS = ["mnist", *ARCHIVES, *MANUAL]


def describe_manual(name: str, data_dir: Path) -> None:
    text, needed = MANUAL[name]
    have = all((data_dir / p).exists() for p in needed)
    print(f"{name}: {'present' if have else 'must be fetched by hand'}. " + text.format(d=data_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", choices=[*DATASETS, "all"], help="what to prepare")
    parser.add_argument("--data-dir", default=os.environ.get("CRT_DATA_DIR", "data"),
                        help="root of the datasets (default: $CRT_DATA_DIR or data/)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a stalled download gives up")
    parser.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).expanduser()
    names = DATASETS if "all" in args.datasets else list(dict.fromkeys(args.datasets))
    failed = []
    for name in names:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            if name == "mnist":
                prepare_mnist(data_dir, args.timeout)
            elif name in ARCHIVES:
                prepare_archive(name, data_dir, args.timeout, args.keep_archives)
            else:
                describe_manual(name, data_dir)
        except (PrepareError, OSError) as err:
            failed.append(name)
            print(f"error: {name}: {err}\n  Fix: run this on a machine with network access and copy "
                  f"{data_dir} over, or fetch the files by hand into {data_dir} (`--help` lists the sources).",
                  file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
