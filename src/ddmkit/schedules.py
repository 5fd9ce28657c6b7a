"""Noise-level schedules, one row per sample: every builder accepts a per-sample starting sigma.

- `karras_sigmas`: Karras et al. (2022) eq. 5, rho = 7, N points including the final 0.
- `geometric_sigmas`: the VE geometric grid sigma(t) = sigma_lo (sigma*/sigma_lo)^t used by the
  reverse-diffusion, probability-flow and Euler-Maruyama integrators (DMCMC spec section 7), + 0.
- `ve_classifier_grid`: the K-level geometric grid of the noise-level classifier (spec section 2).
- `vp_timestep_sigmas`: the VP discrete grid, uniformly spaced DDPM timesteps mapped to sigma.
- `vp_linspace_sigmas`: diffusers' multistep-solver grid ("linspace" spacing, final sigma 0) below t(sigma*).
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import DdmkitError


def _start(sigma_start: torch.Tensor | float, n_rows: int | None = None) -> torch.Tensor:
    s = torch.as_tensor(sigma_start, dtype=torch.float64)
    if s.ndim == 0:
        s = s.reshape(1).expand(n_rows or 1)
    if not torch.all(torch.isfinite(s)) or torch.any(s <= 0):
        raise DdmkitError("starting sigma must be positive and finite")
    return s


def _check_steps(n: int, minimum: int) -> None:
    if int(n) != n or n < minimum:
        raise DdmkitError(f"steps must be an integer >= {minimum}, got {n}")


def karras_sigmas(n: int, sigma_lo: float, sigma_start: torch.Tensor | float, rho: float = 7.0) -> torch.Tensor:
    """(B, N): sigma_i = (s*^(1/rho) + i/(N-2) (lo^(1/rho) - s*^(1/rho)))^rho for i < N-1, then 0.

    N counts grid points including the final 0, so there are N-1 steps (spec section 7)."""
    _check_steps(n, 2)
    if sigma_lo <= 0:
        raise DdmkitError(f"sigma_lo must be > 0, got {sigma_lo}")
    s = _start(sigma_start)[:, None]
    if n == 2:
        ramp = torch.zeros(1, 1, dtype=torch.float64)
    else:
        ramp = torch.linspace(0, 1, n - 1, dtype=torch.float64)[None, :]
    lo = torch.full_like(s, float(sigma_lo)).minimum(s)
    sig = (s ** (1 / rho) + ramp * (lo ** (1 / rho) - s ** (1 / rho))) ** rho
    return torch.cat([sig, torch.zeros_like(s)], dim=1).float()


def geometric_sigmas(n: int, sigma_lo: float, sigma_start: torch.Tensor | float) -> torch.Tensor:
    """(B, N+1): N levels sigma_lo (s*/sigma_lo)^(j/(N-1)), j = N-1..0, then 0 (the RD/PF/EM grid)."""
    _check_steps(n, 1)
    if sigma_lo <= 0:
        raise DdmkitError(f"sigma_lo must be > 0, got {sigma_lo}")
    s = _start(sigma_start)[:, None]
    lo = torch.full_like(s, float(sigma_lo)).minimum(s)
    if n == 1:
        t = torch.ones(1, 1, dtype=torch.float64)
    else:
        t = torch.linspace(1, 0, n, dtype=torch.float64)[None, :]
    sig = lo * (s / lo) ** t
    return torch.cat([sig, torch.zeros_like(s)], dim=1).float()


def ve_classifier_grid(sigma_min: float, sigma_max: float, k: int = 1000, tau_min: float = 1e-3) -> torch.Tensor:
    """(K,) descending: sigma_k = sigma_min (sigma_max/sigma_min)^tau_k, tau = linspace(1, 1e-3, K).

    Index 0 is sigma_max; sigma_min itself is not on the grid (spec section 2)."""
    if not 0 < sigma_min < sigma_max:
        raise DdmkitError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    tau = torch.linspace(1.0, tau_min, k, dtype=torch.float64)
    return (sigma_min * (sigma_max / sigma_min) ** tau).float()


def vp_timestep_sigmas(discrete_sigmas: torch.Tensor, steps: int, sigma_start: torch.Tensor | float) -> torch.Tensor:
    """(B, steps+1): `steps` DDPM timesteps evenly spaced from t(s*) down to 0, as sigmas, then 0.

    `discrete_sigmas` is the ascending table sigma_t, t = 0..T-1 (`VPEpsDenoiser.sigmas`)."""
    _check_steps(steps, 1)
    table = discrete_sigmas.double()
    s = _start(sigma_start)
    t_start = (s.log()[:, None] - table.log()[None, :]).abs().argmin(dim=1).double()
    frac = torch.linspace(1, 0, steps, dtype=torch.float64)[None, :] if steps > 1 else torch.ones(1, 1, dtype=torch.float64)
    ts = torch.round(t_start[:, None] * frac).long()
    return torch.cat([table[ts], torch.zeros(len(s), 1, dtype=torch.float64)], dim=1).float()


def vp_linspace_sigmas(discrete_sigmas: torch.Tensor, steps: int, sigma_start: torch.Tensor | float) -> torch.Tensor:
    """(B, steps+1): sigma* itself, then the DDPM timesteps round(linspace(0, t*, steps+1))[::-1][1:-1], then 0.

    t* is the timestep nearest sigma* in log sigma. From sigma* = sigma_max (t* = T-1) this is exactly the
    grid of diffusers' `DPMSolverMultistepScheduler` / `UniPCMultistepScheduler` with their default
    `timestep_spacing="linspace"` and `final_sigmas_type="zero"` (numpy's linspace and rounding, as there)."""
    _check_steps(steps, 1)
    table = discrete_sigmas.double()
    s = _start(sigma_start)
    t_start = (s.log()[:, None] - table.log()[None, :]).abs().argmin(dim=1).numpy()
    ts = np.linspace(np.zeros(len(s)), t_start, steps + 1, axis=1).round()[:, ::-1][:, 1:-1].astype(np.int64)
    inner = table[torch.from_numpy(ts.copy())].minimum(s[:, None])
    return torch.cat([s[:, None], inner, torch.zeros(len(s), 1, dtype=torch.float64)], dim=1).float()


def as_rows(sigmas: torch.Tensor, batch: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A schedule (N,), (1, N) or (B, N) as (B, N); checks it is finite, non-negative, non-increasing."""
    sigmas = torch.as_tensor(sigmas).to(dtype)
    if sigmas.ndim == 1:
        sigmas = sigmas[None]
    if sigmas.ndim == 2 and sigmas.shape[0] == 1:
        sigmas = sigmas.expand(batch, -1)
    if sigmas.ndim != 2 or sigmas.shape[0] != batch:
        raise DdmkitError(f"sigmas must have shape (N,) or ({batch}, N), got {tuple(sigmas.shape)}")
    if sigmas.shape[1] < 2:
        raise DdmkitError("a schedule needs at least 2 noise levels (start and end)")
    if not torch.all(torch.isfinite(sigmas)) or torch.any(sigmas < 0):
        raise DdmkitError("sigmas must be finite and >= 0")
    if torch.any(sigmas[:, 0] <= 0):
        raise DdmkitError("the starting sigma must be > 0")
    if torch.any(sigmas[:, 1:] > sigmas[:, :-1]):
        raise DdmkitError("sigmas must be non-increasing along each schedule")
    return sigmas
