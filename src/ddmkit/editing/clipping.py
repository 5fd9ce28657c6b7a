"""x0 clipping for one call, as a view: the shared model is never changed.

ddmkit's VP models clamp their denoised estimate to the data range (`clip_denoised`, DDPM's
clip_denoised and diffusers' clip_sample). Editing lets a caller turn that on or off for one
generation (`clip_x0`: None follows the model); `clipped` gives the model with that choice fixed.
"""
from __future__ import annotations

import copy

from ..denoisers import Denoiser, unwrap


def clip_x0_used(denoiser: Denoiser, clip_x0: bool | None) -> bool:
    """Whether x0 is clamped: the model's `clip_denoised` unless `clip_x0` says otherwise."""
    return bool(getattr(unwrap(denoiser), "clip_denoised", False)) if clip_x0 is None else bool(clip_x0)


def clipped(denoiser: Denoiser, clip_x0: bool | None) -> Denoiser:
    """The model (under any NFE counters) with x0 clipping as `clip_x0` says (None: as the model does).

    A shallow copy: the network, the sigmas, the data range and the precision are the model's own
    objects, shared; only its `clip_denoised` flag is the copy's. Count NFE around the result."""
    inner = unwrap(denoiser)
    view = copy.copy(inner)
    view.clip_denoised = clip_x0_used(inner, clip_x0)
    return view
