"""The synthetic faces of `data/faces.py`, rendered with torch on any device, vectorised over the batch.

The parameters are the numpy ones (`sample_face_params`, the same seed gives the same faces): torch's
generators give other streams than numpy's, and on CUDA other streams than on the CPU, so drawing the
parameters in torch would change the faces from device to device. Drawing them costs little (about 25
vectorised numpy draws per batch, one host-to-device copy); the per-pixel work, the signed distance
functions and the compositing, runs in torch, in float32 like the numpy renderer, operation for operation,
densely over every pixel (the numpy renderer's row bands and sparse updates only skip pixels whose coverage
is exactly 0, which leave a pixel unchanged bit for bit). The uint8 images equal the numpy ones up to the
last bit of a few float32 functions (hypot): `tests/test_faces_torch.py` states what holds.

    params = sample_face_params(4096, seed=0)
    images = render_faces_torch(face_params_to_torch(params, "cuda"))   # uint8 (N, 32, 32, 3) on the GPU
    x = faces_batch(4096, seed=0, device="cuda")                        # float32 (N, 3, 32, 32) in [-1, 1]
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .faces import ATTRIBUTES, RESOLUTION, Params, sample_face_params

# the fixed colours of faces.render_faces: ink, white, lips, light and deep skin
_PALETTE = ((0.08, 0.06, 0.06), (0.97, 0.97, 0.97), (0.55, 0.08, 0.12), (0.98, 0.84, 0.72), (0.52, 0.34, 0.22))
_INK, _WHITE, _LIPS, _SKIN_LIGHT, _SKIN_DEEP = range(5)


@lru_cache(maxsize=8)
def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The palette (5, 3) and the 256 values of `faces.to_tensor_range`, copied to `device` once: a copy per
    batch would make the host wait for the device."""
    levels = torch.from_numpy(np.arange(256, dtype=np.float32) / 127.5 - 1.0)  # to_tensor_range's values, exactly
    return torch.tensor(_PALETTE, dtype=torch.float32).to(device), levels.to(device)


def face_params_to_torch(params: Params, device: torch.device | str) -> dict[str, torch.Tensor]:
    """numpy face parameters -> tensors on `device`, in one asynchronous copy (pinned memory on CUDA)."""
    device = torch.device(device)
    floats = [k for k in params if k not in ATTRIBUTES and k != "jitter"]
    columns = [np.stack([params[k] for k in floats], 1), params["jitter"], np.stack([params[a] for a in ATTRIBUTES], 1)]
    packed = torch.from_numpy(np.concatenate(columns, 1).astype(np.float32))  # attributes 0/1: exact in float32
    if device.type == "cuda":
        packed = packed.pin_memory()
    packed = packed.to(device, non_blocking=True)
    out = {k: packed[:, i] for i, k in enumerate(floats)}
    out["jitter"] = packed[:, len(floats):len(floats) + 3]
    out.update({a: packed[:, len(floats) + 3 + i].long() for i, a in enumerate(ATTRIBUTES)})
    return out


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N,) HSV -> (N, 3) RGB float32, in float64 like `faces._hsv_to_rgb`."""
    h6 = torch.remainder(h.double(), 1.0) * 6.0
    s, v = s.double(), v.double()
    k = torch.stack([torch.remainder(5.0 + h6, 6.0), torch.remainder(3.0 + h6, 6.0), torch.remainder(1.0 + h6, 6.0)], 1)
    rgb = v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb.float()


def _sqrt(v: torch.Tensor) -> torch.Tensor:
    """float32 sqrt, correctly rounded on every device (numpy's is; torch's float32 sqrt on CPUs is not)."""
    return torch.sqrt(v.double()).float()


def _hypot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float32 hypot as glibc's `hypotf` (numpy's) computes it: in float64, rounded once."""
    return torch.hypot(a.double(), b.double()).float()


def _alpha(sdf: torch.Tensor) -> torch.Tensor:
    return torch.clamp(0.5 - sdf, 0.0, 1.0)


