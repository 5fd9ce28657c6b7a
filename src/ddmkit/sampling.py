"""Plain sampling: x_T = sigma_start * noise with per-sample seeds, an integrator, the Tweedie step.

`make_schedule` builds each integrator's own grid from a per-sample starting sigma (DMCMC spec
section 7); `sample` draws `num` samples in batches. Sample i uses seed `sample_seed(seed, i)` for
its initial noise and for every noise draw of a stochastic integrator, so it does not depend on the
batch size or on which other samples are drawn with it.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .denoisers import Denoiser, NFECounter, VPEpsDenoiser, unwrap
from .errors import DdmkitError
from .integrators import PerSampleGenerator, get_integrator, tweedie
from .schedules import geometric_sigmas, karras_sigmas, vp_linspace_sigmas, vp_timestep_sigmas



def data_scale(denoiser: Denoiser) -> float:
    """Width of the data range relative to [0, 1] (2 for [-1, 1]); 1 for unbounded data."""
    rng = unwrap(denoiser).data_range
    return float(rng[1] - rng[0]) if rng else 1.0


def default_sigma_lo(denoiser: Denoiser) -> float:
    """The smallest noise level of the schedules and of the Tweedie step: the model's sigma_min."""
    return float(unwrap(denoiser).sigma_min)


def start_sigma(denoiser: Denoiser, sigma_max: float | None = None) -> float:
    """The noise level sampling starts at (x_T = sigma * noise): `sigma_max` when given, else the model's
    recorded default (`Denoiser.sampling_sigma_max`, e.g. from a folder's ddmkit_model.json), else the
    model's sigma_max. Refused outside (0, the model's sigma_max]."""
    inner = unwrap(denoiser)
    s = float(sigma_max if sigma_max is not None else (inner.sampling_sigma_max or inner.sigma_max))
    if not (math.isfinite(s) and 0 < s <= float(inner.sigma_max) * (1 + 1e-6)):
        raise DdmkitError(f"the starting sigma (--sigma-max) must be in (0, {float(inner.sigma_max):g}] (the model's "
                          f"sigma_max), got {s:g}")
    return s


def make_schedule(
    integrator: str,
    steps: int,
    sigma_start: torch.Tensor,
    sigma_lo: float,
    denoiser: Denoiser | None = None,
) -> torch.Tensor:
    """(B, M) schedule for `integrator` with `steps` (the spec's N) from each sample's sigma_start:
    the grid its registry entry names (`ddmkit.integrators.Integrator.grid`)."""
    spec = get_integrator(integrator)
    if int(steps) != steps or steps < 1:
        raise DdmkitError(f"--steps must be an integer >= 1, got {steps}")
    spec.check_steps(steps)
    sigma_start = torch.as_tensor(sigma_start, dtype=torch.float64).reshape(-1)
    if spec.grid == "karras":
        return karras_sigmas(steps, sigma_lo, sigma_start)
    if spec.grid == "geometric":
        return geometric_sigmas(steps, sigma_lo, sigma_start)
    if spec.grid == "rk45":
        lo = torch.full_like(sigma_start, sigma_lo).minimum(sigma_start)
        return torch.stack([sigma_start, lo, torch.zeros_like(sigma_start)], dim=1).float()
    inner = unwrap(denoiser) if denoiser is not None else None
    if spec.grid == "dpm":  # steps = NFE: diffusers' multistep grid for DDPM models, else Karras + 0
        if isinstance(inner, VPEpsDenoiser):
            return vp_linspace_sigmas(inner.sigmas, steps, sigma_start)
        return karras_sigmas(steps + 1, sigma_lo, sigma_start)
    # "ddim": evenly spaced discrete timesteps for DDPM models, a geometric grid otherwise
    if isinstance(inner, VPEpsDenoiser):
        return vp_timestep_sigmas(inner.sigmas, steps, sigma_start)
    return geometric_sigmas(steps, sigma_lo, sigma_start)


