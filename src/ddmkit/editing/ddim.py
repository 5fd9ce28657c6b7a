"""DDIM inversion to a mixing step t_m and generation from it, with the step function and grid of the
official BoundaryDiffusion code (spec section 2), on the discrete timesteps of a DDPM.

    seq = int(linspace(0, 1, N) * t_m)                    # truncation: N=40, t_m=500 -> 0, 12, 25, ..., 500
    invert:   seq[k] -> seq[k+1], k = 0..N-2              # N-1 NFE, the first call at t = 0
    generate: seq[k] -> seq[k-1], k = N-1..1, then 0 -> -1  # N NFE (abar_{-1} = 1)

    step(x_t, t -> t', eta):  e = eps(x_t, t);  x0 = (x_t - sqrt(1-a_t) e) / sqrt(a_t)
        x_t' = sqrt(a_t') x0 + c2 e + c1 z,  c1 = eta sqrt((1-a_t/a_t')(1-a_t')/(1-a_t)),
        c2 = sqrt(1 - a_t' - c1^2)   (c1 = 0 for eta = 0 or t' > t)

Each call also records h (the bottleneck on that call's input); see `ddmkit.editing.hspace`.

x0 clipping: the official step does not clip x0. ddmkit's VP models clip the denoised estimate to
the data range by default (`clip_denoised`, as DDPM and diffusers' `clip_sample`), and without it
the DDIM trajectories of a small model from x_T ~ N(0, I) diverge to saturated images. So generation
(`generate`, and `sample_to_tm` in `ddmkit.editing.prefix`) follows the model's `clip_denoised`: x0 is
clamped and eps recomputed from it (the same update as the sigma-space `ddim` integrator with a
clipping denoiser); pass `clipping.clipped(model, False)`, a view, to generate without it. Inversion
never clips: a clamp is not invertible.
Data are VP samples in the model's range ([-1, 1] for the DDPMs), not the sigma-space x of the
samplers. NFE is counted per batched network call by `EpsModel`, never by formula.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..denoisers import unwrap
from ..errors import DdmkitError
from ..integrators import randn_like
from .hspace import DEFAULT_MODULE, HSpace
from .settings import HInjection, MixingStep, check_h_injection
from ..denoisers import VPEpsDenoiser

GRID_RULE = "int(linspace(0, 1, N) * t_m)"


def ddim_grid(t_m: int, n_steps: int) -> list[int]:
    """The official grid seq = int(linspace(0, 1, N) * t_m) (truncation): N points from 0 to t_m."""
    t_m, n_steps = int(t_m), int(n_steps)
    if n_steps < 2:
        raise DdmkitError(f"the DDIM grid needs N >= 2 points, got {n_steps}")
    if t_m < 1:
        raise DdmkitError(f"t_m must be >= 1, got {t_m}")
    seq = [int(v) for v in (np.linspace(0, 1, n_steps) * t_m)]
    if len(set(seq)) != len(seq):
        raise DdmkitError(f"N = {n_steps} grid points do not fit between 0 and t_m = {t_m}; use N <= t_m + 1")
    return seq


class EpsModel:
    """The epsilon network of a VP (DDPM) denoiser at integer timesteps, with its h-space hook.

    Use as a context manager (the hook lives inside it). `nfe` counts batched network calls;
    `abar(t)` is alphas_cumprod with abar(-1) = 1; `hs` is the `HSpace` hook."""

    def __init__(self, denoiser, hspace_module: str = DEFAULT_MODULE):
        inner = unwrap(denoiser)
        if not isinstance(inner, VPEpsDenoiser):
            raise DdmkitError(
                f"{type(inner).__name__} is not a DDPM epsilon model; BoundaryDiffusion editing needs one "
                "(the shipped default or a diffusers DDPM folder)"
            )
        self.denoiser = inner
        sig = inner.sigmas.double().cpu()
        self.alphas_cumprod = (1.0 / (1.0 + sig**2)).numpy()  # abar_t = 1 / (1 + sigma_t^2)
        self.num_timesteps = len(self.alphas_cumprod)
        self.hs = HSpace(inner, hspace_module)
        self.hspace_module = hspace_module
        self.nfe = 0
        self.device = inner.device

    def __enter__(self) -> "EpsModel":
        self.hs.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hs.__exit__(*exc)

    def clip_range(self) -> tuple[float, float] | None:
        """The x0 clamp of generation: the model's data range if it clips (`clip_denoised`), else None."""
        rng = self.denoiser.data_range
        return tuple(rng) if self.denoiser.clip_denoised and rng is not None else None

    def abar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        if not 0 <= t < self.num_timesteps:
            raise DdmkitError(f"timestep {t} is outside the model's 0..{self.num_timesteps - 1}")
        self.nfe += 1
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        return self.denoiser.eps(x, tt).to(x.dtype)


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a_t: float, a_next: float, eta: float = 0.0,
              noise: torch.Tensor | None = None, clip: tuple[float, float] | None = None) -> torch.Tensor:
    """One step of spec section 2 from x_t (with eps = eps(x_t, t)) to x_t'; eta applies when t' < t.
    With `clip` = (lo, hi), x0 is clamped to it and eps recomputed from the clamped x0."""
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    if clip is not None:
        x0 = x0.clamp(clip[0], clip[1])
        eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
    if eta == 0 or a_next <= a_t:  # deterministic, or an inversion step (t' > t)
        return a_next**0.5 * x0 + (1 - a_next) ** 0.5 * eps
    c1 = eta * ((1 - a_t / a_next) * (1 - a_next) / (1 - a_t)) ** 0.5
    c2 = max(1 - a_next - c1**2, 0.0) ** 0.5
    if noise is None:
        raise DdmkitError("a stochastic DDIM step (eta > 0) needs noise")
    return a_next**0.5 * x0 + c2 * eps + c1 * noise


