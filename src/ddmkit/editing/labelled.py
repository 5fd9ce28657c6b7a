"""Labelled image sets for fitting boundaries: synthetic faces, a folder + label CSV, two folders.

Each loader returns (images float32 (N, C, R, R) in [-1, 1], labels int64 (N,) with 1 = attribute
present, a JSON-able description for the boundary metadata). Nothing here touches a model.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..data.faces import ATTRIBUTES, sample_faces, to_tensor_range
from ..data.folders import list_images, load_image
from ..errors import DdmkitError

# Seeds of ddmkit.data.faces.sample_faces for boundary fitting. The diffusion model trains on seeds
# seed * 1_000_003 + step (small numbers) and the attribute classifier on 10_000_000 + k / 20_000_000;
# the FD reference faces use 30_000_000; these are far from all of them. The editing benchmark's held-out faces use EVAL_FACES_SEED.
FIT_FACES_SEED = 50_000_000
EVAL_FACES_SEED = 60_000_000
FILE_COLUMNS = ("file", "filename", "file_name", "image", "image_id", "path", "name")


def _resize(x: np.ndarray, resolution: int) -> np.ndarray:
    if x.shape[-1] == resolution:
        return x
    import torch

    t = torch.nn.functional.interpolate(torch.from_numpy(x), size=(resolution, resolution), mode="bilinear",
                                        align_corners=False, antialias=True)
    return t.clamp(-1, 1).numpy()


def labelled_faces(num: int, attribute: str, *, seed: int = FIT_FACES_SEED, resolution: int = 32,
                   channels: int = 3) -> tuple[np.ndarray, np.ndarray, dict]:
    """`num` synthetic faces, balanced: num // 2 with the attribute (seed) and the rest without
    (seed + 1), other attributes random, shuffled with `seed`."""
    if attribute not in ATTRIBUTES:
        raise DdmkitError(f"unknown face attribute {attribute!r}; choose from {', '.join(ATTRIBUTES)}")
    if num < 4:
        raise DdmkitError(f"--faces needs at least 4 faces (2 per class), got {num}")
    if channels != 3:
        raise DdmkitError("the synthetic faces are RGB but the model takes grey images; use --images or --positive/--negative")
    n_pos = num // 2
    pos, _ = sample_faces(n_pos, seed=seed, fixed={attribute: 1})
    neg, _ = sample_faces(num - n_pos, seed=seed + 1, fixed={attribute: 0})
    x = np.concatenate([to_tensor_range(pos), to_tensor_range(neg)])
    y = np.concatenate([np.ones(n_pos, np.int64), np.zeros(num - n_pos, np.int64)])
    perm = np.random.default_rng(seed).permutation(num)
    info = {"source": "faces", "num": int(num), "seed": int(seed), "balanced": True,
            "rule": "sample_faces(num//2, seed, fixed={attr: 1}) + sample_faces(num - num//2, seed+1, fixed={attr: 0}), shuffled"}
    return _resize(x[perm], resolution), y[perm], info


def _read_label_table(path: Path, attribute: str) -> dict[str, int]:
    """file name -> label from a CSV with a header (a file column + attribute columns) or CelebA's
    list_attr_celeba.txt (count line, header of attribute names, then 'file v1 v2 ...' rows)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DdmkitError(f"cannot read label file {path} ({e.__class__.__name__}); give a CSV with a header") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DdmkitError(f"label file {path} is empty")
    rows: list[tuple[str, str]] = []
    if lines[0].strip().isdigit():  # CelebA format, header parsed, rows indexed by file name
        names = lines[1].split()
        if attribute not in names:
            raise DdmkitError(f"attribute {attribute!r} is not in {path}; it has {', '.join(names[:8])}...")
        col = names.index(attribute)
        for ln in lines[2:]:
            parts = ln.split()
            if len(parts) == len(names) + 1:
                rows.append((parts[0], parts[col + 1]))
    else:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t") if any(c in lines[0] for c in ",;\t") else csv.excel
        reader = csv.reader(lines, dialect)
        header = [h.strip() for h in next(reader)]
        if attribute not in header:
            raise DdmkitError(f"attribute {attribute!r} is not a column of {path}; columns: {', '.join(header)}")
        fcol = next((header.index(c) for c in FILE_COLUMNS if c in header), 0)
        acol = header.index(attribute)
        for parts in reader:
            if len(parts) > max(fcol, acol):
                rows.append((parts[fcol].strip(), parts[acol].strip()))
    table: dict[str, int] = {}
    for name, value in rows:
        try:
            v = int(float(value))
        except ValueError:
            raise DdmkitError(f"{path}: label {value!r} of {name} is not a number; use 0/1 or -1/+1") from None
        if v not in (-1, 0, 1):
            raise DdmkitError(f"{path}: label {v} of {name} is not 0/1 or -1/+1")
        table[name] = 1 if v == 1 else 0
    if not table:
        raise DdmkitError(f"{path} has no label rows")
    return table


