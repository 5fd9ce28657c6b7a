"""Boundary-guided edits (spec section 5, decisions 7.1-7.4): real images and generated samples.

Real image (5.1): invert to t_m (N_inv - 1 NFE), move z and h to a signed distance along the unit
normals in one operation at t_m, generate with eta = 1 (N NFE). Reconstruction: generate from the
unmoved z with eta = 0. Generated sample (5.3): DDIM (eta = 0) from x_T ~ N(0, I) down to t_m, then
the same edit.

    plan = EditPlan([(resolve_boundary("smiling", model), Distance(20.0))])
    res = edit_images(model, x0, plan)                 # res.edits[k] is the batch for plan distance k
    res = control(model, plan, num=8, seed=0)          # unconditional samples and their edits

Moves (7.3): "set" x' = x + (d - <x, n>) n puts the projection at d; "add" x' = x + d n.
Spaces: "both" (default: z and h), "z" (h untouched), "h" (z untouched). h injection (7.1): "single"
(the paper: the first call after t_m only), "lagged" (the official code's one-step feedback), "none".
Several boundaries are applied one after the other (an extrapolation: the paper shows multi-attribute
edits but has no routine for them); `conditions` project every edited normal off the condition
normals (InterFaceGAN conditional manipulation) so those attributes' projections stay fixed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..errors import DdmkitError
from ..sampling import integrator_options
from .boundaries import AttributeBoundary, condition_normal
from .ddim import (H_INJECTIONS, PREFIX_INTEGRATORS, generate, invert, reconstruction_error, sample_to_tm,
                   sample_to_tm_karras)

MOVES = ("set", "add")
EDIT_SPACES = ("both", "z", "h")


@dataclass(frozen=True)
class Distance:
    """A signed editing distance: absolute (`value`) or relative (`value` x the space's recommended distance)."""

    value: float
    relative: bool = False

    def resolve(self, recommended: float) -> float:
        return float(self.value * recommended) if self.relative else float(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}x" if self.relative else f"{self.value:g}"


def parse_distance(text: str | float) -> Distance:
    """'20', '-7.5' (absolute) or '1.5x' (times each space's recommended distance)."""
    if isinstance(text, (int, float)):
        return Distance(float(text))
    s = str(text).strip()
    rel = s.lower().endswith("x")
    try:
        v = float(s[:-1] if rel else s)
    except ValueError:
        raise DdmkitError(f"bad distance {text!r}: give a number (e.g. 20, -7.5) or a multiple of the recommended distance (e.g. 1.5x)") from None
    if not np.isfinite(v):
        raise DdmkitError(f"bad distance {text!r}: must be finite")
    return Distance(v, rel)


def parse_sweep(text: str) -> list[Distance]:
    """'A:B:K' -> K distances linspace(A, B, K); A and B may be relative ('-2x:2x:5')."""
    parts = str(text).split(":")
    if len(parts) != 3:
        raise DdmkitError(f"bad --sweep {text!r}: give FROM:TO:COUNT, e.g. -20:20:5 or -2x:2x:5")
    a, b = parse_distance(parts[0]), parse_distance(parts[1])
    if a.relative != b.relative:
        raise DdmkitError(f"bad --sweep {text!r}: both ends must be absolute or both relative (x)")
    try:
        k = int(parts[2])
    except ValueError:
        raise DdmkitError(f"bad --sweep {text!r}: COUNT must be an integer") from None
    if k < 1:
        raise DdmkitError(f"bad --sweep {text!r}: COUNT must be >= 1")
    return [Distance(float(v), a.relative) for v in np.linspace(a.value, b.value, k)]


def move(x: torch.Tensor, normal: np.ndarray | torch.Tensor, d: float | torch.Tensor, mode: str = "set") -> torch.Tensor:
    """Move each sample of x along the unit normal: "set" <x', n> = d, or "add" x' = x + d n (float64 math)."""
    if mode not in MOVES:
        raise DdmkitError(f"move must be 'set' or 'add', got {mode!r}")
    n = torch.as_tensor(np.asarray(normal) if not isinstance(normal, torch.Tensor) else normal).to(x.device, torch.float64).reshape(-1)
    flat = x.reshape(x.shape[0], math.prod(x.shape[1:])).double()  # also for an empty batch
    if flat.shape[1] != n.numel():
        raise DdmkitError(f"latents have {flat.shape[1]} dims but the normal has {n.numel()}")
    d = torch.as_tensor(d, dtype=torch.float64, device=x.device).reshape(-1)
    step = d - flat @ n if mode == "set" else d.expand(flat.shape[0])
    return (flat + step[:, None] * n[None, :]).reshape(x.shape).to(x.dtype)


@dataclass
class EditPlan:
    """What one edit does: boundaries with their distances, applied in order, normals projected off
    the `conditions`, in `space` with `move`."""

    edits: list[tuple[AttributeBoundary, Distance]]
    conditions: list[AttributeBoundary] = field(default_factory=list)
    space: str = "both"
    move: str = "set"

    def __post_init__(self) -> None:
        if not self.edits:
            raise DdmkitError("an edit needs at least one boundary")
        if self.space not in EDIT_SPACES:
            raise DdmkitError(f"space must be one of {', '.join(EDIT_SPACES)}, got {self.space!r}")
        if self.move not in MOVES:
            raise DdmkitError(f"move must be 'set' or 'add', got {self.move!r}")
        ref = self.edits[0][0]
        for b in [e[0] for e in self.edits] + list(self.conditions):
            for key in ("t_m", "n_inv", "h_source", "hspace_module"):
                if getattr(b, key) != getattr(ref, key):
                    raise DdmkitError(
                        f"boundaries {ref.attribute!r} and {b.attribute!r} differ in {key} "
                        f"({getattr(ref, key)} vs {getattr(b, key)}); fit them with the same settings"
                    )
        for c in self.conditions:
            if any(c.path is not None and c.path == e[0].path for e in self.edits):
                raise DdmkitError(f"boundary {c.attribute!r} is both edited and held fixed (--condition)")

    @property
    def t_m(self) -> int:
        return self.edits[0][0].t_m

    @property
    def n_inv(self) -> int:
        return self.edits[0][0].n_inv

    @property
    def h_source(self) -> str:
        return self.edits[0][0].h_source

    @property
    def hspace_module(self) -> str:
        return self.edits[0][0].hspace_module

    def spaces(self) -> tuple[str, ...]:
        return ("z", "h") if self.space == "both" else (self.space,)

    def with_distance(self, distance: Distance) -> "EditPlan":
        """The same plan with every boundary at `distance` (a sweep)."""
        return EditPlan([(b, distance) for b, _ in self.edits], self.conditions, self.space, self.move)

    def edit_normals(self, space: str) -> list[np.ndarray]:
        normals = []
        for b, _ in self.edits:
            n = b[space].normal
            if self.conditions:
                n = condition_normal(n, [c[space].normal for c in self.conditions])
            normals.append(n)
        return normals

    def apply(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """(z', h', the distances used per attribute and space). h' is None when h is not edited."""
        used: dict = {}
        new = {"z": z, "h": h}
        for space in self.spaces():
            for (b, dist), n in zip(self.edits, self.edit_normals(space)):
                d = dist.resolve(b[space].recommended_distance)
                used.setdefault(b.attribute, {})[space] = d
                new[space] = move(new[space], n, d, self.move)
        return new["z"], (new["h"] if "h" in self.spaces() else None), used

    def describe(self) -> dict:
        return {
            "boundaries": [{"attribute": b.attribute, "path": b.path, "distance": str(d)} for b, d in self.edits],
            "conditions": [{"attribute": c.attribute, "path": c.path} for c in self.conditions],
            "space": self.space, "move": self.move, "t_m": self.t_m, "n_inv": self.n_inv, "h_source": self.h_source,
            "order": "sequential" if len(self.edits) > 1 else "single",
        }


def projections(plan: EditPlan, z: torch.Tensor, h: torch.Tensor | None) -> dict:
    """<x, n> per attribute (edited and condition boundaries, original normals) and space, per sample."""
    out: dict = {}
    for b in [e[0] for e in plan.edits] + list(plan.conditions):
        for space, x in (("z", z), ("h", h)):
            if x is not None and space in b.spaces:
                out.setdefault(b.attribute, {})[space] = [round(float(v), 5) for v in b[space].project(x)]
    return out


def _check_options(plan: EditPlan, h_injection: str, eta: float) -> str:
    if h_injection not in H_INJECTIONS:
        raise DdmkitError(f"h_injection must be one of {', '.join(H_INJECTIONS)}, got {h_injection!r}")
    if eta < 0:
        raise DdmkitError(f"eta must be >= 0, got {eta}")
    if plan.space == "h" and h_injection == "none":
        raise DdmkitError("--space h with --h-injection none edits nothing; use single or lagged")
    return "none" if plan.space == "z" else h_injection


def _generators(seeds: Sequence[int]):
    from ..integrators import PerSampleGenerator

    return PerSampleGenerator(list(seeds))


def _noise_seeds(seed: int, indices: Sequence[int], k: int, same_noise: bool) -> list[int]:
    from ..sampling import sample_seed

    # offset from the x_T seeds (sample_seed(seed, i)) so that the noise never repeats x_T's draws
    return [sample_seed(seed + 1_000_003 * (1 if same_noise else k + 2), int(i)) for i in indices]


def prefix_noise_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """Per-sample seeds of a stochastic prefix's noise: a stream apart from x_T's and the generation's."""
    from ..sampling import sample_seed

    return [sample_seed(seed + 7_000_003, int(i)) for i in indices]


@torch.no_grad()
def edit_latents(denoiser, z: torch.Tensor, h: torch.Tensor, plan: EditPlan, *, eta: float = 1.0,
                 n_steps: int | None = None, h_injection: str = "single", generator=None,
                 clip_x0: bool | None = None) -> tuple[torch.Tensor, int, dict]:
    """Move (z, h) at the plan's t_m and generate (N NFE): the core of `edit_images` and `control` for
    latents already at t_m. Returns (x0 clamped to the data range, NFE, distances used)."""
    inj = _check_options(plan, h_injection, eta)
    z2, h2, used = plan.apply(z, h)
    out, n = generate(denoiser, z2, plan.t_m, int(n_steps or plan.n_inv), eta=eta, h=h2, h_injection=inj,
                      generator=generator, hspace_module=plan.hspace_module, clip_x0=clip_x0)
    return _clamp(out, denoiser), n, used


@dataclass
class EditResult:
    """`source` (B, C, H, W), `reconstruction` (eta = 0, no edit), `edits` (K, B, C, H, W) for the K plans,
    `projections` before/after, `nfe` (measured per batched call), `reconstruction_error`, `seconds`."""

    source: np.ndarray
    reconstruction: np.ndarray | None
    edits: np.ndarray
    plans: list[EditPlan]
    distances_used: list[dict]
    projections_before: dict
    projections_after: list[dict]
    nfe: dict
    reconstruction_error: dict | None
    seconds: dict
    settings: dict


def _clamp(x: torch.Tensor, denoiser) -> torch.Tensor:
    from ..denoisers import unwrap

    rng = getattr(unwrap(denoiser), "data_range", None)
    return x.clamp(rng[0], rng[1]) if rng else x


def _clip_used(denoiser, clip_x0: bool | None) -> bool:
    from ..denoisers import unwrap

    return bool(getattr(unwrap(denoiser), "clip_denoised", False)) if clip_x0 is None else bool(clip_x0)


def _merge_proj(acc: dict, part: dict) -> None:
    for a, spaces in part.items():
        for s, vals in spaces.items():
            acc.setdefault(a, {}).setdefault(s, []).extend(vals)


@torch.no_grad()
def edit_images(denoiser, images: torch.Tensor | np.ndarray, plans: EditPlan | Sequence[EditPlan], *,
                eta: float = 1.0, n_steps: int | None = None, h_injection: str = "single", seed: int = 0,
                same_noise: bool = True, reconstruct: bool = True, batch_size: int = 16,
                indices: Sequence[int] | None = None, clip_x0: bool | None = None,
                progress: bool = False) -> EditResult:
    """Edit real images (B, C, H, W) in the model's range: one output batch per plan (a sweep is a
    list of plans). Generation uses `n_steps` (default: the boundary's N_inv) and `eta` (default 1)."""
    plans = [plans] if isinstance(plans, EditPlan) else list(plans)
    if not plans:
        raise DdmkitError("no edit to make")
    ref = plans[0]
    inj = _check_options(ref, h_injection, eta)
    n_gen = int(n_steps or ref.n_inv)
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images, dtype=torch.float32)
    idx = list(range(len(x))) if indices is None else list(indices)
    recs, outs = [], [[] for _ in plans]
    before: dict = {}
    after: list[dict] = [{} for _ in plans]
    used: list[dict] = [{} for _ in plans]
    nfe = {"inversion": 0, "reconstruction": 0, "per_edit": 0}
    secs = {"inversion": 0.0, "reconstruction": 0.0, "edits": 0.0}
    starts = range(0, len(x), max(1, batch_size))
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="edit", unit="batch")
    for i in starts:
        xb, ib = x[i : i + batch_size], idx[i : i + batch_size]
        t0 = time.perf_counter()
        inv = invert(denoiser, xb, ref.t_m, ref.n_inv, h_source=ref.h_source, hspace_module=ref.hspace_module)
        secs["inversion"] += time.perf_counter() - t0
        nfe["inversion"] = inv.nfe
        _merge_proj(before, projections(ref, inv.z, inv.h))
        if reconstruct:
            t0 = time.perf_counter()
            rec, n = generate(denoiser, inv.z, ref.t_m, ref.n_inv, eta=0.0, hspace_module=ref.hspace_module,
                              clip_x0=clip_x0)
            secs["reconstruction"] += time.perf_counter() - t0
            nfe["reconstruction"] = n
            recs.append(_clamp(rec, denoiser).cpu())
        for k, plan in enumerate(plans):
            z2, h2, u = plan.apply(inv.z, inv.h)
            used[k] = u
            _merge_proj(after[k], projections(plan, z2, h2 if h2 is not None else inv.h))
            gen = _generators(_noise_seeds(seed, ib, k, same_noise)) if eta > 0 else None
            t0 = time.perf_counter()
            out, n = generate(denoiser, z2, ref.t_m, n_gen, eta=eta, h=h2, h_injection=inj, generator=gen,
                              hspace_module=ref.hspace_module, clip_x0=clip_x0)
            secs["edits"] += time.perf_counter() - t0
            nfe["per_edit"] = n
            outs[k].append(_clamp(out, denoiser).cpu())
    recon = torch.cat(recs).numpy() if recs else None
    err = reconstruction_error(x, recon) if recon is not None else None
    nfe["total_per_image"] = nfe["inversion"] + nfe["reconstruction"] + nfe["per_edit"] * len(plans)
    settings = {"eta": eta, "n_steps_generation": n_gen, "h_injection": inj, "seed": seed, "same_noise": same_noise,
                "clip_x0": _clip_used(denoiser, clip_x0), **ref.describe()}
    return EditResult(source=x.numpy(), reconstruction=recon, edits=np.stack([torch.cat(o).numpy() for o in outs]),
                      plans=plans, distances_used=used, projections_before=before, projections_after=after, nfe=nfe,
                      reconstruction_error=err, seconds={k: round(v, 3) for k, v in secs.items()}, settings=settings)


