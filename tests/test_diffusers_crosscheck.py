"""Cross-checks with code nobody here wrote: diffusers' schedulers driven on the same UNet and noise.

ddmkit's `ddim` (eta = 0) must equal `DDIMScheduler`; `ddim` on Karras sigmas is Euler in sigma and must
equal `EulerDiscreteScheduler(use_karras_sigmas=True)`; `kar1` must equal `HeunDiscreteScheduler`.
Relative difference <= 1e-4.
"""
from __future__ import annotations

import torch
from conftest import tiny_unet

from ddmkit.denoisers import VPEpsDenoiser
from ddmkit.integrators import ddim, kar1

BETAS = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@torch.no_grad()
def test_ddim_matches_diffusers_ddim_scheduler():
    from diffusers import DDIMScheduler

    unet = tiny_unet(seed=1)
    sched = DDIMScheduler(**BETAS, clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    sched.set_timesteps(10)
    x_vp = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = x_vp.clone()
    for t in sched.timesteps:
        y = sched.step(unet(y, t).sample, t, y, eta=0.0).prev_sample

    den = VPEpsDenoiser(unet, sched.alphas_cumprod, (3, 16, 16), clip_denoised=False)
    sig = den.sigmas[sched.timesteps.long()].float()
    sigmas = torch.cat([sig, torch.zeros(1)])
    x_ve = x_vp * (1 + sig[0] ** 2).sqrt()
    ours, nfe = ddim(den, x_ve, sigmas)
    assert nfe == 10
    assert rel_diff(ours, y) <= 1e-4


@torch.no_grad()
def test_euler_and_heun_on_karras_sigmas_match_diffusers():
    from diffusers import EulerDiscreteScheduler, HeunDiscreteScheduler

    unet = tiny_unet(seed=2)
    x0 = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))

    euler = EulerDiscreteScheduler(**BETAS, use_karras_sigmas=True)
    euler.set_timesteps(8)
    y = x0 * euler.init_noise_sigma
    for t in euler.timesteps:
        y = euler.step(unet(euler.scale_model_input(y, t), t).sample, t, y).prev_sample

    den = VPEpsDenoiser(unet, euler.alphas_cumprod, (3, 16, 16), timestep_mode="interpolate", clip_denoised=False)
    sigmas = euler.sigmas.float()  # Karras grid + final 0
    ours, nfe = ddim(den, x0 * euler.init_noise_sigma, sigmas)
    assert nfe == 8
    assert rel_diff(ours, y) <= 1e-4

    heun = HeunDiscreteScheduler(**BETAS, use_karras_sigmas=True)
    heun.set_timesteps(8)
    y = x0 * heun.init_noise_sigma
    calls = 0
    for t in heun.timesteps:
        y = heun.step(unet(heun.scale_model_input(y, t), t).sample, t, y).prev_sample
        calls += 1
    ours, nfe = kar1(den, x0 * heun.init_noise_sigma, sigmas)
    assert nfe == calls == 2 * len(sigmas) - 3
    assert rel_diff(ours, y) <= 1e-4


def test_sigma_timestep_mapping_round_trips():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**BETAS)
    den = VPEpsDenoiser(lambda x, t: x, sched.alphas_cumprod, (3, 4, 4))
    t = torch.tensor([0, 1, 250, 999])
    assert torch.equal(den.sigma_to_t(den.t_to_sigma(t)), t)
    assert abs(den.sigma_min - 0.0100) < 1e-4 and abs(den.sigma_max - 157.4) < 0.1  # spec section 10
    mid = (den.sigmas[10] * den.sigmas[11]).sqrt().reshape(1).float()  # halfway in log sigma
    interp = VPEpsDenoiser(lambda x, t: x, sched.alphas_cumprod, (3, 4, 4), timestep_mode="interpolate")
    assert abs(interp.sigma_to_t(mid).item() - 10.5) < 1e-3


def test_clip_denoised_projects_onto_the_data_range_and_counters_forward_attributes():
    from diffusers import DDPMScheduler

    from ddmkit.denoisers import NFECounter

    sched = DDPMScheduler(**BETAS)
    wild = VPEpsDenoiser(lambda x, t: -5 * torch.ones_like(x), sched.alphas_cumprod, (3, 4, 4))
    x, sigma = torch.zeros(2, 3, 4, 4), torch.tensor([3.0, 80.0])
    assert wild(x, sigma).abs().max() == 1.0  # 0 + sigma * 5 clamped to [-1, 1]
    raw = VPEpsDenoiser(lambda x, t: -5 * torch.ones_like(x), sched.alphas_cumprod, (3, 4, 4), clip_denoised=False)
    torch.testing.assert_close(raw(x, sigma)[:, 0, 0, 0], 5 * sigma)
    counter = NFECounter(wild)
    assert counter.data_range == (-1.0, 1.0) and counter.name == "vp-eps" and counter.sample_shape == (3, 4, 4)
    assert counter(x, sigma).abs().max() == 1.0 and counter.nfe == 1
