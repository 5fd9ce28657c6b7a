"""Training objectives of `ddmkit train` and the parametrisations they leave in a model folder.

VP (DDPM) objectives: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with t ~ U{0..T-1}, SNR_t = abar_t / (1 - abar_t).

- `eps`: the network predicts eps, loss ||eps_hat - eps||^2 (Ho et al. 2020, eq. 14; ddmkit's default,
  bit for bit the loss `ddmkit train` always had).
- `v`: the network predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, section 4; diffusers'
  `prediction_type="v_prediction"`), loss ||v_hat - v||^2.
- `eps-minsnr`, `v-minsnr`: the same targets with the min-SNR-gamma weight (Hang et al. 2023, eq. 6), the
  weight of the x0-loss min(SNR, gamma) expressed in the predicted quantity: min(SNR, gamma) / SNR for eps,
  min(SNR, gamma) / (SNR + 1) for v.

EDM objective (`edm`; Karras et al. 2022, Table 1 and eq. 7-8), variance exploding x = x0 + sigma n with
ln sigma ~ N(P_mean, P_std^2): D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) with

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)     c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in = 1 / sqrt(sigma^2 + sigma_data^2)             c_noise = ln(sigma) / 4

and the loss lambda(sigma) ||D - x0||^2 with lambda = 1 / c_out^2, computed in F's space (eq. 8: unit
weight on ||F - (x0 - c_skip x) / c_out||^2). These are diffusers' `EDMEulerScheduler` preconditioning
(`precondition_inputs / precondition_noise / precondition_outputs`, prediction_type "epsilon"), so the
exported folder's scheduler config defines D and diffusers samples it with its own scheduler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import DdmkitError

OBJECTIVES = ("eps", "eps-minsnr", "v", "v-minsnr", "edm")
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023's recommended gamma
# diffusers' scheduler `prediction_type` of each VP objective (the folder records the parametrisation)
VP_PREDICTION_TYPES = {"eps": "epsilon", "eps-minsnr": "epsilon", "v": "v_prediction", "v-minsnr": "v_prediction"}


@dataclass(frozen=True)
class EDMSettings:
    """The EDM objective's constants. sigma range: the DMCMC paper's CIFAR-10 VE range [0.01, 50] for data
    in [0, 1]; sigma_data 0.5 and ln sigma ~ N(-1.2, 1.2^2): EDM's own values (Table 1)."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2


def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise DdmkitError(f"unknown --objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return name


def data_range_of(objective: str) -> tuple[float, float]:
    """The range of the training data: [-1, 1] for the DDPM objectives, [0, 1] (the DMCMC paper's VE setting)
    for EDM."""
    return (0.0, 1.0) if check_objective(objective) == "edm" else (-1.0, 1.0)


# ------------------------------------------------------------------------------ parametrisations

def vp_x0(out: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """x0 from a VP network output at the VE state x = x_vp sqrt(1 + sigma^2) (sigma broadcastable to x).

    epsilon: x0 = x - sigma eps; v_prediction: x0 = alpha x_vp - s v = (x - sigma v sqrt(1 + sigma^2)) / (1 + sigma^2)
    with alpha = 1 / sqrt(1 + sigma^2), s = sigma alpha (Salimans & Ho 2022, eq. 7; k-diffusion's v wrapper);
    sample: x0 = out."""
    if prediction_type == "epsilon":
        return x - sigma * out
    if prediction_type == "v_prediction":
        return (x - sigma * (1 + sigma**2).sqrt() * out) / (1 + sigma**2)
    if prediction_type == "sample":
        return out
    raise DdmkitError(f"prediction_type {prediction_type!r} is not supported (epsilon, v_prediction, sample)")


def edm_scalings(sigma: torch.Tensor, sigma_data: float, prediction_type: str = "epsilon"):
    """(c_skip, c_out, c_in, c_noise) of EDM's preconditioning (Table 1), as diffusers' EDMEulerScheduler
    computes them (prediction_type "v_prediction" flips the sign of c_out there)."""
    var = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma * sigma_data / var**0.5
    if prediction_type == "v_prediction":
        c_out = -c_out
    elif prediction_type != "epsilon":
        raise DdmkitError(f"EDM prediction_type {prediction_type!r} is not supported (epsilon, v_prediction)")
    c_in = 1 / var**0.5
    c_noise = 0.25 * torch.log(sigma)
    return c_skip, c_out, c_in, c_noise


# ------------------------------------------------------------------------------ losses

def min_snr_weight(snr: torch.Tensor, prediction_type: str, gamma: float) -> torch.Tensor:
    """Per-sample weight of Hang et al. 2023 (eq. 6), min(SNR, gamma) / SNR (eps) or / (SNR + 1) (v)."""
    clipped = snr.clamp(max=gamma)
    return clipped / snr if prediction_type == "epsilon" else clipped / (snr + 1)


def vp_loss(model: Callable, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor,
            objective: str, gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
    """The loss of one batch for a VP objective (module docstring); `alphas_cumprod` on x0's device."""
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    out = model(xt, t).sample
    if objective == "eps":  # the original loss, bit for bit
        return torch.nn.functional.mse_loss(out, noise)
    ptype = VP_PREDICTION_TYPES[objective]
    target = noise if ptype == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
    per_sample = (out - target).pow(2).flatten(1).mean(1)
    if objective.endswith("-minsnr"):
        snr = (a / (1 - a)).flatten()
        per_sample = per_sample * min_snr_weight(snr, ptype, gamma)
    return per_sample.mean()


def edm_sigmas(n: int, settings: EDMSettings, generator: torch.Generator) -> torch.Tensor:
    """ln sigma ~ N(P_mean, P_std^2) (EDM Table 1, 'Noise distribution')."""
    return torch.exp(settings.p_mean + settings.p_std * torch.randn(n, generator=generator))


def edm_loss(model: Callable, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
             settings: EDMSettings) -> torch.Tensor:
    """lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2 with lambda = 1 / c_out^2, as eq. 8's unit-weight loss on F."""
    s = sigma.view(-1, 1, 1, 1)
    x = x0 + s * noise
    c_skip, c_out, c_in, c_noise = edm_scalings(s, settings.sigma_data)
    out = model(c_in * x, c_noise.flatten()).sample
    target = (x0 - c_skip * x) / c_out
    return torch.nn.functional.mse_loss(out, target)