def _over(canvas: torch.Tensor, color: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """canvas + alpha (color - canvas), canvas (N, H, W, 3), color (N, 3), alpha broadcasting to (N, H, W)."""
    return canvas + alpha[..., None] * (color[:, None, None, :] - canvas)


def _hsegment_sdf(x, y, x0, x1, y0, half_width):
    """Distance to a horizontal segment (y0 = y1: every segment the faces draw), minus its half width;
    `faces._segment_sdf`'s horizontal branch."""
    dx = x1 - x0
    t = torch.clamp((x - x0) * dx / (dx * dx), 0.0, 1.0)
    return _hypot(x - (x0 + t * dx), y - y0) - half_width


def _rgb(which: int, like: torch.Tensor) -> torch.Tensor:
    """One palette colour as an (N, 3) view."""
    return _constants(like.device)[0][which].expand(like.shape[0], 3)


def _head(p: dict[str, torch.Tensor], g: dict[str, torch.Tensor]) -> torch.Tensor:
    """Background (with its vertical gradient), hair behind, face ellipse, hair cap: `render_faces`' first part."""
    x, y, cx, cy, rx, ry = g["x"], g["y"], g["cx"], g["cy"], g["rx"], g["ry"]
    n = cx.shape[0]
    hue = torch.where(p["warm_background"].bool(), p["bg_hue_warm"], p["bg_hue_cool"])
    bg = _hsv_to_rgb(hue, p["bg_sat"], p["bg_val"])
    ramp = 1.0 + p["bg_grad"][:, None, None] * (y - 16.0) / 16.0
    canvas = (bg[:, None, None, :] * ramp[..., None]).expand(n, RESOLUTION, RESOLUTION, 3)
    face_sdf = (_sqrt(torch.square((x - cx) / rx) + torch.square((y - cy) / ry)) - 1.0) * torch.minimum(rx, ry)
    t = p["skin_t"][:, None]
    skin = _rgb(_SKIN_LIGHT, t) * (1 - t) + _rgb(_SKIN_DEEP, t) * t
    hair_val = torch.where(p["dark_hair"].bool(), p["hair_val_dark"], p["hair_val_light"])
    hair = _hsv_to_rgb(p["hair_hue"], p["hair_sat"], hair_val)
    hair_outer = (_sqrt(torch.square((x - cx) / (rx + 1.6)) + torch.square((y - cy + 0.6) / (ry + 1.6))) - 1.0) * (rx + 1.6)
    cap = torch.maximum(hair_outer, y - (cy + p["fringe"][:, None, None] * ry))
    canvas = _over(canvas, hair, _alpha(torch.maximum(hair_outer, y - (cy + 0.1 * ry))))
    canvas = _over(canvas, skin, _alpha(face_sdf))
    return _over(canvas, hair, _alpha(cap))


def _eyes(canvas: torch.Tensor, p: dict[str, torch.Tensor], g: dict[str, torch.Tensor]) -> torch.Tensor:
    """Open eyes (white disc, pupil) or shut (a line), glasses rings and bridge."""
    x, y, cx, cy, rx, ry, s = g["x"], g["y"], g["cx"], g["cy"], g["rx"], g["ry"], g["s"]
    ink, white = _rgb(_INK, cx), _rgb(_WHITE, cx)
    oe, glasses = p["open_eyes"].bool()[:, None, None], p["eyeglasses"].bool()[:, None, None]
    ey = cy - 0.12 * ry
    for side in (-1.0, 1.0):
        ex = cx + side * 0.40 * rx
        eye_disc = _hypot(x - ex, y - ey) - 1.9 * s
        pupil = _hypot(x - ex - p["pupil_dx"][:, None, None], y - ey) - 1.05 * s
        shut = _hsegment_sdf(x, y, ex - 1.9 * s, ex + 1.9 * s, ey + 0.3, 0.5)
        canvas = _over(canvas, white, _alpha(torch.where(oe, eye_disc, 9.0)))
        canvas = _over(canvas, ink, _alpha(torch.where(oe, pupil, shut)))
        ring = torch.abs(_hypot(x - ex, y - ey) - 3.0 * s) - 0.55
        canvas = _over(canvas, ink, _alpha(torch.where(glasses, ring, 9.0)))
    bridge = _hsegment_sdf(x, y, cx - 0.40 * rx + 3.0 * s, cx + 0.40 * rx - 3.0 * s, ey, 0.5)
    return _over(canvas, ink, _alpha(torch.where(glasses, bridge, 9.0)))


def _mouth(canvas: torch.Tensor, p: dict[str, torch.Tensor], g: dict[str, torch.Tensor]) -> torch.Tensor:
    """An open smile (filled lower half-disc) or a straight closed mouth."""
    x, y, cx, cy, ry, s = g["x"], g["y"], g["cx"], g["cy"], g["ry"], g["s"]
    my = cy + 0.48 * ry
    mw = p["mouth_w"][:, None, None] * s
    half_disc = torch.maximum(_hypot(x - cx, y - my + 0.8) - 3.6 * mw, (my - 0.8) - y)
    straight = _hsegment_sdf(x, y, cx - 2.8 * mw, cx + 2.8 * mw, my, 0.55)
    smiling = p["smiling"].bool()[:, None, None]
    return _over(canvas, _rgb(_LIPS, cx), _alpha(torch.where(smiling, half_disc, straight)))


def render_faces_torch(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Faces from `face_params_to_torch` output: uint8 (N, 32, 32, 3) on the parameters' device."""
    cx = params["cx"]
    n, dev = cx.shape[0], cx.device
    if n == 0:
        return torch.zeros((0, RESOLUTION, RESOLUTION, 3), dtype=torch.uint8, device=dev)
    grid = torch.arange(RESOLUTION, dtype=torch.float32, device=dev) + 0.5
    col = lambda v: v.float()[:, None, None]  # noqa: E731
    round_face = params["round_face"].bool()
    s = col(params["scale"])
    g = {"x": grid[None, None, :], "y": grid[None, :, None], "cx": col(cx), "cy": col(params["cy"]), "s": s,
         "rx": torch.where(round_face, 10.6, 8.4).float()[:, None, None] * s,
         "ry": torch.where(round_face, 10.4, 12.0).float()[:, None, None] * s}
    canvas = _mouth(_eyes(_head(params, g), params, g), params, g)
    canvas = canvas * params["jitter"][:, None, None, :]
    canvas = torch.clamp(torch.round(canvas * 255.0), 0, 255)
    return canvas.to(torch.uint8)


def faces_batch(num: int, seed: int, device: torch.device | str) -> torch.Tensor:
    """The faces of `sample_faces(num, seed)`, rendered on `device`: float32 (N, 3, 32, 32) in [-1, 1], the
    values and the memory layout (channels-last strides) of `faces.to_tensor_range`'s array."""
    images = render_faces_torch(face_params_to_torch(sample_face_params(num, seed), device))
    return _constants(images.device)[1][images.long()].permute(0, 3, 1, 2)
