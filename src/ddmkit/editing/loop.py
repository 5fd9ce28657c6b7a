"""The loop that `edit_images` and `control` share (spec section 5): per batch, bring the sources to t_m,
generate them unedited, then for every plan move (z, h) across the boundaries in one operation at t_m
and generate the edit. Also `edit_latents` (one plan, latents already at t_m) and the typed NFE tally.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..denoisers import Denoiser
from ..sampling import clamp_to_range
from .clipping import clip_x0_used, clipped
from .ddim import Inversion, generate
from .plan import EditPlan, projections
from .seeds import edit_noise_seeds, generators
from .settings import EditSettings, MixingStep


@dataclass
class NFETally:
    """NFE per source (image or sample), measured per batched network call, never by formula: the stage
    that brings it to t_m, its unedited generation, and each of `edits` edits. The JSON form names
    them as `KEYS` say (the subclasses: `edit_images`' and `control`'s)."""

    to_tm: int = 0
    unedited: int = 0
    per_edit: int = 0
    edits: int = 0
    KEYS: ClassVar[tuple[str, str, str]] = ("to_tm", "unedited", "total")

    @property
    def total(self) -> int:
        return self.to_tm + self.unedited + self.per_edit * self.edits

    def to_json(self) -> dict[str, int]:
        to_tm, unedited, total = self.KEYS
        return {to_tm: self.to_tm, unedited: self.unedited, "per_edit": self.per_edit, total: self.total}


@dataclass
class Seconds:
    """Wall time of the three stages, summed over batches."""

    to_tm: float = 0.0
    unedited: float = 0.0
    edits: float = 0.0

    def to_json(self, keys: tuple[str, ...]) -> dict[str, float]:
        return {keys[0]: round(self.to_tm, 3), keys[1]: round(self.unedited, 3), "edits": round(self.edits, 3)}


@dataclass
class Outputs:
    """What both `edit_images` and `control` return: `edits` (K, B, C, H, W) for the K plans, the
    projections before / after per attribute and space, `nfe` (an `NFETally`), `seconds`, `settings`."""

    edits: np.ndarray
    plans: list[EditPlan]
    distances_used: list[dict]
    projections_before: dict
    projections_after: list[dict]
    nfe: NFETally
    seconds: dict
    settings: dict


@dataclass
class Collected:
    """What `edit_batches` gathers over the batches (`outputs()` hands it to a result class)."""

    nfe: NFETally
    n_plans: int
    unedited: list[torch.Tensor] = field(default_factory=list)
    before: dict = field(default_factory=dict)
    secs: Seconds = field(default_factory=Seconds)

    def __post_init__(self) -> None:
        self.edits: list[list[torch.Tensor]] = [[] for _ in range(self.n_plans)]
        self.after: list[dict] = [{} for _ in range(self.n_plans)]
        self.used: list[dict] = [{} for _ in range(self.n_plans)]
        self.nfe.edits = self.n_plans

    def outputs(self, plans: list[EditPlan], settings: dict) -> dict:
        """The `Outputs` fields, for the result class of the caller."""
        return dict(edits=np.stack([torch.cat(o).numpy() for o in self.edits]), plans=plans, distances_used=self.used,
                    projections_before=self.before, projections_after=self.after, nfe=self.nfe,
                    seconds=self.secs.to_json(self.nfe.KEYS), settings=settings)


def _merge_proj(acc: dict, part: dict) -> None:
    for a, spaces in part.items():
        for s, vals in spaces.items():
            acc.setdefault(a, {}).setdefault(s, []).extend(vals)


def _generate_edit(denoiser, step: MixingStep, z2: torch.Tensor, h2: torch.Tensor | None, settings: EditSettings,
                   injection: str, generator) -> tuple[torch.Tensor, int]:
    return generate(denoiser, z2, step, settings.generation_steps(step), eta=settings.eta, h=h2, h_injection=injection,
                    generator=generator)


@torch.no_grad()
def edit_latents(denoiser, z: torch.Tensor, h: torch.Tensor, plan: EditPlan, settings: EditSettings = EditSettings(),
                 *, generator=None) -> tuple[torch.Tensor, int, dict]:
    """Move (z, h) at the plan's t_m and generate (N NFE): the core of `edit_images` and `control` for
    latents already at t_m. Returns (x0 clamped to the data range, NFE, distances used)."""
    injection = settings.injection(plan.space)
    z2, h2, used = plan.apply(z, h)
    out, n = _generate_edit(clipped(denoiser, settings.clip_x0), plan.step, z2, h2, settings, injection, generator)
    return clamp_to_range(denoiser, out), n, used


def settings_json(denoiser, settings: EditSettings, ref: EditPlan, head: dict) -> dict:
    """The `settings` record of a result: eta, `head` (the caller's own), generation, noise, clipping, the plan."""
    return {"eta": settings.eta, **head, "n_steps_generation": settings.generation_steps(ref.step),
            "h_injection": settings.injection(ref.space), "seed": settings.seed, "same_noise": settings.same_noise,
            "clip_x0": clip_x0_used(denoiser, settings.clip_x0), **ref.describe()}


Source = Callable[[Denoiser, slice, list[int]], Inversion]  # (model, batch slice, sample indices) -> latents at t_m
Unedited = Callable[[Denoiser, Inversion, list[int]], "tuple[torch.Tensor, int] | None"]  # -> (x0, NFE) or None


def edit_batches(denoiser, plans: list[EditPlan], settings: EditSettings, indices: Sequence[int], source: Source,
                 unedited: Unedited, nfe: NFETally, desc: str) -> Collected:
    """Run `source`, `unedited` and every plan's edit on each batch of `indices`, all with the model seen
    with `settings.clip_x0`; collect the outputs (clamped to the data range, on the CPU), projections,
    distances, NFE and time."""
    model, ref, bs = clipped(denoiser, settings.clip_x0), plans[0], settings.batch_size
    injection = settings.injection(ref.space)  # the first plan's, for all (checked before any work)
    acc = Collected(nfe, len(plans))
    starts = range(0, len(indices), max(1, bs))
    for i in tqdm(starts, desc=desc, unit="batch") if settings.progress else starts:
        sl, ib = slice(i, i + bs), list(indices[i : i + bs])
        t0 = time.perf_counter()
        lat = source(model, sl, ib)
        acc.secs.to_tm += time.perf_counter() - t0
        acc.nfe.to_tm = lat.nfe
        _merge_proj(acc.before, projections(ref, lat.z, lat.h))
        t0 = time.perf_counter()
        got = unedited(model, lat, ib)
        if got is not None:
            acc.secs.unedited += time.perf_counter() - t0
            acc.nfe.unedited = got[1]
            acc.unedited.append(clamp_to_range(denoiser, got[0]).cpu())
        for k, plan in enumerate(plans):
            _edit_plan(model, plan, k, lat, ib, settings, (ref.step, injection), acc)
    return acc


def _edit_plan(denoiser, plan: EditPlan, k: int, lat: Inversion, ib: list[int], settings: EditSettings,
               how: tuple[MixingStep, str], acc: Collected) -> None:
    """Edit k of one batch: move, record the projections, generate with the k-th noise stream."""
    step, injection = how
    z2, h2, used = plan.apply(lat.z, lat.h)
    acc.used[k] = used
    _merge_proj(acc.after[k], projections(plan, z2, h2 if h2 is not None else lat.h))
    gen = generators(edit_noise_seeds(settings.seed, ib, k, settings.same_noise)) if settings.eta > 0 else None
    t0 = time.perf_counter()
    out, n = _generate_edit(denoiser, step, z2, h2, settings, injection, gen)
    acc.secs.edits += time.perf_counter() - t0
    acc.nfe.per_edit = n
    acc.edits[k].append(clamp_to_range(denoiser, out).cpu())
