"""v-prediction, x0-prediction and EDM-preconditioned models seen through D(x, sigma), checked against diffusers'
own schedulers on the same random-weight UNet and noise (relative difference <= 1e-4, as the DDIM cross-check)."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_unet

from ddmkit.denoisers import EDMDenoiser, VPEpsDenoiser
from ddmkit.integrators import ddim
from ddmkit.models.loading import load_model
from ddmkit.training import TrainConfig, train

BETAS = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("ptype", ["v_prediction", "sample"])
@torch.no_grad()
def test_vp_prediction_types_match_diffusers_ddim_and_ddpm_steps(ptype):
    from diffusers import DDIMScheduler, DDPMScheduler

    unet = tiny_unet(seed=4)
    sched = DDIMScheduler(**BETAS, clip_sample=False, set_alpha_to_one=True, steps_offset=0, prediction_type=ptype)
    sched.set_timesteps(10)
    x_vp = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = x_vp.clone()
    for t in sched.timesteps:
        y = sched.step(unet(y, t).sample, t, y, eta=0.0).prev_sample
    den = VPEpsDenoiser(unet, sched.alphas_cumprod, (3, 16, 16), clip_denoised=False, prediction_type=ptype)
    sig = den.sigmas[sched.timesteps.long()].float()
    ours, nfe = ddim(den, x_vp * (1 + sig[0] ** 2).sqrt(), torch.cat([sig, torch.zeros(1)]))
    assert nfe == 10 and rel_diff(ours, y) <= 1e-4

    # DDPMScheduler.step (clip_sample on, as ddmkit's clip_denoised): its x0 is D, and its ancestral step from
    # the same noise is the DDPM posterior step taken from D
    ddpm = DDPMScheduler(**BETAS, prediction_type=ptype)
    clipped = VPEpsDenoiser(unet, ddpm.alphas_cumprod, (3, 16, 16), prediction_type=ptype)
    for t in (999, 500, 20):
        x_t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(t))
        step = ddpm.step(unet(x_t, t).sample, t, x_t, generator=torch.Generator().manual_seed(7))
        a_t, a_prev = ddpm.alphas_cumprod[t], ddpm.alphas_cumprod[t - 1]
        sigma = ((1 - a_t) / a_t).sqrt()
        d = clipped(x_t / a_t.sqrt(), sigma.float())
        assert rel_diff(d, step.pred_original_sample) <= 1e-4
        beta = 1 - a_t / a_prev
        mean = (a_prev.sqrt() * beta * d + (1 - beta).sqrt() * (1 - a_prev) * x_t) / (1 - a_t)
        std = ((1 - a_prev) / (1 - a_t) * beta).clamp(min=1e-20).sqrt()
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7))
        assert rel_diff(mean + std * noise, step.prev_sample) <= 1e-4
        # eps() (what DDIM inversion and editing read) is the epsilon of the same prediction
        eps = clipped.eps(x_t, torch.full((2,), t))
        unclipped = VPEpsDenoiser(unet, ddpm.alphas_cumprod, (3, 16, 16), prediction_type=ptype, clip_denoised=False)
        torch.testing.assert_close((x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt(), unclipped(x_t / a_t.sqrt(), sigma.float()),
                                   rtol=1e-4, atol=1e-4)


def test_folder_prediction_type_is_read_and_unknown_ones_refused(tmp_path):
    from diffusers import DDPMScheduler

    from ddmkit.errors import ModelLoadError

    tiny_unet().save_pretrained(tmp_path / "unet", safe_serialization=True)
    DDPMScheduler(**BETAS, prediction_type="v_prediction").save_pretrained(tmp_path / "scheduler")
    den = load_model(str(tmp_path))
    assert isinstance(den, VPEpsDenoiser) and den.prediction_type == "v_prediction"
    assert den.extra_info()["parametrisation"] == "vp-v_prediction"
    cfg_path = tmp_path / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "prediction_type": "flow"}))
    with pytest.raises(ModelLoadError, match="prediction_type 'flow' is not supported"):
        load_model(str(tmp_path))


@pytest.fixture(scope="module")
def edm_folder(tmp_path_factory):
    """A 2-step EDM digits model: unet/ + an EDMEulerScheduler scheduler/ + ddmkit_model.json."""
    cfg = TrainConfig(data="digits", objective="edm", steps=2, block_out_channels=(8, 16),
                      attention_levels=(False, True), norm_num_groups=4, batch_size=4, checkpoint_every=2, seed=2)
    return train(cfg, tmp_path_factory.mktemp("edm"), progress=False)


@torch.no_grad()
def test_edm_folder_d_equals_diffusers_preconditioning_and_its_own_sampler(edm_folder):
    from diffusers import EDMEulerScheduler, UNet2DModel

    den = load_model(str(edm_folder))
    assert isinstance(den, EDMDenoiser) and den.data_range == (0.0, 1.0)
    unet = UNet2DModel.from_pretrained(edm_folder / "unet").eval()
    sched = EDMEulerScheduler.from_pretrained(edm_folder / "scheduler")
    assert (sched.config.sigma_min, sched.config.sigma_max, sched.config.sigma_data) == (0.01, 50.0, 0.5)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    for s in (0.01, 0.7, 50.0):
        sigma = torch.tensor(s)
        ref = sched.precondition_outputs(x, unet(sched.precondition_inputs(x, sigma), sched.precondition_noise(sigma)).sample, sigma)
        assert rel_diff(den(x, s), ref) <= 1e-5
    # diffusers' own sampling loop with its scheduler == ddmkit's Euler (ddim, eta 0) on the same sigmas
    sched.set_timesteps(8)
    y = x * sched.sigmas[0]
    for t in sched.timesteps:
        y = sched.step(unet(sched.scale_model_input(y, t), t).sample, t, y).prev_sample
    ours, nfe = ddim(den, x * sched.sigmas[0], sched.sigmas.float())
    assert nfe == 8 and rel_diff(ours, y) <= 1e-4


def test_edm_folder_data_range_file_is_checked(edm_folder, tmp_path):
    import shutil

    from ddmkit.errors import ModelLoadError

    copy = tmp_path / "copy"
    shutil.copytree(edm_folder, copy)
    (copy / "ddmkit_model.json").write_text(json.dumps({"data_range": [1, 0]}))
    with pytest.raises(ModelLoadError, match="data_range must be"):
        load_model(str(copy))
    (copy / "ddmkit_model.json").unlink()
    assert load_model(str(copy)).data_range == (-1.0, 1.0)  # an EDM folder without it: EDM's usual [-1, 1]
