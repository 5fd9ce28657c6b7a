"""Standard FID (Heusel et al. 2017): Inception-v3 pool3 features (2048 dims), Frechet distance.

    from ddmkit.metrics import fid, inception
    model, weights = inception.load_extractor("weights-inception-2015-12-05-6726825d.pth")
    stats = fid.inception_stats(read_image_set("runs/cifar"), model)
    fid.fid_value(stats, fid.read_stats("cifar10-train.npz"))

Conventions (those of torch-fidelity's `inception-v3-compat`, which reproduces the original
TensorFlow FID of TTUR bit for bit):
- every image enters as uint8 RGB: samples are quantised as the PNGs ddmkit writes,
  round((x - low) / (high - low) * 255) clipped to [0, 255]; grey is repeated to 3 channels;
- each image is resized inside the extractor from its own size to 299x299 with TensorFlow 1.x's
  bilinear resize (no antialiasing), then scaled by (x - 128) / 128. Both sets must have one
  resolution (CIFAR-10 samples against 32x32 reference images), so that both go through the same
  resize. pytorch-fid resizes with PyTorch's bilinear and clean-fid with PIL's bicubic: their
  numbers differ from these by a little; compare FIDs made the same way;
- mu is the mean, sigma the unbiased covariance (n - 1) of the features; FID = |mu1 - mu2|^2 +
  tr(S1 + S2 - 2 (S1 S2)^(1/2)) (`ddmkit.metrics.frechet`, checked against torch-fidelity's own
  `fid_statistics_to_metric` in the tests).
Statistics files are pytorch-fid's format: an .npz with `mu` (2048,) and `sigma` (2048, 2048),
read with allow_pickle=False; ddmkit adds `n` (the number of images) and `weights_sha256`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.faces import sample_faces
from ..data.folders import load_digits_images
from ..distributed import block
from ..errors import DdmkitError
from ..io import atomic_save_npz
from .evaluate import REFERENCE_NUM, REFERENCE_SEED
from .frechet import FeatureStats, frechet_distance_gaussians, reduce_over_workers
from .images import ImageSet
from .inception import load_extractor

FID_DIM = 2048
BATCH = 50
CONVENTIONS = ("torch-fidelity inception-v3-compat pool3 (2048): uint8 RGB (samples quantised as their PNGs, "
               "grey repeated), resized to 299x299 with TF1 bilinear inside the extractor; mu, unbiased sigma")


def inception_stats(images: ImageSet, model, batch_size: int = BATCH, dist: Any = None) -> FeatureStats:
    """FeatureStats of the Inception pool3 features of `images` (with a `ddmkit.distributed.Dist` of
    several workers, worker k embeds the k-th block and the sums are all-reduced)."""
    import torch

    lo, hi = 0, images.n
    if dist is not None and dist.enabled:

        lo, hi = block(images.n, dist.rank, dist.world_size)
    device = next(model.parameters()).device
    stats = FeatureStats(FID_DIM)
    with torch.no_grad():
        for i in range(lo, hi, batch_size):
            u8 = images.uint8_rgb(i, min(i + batch_size, hi))
            (f,) = model(torch.from_numpy(np.ascontiguousarray(u8)).to(device))
            stats.update(f.double().cpu().numpy())
    if dist is not None and dist.enabled:
        stats = reduce_over_workers(stats, dist)
    return stats


def check_fid_images(images: ImageSet, what: str = "samples") -> ImageSet:
    """Images FID can score: (N >= 2, 1 or 3 channels, H, W), finite values."""
    if images.array is not None:
        x = images.array
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise DdmkitError(f"FID needs images (N, 1 or 3, H, W); the {what} ({images.source}) have shape {x.shape}")
        if x.dtype.kind not in "fiu":
            raise DdmkitError(f"the {what} must be a numeric array, got dtype {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DdmkitError(f"the {what} contain NaN or infinite values; the sampler diverged")
    if images.n < 2:
        raise DdmkitError(f"FID needs at least 2 {what}, got {images.n} ({images.source})")
    return images


def check_same_resolution(samples: ImageSet, reference: ImageSet) -> None:
    """FID compares images of one resolution: both go through the same resize to 299."""
    if samples.resolution != reference.resolution:
        (h, w), (rh, rw) = samples.resolution, reference.resolution
        raise DdmkitError(f"the reference images ({reference.source}) are {rw}x{rh}, the samples {w}x{h}; "
                          f"FID compares images of one resolution: resize the reference to {w}x{h} first")


def read_stats(path: str | os.PathLike) -> dict[str, Any]:
    """A pytorch-fid statistics file: {"mu": (2048,), "sigma": (2048, 2048), "n": int or None}."""
    p = Path(path)
    if not p.is_file():
        raise DdmkitError(f"FID statistics file {p} does not exist; write one with "
                          "'ddmkit evaluate DIR --save-stats FILE.npz'")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "mu" not in z.files or "sigma" not in z.files:
                raise DdmkitError(f"{p} has no arrays 'mu' and 'sigma' (found: {', '.join(z.files) or 'none'}); "
                                  "give a pytorch-fid statistics file")
            mu, sigma = np.asarray(z["mu"]), np.asarray(z["sigma"])
            n = int(z["n"]) if "n" in z.files and z["n"].shape == () else None
    except DdmkitError:
        raise
    except Exception as e:
        raise DdmkitError(f"cannot read FID statistics {p}: {e.__class__.__name__}; give an .npz of "
                          "mu and sigma (pytorch-fid's format)") from None
    if mu.shape != (FID_DIM,) or sigma.shape != (FID_DIM, FID_DIM):
        raise DdmkitError(f"{p}: mu has shape {mu.shape} and sigma {sigma.shape}; Inception pool3 statistics "
                          f"need mu ({FID_DIM},) and sigma ({FID_DIM}, {FID_DIM})")
    if mu.dtype.kind != "f" or sigma.dtype.kind != "f" or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DdmkitError(f"{p}: mu and sigma must be finite floating-point arrays")
    return {"mu": mu.astype(np.float64), "sigma": sigma.astype(np.float64), "n": n}


def check_stats_target(path: str | os.PathLike, *protected: str | os.PathLike | None) -> Path:
    """Validate a --save-stats target before anything runs: an .npz path in an existing folder that
    is not one of the inputs (`protected`)."""
    p = Path(path)
    if p.suffix != ".npz":
        raise DdmkitError(f"--save-stats {p}: the statistics file must end in .npz")
    if p.is_dir():
        raise DdmkitError(f"--save-stats {p} is a folder; give a file name ending in .npz")
    if not p.parent.is_dir():
        raise DdmkitError(f"--save-stats {p}: folder {p.parent} does not exist; create it first")
    for q in protected:
        if q is not None and Path(q).exists() and p.exists() and os.path.samefile(p, q):
            raise DdmkitError(f"--save-stats {p} would overwrite an input; choose another file")
    return p


def write_stats(path: str | os.PathLike, stats: FeatureStats, weights_sha256: str) -> None:
    """Write pytorch-fid's mu/sigma format (plus n and the Inception weights' sha256), atomically."""

    atomic_save_npz(path, mu=stats.mean, sigma=stats.cov, n=np.array(stats.count, np.int64),
                    weights_sha256=np.array(weights_sha256))


def fid_value(stats: FeatureStats, reference: FeatureStats | dict[str, Any]) -> float:
    """FID between the samples' statistics and a reference (FeatureStats or read_stats' dict)."""
    if isinstance(reference, FeatureStats):
        mu, sigma = reference.mean, reference.cov
    else:
        mu, sigma = reference["mu"], reference["sigma"]
    return frechet_distance_gaussians(stats.mean, stats.cov, mu, sigma)


def domain_reference(domain: str, reference_seed: int | None = None, num: int | None = None) -> ImageSet:
    """The FD-faces / FD-digits reference sets as uint8 images, for FID against them."""

    if domain == "faces":

        seed = REFERENCE_SEED if reference_seed is None else reference_seed
        x = sample_faces(num or REFERENCE_NUM, seed=seed)[0].transpose(0, 3, 1, 2).copy()
        return ImageSet(f"sample_faces({len(x)}, seed={seed})", len(x), 3, 32, 32, array=x)
    if domain == "digits":

        x = load_digits_images(32)[0][:num]
        return ImageSet(f"sklearn digits ({len(x)})", len(x), 1, 32, 32, array=x)
    raise DdmkitError(f"unknown domain {domain!r}; choose 'faces' or 'digits'")


def fid_images(x: Any, reference: Any = "faces", *, inception_weights: str | os.PathLike | None = None,
               reference_seed: int | None = None, device: str = "cpu", data_range: tuple[float, float] = (-1.0, 1.0)
               ) -> float:
    """FID of images x (N, C, H, W) (float in `data_range`, or uint8) against `reference`: a domain
    ("faces", "digits"), an ImageSet, a FeatureStats or read_stats' dict. One process."""

    x = np.asarray(x)
    samples = check_fid_images(ImageSet("x", len(x), *(x.shape[1:] + (0, 0, 0))[:3], array=x, data_range=data_range))
    model, _ = load_extractor(inception_weights, device)
    if isinstance(reference, str):
        reference = domain_reference(reference, reference_seed)
    if isinstance(reference, ImageSet):
        check_same_resolution(samples, check_fid_images(reference, "reference images"))
        reference = inception_stats(reference, model)
    return fid_value(inception_stats(samples, model), reference)
