"""The throughput path of `ddmkit train` (`ddmkit.fast_training`): device batches, channels-last, the bf16
forward, the learning-rate rule, and the flags' bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ddmkit.cli import main
from ddmkit.fast_training import DeviceBank, FastNetwork, FastOptions, scaled_lr, step_generator
from ddmkit.training import TrainConfig, build_unet, make_batch_source, train

TINY = dict(block_out_channels=(8, 16), attention_levels=(False, True), norm_num_groups=4, batch_size=4,
            checkpoint_every=2, warmup_steps=2, seed=3)


def _weights(folder):
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_device_batches_on_the_cpu_train_the_default_run_and_load_back(tmp_path):
    """On the CPU the device path renders the very same faces (torch renderer, bit for bit) and draws the
    same noise (a CPU generator with the same seed): its weights equal the default path's exactly; a
    resumed run equals an uninterrupted one; the folder loads as the default model does."""
    from ddmkit.denoisers import VPEpsDenoiser
    from ddmkit.models.loading import load_model

    fast = FastOptions(device_batches=True)
    default = train(TrainConfig(steps=2, **TINY), tmp_path / "default", progress=False)
    device = train(TrainConfig(steps=2, fast=fast, **TINY), tmp_path / "device", progress=False)
    a, b = _weights(default), _weights(device)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    batch_of, _ = make_batch_source(TrainConfig(fast=fast, **TINY))
    ref_of, _ = make_batch_source(TrainConfig(**TINY))
    assert torch.equal(batch_of(5), torch.from_numpy(ref_of(5)))
    whole = train(TrainConfig(steps=4, fast=fast, **TINY), tmp_path / "whole", progress=False)
    train(TrainConfig(steps=4, fast=fast, **TINY), tmp_path / "cut", progress=False, max_seconds=0.0)
    resumed = train(TrainConfig(steps=4, fast=fast, **TINY), tmp_path / "cut", progress=False)
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    den = load_model(str(device))
    assert isinstance(den, VPEpsDenoiser) and den.sample_shape == (3, 32, 32)
    cfg = json.loads((device / "training_config.json").read_text())
    assert cfg["fast"] == {"device_batches": True, "dtype": "fp32", "channels_last": False, "compile": False}
    assert cfg["completed_steps"] == 2


def test_channels_last_gives_the_same_training_to_float_rounding(tmp_path):
    calls = []
    ref = train(TrainConfig(steps=2, **TINY), tmp_path / "ref", progress=False)
    cl = train(TrainConfig(steps=2, fast=FastOptions(device_batches=True, channels_last=True), **TINY),
               tmp_path / "cl", progress=False, callback=calls.append)
    a, b = _weights(ref), _weights(cl)
    for k in a:
        assert b[k].is_contiguous()
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    assert [c["step"] for c in calls] == [1, 2] and all(math.isfinite(float(c["loss"])) for c in calls)


def test_bf16_forward_returns_float32_close_to_fp32():
    torch.manual_seed(0)
    model = build_unet(TrainConfig(**TINY)).eval()
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([5, 500, 950])
    with torch.no_grad():
        ref = model(x, t).sample
        out = FastNetwork(model, FastOptions(dtype="bf16", channels_last=True), "cpu")(x, t).sample
    assert out.dtype == torch.float32 and out.shape == ref.shape
    rel = float((out - ref).norm() / ref.norm())
    assert 0 < rel < 3e-2  # bf16 has an 8-bit mantissa: visibly rounded, not wrong


def test_device_bank_draws_seeded_rows_of_the_bank_with_flips():
    data = np.random.default_rng(0).standard_normal((10, 1, 4, 4)).astype(np.float32)
    bank = DeviceBank(data, batch_size=64, seed=2, flips=True, device="cpu")
    a, b, c = bank(3), bank(3), bank(4)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (64, 1, 4, 4)
    rows = torch.from_numpy(data)
    plain = [(x == rows).flatten(1).all(1).any().item() for x in a]
    flipped = [(x == rows.flip(-1)).flatten(1).all(1).any().item() for x in a]
    assert all(p or f for p, f in zip(plain, flipped)) and 10 < sum(flipped) < 54
    unflipped = DeviceBank(data, 64, 2, False, "cpu")(3)
    assert all((x == rows).flatten(1).all(1).any() for x in unflipped)


def test_sqrt_learning_rate_rule_and_the_generators():
    assert scaled_lr(3e-4, 1024, 256) == pytest.approx(6e-4)
    assert scaled_lr(3e-4, 4096, 256) == pytest.approx(1.2e-3)
    assert step_generator(FastOptions(), 1, "cpu").device.type == "cpu"
    g1, g2 = step_generator(FastOptions(device_batches=True), 7, "cpu"), torch.Generator().manual_seed(7)
    assert torch.equal(torch.randn(5, generator=g1), torch.randn(5, generator=g2))


def test_train_cli_throughput_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--channels", "16,32", "--attention", "0,1", "--steps", "1",
                 "--batch-size", "4", "--lr", "3e-4", "--lr-batch", "1", "--warmup-steps", "0", "--device", "cpu",
                 "--device-batches", "--channels-last", "--threads", "1", "--quiet"]) == 0
    cfg = json.loads((out / "model" / "training_config.json").read_text())
    assert cfg["lr"] == pytest.approx(6e-4) and cfg["warmup_steps"] == 0
    assert cfg["notes"]["lr_rule"] == {"rule": "sqrt", "lr": 3e-4, "lr_batch": 1}
    assert cfg["fast"]["device_batches"] and cfg["fast"]["channels_last"]
    capsys.readouterr()


@pytest.mark.parametrize("flags, message", [
    (["--dtype", "bf16"], ("--dtype bf16 needs a CUDA device (on a CPU it is barely faster and changes the numerics); "
                           "use --dtype fp32 or --device cuda")),
    (["--compile"], ("--compile needs a CUDA device (on a CPU the UNet compiles for minutes and steps slower); "
                     "drop --compile or use --device cuda")),
    (["--device-batches", "--workers", "2"], ("--workers renders batches on the CPU, --device-batches on the device: "
                                              "drop --workers")),
    (["--lr", "0.5", "--lr-batch", "1", "--batch-size", "16"], "need 0 < lr <= 1"),
    (["--dtype", "fp16"], "invalid choice: 'fp16'"),
    (["--lr-batch", "0"], "--lr-batch"),
    (["--warmup-steps", "-1"], "--warmup-steps"),
])
def test_train_cli_throughput_flags_bad_input(tmp_path, capsys, flags, message):
    out = tmp_path / "o"
    assert main(["train", "--out", str(out), "--device", "cpu", "--steps", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) <= 2  # argparse adds its usage line
    assert not out.exists()


@pytest.mark.parametrize("objective", ["v-minsnr", "edm"])
def test_device_batches_train_every_objective_as_the_default_path_does_on_the_cpu(tmp_path, objective):
    fast = FastOptions(device_batches=True, channels_last=True)
    ref = train(TrainConfig(steps=2, objective=objective, **TINY), tmp_path / "ref", progress=False)
    got = train(TrainConfig(steps=2, objective=objective, fast=fast, **TINY), tmp_path / "got", progress=False)
    a, b = _weights(ref), _weights(got)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    assert json.loads((got / "training_config.json").read_text())["objective"] == objective
