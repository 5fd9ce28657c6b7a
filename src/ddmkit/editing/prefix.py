"""From x_T ~ N(0, I) down to the mixing step t_m: the prefix of unconditional control (spec 5.3).

`sample_to_tm`: DDIM on an ascending grid from t_m to T-1 (the official code walks the 999-point grid
with eta = 0, about T - t_m NFE; here `n_steps` NFE, any eta). `sample_to_tm_karras`: Karras et al.
(2022) Alg. 1 or 2 in the model's sigma space, then h read at (z, t_m). Both return an `Inversion`
(z = x_{t_m}, h, NFE), as `invert` does for real images.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DdmkitError
from ..integrators import kar1, kar2, randn_like
from ..sampling import integrator_options
from ..schedules import karras_sigmas
from .ddim import EpsModel, Inversion, ddim_step
from .settings import MixingStep


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
def sample_to_tm(denoiser, x_T: torch.Tensor, step: MixingStep, n_steps: int = 50, *, eta: float = 0.0,
                 generator=None) -> Inversion:
    """DDIM from x_T at t = T-1 down to x_{t_m} in n_steps NFE (+1 for `step.h_source` "tm").

    eta = 0 (the official code) is deterministic; eta > 0 draws each step's noise from `generator`
    (eta = 1: DDPM-like ancestral steps). h comes from the last call (at the grid point just above t_m),
    as in the official unconditional control, or from (x_{t_m}, t_m). With t_m = T-1 nothing is
    integrated and h is read at (x_T, T-1)."""
    t_m = step.t_m
    if eta < 0:
        raise DdmkitError(f"the prefix eta must be >= 0, got {eta}")
    if eta > 0 and generator is None:
        raise DdmkitError("a stochastic prefix (eta > 0) needs a generator")
    with EpsModel(denoiser, step.hspace_module) as m:
        seq = sample_grid(t_m, m.num_timesteps, n_steps)
        clip = m.clip_range()
        x = x_T.to(m.device, torch.float32)
        for t, t_next in zip(reversed(seq[1:]), reversed(seq[:-1])):
            eps = m(x, t)
            noise = randn_like(x, generator) if eta > 0 else None
            x = ddim_step(x, eps, m.abar(t), m.abar(t_next), eta, noise, clip)
        h, h_t = m.hs.h, seq[1] if len(seq) > 1 else t_m
        if step.h_source == "tm" or len(seq) == 1:
            m(x, t_m)
            h, h_t = m.hs.h, t_m
        return Inversion(z=x, h=h, t_m=int(t_m), n_steps=len(seq) - 1, h_source=step.h_source, nfe=m.nfe, seq=seq,
                         h_t=h_t)


def _check_karras(integrator: str, n_steps: int, generator) -> None:
    if integrator not in ("kar1", "kar2"):
        raise DdmkitError(f"the Karras prefix integrator must be kar1 or kar2, got {integrator!r}")
    if n_steps < 2:
        raise DdmkitError(f"a {integrator} prefix needs --prefix-steps >= 2 (one Heun step = 2 NFE), got {n_steps}")
    if integrator == "kar2" and generator is None:
        raise DdmkitError("a kar2 prefix (stochastic churn) needs a generator")


@torch.no_grad()
def sample_to_tm_karras(denoiser, x_T: torch.Tensor, step: MixingStep, n_steps: int = 50, *,
                        integrator: str = "kar2", generator=None, options: dict | None = None) -> Inversion:
    """Karras et al. (2022) Alg. 1 (`kar1`) or 2 (`kar2`) in the model's sigma space from x_T ~ N(0, I) at
    sigma_max down to sigma(t_m): n_steps // 2 Heun steps (2 NFE each) on the rho = 7 grid, then the VP
    latent z = x / sqrt(1 + sigma(t_m)^2) and h read at (z, t_m) by one more call (h_source "tm",
    whatever `step.h_source` says).

    An alternative to the DDIM prefix of `sample_to_tm` for generated samples: the default model's best
    sampler (kar2, churn at sigma >= 1) at the same NFE. `options` are kar2's (s_churn, s_tmin, s_tmax,
    s_noise; default: `ddmkit sample`'s); kar2's churn noise comes from `generator`. D is clamped to the
    data range as the model says (`clip_denoised`), as in `sample_to_tm`; a `clipping.clipped` view
    of the model sets it for one call."""
    _check_karras(integrator, n_steps, generator)
    t_m = step.t_m
    with EpsModel(denoiser, step.hspace_module) as m:
        top = m.num_timesteps - 1
        if not 0 < t_m < top:
            raise DdmkitError(f"t_m must be in 1..{top - 1} for a {integrator} prefix, got {t_m}")
        s_tm = float(m.denoiser.sigmas[t_m])
        s_max = float(m.denoiser.sigmas[top])
        heun = int(n_steps) // 2
        x = x_T.to(m.device, torch.float32) * math.sqrt(1.0 + s_max**2)  # VP x_T -> sigma space
        sig = karras_sigmas(heun + 2, s_tm, s_max)[:, :-1].to(x.device)  # heun + 1 levels, s_max .. s_tm
        if integrator == "kar1":
            x, nfe = kar1(m.denoiser, x, sig)
        else:
            x, nfe = kar2(m.denoiser, x, sig, generator=generator, **integrator_options("kar2", m.denoiser, options))
        z = x / math.sqrt(1.0 + s_tm**2)
        m(z, t_m)
        return Inversion(z=z, h=m.hs.h, t_m=int(t_m), n_steps=heun, h_source="tm", nfe=nfe + m.nfe, seq=[t_m, top],
                         h_t=int(t_m))
