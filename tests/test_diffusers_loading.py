"""diffusers folders through diffusers itself: PNDM and DDIM scheduler configs, weight variants and
torch_dtype, all made here with random weights; each gives the D(x, sigma) of the same network and betas."""
from __future__ import annotations

import json

import pytest
import torch

from ddmkit.cli import main
from ddmkit.errors import DdmkitError
from ddmkit.models.loading import load_model

from conftest import tiny_unet


def _folder(tmp_path, scheduler_cls, name="m", variant=None, unet=None):
    folder = tmp_path / name
    unet = unet if unet is not None else tiny_unet(seed=3)
    unet.save_pretrained(folder / "unet", safe_serialization=True, variant=variant)
    scheduler_cls(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture(scope="module")
def probe():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 3, 16, 16, generator=g), torch.tensor([0.05, 1.0, 20.0])


def test_pndm_and_ddim_configs_give_the_ddpm_denoiser(tmp_path, probe):
    from diffusers import DDIMScheduler, DDPMScheduler, PNDMScheduler

    x, sigma = probe
    dens = {cls.__name__: load_model(_folder(tmp_path, cls, cls.__name__)) for cls in (DDPMScheduler, DDIMScheduler, PNDMScheduler)}
    with torch.no_grad():
        ref = dens["DDPMScheduler"](x, sigma)
        for name, den in dens.items():
            assert json.loads((tmp_path / name / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == name
            assert torch.equal(den(x, sigma), ref), name
            assert den.sigma_max == pytest.approx(dens["DDPMScheduler"].sigma_max)


def test_a_weights_variant_loads_only_when_asked(tmp_path, probe, capsys):
    from diffusers import DDPMScheduler

    folder = _folder(tmp_path, DDPMScheduler, variant="fp16", unet=tiny_unet(seed=3).half())
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    with pytest.raises(DdmkitError, match=r"it has the variants fp16 \(pass variant=..., --variant\)"):
        load_model(folder)
    den = load_model(folder, variant="fp16", torch_dtype="float32")
    assert next(den.unet.parameters()).dtype == torch.float32
    full = load_model(_folder(tmp_path, DDPMScheduler, "full", unet=tiny_unet(seed=3).half().float()))
    x, sigma = probe
    with torch.no_grad():  # the fp16 weights, read back as float32: the same network as its float32 copy
        assert torch.equal(den(x, sigma), full(x, sigma))
    out = tmp_path / "s"
    assert main(["sample", "--model", str(folder), "--variant", "fp16", "--torch-dtype", "float32", "--steps", "3",
                 "--num", "2", "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_load"] == {"variant": "fp16", "torch_dtype": "float32"}
    assert main(["sample", "--model", str(folder), "--steps", "3", "--num", "2", "--out", str(tmp_path / "t"),
                 "--quiet"]) == 2
    assert "--variant" in capsys.readouterr().err and not (tmp_path / "t").exists()
