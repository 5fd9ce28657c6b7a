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
(`generate`, `sample_to_tm`) follows the model's `clip_denoised` unless `clip_x0` says otherwise:
x0 is clamped and eps recomputed from it (the same update as the sigma-space `ddim` integrator with
a clipping denoiser). Inversion never clips: a clamp is not invertible.
Data are VP samples in the model's range ([-1, 1] for the DDPMs), not the sigma-space x of the
samplers. NFE is counted per batched network call by `EpsModel`, never by formula.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..denoisers import unwrap
from ..errors import DdmkitError
from .hspace import DEFAULT_MODULE, HSpace

HSource = Literal["last", "tm"]
HInjection = Literal["single", "lagged", "none"]
H_SOURCES = ("last", "tm")
H_INJECTIONS = ("single", "lagged", "none")
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
        if not hasattr(inner, "eps") or not hasattr(inner, "sigmas"):
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

    def clip_range(self, clip_x0: bool | None) -> tuple[float, float] | None:
        """The x0 clamp of generation: the model's `clip_denoised` and data range unless `clip_x0` is given."""
        use = getattr(self.denoiser, "clip_denoised", False) if clip_x0 is None else bool(clip_x0)
        rng = getattr(self.denoiser, "data_range", None)
        return tuple(rng) if use and rng is not None else None

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


def _check_h_source(h_source: str) -> None:
    if h_source not in H_SOURCES:
        raise DdmkitError(f"h_source must be one of {', '.join(H_SOURCES)}, got {h_source!r}")


@torch.no_grad()
def invert(denoiser, x0: torch.Tensor, t_m: int = 500, n_steps: int = 40, *, h_source: HSource = "last",
           hspace_module: str = DEFAULT_MODULE) -> Inversion:
    """Deterministic DDIM inversion of images x0 (B, C, H, W) to x_{t_m} on the official grid (N-1 NFE,
    +1 for `h_source="tm"`)."""
    _check_h_source(h_source)
    seq = ddim_grid(t_m, n_steps)
    with EpsModel(denoiser, hspace_module) as m:
        if seq[-1] >= m.num_timesteps:
            raise DdmkitError(f"t_m = {t_m} is beyond the model's last timestep {m.num_timesteps - 1}")
        x = x0.to(m.device, torch.float32)
        for t, t_next in zip(seq[:-1], seq[1:]):
            eps = m(x, t)
            x = ddim_step(x, eps, m.abar(t), m.abar(t_next))
        h, h_t = m.hs.h, seq[-2]
        if h_source == "tm":
            m(x, seq[-1])
            h, h_t = m.hs.h, seq[-1]
        return Inversion(z=x, h=h, t_m=int(t_m), n_steps=int(n_steps), h_source=h_source, nfe=m.nfe, seq=seq, h_t=h_t)


@torch.no_grad()
def generate(denoiser, z: torch.Tensor, t_m: int, n_steps: int = 40, *, eta: float = 0.0,
             h: torch.Tensor | None = None, h_injection: HInjection = "single", generator=None,
             hspace_module: str = DEFAULT_MODULE, seq: list[int] | None = None,
             clip_x0: bool | None = None) -> tuple[torch.Tensor, int]:
    """DDIM generation from z = x_{t_m} down to x_0 on the official grid (N NFE incl. the 0 -> -1 step).

    With `h` given, the first call (z, t_m) uses it as its bottleneck. `h_injection`: "single" (the
    paper: that call only), "lagged" (the official code: call k > 0 gets the natural bottleneck of
    call k-1), "none" (h ignored: a z-only edit). eta > 0 draws noise from `generator` (a
    `torch.Generator` or a per-sample `PerSampleGenerator`). `clip_x0`: None follows the model's
    `clip_denoised` (see the module docstring). Returns (x0, nfe)."""
    from ..integrators import randn_like

    if h_injection not in H_INJECTIONS:
        raise DdmkitError(f"h_injection must be one of {', '.join(H_INJECTIONS)}, got {h_injection!r}")
    if eta < 0:
        raise DdmkitError(f"eta must be >= 0, got {eta}")
    seq = list(seq) if seq is not None else ddim_grid(t_m, n_steps)
    if seq[-1] != t_m:
        raise DdmkitError(f"the grid must end at t_m = {t_m}")
    pairs = list(zip(reversed(seq), list(reversed(seq))[1:] + [-1]))
    with EpsModel(denoiser, hspace_module) as m:
        clip = m.clip_range(clip_x0)
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


def sample_grid(t_m: int, num_timesteps: int, n_steps: int) -> list[int]:
    """Ascending grid from t_m to T-1 with n_steps intervals, for sampling from x_T ~ N(0, I) down to t_m
    (spec 5.3 uses the 999-point grid int(linspace(0, 1, 999) * 999), ~T - t_m NFE; this is the
    same path with n_steps NFE)."""
    top = num_timesteps - 1
    if not 0 < t_m <= top:
        raise DdmkitError(f"t_m must be in 1..{top}, got {t_m}")
    if t_m == top:
        return [top]
    n_steps = max(1, min(int(n_steps), top - t_m))
    return [int(v) for v in np.round(np.linspace(t_m, top, n_steps + 1))]


