"""Clean training data for a noise-level classifier (exact mixture samples, the synthetic faces, the digits,
an image folder, mapped to the model's data range), and the facts about a model that training needs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..assets import shipped_model
from ..data.faces import sample_faces, to_tensor_range
from ..data.folders import ImageFolder, load_digits_images
from ..denoisers import Denoiser, unwrap, vp_sigmas
from ..errors import DdmkitError
from ..mixtures import GMMDenoiser
from ..models.loading import load_model, model_identity


@dataclass
class ClassifierData:
    """Clean training data x0 for a classifier: `batch(step)` (deterministic in the step) and a
    fixed held-out set, both float32 in the model's data range."""

    batch: Callable[[int, int], torch.Tensor]  # (step, batch_size) -> (B, *sample_shape)
    held_out: torch.Tensor
    description: str
    domain: str | None = None


def mixture_data(mixture, seed: int = 0, held_out: int = 2000) -> ClassifierData:
    """Exact samples of a Gaussian mixture (fresh every step)."""
    def batch(step: int, size: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + 17 + step)
        return mixture.sample(size, gen)[0]

    test = mixture.sample(held_out, torch.Generator().manual_seed(int(seed) * 1_000_003 + 5))[0]
    return ClassifierData(batch, test, f"exact samples of the {mixture.num_components}-component mixture")


def array_data(x: np.ndarray, seed: int = 0, held_out_fraction: float = 0.1, description: str = "",
               flip: bool = False, domain: str | None = None) -> ClassifierData:
    """A fixed set of clean samples (float32 (N, ...)); a random held-out share is never trained on."""
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    rng = np.random.default_rng(int(seed))
    order = rng.permutation(len(x))
    n_test = max(1, int(round(held_out_fraction * len(x)))) if len(x) > 1 else 0
    test, train = x[order[:n_test]], x[order[n_test:]]
    if len(train) == 0:
        raise DdmkitError("need at least 2 clean samples to train a noise classifier")

    def batch(step: int, size: int) -> torch.Tensor:
        r = np.random.default_rng([int(seed), step])
        b = train[torch.from_numpy(r.integers(0, len(train), size=size))]
        if flip:
            f = torch.from_numpy(r.random(size) < 0.5)
            b[f] = b[f].flip(-1)
        return b

    return ClassifierData(batch, test if len(test) else train[:1], description or f"{len(x)} samples", domain)


def folder_data(folder: str, resolution: int, channels: int, seed: int = 0, held_out_fraction: float = 0.1,
                max_held_out: int = 500) -> ClassifierData:
    """The images of a folder, streamed: each step reads only its batch from disk (random images, random
    horizontal flips, deterministic in (seed, step)); a seeded held-out share (at most `max_held_out`
    images, held in memory) is never trained on. Memory does not grow with the folder."""
    images = ImageFolder(folder, resolution, channels)
    order = np.random.default_rng(int(seed)).permutation(len(images))
    n_test = min(max_held_out, max(1, int(round(held_out_fraction * len(images))))) if len(images) > 1 else 0
    if len(images) - n_test < 1:
        raise DdmkitError("need at least 2 clean samples to train a noise classifier")
    test, train = images.subset(order[:n_test]), images.subset(order[n_test:])

    def batch(step: int, size: int) -> torch.Tensor:
        r = np.random.default_rng([int(seed), step])
        b = torch.from_numpy(train.batch(r.integers(0, len(train), size=size)))
        f = torch.from_numpy(r.random(size) < 0.5)
        b[f] = b[f].flip(-1)
        return b

    return ClassifierData(batch, torch.from_numpy(test.batch(range(len(test)))),
                          f"images in {folder} ({len(images)}, streamed; {len(test)} held out)")


def faces_data(seed: int = 0, pool: int = 20_000, held_out: int = 2000) -> ClassifierData:
    """The synthetic faces of the default model, in [-1, 1] (a rendered pool + a disjoint held-out set)."""

    train = to_tensor_range(sample_faces(pool, seed=50_000_000 + int(seed))[0])
    test = to_tensor_range(sample_faces(held_out, seed=60_000_000 + int(seed))[0])
    data = array_data(train, seed, held_out_fraction=0.0, description=f"{pool} synthetic faces (seed {50_000_000 + seed})", domain="faces")
    data.held_out = torch.from_numpy(test)
    return data


