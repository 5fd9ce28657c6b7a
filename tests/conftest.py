"""Shared fixtures: small exact mixtures and a tiny random-weight diffusers UNet."""
from __future__ import annotations

import json

import pytest
import torch

from ddmkit.mixtures import GaussianMixture, GMMDenoiser, random_mixture

torch.set_num_threads(1)  # tests run beside other work on 2 cores; one thread avoids oversubscription


@pytest.fixture(scope="session")
def mixture_2d() -> GaussianMixture:
    """Three well-separated components with unequal weights 0.5 / 0.3 / 0.2 and unequal stds."""
    return GaussianMixture(
        torch.tensor([0.5, 0.3, 0.2]),
        torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]]),
        torch.tensor([[0.5, 0.8], [0.6, 0.4], [0.7, 0.5]]),
    )


@pytest.fixture(scope="session")
def mixture_64d() -> GaussianMixture:
    return random_mixture(64, 3, seed=3)


@pytest.fixture(scope="session")
def gmm_2d(mixture_2d) -> GMMDenoiser:
    return GMMDenoiser(mixture_2d, sigma_min=0.002, sigma_max=80.0)


@pytest.fixture(scope="session")
def gmm_64d(mixture_64d) -> GMMDenoiser:
    return GMMDenoiser(mixture_64d, sigma_min=0.002, sigma_max=80.0)


@pytest.fixture()
def mixture_json(tmp_path, mixture_2d):
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(mixture_2d.to_json()))
    return path


def tiny_unet(seed: int = 0, size: int = 16):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=size, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()


@pytest.fixture(scope="session")
def unet_folder(tmp_path_factory):
    """A random-weight DDPM pipeline folder (unet/ + scheduler/) in the diffusers layout."""
    from diffusers import DDPMScheduler

    folder = tmp_path_factory.mktemp("ddpm")
    tiny_unet().save_pretrained(folder / "unet", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(folder / "scheduler")
    return folder
