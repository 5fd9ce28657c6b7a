"""Models for the Python API: anything a user holds, as a `Denoiser`.

    ddmkit.load_model("default")                         # shipped name, folder, hub id, raw checkpoint, gmm:...
    ddmkit.from_diffusers(unet, scheduler)               # an in-memory UNet2DModel + any diffusers scheduler
    ddmkit.wrap(fn, sigma_min=0.002, sigma_max=80, sample_shape=(2,))   # any callable D(x, sigma)

`as_denoiser` is what every API function calls on its `model` argument: a `Denoiser` as it is, a string or
path through `load_model`, a diffusers pipeline (anything with `.unet` and `.scheduler`) or a (unet,
scheduler) pair through `from_diffusers`; a bare network is refused with the fix (it does not say its noise
schedule).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

from ..assets import shipped_model
from ..denoisers import CallableDenoiser, Denoiser, unwrap
from ..errors import DdmkitError
from ..models.loading import denoiser_from_unet, load_model
from ..sampling import check_seed


def from_diffusers(unet: torch.nn.Module, scheduler: Any, *, data_range: tuple[float, float] | None = None,
                   timestep_mode: str = "nearest", name: str | None = None) -> Denoiser:
    """A diffusers network and its scheduler as a denoiser: the scheduler's class and config pick the
    parametrisation exactly as a folder's scheduler_config.json does (`ddmkit.models.parametrisation`)."""
    if not (isinstance(unet, torch.nn.Module) and hasattr(getattr(unet, "config", None), "sample_size")):
        raise DdmkitError(f"from_diffusers needs a diffusers network (UNet2DModel, ...) with a config, got a "
                          f"{type(unet).__name__}")
    if not hasattr(scheduler, "config"):
        raise DdmkitError(f"from_diffusers needs a diffusers scheduler (DDPMScheduler, ...), got a {type(scheduler).__name__}")
    cfg = {**dict(scheduler.config), "_class_name": type(scheduler).__name__}
    return denoiser_from_unet(unet.eval(), cfg, name=name or type(unet).__name__, timestep_mode=timestep_mode,
                              source=f"the in-memory {type(unet).__name__}", data_range=data_range)


def wrap(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, sigma_min: float, sigma_max: float,
         sample_shape: tuple[int, ...], data_range: tuple[float, float] | None = None,
         name: str = "callable") -> Denoiser:
    """Any callable D(x, sigma) -> x0 estimate (x = x0 + sigma noise, sigma of shape (B,)) as a denoiser."""
    return CallableDenoiser(fn, sigma_min=sigma_min, sigma_max=sigma_max, sample_shape=sample_shape,
                            data_range=data_range, name=name)


def as_denoiser(model: Any) -> Denoiser:
    """The `Denoiser` behind any model argument of the API (module docstring)."""
    if isinstance(model, Denoiser):
        return model
    if model is None or isinstance(model, (str, os.PathLike)):
        return load_model(model)
    if hasattr(model, "unet") and hasattr(model, "scheduler"):
        return from_diffusers(model.unet, model.scheduler)
    if isinstance(model, tuple) and len(model) == 2:
        return from_diffusers(*model)
    if isinstance(model, torch.nn.Module):
        raise DdmkitError(f"a {type(model).__name__} alone does not say its noise schedule: wrap it with "
                          "ddmkit.from_diffusers(unet, scheduler) (or ddmkit.wrap(fn, sigma_min=..., sigma_max=..., "
                          "sample_shape=...) for a network that is D(x, sigma) itself)")
    raise DdmkitError(f"model must be a name or path (ddmkit.load_model), a Denoiser, a diffusers pipeline or a "
                      f"(unet, scheduler) pair, got a {type(model).__name__}")


def shipped_asset(denoiser: Denoiser):
    """The shipped model a denoiser was loaded from (its folder is a shipped model's), or None."""
    folder = unwrap(denoiser).folder
    if not folder:
        return None
    for name in ("default", "digits", "digits-ve"):
        asset = shipped_model(name)
        if Path(folder).resolve() == asset.model_dir.resolve():
            return asset
    return None


def resolve_seed(seed: int | None, generator: torch.Generator | None) -> int:
    """The base seed of a call: `seed`, else one draw from `generator` (torch.randint(0, 2**63 - 1) on the
    generator's device, so the same generator state gives the same samples), else 0."""
    if seed is not None and generator is not None:
        raise DdmkitError("give seed or generator, not both")
    if generator is not None:
        if isinstance(generator, (list, tuple)):
            raise DdmkitError("pass one torch.Generator (ddmkit derives every sample's seed from one draw of it), "
                              "not a list")
        if not isinstance(generator, torch.Generator):
            raise DdmkitError(f"generator must be a torch.Generator, got a {type(generator).__name__}")
        return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device).item())
    return check_seed(0 if seed is None else seed)
