"""Standard FID (Inception-v3 pool3 features, 2048 dims) through torch-fidelity.

Needs two things the core install does not have:
1. the torch-fidelity package: `pip install torch-fidelity` (the optional extra `ddmkit[fid]`);
2. the FID Inception weights `weights-inception-2015-12-05-6726825d.pth` (torch-fidelity's
   conversion of the TensorFlow FID graph, about 92 MB) from INCEPTION_URL, given by path: the
   `inception_weights` argument (CLI: `--inception-weights PATH`), else $DDMKIT_INCEPTION_WEIGHTS,
   else the torch hub cache ($TORCH_HOME/hub/checkpoints/, where torch-fidelity downloads it).
Nothing is downloaded here. Without either, a one-line `DdmkitError` says how to provide it.

The Frechet distance itself is `ddmkit.metrics.frechet` (the same formula as torch-fidelity). Images
enter as uint8 RGB (grey is repeated to 3 channels) and torch-fidelity's extractor resizes them to
299x299 the way TensorFlow's FID did.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DdmkitError
from .frechet import FeatureStats, frechet_distance

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
WEIGHTS_ENV = "DDMKIT_INCEPTION_WEIGHTS"
FID_EXTRA = "pip install 'ddmkit[fid]' (or: pip install torch-fidelity)"


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception weights file: `path`, else $DDMKIT_INCEPTION_WEIGHTS, else the torch hub cache."""
    how = (f"download {INCEPTION_FILE} from {INCEPTION_URL} and pass --inception-weights PATH "
           f"(or set {WEIGHTS_ENV}=PATH)")
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DdmkitError(f"Inception weights {p} not found; {how}")
        return p
    if os.environ.get(WEIGHTS_ENV):
        p = Path(os.environ[WEIGHTS_ENV]).expanduser()
        if not p.is_file():
            raise DdmkitError(f"{WEIGHTS_ENV}={p} is not a file; {how}")
        return p
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    p = Path(torch_home) / "hub" / "checkpoints" / INCEPTION_FILE
    if p.is_file():
        return p
    raise DdmkitError(f"standard FID needs the Inception-v3 FID weights; {how}")


def _inception_class():
    """torch-fidelity's FeatureExtractorInceptionV3, also where its package __init__ cannot import
    (it imports torchvision for other extractors; the Inception module itself is plain torch)."""
    if importlib.util.find_spec("torch_fidelity") is None:
        raise DdmkitError(f"standard FID needs the torch-fidelity package: {FID_EXTRA}")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        return FeatureExtractorInceptionV3
    except Exception:  # typically torchvision missing or built for another torch
        pass
    spec = importlib.util.find_spec("torch_fidelity")
    saved = {k: v for k, v in sys.modules.items() if k == "torch_fidelity" or k.startswith("torch_fidelity.")}
    for k in saved:
        del sys.modules[k]
    stub = types.ModuleType("torch_fidelity")
    stub.__path__ = list(spec.submodule_search_locations or [])
    sys.modules["torch_fidelity"] = stub
    try:
        module = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
        return module.FeatureExtractorInceptionV3
    except Exception as e:
        raise DdmkitError(f"cannot import torch-fidelity's Inception extractor ({e.__class__.__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); reinstall it: {FID_EXTRA}") from None
    finally:
        sys.modules.pop("torch_fidelity", None)
        sys.modules.update({k: v for k, v in saved.items() if k == "torch_fidelity"})


def check_fid_available(inception_weights: str | os.PathLike | None = None) -> Path:
    """Raise the one-line DdmkitError early if the library or the weights are missing."""
    weights = find_inception_weights(inception_weights)
    _inception_class()
    return weights


def load_inception(inception_weights: str | os.PathLike | None = None, device: str | None = None):
    import torch

    weights = find_inception_weights(inception_weights)
    cls = _inception_class()
    try:
        model = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    except Exception as e:
        raise DdmkitError(f"cannot load Inception weights {weights} ({e.__class__.__name__}); it must be "
                          f"torch-fidelity's {INCEPTION_FILE} from {INCEPTION_URL}") from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def to_uint8_rgb(x: np.ndarray) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, 3, H, W); grey is repeated to 3 channels."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        x = np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DdmkitError(f"FID needs images (N, 1 or 3, H, W), got shape {x.shape}")
    return np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x


def inception_stats(x: np.ndarray, model, batch_size: int = 100) -> FeatureStats:
    """FeatureStats of Inception pool3 features of images (float in [-1, 1] or uint8), (N, C, H, W)."""
    import torch

    x = to_uint8_rgb(x)
    device = next(model.parameters()).device
    stats = FeatureStats()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            (f,) = model(torch.from_numpy(x[i : i + batch_size]).to(device))
            stats.update(f.double().cpu().numpy())
    return stats


def fid_reference_images(domain: str, reference_seed: int | None = None, num: int | None = None) -> np.ndarray:
    """uint8 (N, 3, 32, 32) reference images: the same sets as FD-faces / FD-digits."""
    from .evaluate import REFERENCE_NUM, REFERENCE_SEED

    if domain == "faces":
        from ..data.faces import sample_faces

        images, _ = sample_faces(num or REFERENCE_NUM, seed=REFERENCE_SEED if reference_seed is None else reference_seed)
        return images.transpose(0, 3, 1, 2).copy()
    if domain == "digits":
        from ..data.folders import load_digits_images

        x = load_digits_images(32)[0]
        return to_uint8_rgb(x[:num] if num else x)
    raise DdmkitError(f"unknown domain {domain!r}; choose 'faces' or 'digits'")


def fid_images(x: np.ndarray, reference: Any = "faces", *, inception_weights: str | os.PathLike | None = None,
               reference_seed: int | None = None, device: str | None = None, dist: Any = None) -> float | None:
    """Inception FID of images x (N, C, H, W) (float in [-1, 1] or uint8) against `reference`: a domain
    name ("faces", "digits": the FD reference sets), an image array, or a `FeatureStats`.

    With a `ddmkit.distributed.Dist` of several workers, each worker embeds its block of the samples
    (and of the reference images) and the statistics are all-reduced; rank 0 returns the FID, the
    others None."""
    model = load_inception(inception_weights, device if dist is None or not dist.enabled else dist.device)
    if isinstance(reference, str):
        reference = fid_reference_images(reference, reference_seed)

    def stats_of(images) -> FeatureStats:
        if dist is None or not dist.enabled:
            return inception_stats(images, model)
        from ..distributed import block, reduce_feature_stats

        lo, hi = block(len(images), dist.rank, dist.world_size)
        return reduce_feature_stats(inception_stats(images[lo:hi], model), dist)

    ref = reference if isinstance(reference, FeatureStats) else stats_of(reference)
    mine = stats_of(x)
    if dist is not None and not dist.is_main:
        return None
    return frechet_distance(mine, ref)
