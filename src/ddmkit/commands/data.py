"""`ddmkit data`: write the built-in data sets as PNG folders with a labels.csv."""
from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DdmkitError
from ..output_guard import check_target
from .argtypes import int_range, path_text, seed
from .common import run_lock


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="write the synthetic faces or the digits as PNGs + labels.csv",
        description="Write a built-in data set to DIR/images/000000.png ... and DIR/labels.csv. "
        "The folder appears complete or not at all (written to a temporary folder, then renamed).",
        epilog="example: ddmkit data faces --num 1000 --seed 0 --out data/faces",
    )
    dsub = p.add_subparsers(dest="dataset", metavar="DATASET")
    f = dsub.add_parser(
        "faces",
        help="procedural 32x32 cartoon faces with 6 binary attributes",
        description="Procedural 32x32 faces; labels.csv has the columns file + the 6 attributes (0/1). "
        "The same --seed gives the same faces.",
        epilog="example: ddmkit data faces --num 1000 --seed 0 --out data/faces",
    )
    f.add_argument("--num", type=int_range(1, 1_000_000), default=1000, help="number of faces (default: 1000)")
    f.add_argument("--seed", type=seed, default=0, help="generator seed (default: 0)")
    _common(f)
    d = dsub.add_parser(
        "digits",
        help="scikit-learn's 1,797 handwritten digits upsampled to 32x32 grey PNGs",
        description="scikit-learn's handwritten digits (8x8 scans) upsampled to 32x32; labels.csv has "
        "the columns file, digit.",
        epilog="example: ddmkit data digits --out data/digits",
    )
    _common(d)
    p.set_defaults(func=lambda args: _missing(p))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=path_text, help="output folder (created; must be empty unless --overwrite)")
    p.add_argument("--overwrite", "--force", dest="force", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=run)


def _missing(p: argparse.ArgumentParser) -> int:
    raise DdmkitError("name a data set: 'ddmkit data faces --out DIR' or 'ddmkit data digits --out DIR'")


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_image_folder(out: str | Path, images: np.ndarray, columns: list[str], labels: np.ndarray,
                       force: bool = False) -> Path:
    """Write uint8 images (N, H, W, 3) or (N, H, W) as OUT/images/%06d.png plus OUT/labels.csv, atomically."""
    from ..io import replace_dir

    out = check_target(out, "folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DdmkitError(f"{out} is not empty; choose another --out or add --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; give it a normal folder's mode
        (tmp / "images").mkdir()
        names = [f"{i:06d}.png" for i in range(len(images))]
        for name, image in zip(names, images):
            (tmp / "images" / name).write_bytes(_png_bytes(image))
        with open(tmp / "labels.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", *columns])
            for name, row in zip(names, labels):
                w.writerow([f"images/{name}", *(int(v) for v in np.atleast_1d(row))])
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def run(args: argparse.Namespace) -> int:
    if args.dataset == "faces":
        from ..data.faces import ATTRIBUTES, sample_faces

        if args.num < 1:
            raise DdmkitError(f"--num must be >= 1, got {args.num}")
        images, labels = sample_faces(args.num, seed=args.seed)
        columns = list(ATTRIBUTES)
    else:
        from ..data.folders import load_digits_images

        x, labels = load_digits_images(32)
        images = np.clip(np.round((x[:, 0] + 1.0) * 127.5), 0, 255).astype(np.uint8)
        columns = ["digit"]
    with run_lock(check_target(args.out, "folder")):
        out = write_image_folder(args.out, images, columns, labels, force=args.force)
    print(f"wrote {len(images)} images and labels.csv to {out}")
    return 0