def choose_subset(labels: np.ndarray, num: int | None, balance: bool, seed: int) -> np.ndarray:
    """Indices of a seeded subset of `num` labelled images (all of them when None), sorted; with `balance`,
    num // 2 with the label and num - num // 2 without (refused when either group is too small)."""
    n = len(labels)
    if num is None:
        if balance:
            raise DdmkitError("--balance needs --num N (the size of the balanced subset)")
        return np.arange(n)
    rng = np.random.default_rng([int(seed), 0xBA1])
    if not balance:
        if num > n:
            raise DdmkitError(f"--num {num} is more than the {n} labelled images; give --num <= {n}")
        return np.sort(rng.choice(n, size=num, replace=False))
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    want_pos, want_neg = num - num // 2, num // 2
    if len(pos) < want_pos or len(neg) < want_neg:
        raise DdmkitError(f"--num {num} --balance needs {want_pos} images with the label and {want_neg} without; "
                          f"there are {len(pos)} and {len(neg)}: lower --num")
    return np.sort(np.concatenate([rng.choice(pos, size=want_pos, replace=False),
                                   rng.choice(neg, size=want_neg, replace=False)]))


def labelled_folder(images: str | os.PathLike, labels: str | os.PathLike, attribute: str, *, resolution: int,
                    channels: int = 3, num: int | None = None, balance: bool = False,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """The images of a folder with labels from a table (matched by file name, or by stem)."""
    folder = Path(images)
    if folder.is_dir() and (folder / "images").is_dir() and not any(
            p.suffix.lower() in (".png", ".jpg", ".jpeg") for p in folder.iterdir()):
        folder = folder / "images"  # the layout of `ddmkit data faces --out DIR`
    files = list_images(folder)
    table = _read_label_table(Path(labels), attribute)
    stems = {Path(k).stem: v for k, v in table.items()}
    chosen, ys = [], []
    for f in files:
        v = table.get(f.name, table.get(str(f), stems.get(f.stem)))
        if v is not None:
            chosen.append(f)
            ys.append(v)
    if not chosen:
        raise DdmkitError(f"no image of {images} has a row in {labels}; the file column must hold the image names")
    ys = np.asarray(ys, np.int64)
    keep = choose_subset(ys, num, balance, seed)  # only the chosen images are read
    x = np.stack([load_image(chosen[i], resolution, channels) for i in keep])
    info = {"source": "folder", "images": str(images), "labels": str(labels), "num": len(keep),
            "labelled": len(chosen), "unlabelled_skipped": len(files) - len(chosen)}
    if num is not None:
        info["subset"] = {"num": num, "balance": balance, "seed": seed}
    return x, ys[keep], info


def labelled_two_folders(positive: str | os.PathLike, negative: str | os.PathLike, *, resolution: int,
                         channels: int = 3, num: int | None = None, balance: bool = False,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Images with the attribute (or matching a prompt) from one folder, without it from another; `num` /
    `balance`: a seeded (balanced) subset, and only its images are read (`choose_subset`)."""
    pos, neg = list_images(positive), list_images(negative)
    files = pos + neg
    y = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    keep = choose_subset(y, num, balance, seed)
    x = np.stack([load_image(files[i], resolution, channels) for i in keep])
    info = {"source": "two-folders", "positive": str(positive), "negative": str(negative),
            "num_positive": int(y[keep].sum()), "num_negative": int(len(keep) - y[keep].sum())}
    if num is not None:
        info["subset"] = {"num": num, "balance": balance, "seed": seed}
    return x, y[keep], info
