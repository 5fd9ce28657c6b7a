"""The images to score in a folder: any ddmkit command's output folder, or a plain image folder.

The rule `ddmkit evaluate DIR` (and `--ref DIR`) follows:

- DIR/samples.npz (`sample`, `sample --dmcmc`): its array `x`, in the data range that
  DIR/manifest.json records (`data_range`, default [-1, 1]).
- DIR/edit.json or DIR/control.json (`edit`, `control`): the edited images
  DIR/images/<name>/<panel>.png, one per source image or sample; `panel` is the edit when the run
  made one (edit_00), else it must be chosen (edit_KK); `original` (control) and `source` /
  `reconstruction` (edit) score the unedited images. Strips and strip.png are never read.
- DIR/mixing_step.json (`mixing-step`): refused, with a message: its only image is a plot.
- otherwise the images in DIR/images/, else those in DIR: PNG, JPEG, ... of one size.

Images are read lazily, a batch at a time, as uint8; each file's size is read from its header first,
and a file over Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) is refused before it is
decoded.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DdmkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
RECORDS = ("manifest.json", "edit.json", "control.json", "mixing_step.json")
UNEDITED = {"edit": ("source", "reconstruction"), "control": ("original",)}


@dataclass
class ImageSet:
    """N images of one size: an array `x` (N, C, H, W) in `data_range`, or image files."""

    source: str
    n: int
    channels: int
    height: int
    width: int
    array: np.ndarray | None = None
    data_range: tuple[float, float] = (-1.0, 1.0)
    files: list[Path] = field(default_factory=list)

    @property
    def resolution(self) -> tuple[int, int]:
        return self.height, self.width

    def uint8_rgb(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Images lo:hi as uint8 (n, 3, H, W): values quantised as the PNGs ddmkit writes
        (round((x - low) / (high - low) * 255), clipped), grey repeated to 3 channels."""
        hi = self.n if hi is None else min(hi, self.n)
        if self.array is None:
            return np.stack([read_image(f, "RGB") for f in self.files[lo:hi]]) if hi > lo else \
                np.zeros((0, 3, self.height, self.width), np.uint8)
        x = self.array[lo:hi]
        if x.dtype != np.uint8:
            low, high = self.data_range
            x = np.clip(np.round((np.asarray(x, np.float64) - low) / (high - low) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x

    def unit_range(self, channels: int | None = None) -> np.ndarray:
        """All images as float32 (N, C, H, W) in [-1, 1] (files converted to `channels`: 1 grey, 3 RGB)."""
        if self.array is not None:
            x = np.asarray(self.array)
            if x.dtype == np.uint8:
                return x.astype(np.float32) / 127.5 - 1.0
            low, high = self.data_range
            return x if (low, high) == (-1.0, 1.0) else ((x - low) / (high - low) * 2.0 - 1.0).astype(np.float32)
        mode = "L" if channels == 1 else "RGB"
        return np.stack([read_image(f, mode) for f in self.files]).astype(np.float32) / 127.5 - 1.0


def folder_record(folder: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(file name, parsed JSON) of the record a ddmkit command left in `folder`, or (None, None)."""
    for name in RECORDS:
        path = folder / name
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                raise DdmkitError(f"{path} is not a readable JSON object; fix it or remove it") from None
            if not isinstance(record, dict):
                raise DdmkitError(f"{path} is not a JSON object; fix it or remove it")
            return name, record
    return None, None


def read_image_set(folder: str | os.PathLike, panel: str | None = None, what: str = "folder") -> ImageSet:
    """The images of `folder` by the module's rule; `panel` picks the images of an edit/control folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DdmkitError(f"{what} {folder} does not exist; give a folder with samples.npz or images")
    name, record = folder_record(folder)
    if name == "mixing_step.json":
        raise DdmkitError(f"{folder} is a 'ddmkit mixing-step' folder: mixing_step.png is a plot of the search, "
                          "not generated images; evaluate a 'ddmkit sample', 'edit' or 'control' folder")
    if name in ("edit.json", "control.json"):
        return _edited_images(folder, record, panel)
    if panel is not None:
        raise DdmkitError(f"--panel applies to 'ddmkit edit' and 'ddmkit control' folders; {folder} is neither")
    if (folder / "samples.npz").is_file():
        return _npz_images(folder / "samples.npz", (record or {}).get("data_range"))
    for d in (folder / "images", folder):
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else []
        if files:
            return files_image_set(files, f"{len(files)} images in {d}")
    raise DdmkitError(f"{folder} has no samples.npz and no images (.png, .jpg, ...); give a folder written "
                      "by 'ddmkit sample', 'edit' or 'control', or a folder of images")


def _npz_images(npz: Path, data_range: Any) -> ImageSet:
    try:
        with np.load(npz, allow_pickle=False) as z:
            if "x" not in z.files:
                raise DdmkitError(f"{npz} has no array 'x' (found: {', '.join(z.files) or 'none'}); "
                                  "save the samples as x, float32 (N, C, H, W) in [-1, 1]")
            x = z["x"]
    except DdmkitError:
        raise
    except Exception as e:
        raise DdmkitError(f"cannot read {npz}: {e.__class__.__name__}; write it with numpy.savez") from None
    if data_range is not None:
        try:
            low, high = (float(v) for v in data_range)
        except (TypeError, ValueError):
            raise DdmkitError(f"{npz.parent / 'manifest.json'}: data_range must be [low, high], got {data_range!r}") from None
    else:
        low, high = -1.0, 1.0
    c, h, w = (x.shape[1:] + (0, 0, 0))[:3] if x.ndim == 4 else (0, 0, 0)
    return ImageSet("samples.npz", int(x.shape[0]) if x.ndim else 0, int(c), int(h), int(w), array=x,
                    data_range=(low, high))


def _edited_images(folder: Path, record: dict[str, Any], panel: str | None) -> ImageSet:
    command = record.get("command") or ("edit" if (folder / "edit.json").is_file() else "control")
    k = len(record.get("edits") or [])
    edits = [f"edit_{i:02d}" for i in range(k)]
    panels = list(UNEDITED.get(command, ())) + edits
    if panel is None:
        if k != 1:
            raise DdmkitError(f"{folder} holds {k} edits per image ({', '.join(edits[:3])}{', ...' if k > 3 else ''}); "
                              f"choose the images to score with --panel ({', '.join(panels[:4])}, ...)")
        panel = edits[0]
    if panel not in panels:
        raise DdmkitError(f"--panel {panel!r} is not in {folder} ('ddmkit {command}' wrote: {', '.join(panels)})")
    rows = sorted(d for d in (folder / "images").iterdir() if d.is_dir()) if (folder / "images").is_dir() else []
    files = [d / f"{panel}.png" for d in rows]
    missing = [f for f in files if not f.is_file()]
    if not files or missing:
        raise DdmkitError(f"{folder}/images/*/{panel}.png: {len(missing)} of {len(files)} missing; "
                          f"the folder is incomplete, rerun 'ddmkit {command}'")
    return files_image_set(files, f"{len(files)} {panel} images of 'ddmkit {command}' in {folder}")


def files_image_set(files: list[Path], source: str) -> ImageSet:
    """An ImageSet of image files, after reading every header: one size, no decompression bomb."""
    size, channels = None, 1
    for f in files:
        mode, s = probe_image(f)
        if size is None:
            size = s
        elif s != size:
            raise DdmkitError(f"{f} is {s[0]}x{s[1]}, but {files[0].name} is {size[0]}x{size[1]}: "
                              "the images to score must share one size (resize or crop them first)")
        channels = max(channels, 1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3)
    return ImageSet(source, len(files), channels, size[1], size[0], files=list(files))


def _open(path: Path):
    """PIL's lazy open (header only), with its decompression-bomb check turned into a one-line error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DdmkitError(f"{path} declares more pixels than Pillow's decompression-bomb limit "
                          f"(Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}); refusing to decode it") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DdmkitError(f"cannot read image {path}: {e.__class__.__name__}; give PNG/JPEG files") from None


def probe_image(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) from the file's header."""
    im = _open(path)
    with im:
        return im.mode, im.size


def read_image(path: Path, mode: str) -> np.ndarray:
    """One image decoded as uint8 (C, H, W) in `mode` ("RGB": grey repeated; "L": grey)."""
    im = _open(path)
    try:
        with im:
            arr = np.asarray(im.convert(mode), dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DdmkitError(f"cannot decode image {path}: {e.__class__.__name__}; give PNG/JPEG files") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
