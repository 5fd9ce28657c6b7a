"""x0 clipping for one call, as a view: the shared model is never changed.

ddmkit's VP models clamp their denoised estimate to the data range (`clip_denoised`, DDPM's
clip_denoised and diffusers' clip_sample). Editing lets a caller turn that on or off for one
generation (`clip_x0`: None follows the model); `clipped` gives the model with that choice fixed.
"""
from __future__ import annotations

from ..denoisers import Denoiser, unwrap, view


def clip_x0_used(denoiser: Denoiser, clip_x0: bool | None) -> bool:
    """Whether x0 is clamped: the model's `clip_denoised` unless `clip_x0` says otherwise."""
    return bool(unwrap(denoiser).clip_denoised) if clip_x0 is None else bool(clip_x0)


def clipped(denoiser: Denoiser, clip_x0: bool | None) -> Denoiser:
    """The model (under any NFE counters) with x0 clipping as `clip_x0` says (None: as the model does).

    A view (`ddmkit.denoisers.view`): the network and every other field are shared; only its
    `clip_denoised` flag is its own. Count NFE around the result."""
    return view(denoiser, clip_denoised=clip_x0_used(denoiser, clip_x0))
