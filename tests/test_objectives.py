"""Training objectives (`ddmkit.objectives`, `ddmkit train --objective`): the default is the original loss bit for
bit, each objective trains, exports a folder that loads with no flags, and its parametrisation inverts exactly."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from ddmkit.cli import main
from ddmkit.denoisers import EDMDenoiser, VPEpsDenoiser
from ddmkit.models.loading import load_model
from ddmkit.objectives import (
    OBJECTIVES, EDMSettings, edm_loss, edm_scalings, min_snr_weight, vp_loss, vp_x0,
)
from ddmkit.training import TrainConfig, train

TINY = dict(block_out_channels=(8, 16), attention_levels=(False, True), norm_num_groups=4, batch_size=4,
            checkpoint_every=2, warmup_steps=2)


def _weights_digest(model_dir) -> str:
    w = load_file(str(model_dir / "unet" / "diffusion_pytorch_model.safetensors"))
    return hashlib.sha256(b"".join(w[k].numpy().tobytes() for k in sorted(w))).hexdigest()


def test_default_training_is_bit_for_bit_the_trainer_before_objectives(tmp_path):
    """3 steps of the default (eps) objective on the faces give the weights the trainer gave before
    `--objective` existed (digest recorded with that code, same torch build); the scheduler config is unchanged."""
    model = train(TrainConfig(steps=3, seed=3, **TINY), tmp_path / "eps", progress=False)
    assert _weights_digest(model) == "c818242e7ef639341b5922fb2333e68994bec24353918d0f235ec42b6cd04aa6"
    sched = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "DDPMScheduler" and sched["prediction_type"] == "epsilon"
    assert json.loads((model / "training_config.json").read_text())["objective"] == "eps"


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_trains_and_its_folder_loads_without_flags(tmp_path, objective):
    model = train(TrainConfig(data="digits", objective=objective, steps=2, seed=1, **TINY), tmp_path / objective,
                  progress=False)
    log = (tmp_path / objective / "checkpoint" / "state.json").read_text()
    assert json.loads(log)["config"]["objective"] == objective
    den = load_model(str(model))
    assert den.sample_shape == (1, 32, 32)
    if objective == "edm":
        assert isinstance(den, EDMDenoiser) and den.data_range == (0.0, 1.0)
        assert (den.sigma_min, den.sigma_max, den.sigma_data) == (0.01, 50.0, 0.5)
        assert not (model / "model_index.json").exists()  # no DDPMPipeline claim: DDPMPipeline cannot sample it
    else:
        assert isinstance(den, VPEpsDenoiser) and den.data_range == (-1.0, 1.0)
        assert den.prediction_type == ("v_prediction" if objective.startswith("v") else "epsilon")
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.isfinite(den(x, torch.tensor([0.05, 20.0]))).all()


def test_resume_of_a_checkpoint_from_before_the_objectives_is_accepted(tmp_path):
    train(TrainConfig(steps=2, seed=3, **TINY), tmp_path / "r", progress=False)
    state_path = tmp_path / "r" / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    for key in ("objective", "min_snr_gamma", "edm_sigma_min", "edm_sigma_max", "sigma_data", "p_mean", "p_std"):
        state["config"].pop(key)
    state_path.write_text(json.dumps(state))
    train(TrainConfig(steps=3, seed=3, **TINY), tmp_path / "r", progress=False)  # no "different config" error
    from ddmkit.errors import DdmkitError

    with pytest.raises(DdmkitError, match="different training config"):
        train(TrainConfig(steps=4, seed=3, objective="v", **TINY), tmp_path / "r", progress=False)


def test_parametrisations_invert_exactly():
    """eps, v and x0 predictions of x = x0 + sigma n (VE; x_vp = x / sqrt(1 + sigma^2)) all give back x0."""
    g = torch.Generator().manual_seed(0)
    x0, n = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64), torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.3, 4.0, 150.0], dtype=torch.float64).view(-1, 1, 1, 1)
    x = x0 + sigma * n
    alpha, s_vp = 1 / (1 + sigma**2).sqrt(), sigma / (1 + sigma**2).sqrt()
    v = alpha * n - s_vp * x0
    for out, ptype in ((n, "epsilon"), (v, "v_prediction"), (x0, "sample")):
        torch.testing.assert_close(vp_x0(out, x, sigma, ptype), x0, rtol=0, atol=1e-9)
    # EDM: the F target of eq. 8 gives back x0 through c_skip x + c_out F
    c_skip, c_out, _, _ = edm_scalings(sigma, 0.5)
    target = (x0 - c_skip * x) / c_out
    torch.testing.assert_close(c_skip * x + c_out * target, x0, rtol=0, atol=1e-9)


def test_losses_vanish_for_the_true_targets_and_min_snr_weights():
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    abar = torch.linspace(0.999, 0.01, 1000)
    t = torch.tensor([0, 500, 999])
    a = abar[t].view(-1, 1, 1, 1)

    class Out:
        def __init__(self, sample):
            self.sample = sample

    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    assert vp_loss(lambda xt, tt: Out(noise), x0, t, noise, abar, "eps") == 0
    assert vp_loss(lambda xt, tt: Out(v), x0, t, noise, abar, "v-minsnr") < 1e-12
    # min-SNR-gamma (Hang et al. 2023): the x0-space weight min(SNR, 5) in eps / v units
    snr = torch.tensor([0.5, 1.0, 5.0, 10.0])
    torch.testing.assert_close(min_snr_weight(snr, "epsilon", 5.0), torch.tensor([1.0, 1.0, 1.0, 0.5]))
    torch.testing.assert_close(min_snr_weight(snr, "v_prediction", 5.0), torch.tensor([0.5 / 1.5, 0.5, 5 / 6, 5 / 11]))
    # a constant error e in eps units costs e^2 * weight per sample
    loss = vp_loss(lambda xt, tt: Out(noise + 1.0), x0, t, noise, abar, "eps-minsnr")
    snr_t = abar[t] / (1 - abar[t])
    assert loss.item() == pytest.approx(min_snr_weight(snr_t, "epsilon", 5.0).mean().item(), rel=1e-6)
    settings = EDMSettings()
    sigma = torch.tensor([0.02, 1.0, 30.0])

    def perfect(xin, c_noise):
        s = torch.exp(4 * c_noise).view(-1, 1, 1, 1)
        c_skip, c_out, c_in, _ = edm_scalings(s, settings.sigma_data)
        return Out((x0 - c_skip * xin / c_in) / c_out)

    assert edm_loss(perfect, x0, sigma, noise, settings) < 1e-9


def test_train_cli_objective_flags(tmp_path, capsys):
    assert main(["train", "--data", "digits", "--objective", "edm", "--sigma-min", "1", "--sigma-max", "1",
                 "--out", str(tmp_path / "o"), "--steps", "1"]) == 2
    assert "--sigma-min" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["train", "--objective", "x0", "--out", str(tmp_path / "o2")]) == 2
    assert "invalid choice" in capsys.readouterr().err
