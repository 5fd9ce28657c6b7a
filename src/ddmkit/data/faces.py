"""Procedural 32x32 cartoon faces with exact binary attribute labels.

Every face is drawn from signed distance functions (SDFs) composited with a one-pixel
anti-aliasing ramp, vectorised over the batch with NumPy. Six named binary attributes are
independent fair coins; position, size, skin tone, hair and background colours, pupil direction
and a colour jitter are nuisance variation. The same seed gives the same images and labels.

    images, labels = sample_faces(1000, seed=0)        # uint8 (N, 32, 32, 3), int64 (N, 6)
    params = sample_face_params(8, seed=1, fixed={"smiling": 1})
    images = render_faces(params)                       # a counterfactual: flip one attribute,
    images_no_smile = render_faces({**params, "smiling": params["smiling"] * 0})
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import DdmkitError

ATTRIBUTES: tuple[str, ...] = (
    "smiling",
    "eyeglasses",
    "dark_hair",
    "round_face",
    "open_eyes",
    "warm_background",
)
RESOLUTION = 32

Params = dict[str, np.ndarray]


def _check_fixed(fixed: Mapping[str, int] | None) -> dict[str, int]:
    fixed = dict(fixed or {})
    for name, value in fixed.items():
        if name not in ATTRIBUTES:
            raise DdmkitError(f"unknown face attribute {name!r}; choose from {', '.join(ATTRIBUTES)}")
        if value not in (0, 1):
            raise DdmkitError(f"attribute {name!r} must be 0 or 1, got {value!r}")
    return fixed


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB (N, 3), float32; the same formula as `colorsys.hsv_to_rgb`."""
    h6 = (np.asarray(h, np.float64) % 1.0) * 6.0
    s, v = np.asarray(s, np.float64), np.asarray(v, np.float64)
    k = np.stack([(5.0 + h6) % 6.0, (3.0 + h6) % 6.0, (1.0 + h6) % 6.0], axis=1)
    rgb = v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb.astype(np.float32)


def sample_face_params(num: int, seed: int = 0, fixed: Mapping[str, int] | None = None) -> Params:
    """Draw attribute labels (fair coins unless `fixed`) and nuisance parameters for `num` faces."""
    if num < 0:
        raise DdmkitError(f"number of faces must be >= 0, got {num}")
    fixed = _check_fixed(fixed)
    rng = np.random.default_rng(seed)
    p: Params = {}
    for name in ATTRIBUTES:
        p[name] = rng.integers(0, 2, size=num)
        if name in fixed:
            p[name][:] = fixed[name]
    u = lambda lo, hi: rng.uniform(lo, hi, size=num).astype(np.float32)  # noqa: E731
    p["cx"] = u(14.5, 17.5)
    p["cy"] = u(15.5, 17.5)
    p["scale"] = u(0.88, 1.04)
    p["skin_t"] = u(0.0, 1.0)
    # hair: dark = black/dark brown, light = blond/ginger/grey
    p["hair_hue"] = u(0.02, 0.13)
    p["hair_sat"] = u(0.25, 0.75)
    p["hair_val_dark"] = u(0.08, 0.25)
    p["hair_val_light"] = u(0.78, 0.98)
    p["fringe"] = u(-0.45, -0.25)
    # background: warm = red/orange/yellow hues, cool = green/blue/purple hues
    p["bg_hue_warm"] = u(-0.04, 0.13)
    p["bg_hue_cool"] = u(0.38, 0.75)
    p["bg_sat"] = u(0.45, 0.8)
    p["bg_val"] = u(0.55, 0.9)
    p["bg_grad"] = u(-0.15, 0.15)
    p["pupil_dx"] = u(-0.45, 0.45)
    p["mouth_w"] = u(0.9, 1.1)
    p["jitter"] = rng.uniform(0.93, 1.07, size=(num, 3)).astype(np.float32)
    return p


def _alpha(sdf: np.ndarray) -> np.ndarray:
    """Coverage of a shape from its signed distance (pixels): a one-pixel anti-aliasing ramp."""
    return np.clip(np.float32(0.5) - sdf, np.float32(0.0), np.float32(1.0))


