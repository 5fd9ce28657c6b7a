"""The Python API (`ddmkit.sample`, `sample_dlg`, `edit`, `fit_boundary`, the loaders) and the two diffusers
pipelines: each equals the CLI on the same settings, takes diffusers objects as they are, and refuses bad
input with one `DdmkitError` naming the fix."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ddmkit
from ddmkit.cli import main
from ddmkit.data.faces import sample_faces
from ddmkit.dmcmc.noise_classifier import exact_mixture_classifier


ROOT = Path(__file__).resolve().parents[1]


def _samples(folder: Path) -> np.ndarray:
    with np.load(folder / "samples.npz", allow_pickle=False) as z:
        return z["x"]


# -- loading ---------------------------------------------------------------------------------------------


def test_load_model_from_pretrained_equals_from_diffusers_for_every_beta_scheduler(unet_folder):
    """A folder loads through diffusers' from_pretrained; the same network and any beta-schedule scheduler
    in memory give the same D(x, sigma)."""
    from diffusers import DDIMScheduler, DDPMScheduler, PNDMScheduler, UNet2DModel

    den = ddmkit.load_model(unet_folder)
    unet = UNet2DModel.from_pretrained(unet_folder / "unet")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.5, 3.0])
    with torch.no_grad():
        ref = den(x, sigma)
        for cls in (DDPMScheduler, DDIMScheduler, PNDMScheduler):
            sched = cls(num_train_timesteps=1000, beta_schedule="linear")
            assert torch.equal(ddmkit.from_diffusers(unet, sched)(x, sigma), ref), cls.__name__
    assert den.sigma_min == pytest.approx(ddmkit.from_diffusers(unet, DDIMScheduler(beta_schedule="linear")).sigma_min)


def test_models_that_do_not_say_their_schedule_are_refused(unet_folder):
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(unet_folder / "unet")
    with pytest.raises(ddmkit.DdmkitError, match=re.escape("does not say its noise schedule: wrap it with "
                                                           "ddmkit.from_diffusers(unet, scheduler)")):
        ddmkit.sample(unet, 2)
    with pytest.raises(ddmkit.DdmkitError, match="model must be a name or path"):
        ddmkit.sample(3.5, 2)
    with pytest.raises(ddmkit.DdmkitError, match="needs a diffusers scheduler"):
        ddmkit.from_diffusers(unet, object())


# -- plain sampling ----------------------------------------------------------------------------------------


def test_sample_equals_the_cli_and_takes_a_pipeline_or_a_pair(unet_folder, tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    assert main(["sample", "--model", str(unet_folder), "--integrator", "kar2", "--steps", "4", "--num", "3",
                 "--seed", "11", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    out = ddmkit.sample(str(unet_folder), 3, seed=11, integrator="kar2", steps=4)
    np.testing.assert_array_equal(out.images.numpy(), _samples(tmp_path / "cli"))
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert out.nfe_per_sample == manifest["nfe_per_sample"] > 0
    pipe = DDPMPipeline(unet=UNet2DModel.from_pretrained(unet_folder / "unet"),
                        scheduler=DDPMScheduler.from_pretrained(unet_folder / "scheduler"))
    for model in (pipe, (pipe.unet, pipe.scheduler)):
        np.testing.assert_array_equal(ddmkit.sample(model, 3, seed=11, integrator="kar2", steps=4).images.numpy(),
                                      _samples(tmp_path / "cli"))


def test_sample_seeds_generator_noise_outputs_and_callback(gmm_2d, unet_folder):
    a = ddmkit.sample(gmm_2d, 5, seed=4, steps=6)
    assert torch.equal(a.images, ddmkit.sample(gmm_2d, 5, seed=4, steps=6, batch_size=2).images)  # per-sample seeds
    assert not torch.equal(a.images, ddmkit.sample(gmm_2d, 5, seed=5, steps=6).images)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(ddmkit.sample(gmm_2d, 4, generator=g1).images, ddmkit.sample(gmm_2d, 4, generator=g2).images)
    noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    n1 = ddmkit.sample(gmm_2d, 5, noise=noise, steps=6)
    assert torch.equal(n1.images, ddmkit.sample(gmm_2d, 5, seed=123, noise=noise, steps=6).images)  # noise wins
    steps = []
    ddmkit.sample(gmm_2d, 2, steps=6, callback=lambda info: steps.append(info["i"]))
    assert steps == list(range(5))  # one call per step of the 6-point grid
    pil = ddmkit.sample(unet_folder, 2, steps=3, output_type="pil").images
    assert [im.size for im in pil] == [(16, 16)] * 2 and pil[0].mode == "RGB"
    assert isinstance(ddmkit.sample(gmm_2d, 2, steps=3, output_type="np").images, np.ndarray)


@pytest.mark.parametrize("call, message", [
    (lambda m: ddmkit.sample(m, 0), "num must be a whole number >= 1, got 0"),
    (lambda m: ddmkit.sample(m, 2, seed=1, generator=torch.Generator()), "give seed or generator, not both"),
    (lambda m: ddmkit.sample(m, 2, noise=torch.zeros(3, 2)), "noise must be unit normals of shape (2, 2)"),
    (lambda m: ddmkit.sample(m, 2, output_type="pil"), "output_type 'pil' needs an image model"),
    (lambda m: ddmkit.sample(m, 2, output_type="jpg"), "output_type must be one of pt, np, pil, got 'jpg'"),
    (lambda m: ddmkit.sample(m, 2, integrator="kar2", s_churn=-1), "s_churn"),
    (lambda m: ddmkit.sample(m, 2, integrator="nope"), "nope"),
    (lambda m: ddmkit.sample_dlg(m, 2), "DLG needs a noise-level classifier for this model"),
])
def test_bad_api_input_is_one_ddmkit_error(gmm_2d, call, message):
    with pytest.raises(ddmkit.DdmkitError, match=re.escape(message)):
        call(gmm_2d)


# -- Denoising MCMC ----------------------------------------------------------------------------------------


def test_sample_dlg_equals_the_cli(tmp_path, mixture_json, gmm_2d):
    clf = tmp_path / "clf"
    assert main(["noise-classifier", "train", "--model", f"gmm:{mixture_json}", "--out", str(clf), "--k", "32",
                 "--steps", "30", "--batch-size", "64", "--quiet"]) == 0
    assert main(["sample", "--model", f"gmm:{mixture_json}", "--dmcmc", "--noise-classifier", str(clf),
                 "--integrator", "kar1", "--steps", "4", "--n-skip", "3", "--dlg-eta", "0.05", "--num", "12",
                 "--chains", "4", "--seed", "3", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    out = ddmkit.sample_dlg(f"gmm:{mixture_json}", 12, noise_classifier=clf, integrator="kar1", steps=4, n_skip=3,
                            eta=0.05, chains=4, seed=3)
    np.testing.assert_array_equal(out.images.numpy(), _samples(tmp_path / "cli"))
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert out.nfe == manifest["nfe"] and out.nfe_per_sample == manifest["nfe"]["per_output"]
    assert sorted(set(out.chain.tolist())) == [0, 1, 2, 3] and out.sigma_star.shape == (12,)
    # a classifier object is taken as it is; one made for another model is refused
    exact = exact_mixture_classifier(gmm_2d.mixture, gmm_2d.sigma_min, gmm_2d.sigma_max, k=32)
    assert ddmkit.sample_dlg(gmm_2d, 4, noise_classifier=exact, chains=2, steps=3, n_skip=2,
                             eta=0.05, integrator="kar1").images.shape == (4, 2)
    with pytest.raises(ddmkit.DdmkitError, match="is for samples of shape \\(2,\\), the model makes \\(3,\\)"):
        ddmkit.sample_dlg(ddmkit.wrap(lambda x, s: x, sigma_min=0.01, sigma_max=5.0, sample_shape=(3,)), 2,
                          noise_classifier=clf)


def test_dlg_pipeline_is_a_diffusers_pipeline(unet_folder, tmp_path):
    from ddmkit import DLGPipeline

    clf = tmp_path / "clf"  # trained from Python on 16 x 16 images (the tiny network's size)
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ddmkit.train_noise_classifier(unet_folder, x, out=clf, steps=4, k=16, batch_size=8)
    assert (tmp_path / "clf.safetensors").is_file() and (tmp_path / "clf.json").is_file()
    pipe = DLGPipeline.from_pretrained(unet_folder, noise_classifier=str(clf))
    kw = dict(batch_size=2, num_inference_steps=3, n_skip=2, chains=2, integrator="kar1")
    a = pipe(generator=torch.Generator().manual_seed(5), output_type="pt", **kw).images
    b = pipe(generator=torch.Generator().manual_seed(5), output_type="pt", **kw).images
    assert torch.equal(a, b) and a.shape == (2, 3, 16, 16) and 0 <= a.min() and a.max() <= 1
    direct = ddmkit.sample_dlg(unet_folder, 2, noise_classifier=clf, seed=7, steps=3, n_skip=2, chains=2,
                               integrator="kar1", eta=0.4)
    lo, hi = -1.0, 1.0
    via_pipe = pipe(seed=7, output_type="pt", **kw).images
    torch.testing.assert_close(via_pipe, ((direct.images - lo) / (hi - lo)).clamp(0, 1), rtol=0, atol=0)
    pils = pipe(seed=7, **kw).images
    assert len(pils) == 2 and pils[0].size == (16, 16)
    assert pipe(seed=7, output_type="np", **kw).images.shape == (2, 16, 16, 3)
    with pytest.raises(ddmkit.DdmkitError, match="output_type must be one of pil, np, pt"):
        pipe(seed=7, output_type="latent", **kw)
    pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model_index.json").is_file()
    with pytest.raises(ddmkit.DdmkitError, match=re.escape("DLGPipeline.from_pretrained(")):
        DLGPipeline.from_pretrained(tmp_path / "missing-folder")


# -- editing -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_pngs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("faces")
    x = sample_faces(2, seed=77)[0]
    for i, im in enumerate(x):
        Image.fromarray(im).save(d / f"f{i}.png")
    return d


def test_edit_equals_the_cli_and_the_pipeline(face_pngs, tmp_path):
    from ddmkit import BoundaryEditPipeline

    assert main(["edit", str(face_pngs), "--boundary", "smiling", "--distance", "1x", "--steps", "6",
                 "--seed", "2", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    cli = [np.asarray(Image.open(tmp_path / "cli" / "images" / f"f{i}" / "edit_00.png")) for i in range(2)]
    images = [Image.open(face_pngs / f"f{i}.png") for i in range(2)]
    out = ddmkit.edit("default", images, "smiling", "1x", steps=6, seed=2)
    assert [np.asarray(im).tolist() for im in out.images] == [c.tolist() for c in cli]  # PIL in, PIL out
    report = json.loads((tmp_path / "cli" / "edit.json").read_text())
    cli_nfe = report["nfe_per_image"]
    assert (out.nfe["inversion"], out.nfe["per_edit"]) == (cli_nfe["inversion"], cli_nfe["per_edit"]) == (39, 6)
    pipe = BoundaryEditPipeline.from_pretrained("default")
    via = pipe(images, boundary="smiling", distance="1x", num_inference_steps=6, seed=2).images
    assert [np.asarray(im).tolist() for im in via] == [c.tolist() for c in cli]
    assert ddmkit.boundary("smiling").attribute == "smiling"


def test_edit_refuses_a_boundary_fitted_for_another_model(unet_folder, face_pngs):
    b = ddmkit.boundary("smiling")
    with pytest.raises(ddmkit.DdmkitError, match="does not match the model"):
        ddmkit.boundary(b, unet_folder)
    with pytest.raises(ddmkit.DdmkitError, match="needs an image model|images need an image model"):
        ddmkit.edit(ddmkit.wrap(lambda x, s: x, sigma_min=0.01, sigma_max=5.0, sample_shape=(2,)), [], b)
    with pytest.raises(ddmkit.DdmkitError, match="steps must be a whole number >= 2"):
        ddmkit.edit("default", Image.open(face_pngs / "f0.png"), b, steps=1)


def test_fit_boundary_from_arrays_separates_the_labels(unet_folder, tmp_path):
    """Two groups of images that differ in brightness: the fitted z boundary tells them apart on held-out
    images, and the saved file loads back as the same boundary."""
    rng = np.random.default_rng(0)
    bright = np.clip(rng.normal(0.6, 0.1, (12, 3, 16, 16)), -1, 1).astype(np.float32)
    dark = np.clip(rng.normal(-0.6, 0.1, (12, 3, 16, 16)), -1, 1).astype(np.float32)
    b = ddmkit.fit_boundary(unet_folder, positive=torch.from_numpy(bright), negative=torch.from_numpy(dark),
                            attribute="bright", t_m=300, n_inv=4, out=tmp_path / "bright")
    assert b.attribute == "bright" and b.spaces["z"].stats["test_accuracy"] >= 0.9
    again = ddmkit.boundary(tmp_path / "bright.safetensors", unet_folder)
    np.testing.assert_array_equal(again.spaces["z"].normal, b.spaces["z"].normal)
    with pytest.raises(ddmkit.DdmkitError, match="give one source of labelled images"):
        ddmkit.fit_boundary(unet_folder, attribute="x")


# -- the README's Python block runs as written -------------------------------------------------------------


def test_the_readme_python_block_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has a Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
