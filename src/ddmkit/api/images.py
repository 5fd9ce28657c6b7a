"""Images in and out of the Python API: PIL images, uint8 arrays, float tensors <-> the model's (N, C, H, W).

In: a PIL image or a list of them; a numpy uint8 array (H, W), (H, W, C) or (N, H, W, C) (PIL's layout);
a torch uint8 tensor (C, H, W) or (N, C, H, W) (torchvision's); a float array or tensor (C, H, W) or
(N, C, H, W) in the model's data range; a file or folder path (read, centre-cropped and resized as
`ddmkit edit` does). Pixels map to the model's range as the CLI maps its PNGs: u / 127.5 - 1, then
[-1, 1] -> [lo, hi]. A PIL image or array of another size than the model's is refused (resize it first).

Out (`output_type`): "pt" a float32 tensor (N, C, H, W) in the model's data range (D's own space), "np" the
same as a numpy array, "pil" a list of PIL images quantised as ddmkit's PNGs (`ddmkit.outputs.to_uint8`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.folders import list_images, load_image
from ..denoisers import Denoiser, unwrap
from ..errors import DdmkitError
from ..outputs import to_uint8

OUTPUT_TYPES = ("pt", "np", "pil")
TOLERANCE = 1e-3  # float images may exceed the data range by this much (rounding), not more


def check_output_type(output_type: str, denoiser: Denoiser) -> str:
    if output_type not in OUTPUT_TYPES:
        raise DdmkitError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    if output_type == "pil" and not unwrap(denoiser).is_image:
        raise DdmkitError(f"output_type 'pil' needs an image model; this one makes samples of shape "
                          f"{tuple(unwrap(denoiser).sample_shape)} (use 'pt' or 'np')")
    return output_type


def to_output(x: torch.Tensor, denoiser: Denoiser, output_type: str) -> Any:
    """(N, ...) float samples in the model's range as `output_type` (module docstring)."""
    check_output_type(output_type, denoiser)
    x = x.detach().float().cpu()
    if output_type == "pt":
        return x
    if output_type == "np":
        return x.numpy()
    from PIL import Image

    u8 = to_uint8(x.numpy(), data_range(denoiser))
    return [Image.fromarray(u[..., 0] if u.shape[-1] == 1 else u) for u in u8]


def data_range(denoiser: Denoiser) -> tuple[float, float]:
    return tuple(unwrap(denoiser).data_range or (-1.0, 1.0))


def image_shape(denoiser: Denoiser) -> tuple[int, int, int]:
    shape = tuple(unwrap(denoiser).sample_shape)
    if len(shape) != 3:
        raise DdmkitError(f"images need an image model; this one makes samples of shape {shape}")
    return shape


def model_images(images: Any, denoiser: Denoiser, *, map_range: bool = True) -> tuple[torch.Tensor, bool]:
    """(x (N, C, H, W) float32 in the model's range, whether the input was PIL). Float inputs are checked
    against the data range; `map_range=False` leaves pixel inputs in [-1, 1] (as `ddmkit boundary fit`
    feeds its labelled images)."""
    x, pixels, pil = _collect(images, image_shape(denoiser))
    if not pixels:
        check_range(x, denoiser)
    elif map_range:
        lo, hi = data_range(denoiser)
        x = torch.from_numpy(lo + (x.numpy() + 1.0) * (hi - lo) / 2.0)  # as `ddmkit edit` maps its PNGs
    return x, pil


def _collect(images: Any, shape: tuple[int, int, int]) -> tuple[torch.Tensor, bool, bool]:
    """(x, whether it is pixels in [-1, 1], whether the input was PIL) of one input or a list of them."""
    if isinstance(images, (str, os.PathLike)):
        return _from_paths(Path(images), shape), True, False
    if isinstance(images, (list, tuple)):
        if not images:
            raise DdmkitError("no images given (an empty list)")
        parts = [_collect(im, shape) for im in images]
        if len({p[1] for p in parts}) > 1:
            raise DdmkitError("the list mixes pixel images (PIL, uint8) and float tensors; give one kind")
        return torch.cat([p[0] for p in parts]), parts[0][1], all(p[2] for p in parts)
    x, pixels = _one(images, shape)
    return x, pixels, _is_pil(images)


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(obj, Image.Image)


