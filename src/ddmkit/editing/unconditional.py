"""Unconditional control (spec section 5.3): edits of generated samples.

x_T ~ N(0, I) (per-sample seeds), a prefix down to t_m (`PrefixSettings`: DDIM, or a Karras sampler),
then the same edit as a real image's, with boundaries fitted on inverted real images (the mixing-step
argument justifies the transfer). The unedited sample (same x_T, same noise, no move) is made too.

    res = control(model, plan, num=8)                  # unconditional samples and their edits
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..denoisers import unwrap
from ..sampling import integrator_options
from . import seeds
from .ddim import Inversion, generate
from .edit import as_plans
from .loop import NFETally, Outputs, edit_batches, settings_json
from .plan import EditPlan
from .prefix import sample_to_tm, sample_to_tm_karras
from .settings import EditSettings, MixingStep, PrefixSettings


class ControlNFE(NFETally):
    """NFE per sample of `control`: the prefix from x_T to t_m, the unedited sample, each edit."""

    KEYS = ("prefix", "original", "total_per_sample")


@dataclass
class ControlResult(Outputs):
    """`original` (unedited samples: same x_T, same noise, no move) and the `Outputs` fields."""

    original: np.ndarray


def run_prefix(denoiser, x_T: torch.Tensor, step: MixingStep, prefix: PrefixSettings, settings: EditSettings,
               indices: Sequence[int]) -> Inversion:
    """x_T of samples `indices` down to t_m by the prefix (its noise: `seeds.prefix_noise_seeds`)."""
    noise = seeds.generators(seeds.prefix_noise_seeds(settings.seed, indices))
    if prefix.integrator == "ddim":
        return sample_to_tm(denoiser, x_T, step, prefix.steps, eta=prefix.eta,
                            generator=noise if prefix.eta > 0 else None)
    return sample_to_tm_karras(denoiser, x_T, step, prefix.steps, integrator=prefix.integrator, generator=noise,
                               options=prefix.options)


def prefix_json(denoiser, prefix: PrefixSettings) -> dict:
    """The prefix part of `control`'s settings record."""
    head = {"prefix_integrator": prefix.integrator, "prefix_steps": prefix.steps}
    if prefix.integrator == "ddim":
        return {**head, "prefix_eta": prefix.eta}
    options = integrator_options(prefix.integrator, denoiser, prefix.options) if prefix.integrator == "kar2" else {}
    return {**head, "prefix_options": options, "prefix_h_source": "tm"}


@torch.no_grad()
def control(denoiser, plans: EditPlan | Sequence[EditPlan], settings: EditSettings = EditSettings(),
            prefix: PrefixSettings = PrefixSettings(), *, num: int = 8, indices: Sequence[int] | None = None,
            x_T: torch.Tensor | None = None) -> ControlResult:
    """Unconditional control (spec 5.3): x_T ~ N(0, I) (per-sample seeds), the prefix from T-1 to t_m
    (default: DDIM in 50 NFE with eta = 1; the official code: eta = 0 on the 999-point grid, about
    T - t_m NFE; ddmkit's eta = 1 gives better samples and edits that keep more of the other attributes
    on the default model: benchmarks/results/editing.json), edit at t_m, generate with `settings`
    (default: eta = 1 on the boundary's N_inv grid). Also returns the unedited samples."""
    plans = as_plans(plans)
    step = plans[0].step
    idx = list(range(num)) if indices is None else list(indices)
    if x_T is None:
        x_T = seeds.x_T(settings.seed, idx, tuple(unwrap(denoiser).sample_shape))

    def source(model, sl: slice, ib: list[int]) -> Inversion:
        return run_prefix(model, x_T[sl], step, prefix, settings, ib)

    def unedited(model, pre: Inversion, ib: list[int]):
        noise = seeds.generators(seeds.edit_noise_seeds(settings.seed, ib, -1, settings.same_noise))
        return generate(model, pre.z, step, settings.generation_steps(step), eta=settings.eta,
                        generator=noise if settings.eta > 0 else None)

    acc = edit_batches(denoiser, plans, settings, idx, source, unedited, ControlNFE(), "control")
    record = settings_json(denoiser, settings, plans[0], prefix_json(denoiser, prefix))
    return ControlResult(**acc.outputs(plans, record), original=torch.cat(acc.unedited).numpy())