def integrator_options(integrator: str, denoiser: Denoiser, options: dict[str, Any] | None) -> dict[str, Any]:
    """Fill in defaults that depend on the model: options in [0, 1]-data units scale with the data
    range's width (kar2's churn window)."""
    opts = dict(options or {})
    scale = data_scale(denoiser)
    for key, value in get_integrator(integrator).data_scaled:
        opts.setdefault(key, value * scale)
    return opts


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` in a run with base seed `seed` in [0, 2^64) (a 64-bit mix of the two;
    seeds below 2^32 give the streams of earlier releases)."""
    return int(np.random.SeedSequence([check_seed(seed), int(index)]).generate_state(1, np.uint64)[0] >> 1)


def check_seed(seed: int) -> int:
    """A seed is a whole number in [0, 2^64): all 64 bits count (no aliasing modulo 2^32)."""
    if int(seed) != seed or not 0 <= int(seed) < 2**64:
        raise DdmkitError(f"a seed must be a whole number in [0, 2^64), got {seed!r}")
    return int(seed)


@dataclass
class SampleResult:
    x: torch.Tensor
    nfe_per_sample: float
    settings: dict = field(default_factory=dict)


def integrate(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigma_start: torch.Tensor,
    integrator: str,
    steps: int,
    *,
    generator=None,
    sigma_lo: float | None = None,
    tweedie_sigma: float | None = None,
    options: dict[str, Any] | None = None,
    callback=None,
) -> tuple[torch.Tensor, int]:
    """Integrate x from each sample's own sigma_start down to 0, then the optional Tweedie step.

    Returns the result and its measured NFE (integrator + Tweedie). `callback` is the integrator's
    k-diffusion-style per-step hook (`ddmkit.integrators`)."""
    fn = get_integrator(integrator)
    lo = default_sigma_lo(denoiser) if sigma_lo is None else float(sigma_lo)
    sigmas = make_schedule(integrator, steps, sigma_start, lo, denoiser).to(x.device)
    counter = NFECounter(denoiser)
    extra = {} if callback is None else {"callback": callback}
    x, _ = fn(counter, x, sigmas, generator=generator, **integrator_options(integrator, denoiser, options), **extra)
    if tweedie_sigma is not None and tweedie_sigma > 0:
        x, _ = tweedie(counter, x, tweedie_sigma)
    return x, counter.nfe


def clamp_to_range(denoiser: Denoiser, x: torch.Tensor) -> torch.Tensor:
    rng = unwrap(denoiser).data_range
    return x.clamp(rng[0], rng[1]) if rng else x


def plan_batches(num: int, batch_size: int, indices: Sequence[int] | None = None,
                 batches: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """The batches of sample indices a run draws: given ones (non-empty), else `indices` (default
    0..num-1) cut into runs of `batch_size`."""
    if batches is not None:
        return [[int(i) for i in b] for b in batches if len(b)]
    indices = list(range(num)) if indices is None else [int(i) for i in indices]
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


@torch.no_grad()
def sample_batch(denoiser: Denoiser, batch: Sequence[int], *, seed: int, sigma_start: float, integrator: str,
                 steps: int, sigma_lo: float, use_tweedie: bool = True,
                 options: dict[str, Any] | None = None, noise: torch.Tensor | None = None,
                 step_callback=None) -> tuple[torch.Tensor, int]:
    """The samples `batch` of a run: x_T = sigma_start * noise from each sample's own seed, integrated
    (and Tweedie-denoised at sigma_lo); returns them clamped to the data range on the CPU, and the NFE.
    `noise` (one unit normal per sample of the batch) replaces the seeded draw of x_T; the seeded streams
    advance as without it, so a stochastic integrator draws the same noise either way."""
    inner = unwrap(denoiser)
    gen = PerSampleGenerator([sample_seed(seed, i) for i in batch], device="cpu")
    eps = gen.randn((len(batch),) + tuple(inner.sample_shape))
    x = (eps if noise is None else noise.to(eps.dtype)).to(inner.device) * sigma_start
    start = torch.full((len(batch),), sigma_start, dtype=torch.float64)
    x, nfe = integrate(denoiser, x, start, integrator, steps, generator=gen, sigma_lo=sigma_lo,
                       tweedie_sigma=sigma_lo if use_tweedie else None, options=options, callback=step_callback)
    x = clamp_to_range(denoiser, x).float().cpu()
    if not torch.isfinite(x).all():
        raise DdmkitError(f"{integrator} produced non-finite samples; use more --steps or another integrator")
    return x, nfe


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    *,
    integrator: str = "kar1",
    steps: int = 18,
    num: int = 16,
    seed: int = 0,
    batch_size: int = 64,
    indices: Sequence[int] | None = None,
    use_tweedie: bool = True,
    sigma_lo: float | None = None,
    sigma_start: float | None = None,
    options: dict[str, Any] | None = None,
    progress: bool = False,
    callback=None,
    batches: Sequence[Sequence[int]] | None = None,
    noise: torch.Tensor | None = None,
    step_callback=None,
) -> SampleResult:
    """Draw samples `indices` (default 0..num-1); returns them (clamped to the data range) and the NFE.

    `batches` (instead of `indices`) gives the batches themselves: a network's float results can depend
    on which samples share its batch, so a caller that must reproduce another run bit for bit (several
    workers, `ddmkit sample` under torchrun) passes that run's batches.
    `callback(indices, x)` is called after each batch (for incremental, resumable writing);
    `step_callback` is the integrators' per-step hook (k-diffusion's `callback(dict)`). `noise` (one unit
    normal x_T / sigma_start per sample, indexed like the samples 0..num-1) replaces the seeded x_T."""
    if batch_size < 1:
        raise DdmkitError(f"--batch-size must be >= 1, got {batch_size}")
    if num < 0:
        raise DdmkitError(f"--num must be >= 0, got {num}")
    get_integrator(integrator)
    inner = unwrap(denoiser)
    s_start = start_sigma(denoiser, sigma_start)
    lo = default_sigma_lo(denoiser) if sigma_lo is None else float(sigma_lo)
    if not lo > 0:
        raise DdmkitError(f"sigma_lo must be > 0, got {lo}")
    batches = plan_batches(num, batch_size, indices, batches)
    indices = [i for b in batches for i in b]
    outs: list[torch.Tensor] = []
    nfe_total = 0  # NFE of each batch, weighted by its size (rk45's NFE differs between batches)
    for batch in tqdm(batches, disable=not progress, desc=f"sample {integrator}", unit="batch"):
        x, nfe = sample_batch(denoiser, batch, seed=seed, sigma_start=s_start, integrator=integrator, steps=steps,
                              sigma_lo=lo, use_tweedie=use_tweedie, options=options, step_callback=step_callback,
                              noise=None if noise is None else noise[torch.as_tensor(batch)])
        nfe_total += nfe * len(batch)
        outs.append(x)
        if callback is not None:
            callback(batch, x)
    x = torch.cat(outs) if outs else torch.zeros((0,) + tuple(inner.sample_shape))
    settings = {
        "integrator": integrator, "steps": steps, "seed": seed, "tweedie": use_tweedie,
        "sigma_lo": lo, "sigma_start": s_start, "options": integrator_options(integrator, denoiser, options),
    }
    return SampleResult(x=x, nfe_per_sample=nfe_total / max(len(indices), 1), settings=settings)