def _one(images: Any, shape: tuple[int, int, int]) -> tuple[torch.Tensor, bool]:
    """One PIL image, array or tensor -> ((N, C, H, W) float32, whether it was pixels in [-1, 1])."""
    if _is_pil(images):
        return torch.from_numpy(_pil_pixels(images, shape, "the PIL image")[None]), True
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        arr = images if images.ndim in (2, 3) else None
        if images.ndim == 4:
            return torch.from_numpy(np.stack([_array_pixels(a, shape) for a in images])), True
        if arr is None:
            raise DdmkitError(f"a uint8 image array is (H, W), (H, W, C) or (N, H, W, C), got shape {images.shape}")
        return torch.from_numpy(_array_pixels(arr, shape)[None]), True
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        t = images if images.ndim == 4 else images[None]
        if t.ndim != 4:
            raise DdmkitError(f"a uint8 image tensor is (C, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")
        return _one(t.permute(0, 2, 3, 1).cpu().numpy(), shape)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return _floats(images, shape), False
    raise DdmkitError(f"images must be PIL images, uint8 arrays, float tensors (N, C, H, W) or a path, "
                      f"got a {type(images).__name__}")


def _array_pixels(arr: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image

    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4):
        raise DdmkitError(f"a uint8 image array is (H, W, C) with C = 1, 3 or 4 (PIL's layout), got shape {arr.shape}; "
                          "a (C, H, W) array: pass torch.from_numpy(arr), or arr.transpose(1, 2, 0)")
    im = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
    return _pil_pixels(im, shape, f"the uint8 array of shape {arr.shape}")


def _pil_pixels(im, shape: tuple[int, int, int], what: str) -> np.ndarray:
    """A PIL image of the model's size -> float32 (C, H, W) in [-1, 1] (`ddmkit.data.folders.load_image`'s maths)."""
    c, h, w = shape
    if im.size != (w, h):
        raise DdmkitError(f"{what} is {im.size[0]}x{im.size[1]} but the model makes {w}x{h} images; resize it "
                          f"first (e.g. image.resize(({w}, {h})))")
    arr = np.asarray(im.convert("RGB" if c == 3 else "L"), dtype=np.float32)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return arr / 127.5 - 1.0


def _floats(images, shape: tuple[int, int, int]) -> torch.Tensor:
    x = torch.as_tensor(images).detach().float().cpu()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        hint = " (a (H, W, C) image? float images are (C, H, W))" if x.ndim == 4 and x.shape[-1] == shape[0] else ""
        raise DdmkitError(f"float images must be (N, C, H, W) or (C, H, W) of shape {shape}, got "
                          f"{tuple(torch.as_tensor(images).shape)}{hint}")
    if not torch.isfinite(x).all():
        raise DdmkitError("the images hold NaN or infinite values")
    return x


def check_range(x: torch.Tensor, denoiser: Denoiser) -> torch.Tensor:
    """Refuse float images outside the model's data range (e.g. [0, 255] pixels given as floats)."""
    lo, hi = data_range(denoiser)
    if len(x) and (float(x.min()) < lo - TOLERANCE or float(x.max()) > hi + TOLERANCE):
        raise DdmkitError(f"the float images span [{float(x.min()):.3g}, {float(x.max()):.3g}] but the model's data "
                          f"range is [{lo:g}, {hi:g}]; map them to it (or pass uint8 pixels / PIL images)")
    return x


def _from_paths(path: Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """A file or a folder of images, read as `ddmkit edit` reads them (centre crop, resize): [-1, 1]."""
    if path.is_dir():
        files = list_images(path)
    elif path.is_file():
        files = [path]
    else:
        raise DdmkitError(f"{path} does not exist; give an image file, a folder of images, or images in memory")
    return torch.from_numpy(np.stack([load_image(f, shape[1], shape[0]) for f in files]))
