"""Image folders and small real data sets as float32 (N, C, H, W) arrays in [-1, 1]."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DdmkitError

MAX_PIXELS = 8192 * 8192  # larger images are refused before decoding (decompression bombs)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DdmkitError(f"image folder {folder} does not exist; give a folder of PNG/JPEG files")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DdmkitError(f"no images (.png, .jpg, ...) in {folder}")
    return files


def load_image(path: str | os.PathLike, resolution: int, channels: int = 3) -> np.ndarray:
    """One image of any size and mode -> float32 (C, resolution, resolution) in [-1, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:  # read from the header: nothing is decoded yet
                raise DdmkitError(f"image {path} is {im.size[0]}x{im.size[1]}: more pixels than ddmkit reads "
                                  f"({MAX_PIXELS:,}); downscale it first (or it is a decompression bomb)")
            im = im.convert("RGB" if channels == 3 else "L")
            if im.size != (resolution, resolution):
                w, h = im.size
                side = min(w, h)  # centre crop to a square, then resize
                im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
                im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.float32)
    except Image.DecompressionBombError:
        raise DdmkitError(f"image {path} declares more pixels than ddmkit reads ({MAX_PIXELS:,}); downscale it "
                          "first (or it is a decompression bomb)") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DdmkitError(f"cannot read image {path}: {e.__class__.__name__}; give a PNG/JPEG file") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return arr / 127.5 - 1.0


def load_digits_images(resolution: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits (1,797 real 8x8 scans) upsampled to `resolution`, in [-1, 1].

    Returns images float32 (N, 1, R, R) and labels int64 (N,)."""
    import torch
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False)
    x = x.clamp(0, 1) * 2 - 1
    return x.numpy(), d.target.astype(np.int64)


def load_training_images(source: str, resolution: int, channels: int = 3) -> np.ndarray:
    """A training set by name ("digits") or a folder of images (as `channels` 3: RGB, 1: grey), in [-1, 1]."""
    if source == "digits":
        return load_digits_images(resolution)[0]
    files = list_images(source)
    return np.stack([load_image(f, resolution, channels) for f in files])