def data_for_model(denoiser, data: str | None, seed: int = 0) -> ClassifierData:
    """Clean data for `denoiser` (spec section 10): mixtures -> exact samples; `data` "faces",
    "digits" or a folder of images; None -> the model's own domain (faces / digits). Images are mapped
    from [-1, 1] to the model's data range (e.g. [0, 1] for VE models), and checked to lie in it."""

    inner = unwrap(denoiser) if isinstance(denoiser, Denoiser) else denoiser  # a model or its ModelFacts
    mixture = inner.mixture if isinstance(inner, (GMMDenoiser, ModelFacts)) else None
    if mixture is not None:
        if data not in (None, "mixture"):
            raise DdmkitError("a gmm: model trains its classifier on exact mixture samples; leave out --data")
        return mixture_data(mixture, seed)
    data = data or inner.domain
    if data is None:
        raise DdmkitError("give --data: 'faces', 'digits' or a folder of clean training images for this model")
    shape = tuple(inner.sample_shape)
    rng = tuple(inner.data_range) if inner.data_range else (-1.0, 1.0)
    if data == "faces":
        d = faces_data(seed)
    elif data == "digits":

        d = array_data(load_digits_images(shape[-1])[0], seed, description="scikit-learn digits (1,797)", domain="digits")
    else:

        d = folder_data(data, shape[-1], shape[0], seed)
    if tuple(d.held_out.shape[1:]) != shape:
        raise DdmkitError(f"--data {data} gives samples of shape {tuple(d.held_out.shape[1:])}, the model needs {shape}")
    return to_data_range(d, rng)


def to_data_range(d: ClassifierData, data_range: tuple[float, float]) -> ClassifierData:
    """Images in [-1, 1] (what the image sources give) mapped affinely onto the model's data range; the
    held-out set is checked to lie in that range (the classifier must see what the chains see)."""
    lo, hi = float(data_range[0]), float(data_range[1])
    if (lo, hi) != (-1.0, 1.0):
        inner, scale = d.batch, 0.5 * (hi - lo)
        d = ClassifierData(lambda step, size: lo + (inner(step, size) + 1) * scale, lo + (d.held_out + 1) * scale,
                           d.description + f", mapped to [{lo:g}, {hi:g}]", d.domain)
    x = d.held_out
    if float(x.min()) < lo - 1e-6 or float(x.max()) > hi + 1e-6:
        raise DdmkitError(f"the classifier's training images span [{float(x.min()):.3g}, {float(x.max()):.3g}], "
                          f"outside the model's data range [{lo:g}, {hi:g}]")
    return d


@dataclass
class ModelFacts:
    """What a classifier needs to know about a model (available without its weights for shipped ones)."""

    sigma_min: float
    sigma_max: float
    sample_shape: tuple[int, ...]
    data_range: tuple[float, float] | None
    identity: dict
    domain: str | None
    mixture: object | None = None


SHIPPED_SHAPES = {"faces": (3, 32, 32), "digits": (1, 32, 32)}


def model_facts(spec: str, device: str = "cpu") -> ModelFacts:
    """Load `--model spec`; for the shipped faces/digits models whose weights are not there yet,
    fall back to their known facts (1000 linear betas 1e-4..0.02 -> sigma in [0.0100, 157.4])."""

    spec = spec or "default"
    asset = shipped_model(spec)
    if asset is not None and asset.name in SHIPPED_SHAPES and not (asset.model_dir / "unet" / "config.json").is_file():
        from diffusers import DDPMScheduler


        s = vp_sigmas(DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02).alphas_cumprod)
        domain = asset.name
        return ModelFacts(float(s[0]), float(s[-1]), SHIPPED_SHAPES[domain], (-1.0, 1.0),
                          {"name": "default" if domain == "faces" else domain, "sha256": None}, domain)
    den = load_model(spec, device=device)
    return ModelFacts(float(den.sigma_min), float(den.sigma_max), tuple(den.sample_shape),
                      tuple(den.data_range) if den.data_range else None, model_identity(den),
                      den.domain, unwrap(den).mixture if isinstance(unwrap(den), GMMDenoiser) else None)