@dataclass
class Inversion:
    """x_{t_m} and h of a batch; `h` from the last inversion call (`h_source="last"`) or read at
    (z, t_m) with one extra NFE (`"tm"`)."""

    z: torch.Tensor
    h: torch.Tensor
    t_m: int
    n_steps: int
    h_source: str
    nfe: int
    seq: list[int] = field(default_factory=list)
    h_t: int = 0  # the timestep of the call h was read at


@torch.no_grad()
def invert(denoiser, x0: torch.Tensor, step: MixingStep) -> Inversion:
    """Deterministic DDIM inversion of images x0 (B, C, H, W) to x_{t_m} on the official grid of
    `step.n_inv` points (N-1 NFE, +1 for `h_source="tm"`)."""
    seq = ddim_grid(step.t_m, step.n_inv)
    with EpsModel(denoiser, step.hspace_module) as m:
        if seq[-1] >= m.num_timesteps:
            raise DdmkitError(f"t_m = {step.t_m} is beyond the model's last timestep {m.num_timesteps - 1}")
        x = x0.to(m.device, torch.float32)
        for t, t_next in zip(seq[:-1], seq[1:]):
            eps = m(x, t)
            x = ddim_step(x, eps, m.abar(t), m.abar(t_next))
        h, h_t = m.hs.h, seq[-2]
        if step.h_source == "tm":
            m(x, seq[-1])
            h, h_t = m.hs.h, seq[-1]
        return Inversion(z=x, h=h, t_m=int(step.t_m), n_steps=int(step.n_inv), h_source=step.h_source, nfe=m.nfe,
                         seq=seq, h_t=h_t)


@torch.no_grad()
def generate(denoiser, z: torch.Tensor, step: MixingStep, n_steps: int | None = None, *, eta: float = 0.0,
             h: torch.Tensor | None = None, h_injection: HInjection = "single", generator=None,
             seq: list[int] | None = None) -> tuple[torch.Tensor, int]:
    """DDIM generation from z = x_{t_m} down to x_0 on the official grid of `n_steps` points (default:
    `step.n_inv`; N NFE incl. the 0 -> -1 step).

    With `h` given, the first call (z, t_m) uses it as its bottleneck. `h_injection`: "single" (the
    paper: that call only), "lagged" (the official code: call k > 0 gets the natural bottleneck of
    call k-1), "none" (h ignored: a z-only edit). eta > 0 draws noise from `generator` (a
    `torch.Generator` or a per-sample `PerSampleGenerator`). x0 is clipped as the model says
    (`clip_denoised`; see the module docstring). Returns (x0, nfe)."""
    check_h_injection(h_injection)
    if eta < 0:
        raise DdmkitError(f"eta must be >= 0, got {eta}")
    t_m = step.t_m
    seq = list(seq) if seq is not None else ddim_grid(t_m, int(n_steps or step.n_inv))
    if seq[-1] != t_m:
        raise DdmkitError(f"the grid must end at t_m = {t_m}")
    pairs = list(zip(reversed(seq), list(reversed(seq))[1:] + [-1]))
    with EpsModel(denoiser, step.hspace_module) as m:
        clip = m.clip_range()
        x = z.to(m.device, torch.float32)
        prev_h = h if h_injection != "none" else None
        for k, (t, t_next) in enumerate(pairs):
            if prev_h is not None and (k == 0 or h_injection == "lagged"):
                m.hs.replace(prev_h.to(x.device), once=True)
            eps = m(x, t)
            prev_h = m.hs.h if h_injection == "lagged" else None
            noise = randn_like(x, generator) if (eta > 0 and t_next >= 0) else None
            x = ddim_step(x, eps, m.abar(t), m.abar(t_next), eta if t_next >= 0 else 0.0, noise, clip)
        return x, m.nfe


def reconstruction_error(x0: torch.Tensor | np.ndarray, x: torch.Tensor | np.ndarray,
                         data_range: tuple[float, float] = (-1.0, 1.0)) -> dict:
    """Per-image RMSE, max |error| and PSNR (dB, peak = the data range's width) of x against x0, and their
    means: the invert-then-generate (eta = 0) reconstruction error."""
    a = torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0).double().cpu()
    b = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double().cpu()
    if a.shape != b.shape:
        raise DdmkitError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a - b).flatten(1)
    rmse = diff.pow(2).mean(1).sqrt()
    peak = data_range[1] - data_range[0]
    psnr = 20 * torch.log10(peak / rmse.clamp(min=1e-12))
    return {
        "rmse": float(rmse.mean()),
        "max_abs": float(diff.abs().max()),
        "psnr_db": float(psnr.mean()),
        "rmse_per_image": [float(v) for v in rmse],
    }