@torch.no_grad()
def sample_to_tm(denoiser, x_T: torch.Tensor, t_m: int, n_steps: int = 50, *, h_source: HSource = "last",
                 hspace_module: str = DEFAULT_MODULE, clip_x0: bool | None = None, eta: float = 0.0,
                 generator=None) -> Inversion:
    """DDIM from x_T at t = T-1 down to x_{t_m} in n_steps NFE (+1 for h_source "tm").

    eta = 0 (the official code) is deterministic; eta > 0 draws each step's noise from `generator`
    (eta = 1: DDPM-like ancestral steps). h comes from the last call (at the grid point just above t_m),
    as in the official unconditional control, or from (x_{t_m}, t_m). With t_m = T-1 nothing is
    integrated and h is read at (x_T, T-1)."""
    from ..integrators import randn_like

    _check_h_source(h_source)
    if eta < 0:
        raise DdmkitError(f"the prefix eta must be >= 0, got {eta}")
    if eta > 0 and generator is None:
        raise DdmkitError("a stochastic prefix (eta > 0) needs a generator")
    with EpsModel(denoiser, hspace_module) as m:
        seq = sample_grid(t_m, m.num_timesteps, n_steps)
        clip = m.clip_range(clip_x0)
        x = x_T.to(m.device, torch.float32)
        for t, t_next in zip(reversed(seq[1:]), reversed(seq[:-1])):
            eps = m(x, t)
            noise = randn_like(x, generator) if eta > 0 else None
            x = ddim_step(x, eps, m.abar(t), m.abar(t_next), eta, noise, clip)
        h, h_t = m.hs.h, seq[1] if len(seq) > 1 else t_m
        if h_source == "tm" or len(seq) == 1:
            m(x, t_m)
            h, h_t = m.hs.h, t_m
        return Inversion(z=x, h=h, t_m=int(t_m), n_steps=len(seq) - 1, h_source=h_source, nfe=m.nfe, seq=seq, h_t=h_t)


PREFIX_INTEGRATORS = ("ddim", "kar1", "kar2")


@torch.no_grad()
def sample_to_tm_karras(denoiser, x_T: torch.Tensor, t_m: int, n_steps: int = 50, *, integrator: str = "kar2",
                        generator=None, options: dict | None = None, clip_x0: bool | None = None,
                        hspace_module: str = DEFAULT_MODULE) -> Inversion:
    """Karras et al. (2022) Alg. 1 (`kar1`) or 2 (`kar2`) in the model's sigma space from x_T ~ N(0, I) at
    sigma_max down to sigma(t_m): n_steps // 2 Heun steps (2 NFE each) on the rho = 7 grid, then the VP
    latent z = x / sqrt(1 + sigma(t_m)^2) and h read at (z, t_m) by one more call (h_source "tm").

    An alternative to the DDIM prefix of `sample_to_tm` for generated samples: the default model's best
    sampler (kar2, churn at sigma >= 1) at the same NFE. `options` are kar2's (s_churn, s_tmin, s_tmax,
    s_noise; default: `ddmkit sample`'s); kar2's churn noise comes from `generator`. `clip_x0`: None
    follows the model's `clip_denoised` (the sampler's D is clamped to the data range), as `sample_to_tm`."""
    from ..integrators import kar1, kar2
    from ..sampling import integrator_options
    from ..schedules import karras_sigmas

    if integrator not in ("kar1", "kar2"):
        raise DdmkitError(f"the Karras prefix integrator must be kar1 or kar2, got {integrator!r}")
    if n_steps < 2:
        raise DdmkitError(f"a {integrator} prefix needs --prefix-steps >= 2 (one Heun step = 2 NFE), got {n_steps}")
    if integrator == "kar2" and generator is None:
        raise DdmkitError("a kar2 prefix (stochastic churn) needs a generator")
    with EpsModel(denoiser, hspace_module) as m:
        top = m.num_timesteps - 1
        if not 0 < t_m < top:
            raise DdmkitError(f"t_m must be in 1..{top - 1} for a {integrator} prefix, got {t_m}")
        s_tm = float(m.denoiser.sigmas[t_m])
        s_max = float(m.denoiser.sigmas[top])
        heun = int(n_steps) // 2
        x = x_T.to(m.device, torch.float32) * math.sqrt(1.0 + s_max**2)  # VP x_T -> sigma space
        sig = karras_sigmas(heun + 2, s_tm, s_max)[:, :-1].to(x.device)  # heun + 1 levels, s_max .. s_tm
        clip_before = m.denoiser.clip_denoised
        m.denoiser.clip_denoised = clip_before if clip_x0 is None else bool(clip_x0)
        try:
            if integrator == "kar1":
                x, nfe = kar1(m.denoiser, x, sig)
            else:
                x, nfe = kar2(m.denoiser, x, sig, generator=generator,
                              **integrator_options("kar2", m.denoiser, options))
        finally:
            m.denoiser.clip_denoised = clip_before
        z = x / math.sqrt(1.0 + s_tm**2)
        m(z, t_m)
        return Inversion(z=z, h=m.hs.h, t_m=int(t_m), n_steps=heun, h_source="tm", nfe=nfe + m.nfe, seq=[t_m, top],
                         h_t=int(t_m))


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
