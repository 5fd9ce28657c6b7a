"""Boundary-guided edits of real images (spec section 5.1, decisions 7.1-7.4).

Invert to t_m (N_inv - 1 NFE), move z and h to a signed distance along the unit normals in one
operation at t_m, generate with eta = 1 (N NFE). Reconstruction: generate from the unmoved z with
eta = 0. h injection (7.1): "single" (the paper: the first call after t_m only), "lagged" (the
official code's one-step feedback), "none".

    plan = EditPlan([(resolve_boundary("smiling", model), Distance(20.0))])
    res = edit_images(model, x0, plan)                 # res.edits[k] is the batch for plan k
    res = edit_images(model, x0, plans, EditSettings(eta=0.5, seed=3))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..denoisers import unwrap
from ..errors import DdmkitError
from .ddim import Inversion, generate, invert, reconstruction_error
from .loop import NFETally, Outputs, edit_batches, settings_json
from .plan import EditPlan
from .settings import EditSettings


class EditNFE(NFETally):
    """NFE per image of `edit_images`: inversion, the eta = 0 reconstruction, each edit."""

    KEYS = ("inversion", "reconstruction", "total_per_image")


@dataclass
class EditResult(Outputs):
    """`source` (B, C, H, W), `reconstruction` (eta = 0, no edit), `reconstruction_error`, and the
    `Outputs` fields (`edits` (K, B, C, H, W) for the K plans, projections, `nfe`, `seconds`, `settings`)."""

    source: np.ndarray
    reconstruction: np.ndarray | None
    reconstruction_error: dict | None


def as_plans(plans: EditPlan | Sequence[EditPlan]) -> list[EditPlan]:
    plans = [plans] if isinstance(plans, EditPlan) else list(plans) if isinstance(plans, (list, tuple)) else [plans]
    if not plans:
        raise DdmkitError("no edit to make")
    for p in plans:
        if not isinstance(p, EditPlan):
            raise DdmkitError(f"edit_images takes EditPlan(s), got {p!r}; for a boundary by name use "
                              "EditPlan([(resolve_boundary(name, model), parse_distance('1x'))]) or ddmkit.edit(model, "
                              "images, name)")
    return plans


def as_images(denoiser, images) -> torch.Tensor:
    """Images as float32 (B, C, H, W) of the model's sample shape (one-line DdmkitError otherwise)."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images, dtype=torch.float32)
    shape = tuple(unwrap(denoiser).sample_shape)
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise DdmkitError(f"edit_images takes float images (B, C, H, W) = (B, {', '.join(map(str, shape))}) in the "
                          f"model's range, got shape {tuple(x.shape)}; for PIL images or uint8 arrays use "
                          "ddmkit.edit(model, images, boundary)")
    return x


@torch.no_grad()
def edit_images(denoiser, images: torch.Tensor | np.ndarray, plans: EditPlan | Sequence[EditPlan],
                settings: EditSettings = EditSettings(), *, reconstruct: bool = True,
                indices: Sequence[int] | None = None) -> EditResult:
    """Edit real images (B, C, H, W) in the model's range: one output batch per plan (a sweep is a
    list of plans). Generation uses `settings` (default: eta = 1 on the boundary's N_inv grid)."""
    plans = as_plans(plans)
    step = plans[0].step
    x = as_images(denoiser, images)
    idx = list(range(len(x))) if indices is None else list(indices)

    def source(model, sl: slice, ib: list[int]) -> Inversion:
        return invert(model, x[sl], step)

    def unedited(model, inv: Inversion, ib: list[int]):
        return generate(model, inv.z, step, eta=0.0) if reconstruct else None

    acc = edit_batches(denoiser, plans, settings, idx, source, unedited, EditNFE(), "edit")
    recon = torch.cat(acc.unedited).numpy() if acc.unedited else None
    err = reconstruction_error(x, recon) if recon is not None else None
    return EditResult(**acc.outputs(plans, settings_json(denoiser, settings, plans[0], {})), source=x.numpy(),
                      reconstruction=recon, reconstruction_error=err)