def _over(canvas: np.ndarray, color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-composite `color` (N, 3) over `canvas` (N, H, W, 3) in place.

    Small shapes update only their pixels with alpha > 0: elsewhere the formula adds exactly 0, so
    the result is bit-identical to the dense update, which large shapes use."""
    alpha = np.broadcast_to(alpha, canvas.shape[:3])
    idx = np.nonzero(alpha)
    if idx[0].size > alpha.size // 8:
        canvas += alpha[..., None] * (color[:, None, None, :] - canvas)
    elif idx[0].size:
        px = canvas[idx]
        canvas[idx] = px + alpha[idx][:, None] * (color[idx[0]] - px)
    return canvas


def _band(centre: np.ndarray, below: float, above: float) -> slice:
    """Rows whose pixel centres lie within [min(centre) - below, max(centre) + above] (plus a pixel)."""
    lo = int(np.floor(float(centre.min()) - below - 1.5))
    hi = int(np.ceil(float(centre.max()) + above + 1.5))
    return slice(max(lo, 0), max(min(hi, RESOLUTION), 0))


def _segment_sdf(x, y, x0, y0, x1, y1, half_width):
    dx, dy = x1 - x0, y1 - y0
    if not np.any(dy):
        # horizontal segments (all of ours): the y terms are exactly zero, so the projection t
        # depends on x alone and stays (N, 1, W); the values equal the general formula's bit for bit
        t = np.clip((x - x0) * dx / (dx * dx + dy * dy), 0.0, 1.0)
        return np.hypot(x - (x0 + t * dx), y - y0) - half_width
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy)) - half_width


def render_faces(params: Params) -> np.ndarray:
    """Render faces from `sample_face_params` output: uint8 array (N, 32, 32, 3)."""
    n = len(params["smiling"])
    if n == 0:
        return np.zeros((0, RESOLUTION, RESOLUTION, 3), np.uint8)
    grid = np.arange(RESOLUTION, dtype=np.float32) + 0.5
    # pixel-centre grids that broadcast against per-face (N, 1, 1) parameters: terms in x alone or y
    # alone stay (N, 1, W) or (N, H, 1), and only the combined SDFs are full (N, H, W) arrays
    y = grid[None, :, None]
    x = grid[None, None, :]
    col = lambda v: v.astype(np.float32)[:, None, None]  # noqa: E731
    s = col(params["scale"])
    cx, cy = col(params["cx"]), col(params["cy"])
    smiling, glasses = params["smiling"].astype(bool), params["eyeglasses"].astype(bool)
    dark, round_face = params["dark_hair"].astype(bool), params["round_face"].astype(bool)
    open_eyes, warm = params["open_eyes"].astype(bool), params["warm_background"].astype(bool)

    # background with a vertical brightness gradient
    hue = np.where(warm, params["bg_hue_warm"], params["bg_hue_cool"])
    bg = _hsv_to_rgb(hue, params["bg_sat"], params["bg_val"])
    ramp = 1.0 + col(params["bg_grad"]) * (y - 16.0) / 16.0
    canvas = np.broadcast_to(bg[:, None, None, :] * ramp[..., None], (n, RESOLUTION, RESOLUTION, 3)).astype(np.float32, order="C")

    # face ellipse: round (wide) or oval (long)
    rx = np.where(round_face, np.float32(10.6), np.float32(8.4))[:, None, None] * s
    ry = np.where(round_face, np.float32(10.4), np.float32(12.0))[:, None, None] * s
    face_sdf = (np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1.0) * np.minimum(rx, ry)
    light, deep = np.array([0.98, 0.84, 0.72], np.float32), np.array([0.52, 0.34, 0.22], np.float32)
    t = params["skin_t"].astype(np.float32)[:, None]
    skin = light * (1 - t) + deep * t

    # hair: a cap over the top of the head, behind and over the forehead
    hair_val = np.where(dark, params["hair_val_dark"], params["hair_val_light"])
    hair = _hsv_to_rgb(params["hair_hue"], params["hair_sat"], hair_val)
    hair_sdf_outer = (np.sqrt(((x - cx) / (rx + 1.6)) ** 2 + ((y - cy + 0.6) / (ry + 1.6)) ** 2) - 1.0) * (rx + 1.6)
    fringe_y = cy + col(params["fringe"]) * ry
    cap = np.maximum(hair_sdf_outer, y - fringe_y)
    canvas = _over(canvas, hair, _alpha(np.maximum(hair_sdf_outer, y - (cy + 0.1 * ry))))
    canvas = _over(canvas, skin, _alpha(face_sdf))
    canvas = _over(canvas, hair, _alpha(cap))

    # eyes
    ink = np.tile(np.array([[0.08, 0.06, 0.06]], np.float32), (n, 1))
    white = np.tile(np.array([[0.97, 0.97, 0.97]], np.float32), (n, 1))
    ey = cy - 0.12 * ry
    # eyes, glasses and bridge reach at most 3 s + 1.05 px above or below ey + 0.3: draw them in
    # that band of rows only (outside it their coverage is exactly 0)
    band = _band(ey, 3.0 * float(s.max()) + 1.05, 3.0 * float(s.max()) + 1.35)
    full_canvas, canvas, y = canvas, canvas[:, band], y[:, band]
    for side in (-1.0, 1.0):
        ex = cx + side * 0.40 * rx
        eye_disc = np.hypot(x - ex, y - ey) - 1.9 * s
        pupil = np.hypot(x - ex - col(params["pupil_dx"]), y - ey) - 1.05 * s
        shut = _segment_sdf(x, y, ex - 1.9 * s, ey + 0.3, ex + 1.9 * s, ey + 0.3, 0.5)
        oe = open_eyes[:, None, None]
        canvas = _over(canvas, white, _alpha(np.where(oe, eye_disc, 9.0)))
        canvas = _over(canvas, ink, _alpha(np.where(oe, pupil, shut)))
        ring = np.abs(np.hypot(x - ex, y - ey) - 3.0 * s) - 0.55
        canvas = _over(canvas, ink, _alpha(np.where(glasses[:, None, None], ring, 9.0)))
    bridge = _segment_sdf(x, y, cx - 0.40 * rx + 3.0 * s, ey, cx + 0.40 * rx - 3.0 * s, ey, 0.5)
    canvas = _over(canvas, ink, _alpha(np.where(glasses[:, None, None], bridge, 9.0)))
    canvas, y = full_canvas, grid[None, :, None]

    # mouth: an open smile (filled lower half-disc) or a straight closed mouth
    my = cy + 0.48 * ry
    mw = col(params["mouth_w"]) * s
    lips = np.tile(np.array([[0.55, 0.08, 0.12]], np.float32), (n, 1))
    band = _band(my, 1.05 + 0.8, 3.6 * float(mw.max()) + 0.5)  # the mouth's rows (coverage 0 elsewhere)
    canvas, y = full_canvas[:, band], y[:, band]
    half_disc = np.maximum(np.hypot(x - cx, y - my + 0.8) - 3.6 * mw, (my - 0.8) - y)
    straight = _segment_sdf(x, y, cx - 2.8 * mw, my, cx + 2.8 * mw, my, 0.55)
    canvas = _over(canvas, lips, _alpha(np.where(smiling[:, None, None], half_disc, straight)))
    canvas = full_canvas

    canvas *= params["jitter"][:, None, None, :]
    canvas *= np.float32(255.0)
    np.round(canvas, out=canvas)
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8)


def sample_faces(num: int, seed: int = 0, fixed: Mapping[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`num` faces and their labels: uint8 images (N, 32, 32, 3) and int64 labels (N, len(ATTRIBUTES))."""
    params = sample_face_params(num, seed, fixed)
    labels = np.stack([params[a] for a in ATTRIBUTES], axis=1).astype(np.int64)
    chunks = [render_faces({k: v[i : i + 256] for k, v in params.items()}) for i in range(0, max(num, 1), 256)]
    images = np.concatenate(chunks)[:num] if num else np.zeros((0, RESOLUTION, RESOLUTION, 3), np.uint8)
    return images, labels


def to_tensor_range(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1], the range of the default model."""
    return images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
