"""x0 clipping for one call, as a view: the shared model is never changed.

ddmkit's VP models clamp their denoised estimate to the data range (`clip_denoised`, DDPM's
clip_denoised and diffusers' clip_sample). Editing lets a caller turn that on or off for one
generation (`clip_x0`: None follows the model); `Clipped` is the model with the choice fixed.
"""
from __future__ import annotations

import torch

from ..denoisers import Denoiser, unwrap


def clip_x0_used(denoiser: Denoiser, clip_x0: bool | None) -> bool:
    """Whether x0 is clamped: the model's `clip_denoised` unless `clip_x0` says otherwise."""
    return bool(getattr(unwrap(denoiser), "clip_denoised", False)) if clip_x0 is None else bool(clip_x0)


class Clipped(Denoiser):
    """A view of `inner` whose D is clamped to the data range iff `clip`; everything else (network,
    sigmas, shape, data range, precision) is the wrapped model's. NFE counters around `inner` are looked
    through (they would clip as the model does): count NFE around the view."""

    def __init__(self, inner: Denoiser, clip: bool):
        self.inner = unwrap(inner)
        self.clip_denoised = bool(clip)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.inner.denoise(x, sigma)

    # attributes with a class-level default on `Denoiser` are forwarded explicitly
    @property
    def data_range(self):
        return self.inner.data_range

    @property
    def name(self):
        return self.inner.name

    @property
    def autocast_dtype(self):
        return self.inner.autocast_dtype

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def extra_info(self) -> dict:
        return {**self.inner.extra_info(), "clip_denoised": self.clip_denoised}

    def __getattr__(self, name: str):  # sigma_min, sigmas, sample_shape, unet, eps, ... of the wrapped model
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def clipped(denoiser: Denoiser, clip_x0: bool | None) -> Clipped:
    """`denoiser` seen with x0 clipping as `clip_x0` says (None: as the model does)."""
    return Clipped(denoiser, clip_x0_used(denoiser, clip_x0))
