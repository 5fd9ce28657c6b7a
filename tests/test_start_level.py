"""The start level of sampling (`--sigma-max`, `sigma_max=`, a model's recorded `sampling_sigma_max`): every
integrator and DLG's burn-in start there, the folder's value is the default, and bad values are refused."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import ddmkit
from ddmkit.cli import main
from ddmkit.dmcmc.dlg import DLGConfig, DLGSampler
from ddmkit.dmcmc.noise_classifier import exact_mixture_classifier
from ddmkit.errors import DdmkitError
from ddmkit.models.loading import load_model
from ddmkit.sampling import sample, start_sigma


class Recording(ddmkit.Denoiser):
    """A mixture denoiser that records the sigma of every call."""

    def __init__(self, inner):
        self.inner, self.sigma_min, self.sigma_max = inner, inner.sigma_min, inner.sigma_max
        self.sample_shape, self.seen = inner.sample_shape, []

    def denoise(self, x, sigma):
        self.seen.append(float(sigma.max()))
        return self.inner(x, sigma)


def test_start_sigma_resolution(gmm_2d, unet_folder):
    assert start_sigma(gmm_2d) == 80.0 and start_sigma(gmm_2d, 5.0) == 5.0
    den = load_model(unet_folder)
    assert den.sampling_sigma_max is None and start_sigma(den) == pytest.approx(den.sigma_max)
    assert load_model("default").sampling_sigma_max == 20.0  # recorded with the shipped faces model
    with pytest.raises(DdmkitError, match=r"must be in \(0, 80\] \(the model's sigma_max\), got 200"):
        start_sigma(gmm_2d, 200.0)


@pytest.mark.parametrize("integrator", ["kar1", "kar2", "rd", "em", "pf", "ddim", "dpmpp_2m", "unipc"])
def test_every_integrator_starts_at_the_start_level(gmm_2d, integrator):
    rec = Recording(gmm_2d)
    res = sample(rec, integrator=integrator, steps=6, num=3, seed=1, sigma_start=7.5, use_tweedie=False)
    assert rec.seen[0] == pytest.approx(7.5) and max(rec.seen) <= 7.5 * (1 + 1e-6)
    assert res.settings["sigma_start"] == 7.5
    # x_T = 7.5 noise from each sample's own seed: the first call sees the seeded draw scaled by 7.5
    ref = sample(gmm_2d, integrator=integrator, steps=6, num=3, seed=1, sigma_start=7.5, use_tweedie=False)
    assert torch.equal(res.x, ref.x)


def test_dlg_burn_in_starts_at_the_start_level(gmm_2d):
    rec = Recording(gmm_2d)
    clf = exact_mixture_classifier(gmm_2d.mixture, gmm_2d.sigma_min, gmm_2d.sigma_max, k=32)
    sampler = DLGSampler(rec, clf, DLGConfig(integrator="kar1", steps=3, n_skip=2, eta=0.05, sigma_max=4.0), chains=2)
    sampler.init_state()
    assert sampler.s_start == 4.0 and rec.seen[0] == pytest.approx(4.0) and max(rec.seen) <= 4.0 * (1 + 1e-6)


def test_cli_sigma_max_is_recorded_and_checked_on_resume(mixture_json, tmp_path, capsys):
    base = ["sample", "--model", f"gmm:{mixture_json}", "--integrator", "kar1", "--steps", "5", "--num", "4", "--quiet"]
    assert main(base + ["--sigma-max", "6", "--out", str(tmp_path / "a")]) == 0
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["sigma_max"] == 6.0 and m["sampler_settings"]["sigma_start"] == 6.0
    with np.load(tmp_path / "a" / "samples.npz") as z:
        from ddmkit.mixtures import GaussianMixture, GMMDenoiser

        den = GMMDenoiser(GaussianMixture.from_json(json.loads(mixture_json.read_text())), 0.002, 80.0)
        assert np.array_equal(z["x"], sample(den, integrator="kar1", steps=5, num=4, seed=0, sigma_start=6.0).x.numpy())
    assert main(base + ["--sigma-max", "500", "--out", str(tmp_path / "b")]) == 2
    assert "--sigma-max) must be in (0, 80]" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_a_bad_recorded_start_level_is_refused(unet_folder, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(unet_folder, folder)
    (folder / "ddmkit_model.json").write_text(json.dumps({"sampling_sigma_max": 1e9}))
    with pytest.raises(DdmkitError, match="sampling_sigma_max must be a number in"):
        load_model(folder)
    (folder / "ddmkit_model.json").write_text(json.dumps({"sampling_sigma_max": 3.0}))
    den = load_model(folder)
    assert den.sampling_sigma_max == 3.0 and start_sigma(den) == 3.0
