"""Sampling from Python: plain integrators and Denoising MCMC (DLG), one result dataclass per call.

    model = ddmkit.load_model("default")
    out = ddmkit.sample(model, 8, seed=0)                                   # kar1, 18 steps (the CLI's default)
    out = ddmkit.sample(model, 8, integrator="kar2", steps=51, s_tmin=1, s_tmax=400)   # the README's best sampler
    out = ddmkit.sample_dlg(model, 8, seed=0)                               # DLG + kar2 at 20 NFE per sample
    out.images, out.nfe_per_sample

Integrator options are keyword arguments (kar2: s_churn, s_tmin, s_tmax, s_noise; ddim: eta; rk45: rtol,
atol), checked against the integrator's signature. Sample i uses seed `sample_seed(seed, i)`, as `ddmkit
sample --seed` does, so `ddmkit.sample(model, n, seed=s)` equals the CLI's samples for the same settings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..dmcmc.classifier_data import array_data, data_for_model
from ..dmcmc.classifier_training import ClassifierTrainConfig
from ..dmcmc.classifier_training import train_noise_classifier as train_classifier
from ..dmcmc.noise_classifier import NoiseLevelClassifier, check_compatible, load_classifier
from ..dmcmc.dlg import DLGConfig, dlg_sample
from ..errors import DdmkitError
from ..integrators import get_integrator, validate_options
from ..models.loading import model_identity
from ..sampling import sample as sample_plain
from .images import check_output_type, model_images, to_output
from .models import as_denoiser, resolve_seed, shipped_asset


@dataclass
class Samples:
    """`images`: the samples as `output_type` asked ("pt": (N, C, H, W) in the model's data range; "np";
    "pil": a list); `nfe_per_sample` (measured); `seed` (the base seed used); `settings` (every setting)."""

    images: Any
    nfe_per_sample: float
    seed: int
    settings: dict


@dataclass
class DLGSamples:
    """`images` as for `Samples`; `nfe` the measured split (per_output, burn_in_amortised_per_output, ...);
    `chain` and `sigma_star` per sample (its chain, the sigma its integration started from); `events`
    (diverged chains, restarted); `seed`, `settings`."""

    images: Any
    nfe: dict
    chain: np.ndarray
    sigma_star: np.ndarray
    events: list
    seed: int
    settings: dict

    @property
    def nfe_per_sample(self) -> float:
        """The paper's NFE per output (Langevin + integrator + Tweedie), burn-in not included."""
        return float(self.nfe["per_output"])


def _check_num(num: int) -> int:
    if isinstance(num, bool) or int(num) != num or num < 1:
        raise DdmkitError(f"num must be a whole number >= 1, got {num!r}")
    return int(num)


def _check_noise(noise, rows: int, shape: tuple[int, ...], what: str) -> torch.Tensor | None:
    if noise is None:
        return None
    noise = torch.as_tensor(noise, dtype=torch.float32).cpu()
    if tuple(noise.shape) != (rows, *shape):
        raise DdmkitError(f"noise must be unit normals of shape {(rows, *shape)} (one per {what}), got {tuple(noise.shape)}")
    if not torch.isfinite(noise).all():
        raise DdmkitError("noise holds NaN or infinite values")
    return noise


def sample(model: Any, num: int = 16, *, seed: int | None = None, generator: torch.Generator | None = None,
           noise: torch.Tensor | None = None, integrator: str = "kar1", steps: int = 18,
           sigma_max: float | None = None, tweedie: bool = True, batch_size: int = 64, output_type: str = "pt",
           callback: Callable[[dict], None] | None = None, progress: bool = False, **options: float) -> Samples:
    """`num` samples: x_T = sigma_max noise (the model's recorded start level, else its sigma_max, by default; `noise` (num, *sample_shape)
    unit normals replaces the seeded draw), the integrator with `steps` (its N) and `options`, then the Tweedie
    step. `callback` is the integrator's k-diffusion-style per-step hook ({"x", "i", "sigma", "sigma_hat",
    "denoised"}). `generator`: the base seed is one draw from it (`resolve_seed`)."""
    den = as_denoiser(model)
    num = _check_num(num)
    check_output_type(output_type, den)
    get_integrator(integrator).check_steps(steps)
    validate_options(integrator, options)
    base = resolve_seed(seed, generator)
    noise = _check_noise(noise, num, tuple(den.sample_shape), "sample")
    res = sample_plain(den, integrator=integrator, steps=steps, num=num, seed=base, batch_size=batch_size,
                       use_tweedie=tweedie, sigma_start=sigma_max, options=options, progress=progress, noise=noise,
                       step_callback=callback)
    return Samples(to_output(res.x, den, output_type), res.nfe_per_sample, base, res.settings)