@dataclass
class ControlResult:
    """`original` (unedited samples: same x_T, same noise, no move), `edits` (K, B, C, H, W)."""

    original: np.ndarray
    edits: np.ndarray
    plans: list[EditPlan]
    distances_used: list[dict]
    projections_before: dict
    projections_after: list[dict]
    nfe: dict
    seconds: dict
    settings: dict


@torch.no_grad()
def control(denoiser, plans: EditPlan | Sequence[EditPlan], *, num: int = 8, seed: int = 0,
            prefix_steps: int = 50, n_steps: int | None = None, eta: float = 1.0, h_injection: str = "single",
            same_noise: bool = True, batch_size: int = 16, indices: Sequence[int] | None = None,
            x_T: torch.Tensor | None = None, clip_x0: bool | None = None, progress: bool = False,
            prefix_eta: float = 1.0, prefix_integrator: str = "ddim",
            prefix_options: dict | None = None) -> ControlResult:
    """Unconditional control (spec 5.3): x_T ~ N(0, I) (per-sample seeds), DDIM from T-1 to t_m in
    `prefix_steps` NFE with `prefix_eta` (the official code: eta = 0 on the 999-point grid, about T - t_m
    NFE; ddmkit's default eta = 1 gives better samples and edits that keep more of the other attributes on
    the default model: benchmarks/results/editing.json), edit at t_m, generate with `n_steps` (default: the
    boundary's N_inv) at `eta`. Also returns the unedited samples.

    `prefix_integrator` "kar1"/"kar2" replaces the DDIM prefix by a Karras sampler in sigma space with about
    `prefix_steps` NFE (+1 to read h at t_m; `prefix_eta` is then unused, `prefix_options` are kar2's):
    `sample_to_tm_karras`."""
    from ..denoisers import unwrap

    plans = [plans] if isinstance(plans, EditPlan) else list(plans)
    if not plans:
        raise DdmkitError("no edit to make")
    ref = plans[0]
    inj = _check_options(ref, h_injection, eta)
    if prefix_integrator not in PREFIX_INTEGRATORS:
        raise DdmkitError(f"the prefix integrator must be one of {', '.join(PREFIX_INTEGRATORS)}, got {prefix_integrator!r}")
    n_gen = int(n_steps or ref.n_inv)
    idx = list(range(num)) if indices is None else list(indices)
    shape = tuple(unwrap(denoiser).sample_shape)
    if x_T is None:
        from ..sampling import sample_seed

        x_T = _generators([sample_seed(seed, i) for i in idx]).randn((len(idx), *shape))
    originals, outs = [], [[] for _ in plans]
    before: dict = {}
    after: list[dict] = [{} for _ in plans]
    used: list[dict] = [{} for _ in plans]
    nfe = {"prefix": 0, "original": 0, "per_edit": 0}
    secs = {"prefix": 0.0, "original": 0.0, "edits": 0.0}
    starts = range(0, len(idx), max(1, batch_size))
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="control", unit="batch")
    for i in starts:
        xb, ib = x_T[i : i + batch_size], idx[i : i + batch_size]
        t0 = time.perf_counter()
        if prefix_integrator == "ddim":
            pre = sample_to_tm(denoiser, xb, ref.t_m, prefix_steps, h_source=ref.h_source,
                               hspace_module=ref.hspace_module, clip_x0=clip_x0, eta=prefix_eta,
                               generator=_generators(prefix_noise_seeds(seed, ib)) if prefix_eta > 0 else None)
        else:
            pre = sample_to_tm_karras(denoiser, xb, ref.t_m, prefix_steps, integrator=prefix_integrator,
                                      generator=_generators(prefix_noise_seeds(seed, ib)), options=prefix_options,
                                      clip_x0=clip_x0, hspace_module=ref.hspace_module)
        secs["prefix"] += time.perf_counter() - t0
        nfe["prefix"] = pre.nfe
        _merge_proj(before, projections(ref, pre.z, pre.h))
        gen = _generators(_noise_seeds(seed, ib, -1, same_noise)) if eta > 0 else None
        t0 = time.perf_counter()
        orig, n = generate(denoiser, pre.z, ref.t_m, n_gen, eta=eta, generator=gen, hspace_module=ref.hspace_module,
                           clip_x0=clip_x0)
        secs["original"] += time.perf_counter() - t0
        nfe["original"] = n
        originals.append(_clamp(orig, denoiser).cpu())
        for k, plan in enumerate(plans):
            z2, h2, u = plan.apply(pre.z, pre.h)
            used[k] = u
            _merge_proj(after[k], projections(plan, z2, h2 if h2 is not None else pre.h))
            gen = _generators(_noise_seeds(seed, ib, k, same_noise)) if eta > 0 else None
            t0 = time.perf_counter()
            out, n = generate(denoiser, z2, ref.t_m, n_gen, eta=eta, h=h2, h_injection=inj, generator=gen,
                              hspace_module=ref.hspace_module, clip_x0=clip_x0)
            secs["edits"] += time.perf_counter() - t0
            nfe["per_edit"] = n
            outs[k].append(_clamp(out, denoiser).cpu())
    nfe["total_per_sample"] = nfe["prefix"] + nfe["original"] + nfe["per_edit"] * len(plans)
    prefix = ({"prefix_eta": prefix_eta} if prefix_integrator == "ddim" else
              {"prefix_options": integrator_options(prefix_integrator, denoiser, prefix_options)
               if prefix_integrator == "kar2" else {}, "prefix_h_source": "tm"})
    settings = {"eta": eta, "prefix_integrator": prefix_integrator, "prefix_steps": prefix_steps, **prefix,
                "n_steps_generation": n_gen, "h_injection": inj, "seed": seed,
                "same_noise": same_noise, "clip_x0": _clip_used(denoiser, clip_x0), **ref.describe()}
    return ControlResult(original=torch.cat(originals).numpy(), edits=np.stack([torch.cat(o).numpy() for o in outs]),
                         plans=plans, distances_used=used, projections_before=before, projections_after=after, nfe=nfe,
                         seconds={k: round(v, 3) for k, v in secs.items()}, settings=settings)
