"""Image folders and small real data sets as float32 (N, C, H, W) arrays in [-1, 1]; `ImageFolder` reads a
folder one image at a time (a `torch.utils.data.Dataset`), so a training set never has to fit in memory."""
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


GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def folder_channels(files: list[Path]) -> int:
    """1 if every image of the folder is greyscale (read from the headers: nothing is decoded), else 3."""
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as im:
                if im.mode not in GREY_MODES:
                    return 3
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DdmkitError(f"cannot read image {f}: {e.__class__.__name__}; give a PNG/JPEG file") from None
    return 1


class ImageFolder:
    """The images of a folder, decoded one at a time when asked (`__getitem__`, a map-style dataset for
    `torch.utils.data.DataLoader`): float32 (C, resolution, resolution) in [-1, 1], C = `channels`, or 1 for a
    folder of greyscale images and 3 otherwise. Memory does not grow with the folder."""

    def __init__(self, folder: str | os.PathLike, resolution: int, channels: int | None = None,
                 files: list[Path] | None = None):
        self.files = list(files) if files is not None else list_images(folder)
        self.resolution = int(resolution)
        self.channels = int(channels) if channels is not None else folder_channels(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        return load_image(self.files[int(i)], self.resolution, self.channels)

    def batch(self, indices) -> np.ndarray:
        """The images `indices` as one float32 (B, C, R, R) array."""
        return np.stack([self[i] for i in indices])

    def subset(self, indices) -> "ImageFolder":
        return ImageFolder(None, self.resolution, self.channels, files=[self.files[int(i)] for i in indices])


def load_training_images(source: str, resolution: int, channels: int = 3) -> np.ndarray:
    """A training set by name ("digits") or a folder of images (as `channels` 3: RGB, 1: grey), in [-1, 1]."""
    if source == "digits":
        return load_digits_images(resolution)[0]
    files = list_images(source)
    return np.stack([load_image(f, resolution, channels) for f in files])
