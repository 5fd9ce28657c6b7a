"""Data ranges of VE models ([0, 1], the DMCMC paper's setting): the noise classifier trains on the model's
range, and the metrics read [0, 1] sample folders as what they are."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ddmkit.cli import main
from ddmkit.dmcmc.classifier_data import ClassifierData, ModelFacts, data_for_model, to_data_range
from ddmkit.errors import DdmkitError


def _facts(data_range, shape=(1, 32, 32), domain="digits"):
    return ModelFacts(0.01, 50.0, shape, data_range, {"name": "m", "sha256": None}, domain)


def _span(d: ClassifierData) -> tuple[float, float, float, float]:
    b = d.batch(0, 200)
    return float(d.held_out.min()), float(d.held_out.max()), float(b.min()), float(b.max())


def test_a_ve_models_classifier_training_data_lie_in_0_1(tmp_path):
    """The digits for a [0, 1] model span [0, 1] (held out and training batches), as the same digits span
    [-1, 1] for a DDPM model; an image folder for a VE model likewise (the bug: it stayed in [-1, 1])."""
    ve = data_for_model(_facts((0.0, 1.0)), None)
    vp = data_for_model(_facts((-1.0, 1.0)), None)
    lo, hi, blo, bhi = _span(ve)
    assert lo == 0.0 and hi == pytest.approx(1.0) and blo >= 0.0 and bhi <= 1.0 and blo == 0.0
    torch.testing.assert_close(ve.held_out, (vp.held_out + 1) / 2)
    assert _span(vp)[0] == -1.0
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    folder = data_for_model(_facts((0.0, 1.0), (3, 16, 16), None), str(tmp_path))
    lo, hi, blo, bhi = _span(folder)
    assert 0.0 <= lo < 0.05 and 0.95 < hi <= 1.0 and 0.0 <= blo and bhi <= 1.0
    grey = data_for_model(_facts((0.0, 1.0), (1, 16, 16), None), str(tmp_path))  # grey models get grey images
    assert tuple(grey.held_out.shape[1:]) == (1, 16, 16)


def test_data_outside_the_models_range_is_refused():
    d = ClassifierData(lambda step, size: torch.zeros(size, 1, 4, 4), torch.full((2, 1, 4, 4), -1.0), "x")
    with pytest.raises(DdmkitError, match=r"outside the model's data range \[0, 2\]"):
        to_data_range(ClassifierData(d.batch, torch.full((2, 1, 4, 4), 3.0), "x"), (0.0, 2.0))
    assert float(to_data_range(d, (0.0, 2.0)).held_out.max()) == 0.0  # [-1, 1] -> [0, 2]


def test_evaluate_reads_a_0_1_sample_folder_by_its_manifest(tmp_path, capsys):
    from ddmkit.data.folders import load_digits_images

    x = load_digits_images()[0][:300]
    (tmp_path / "vp").mkdir()
    (tmp_path / "ve").mkdir()
    np.savez(tmp_path / "vp" / "samples.npz", x=x)
    np.savez(tmp_path / "ve" / "samples.npz", x=(x + 1) / 2)
    (tmp_path / "ve" / "manifest.json").write_text(json.dumps({"domain": "digits", "data_range": [0.0, 1.0]}))
    assert main(["evaluate", str(tmp_path / "vp"), "--domain", "digits", "--no-noise-floor"]) == 0
    assert main(["evaluate", str(tmp_path / "ve"), "--no-noise-floor"]) == 0
    a = json.loads((tmp_path / "vp" / "metrics.json").read_text())
    b = json.loads((tmp_path / "ve" / "metrics.json").read_text())
    assert b["domain"] == "digits" and b["fd"] == pytest.approx(a["fd"], rel=1e-4, abs=1e-6)
    (tmp_path / "ve" / "manifest.json").write_text(json.dumps({"domain": "digits", "data_range": 5}))
    assert main(["evaluate", str(tmp_path / "ve")]) == 2
    assert "data_range must be [low, high]" in capsys.readouterr().err


def test_tune_dmcmc_metric_reads_a_ve_models_samples_in_0_1():
    from ddmkit.data.folders import load_digits_images
    from ddmkit.denoisers import VEScoreDenoiser
    from ddmkit.dmcmc.tune import default_metric
    from ddmkit.metrics.evaluate import evaluate_images

    den = VEScoreDenoiser(lambda x, s: torch.zeros_like(x), 0.01, 50.0, (1, 32, 32), data_range=(0.0, 1.0))
    den.domain = "digits"
    x = load_digits_images()[0][:200]
    name, fd = default_metric(den)
    assert name == "fd_digits"
    assert fd(torch.from_numpy((x + 1) / 2)) == pytest.approx(evaluate_images(x, "digits", with_noise_floor=False)["fd"],
                                                              rel=1e-4)
