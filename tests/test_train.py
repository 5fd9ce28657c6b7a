"""`ddmkit train`: a few steps run, an interrupted run resumes to the same weights, the folder loads back."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ddmkit.cli import main
from ddmkit.errors import DdmkitError
from ddmkit.training import TrainConfig, train

TINY = dict(block_out_channels=(8, 16), attention_levels=(False, True), norm_num_groups=4, batch_size=4,
            checkpoint_every=2, warmup_steps=2, seed=3)


def test_resumed_run_equals_uninterrupted_run_and_loads_back(tmp_path):
    whole = train(TrainConfig(steps=4, **TINY), tmp_path / "whole", progress=False)
    train(TrainConfig(steps=2, **TINY), tmp_path / "cut", progress=False)  # "interrupted" after 2 steps
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    resumed = train(TrainConfig(steps=4, **TINY), tmp_path / "cut", progress=False)
    a = load_file(str(whole / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = (tmp_path / "cut" / "train_log.csv").read_text().splitlines()
    assert log[0] == "step,loss,lr,seconds"

    from diffusers import UNet2DModel

    from ddmkit.denoisers import VPEpsDenoiser
    from ddmkit.models.loading import load_model

    den = load_model(str(whole))
    assert isinstance(den, VPEpsDenoiser) and den.sample_shape == (3, 32, 32)
    ref = UNet2DModel.from_pretrained(whole / "unet").eval()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.equal(den.unet(x, t).sample, ref(x, t).sample)
    # weights really changed during training (the checkpoint differs from a fresh init)
    fresh = train.__globals__["build_unet"](TrainConfig(**TINY))
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in a.items() if v.dtype.is_floating_point)


def test_resume_with_a_different_config_is_refused(tmp_path):
    train(TrainConfig(steps=2, **TINY), tmp_path / "r", progress=False)
    with pytest.raises(DdmkitError, match="different training config"):
        train(TrainConfig(steps=4, **{**TINY, "batch_size": 8}), tmp_path / "r", progress=False)


def test_warm_start_from_a_model_folder(tmp_path):
    first = train(TrainConfig(steps=2, **TINY), tmp_path / "a", progress=False)
    cfg = TrainConfig(steps=1, **{**TINY, "seed": 9}, init_from=str(first))
    second = train(cfg, tmp_path / "b", progress=False)
    assert (second / "unet" / "config.json").is_file()
    with pytest.raises(DdmkitError, match="no diffusion_pytorch_model"):
        train(TrainConfig(steps=1, **TINY, init_from=str(tmp_path)), tmp_path / "c", progress=False)


def test_train_cli_bad_input(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "o"), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o2"), "--steps", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_worker_rendered_batches_and_a_time_limited_run_give_the_same_weights(tmp_path):
    """--workers renders the same batches in other processes; --max-seconds stops early (checkpoint, export with
    completed_steps) and the same command then resumes to the weights of an uninterrupted in-process run."""
    whole = train(TrainConfig(steps=4, **TINY), tmp_path / "whole", progress=False)
    workers = train(TrainConfig(steps=4, workers=2, **TINY), tmp_path / "workers", progress=False)
    cut = train(TrainConfig(steps=4, **TINY), tmp_path / "cut", progress=False, max_seconds=0.0)
    assert json.loads((cut / "training_config.json").read_text())["completed_steps"] == 1
    assert json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())["step"] == 1
    resumed = train(TrainConfig(steps=4, **TINY), tmp_path / "cut", progress=False)
    assert json.loads((resumed / "training_config.json").read_text())["completed_steps"] == 4
    a = load_file(str(whole / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed / "unet" / "diffusion_pytorch_model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the worker processes hand over the very same batches (exactly); the weights then agree to float rounding
    # amplified by Adam (the unpickled arrays' memory layout can change the CPU kernels' summation order),
    # far below one step's update (lr 3e-4)
    from ddmkit.training import _batches, make_batch_source

    batch_of, _ = make_batch_source(TrainConfig(**TINY))
    for x, y in zip(_batches(batch_of, range(5), 0), _batches(batch_of, range(5), 2)):
        assert torch.equal(x, y)
    c = load_file(str(workers / "unet" / "diffusion_pytorch_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], c[k], rtol=0, atol=3e-5)
