"""The shipped VE digits model (`--model digits-ve`) and its noise-level classifier: what they are, that the files
are the ones the classifier was trained for (sha256), and that `sample --dmcmc --model digits-ve` finds it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ddmkit.cli import main
from ddmkit.denoisers import EDMDenoiser
from ddmkit.dmcmc.noise_classifier import check_compatible, load_classifier, paths_for
from ddmkit.dmcmc.run import shipped_classifier_path
from ddmkit.assets import shipped_model
from ddmkit.models.loading import file_sha256, load_model, model_identity

LIMIT = 20 * 2**20


def test_shipped_ve_model_is_an_edm_folder_on_0_1_data():
    den = load_model("digits-ve")
    assert isinstance(den, EDMDenoiser) and den.name == "digits-ve" and den.domain == "digits"
    assert den.data_range == (0.0, 1.0) and (den.sigma_min, den.sigma_max) == (0.01, 50.0)
    assert den.sample_shape == (1, 32, 32) and not den.clip_denoised
    folder = shipped_model("digits-ve").model_dir
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= LIMIT
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "EDMEulerScheduler" and sched["prediction_type"] == "epsilon"
    cfg = json.loads((folder / "training_config.json").read_text())
    assert cfg["objective"] == "edm" and cfg["data"] == "digits" and cfg["completed_steps"] == cfg["steps"]
    assert (folder / "train_log.csv").read_text().startswith("step,loss,lr,seconds")
    # a denoiser, not noise: at sigma 0.05 it removes most of the noise of real digits
    from ddmkit.data.folders import load_digits_images

    x0 = torch.from_numpy((load_digits_images(32)[0][:64] + 1) / 2)
    x = x0 + 0.05 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float((den(x, 0.05) - x0).pow(2).mean()) < 0.25 * 0.05**2


def test_shipped_ve_classifier_is_for_these_weights_and_is_found_by_sample_dmcmc(tmp_path):
    path = shipped_classifier_path("digits-ve")
    wpath, mpath = paths_for(path)
    assert wpath.stat().st_size <= LIMIT and mpath.is_file()
    clf = load_classifier(path)
    meta = clf.meta
    den = load_model("digits-ve")
    # sha256: the classifier names the shipped weights file it was trained for
    weights = shipped_model("digits-ve").model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    assert meta["model_identity"]["sha256"] == file_sha256(weights) == model_identity(den)["sha256"]
    assert meta["domain"] == "digits" and meta["architecture"]["data_range"] == [0.0, 1.0]
    assert clf.k == 1000 and (clf.sigma_min, clf.sigma_max) == (0.01, 50.0)
    assert float(clf.grid[0]) == pytest.approx(50.0 * (0.01 / 50.0) ** 0.0, rel=1e-6)
    assert "mapped to [0, 1]" in meta["training"]["data"]
    assert meta["held_out"]["mean_abs_dlog_sigma"] < 0.3
    check_compatible(clf, den, model_identity(den), path=str(path))
    out = tmp_path / "dlg"
    assert main(["sample", "--dmcmc", "--model", "digits-ve", "--integrator", "kar1", "--steps", "3", "--n-skip", "2",
                 "--num", "4", "--chains", "2", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["data_range"] == [0.0, 1.0] and m["domain"] == "digits"
    x = np.load(out / "samples.npz")["x"]
    assert x.shape == (4, 1, 32, 32) and x.min() >= 0.0 and x.max() <= 1.0