def noise_classifier(name_or_path: str = "default", *, device: str | torch.device = "cpu") -> NoiseLevelClassifier:
    """A noise-level classifier: shipped ones by name ('default', 'digits', 'digits-ve', or
    'faces_noise_classifier'), else PATH(.safetensors/.json) from `ddmkit noise-classifier train`."""
    return load_classifier(str(name_or_path), device=device)


def train_noise_classifier(model: Any, data: Any = None, *, out: str | os.PathLike, steps: int | None = None, k: int = 1000,
                           batch_size: int = 100, seed: int = 0, progress: bool = False) -> NoiseLevelClassifier:
    """Train the noise-level classifier DLG needs (DMCMC spec section 3) on clean `data`: images (PIL, uint8
    arrays or float tensors in the model's range, as `edit` takes them), 'faces', 'digits', a folder, or None
    (the model's own domain; exact samples for a mixture). Writes OUT.safetensors + OUT.json (resumable from
    OUT.ckpt/, as `ddmkit noise-classifier train`) and returns the classifier."""
    den = as_denoiser(model)
    cfg = ClassifierTrainConfig(k=int(k), steps=None if steps is None else int(steps), batch_size=int(batch_size), seed=int(seed))
    cfg.validate()
    if data is None or isinstance(data, str) and (data in ("faces", "digits") or Path(data).is_dir()):
        clean = data_for_model(den, data, seed)
    else:
        x = model_images(data, den)[0].numpy()
        clean = array_data(x, seed, description=f"{len(x)} images given in Python", flip=True)
    ident = model_identity(den)
    meta = {"model": ident.get("name"), "model_identity": ident, "domain": clean.domain or den.domain,
            "sample_shape": list(den.sample_shape), "data_range": list(den.data_range) if den.data_range else None}
    train_classifier(clean, tuple(den.sample_shape), den.data_range, den.sigma_min, den.sigma_max, out, cfg, meta=meta,
                     progress=progress)
    return load_classifier(out, device=den.device)


def _classifier_for(den, classifier) -> NoiseLevelClassifier:
    """The classifier of a DLG call (given, or the one shipped for a shipped model), checked against the model."""
    if classifier is None:
        asset = shipped_asset(den)
        if asset is None:
            raise DdmkitError("DLG needs a noise-level classifier for this model: train one with `ddmkit noise-classifier "
                              "train --model M --out PATH` and pass noise_classifier=PATH")
        classifier = str(asset.noise_classifier)
    path = "" if isinstance(classifier, NoiseLevelClassifier) else str(classifier)
    clf = classifier if isinstance(classifier, NoiseLevelClassifier) else load_classifier(path, device=den.device)
    check_compatible(clf, den, model_identity(den), path=path)
    return clf


def sample_dlg(model: Any, num: int = 16, *, noise_classifier: Any = None, seed: int | None = None,
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None, integrator: str = "kar2",
               steps: int = 7, n_skip: int = 8, eta: float = 0.4, chains: int | None = None, burn_in: str = "auto",
               sigma_max: float | None = None, tweedie: bool = True, output_type: str = "pt", progress: bool = False,
               **options: float) -> DLGSamples:
    """`num` samples by Denoising Langevin Gibbs (Kim & Ye 2023): persistent chains (`chains`, default
    min(num, 64)), `n_skip` Langevin-Gibbs steps of size `eta` ([0, 1]-data units) per output, then the
    integrator from each chain's own sigma. The defaults are the README's faces setting at 20 NFE per sample
    (kar2, N = 7, n_skip 8, eta 0.4). `noise_classifier`: a classifier, a name or a path (default: the one
    shipped for a shipped model). `noise` (chains, *sample_shape): each chain's starting noise. `sigma_max`:
    the burn-in's start level (default: the model's recorded one, else its sigma_max)."""
    den = as_denoiser(model)
    num = _check_num(num)
    check_output_type(output_type, den)
    validate_options(integrator, options)
    config = DLGConfig(integrator=integrator, steps=steps, eta=eta, n_skip=n_skip, burn_in=burn_in, tweedie=tweedie,
                       options=dict(options), sigma_max=sigma_max)
    config.validate()
    chains = int(chains or min(num, 64))
    start = _check_noise(noise, chains, tuple(den.sample_shape), "chain")
    clf = _classifier_for(den, noise_classifier)
    base = resolve_seed(seed, generator)
    res = dlg_sample(den, clf, config, num=num, chains=chains, seed=base, progress=progress, noise=start)
    return DLGSamples(to_output(res.x, den, output_type), res.nfe, res.chain, res.sigma_star, res.events, base,
                      res.settings)
