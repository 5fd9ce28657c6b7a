"""Evaluate a set of generated images against a built-in domain ("faces" or "digits").

    from ddmkit.metrics.evaluate import evaluate_images
    metrics = evaluate_images(x, "faces")   # x: float32 (N, 3, 32, 32) in [-1, 1]
    metrics["fd"], metrics["fd_noise_floor"], metrics["attribute_frequency"]

FD-faces / FD-digits is the Frechet distance between Gaussians fitted to the shipped classifier's
penultimate features (128 dims) of the samples and of a fixed reference set:

- faces: 10,000 faces of `sample_faces(10_000, seed=REFERENCE_SEED)` (REFERENCE_SEED = 30,000,000;
  disjoint from the classifier's training seeds 10,000,000+ and its test seed 20,000,000).
- digits: all 1,797 digits (the set a digits model trains on).

`fd_noise_floor` is what a perfect generator scores at the same sample size n: fresh data of size n
(faces: seeds 40,000,000 + r; digits: n from one random half of the set against the other half)
measured by the same procedure, averaged over a few repeats. FD is biased upwards at small n, so
read `fd` against it, not against zero.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_dir
from ..data.faces import ATTRIBUTES, sample_faces, to_tensor_range
from ..data.folders import load_digits_images
from ..distributed import block
from ..errors import DdmkitError
from ..io import atomic_save_npz, atomic_write_json
from .classifiers import DOMAINS, load_attribute_classifier, weights_digest
from .frechet import FeatureStats, frechet_distance, reduce_over_workers
from .images import folder_record, read_image_set

REFERENCE_SEED = 30_000_000
REFERENCE_NUM = 10_000
NOISE_FLOOR_SEED_BASE = 40_000_000
CONFIDENCE_THRESHOLD = 0.9
CHANNELS = {"faces": 3, "digits": 1}
RESOLUTION = 32
_BATCH = 1000


def check_images(x: Any, domain: str) -> np.ndarray:
    """Validate samples for `domain` and return them as float32 (N, C, 32, 32) clipped to [-1, 1]."""
    if domain not in DOMAINS:
        raise DdmkitError(f"unknown domain {domain!r}; choose 'faces' or 'digits'")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise DdmkitError(f"samples must be a numeric array, got dtype {x.dtype}")
    c = CHANNELS[domain]
    if x.ndim != 4:
        raise DdmkitError(f"samples must have shape (N, C, H, W), got {x.shape}; "
                          f"{domain} needs (N, {c}, {RESOLUTION}, {RESOLUTION})")
    if x.shape[1] != c:
        other = [d for d, k in CHANNELS.items() if k == x.shape[1]]
        hint = f"; for {other[0]} pass --domain {other[0]}" if other else ""
        raise DdmkitError(f"{domain} samples need {c} channel(s) (N, {c}, H, W), got shape {x.shape}{hint}")
    if x.shape[2:] != (RESOLUTION, RESOLUTION):
        raise DdmkitError(f"{domain} samples must be {RESOLUTION}x{RESOLUTION}, got {x.shape[2]}x{x.shape[3]}")
    if x.shape[0] < 2:
        raise DdmkitError(f"need at least 2 samples for a Frechet distance, got {x.shape[0]}")
    x = x.astype(np.float32, copy=False)
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise DdmkitError(f"samples contain {bad} NaN or infinite values; the sampler diverged")
    lo, hi = float(x.min()), float(x.max())
    if hi > 2.0 or lo < -2.0:
        raise DdmkitError(f"sample values span [{lo:.3g}, {hi:.3g}]; the expected data range is [-1, 1] "
                          "(convert 0-255 pixels with x / 127.5 - 1)")
    return np.clip(x, -1.0, 1.0)


def _extract(x: np.ndarray, domain: str) -> tuple[FeatureStats, np.ndarray]:
    """Features' statistics and the classifier's probabilities, batch by batch."""
    clf = load_attribute_classifier(domain)
    stats, probs = FeatureStats(), []
    for i in range(0, len(x), _BATCH):
        f, p = clf.extract(x[i : i + _BATCH], batch_size=_BATCH)
        stats.update(f)
        probs.append(p)
    if not probs:
        return stats, np.zeros((0, clf.config.num_outputs), np.float32)
    return stats, np.concatenate(probs)


def _faces(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:

    images, labels = sample_faces(num, seed=seed)
    return to_tensor_range(images), labels


@lru_cache(maxsize=2)
def _digits_features(digest: str) -> tuple[np.ndarray, np.ndarray]:
    """Classifier features and labels of all 1,797 digits (per process, per classifier)."""

    x, labels = load_digits_images(RESOLUTION)
    return load_attribute_classifier("digits").extract(x, _BATCH)[0], labels


def _frequencies(domain: str, labels: np.ndarray) -> dict[str, float]:
    if domain == "faces":

        return {a: float(v) for a, v in zip(ATTRIBUTES, labels.mean(axis=0))}
    return {str(k): float((labels == k).mean()) for k in range(10)}


def reference_statistics(domain: str, reference_seed: int | None = None, use_cache: bool = True
                         ) -> tuple[FeatureStats, dict[str, float], dict[str, Any]]:
    """(feature statistics, label frequencies, description) of the domain's reference set.

    Cached under `cache_dir()` keyed by domain, seed, size and the classifier's sha256; computing
    from scratch takes about 10 s for the faces."""
    if domain not in DOMAINS:
        raise DdmkitError(f"unknown domain {domain!r}; choose 'faces' or 'digits'")
    if domain == "faces":
        seed = REFERENCE_SEED if reference_seed is None else int(reference_seed)
        desc = {"set": "sample_faces", "seed": seed, "n": REFERENCE_NUM}
        key = f"faces_ref_seed{seed}_n{REFERENCE_NUM}"
    else:
        desc = {"set": "sklearn digits (all)", "seed": None, "n": 1797}
        key = "digits_ref_all"
    path = cache_dir() / f"{key}_{weights_digest(domain)[:16]}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                stats = FeatureStats.from_dict(z)
                freq = json.loads(str(z["frequencies"]))
            return stats, freq, desc
        except Exception:  # a corrupt cache file is recomputed
            pass
    if domain == "faces":
        x, labels = _faces(REFERENCE_NUM, desc["seed"])
        stats, _ = _extract(x, domain)
    else:
        feats, labels = _digits_features(weights_digest("digits"))
        stats = FeatureStats.from_features(feats)
    freq = _frequencies(domain, labels)
    if use_cache:
        try:

            atomic_save_npz(path, **stats.to_dict(), frequencies=np.array(json.dumps(freq)))
        except OSError:
            pass  # an unwritable cache only costs time
    return stats, freq, desc


def noise_floor(domain: str, n: int, reference: FeatureStats | None = None, reference_seed: int | None = None,
                repeats: int | None = None, use_cache: bool = True) -> dict[str, Any]:
    """FD of real data of size n against the reference, by the same procedure as `fd` (mean, std).

    faces: fresh faces of seeds NOISE_FLOOR_SEED_BASE + r vs the reference statistics.
    digits: n digits (at most half the set) of one random half vs the statistics of the other half.
    Results are cached next to the reference statistics."""
    if n < 2:
        raise DdmkitError(f"the noise floor needs n >= 2, got {n}")
    if domain not in DOMAINS:
        raise DdmkitError(f"unknown domain {domain!r}; choose 'faces' or 'digits'")
    if repeats is None:
        repeats = int(np.clip(20_000 // n, 1, 5))
    ref_seed = REFERENCE_SEED if reference_seed is None else int(reference_seed)
    key = f"{domain}_floor_n{n}_r{repeats}" + (f"_seed{ref_seed}_n{REFERENCE_NUM}" if domain == "faces" else "")
    path = cache_dir() / f"{key}_{weights_digest(domain)[:16]}.json"
    if use_cache and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    values = []
    if domain == "faces":
        if reference is None:
            reference = reference_statistics("faces", reference_seed, use_cache)[0]
        in_use = NOISE_FLOOR_SEED_BASE <= ref_seed < NOISE_FLOOR_SEED_BASE + 100
        base = NOISE_FLOOR_SEED_BASE + (100 if in_use else 0)  # never the reference's own seed
        m = n
        for r in range(repeats):
            values.append(frechet_distance(_extract(_faces(n, base + r)[0], "faces")[0], reference))
    else:
        feats = _digits_features(weights_digest("digits"))[0]
        half = len(feats) // 2
        m = min(n, len(feats) - half)
        for r in range(repeats):
            perm = np.random.default_rng(1000 + r).permutation(len(feats))
            values.append(frechet_distance(FeatureStats.from_features(feats[perm[half : half + m]]),
                                           FeatureStats.from_features(feats[perm[:half]])))
    result = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": int(m), "repeats": repeats}
    if use_cache:
        try:

            atomic_write_json(path, result)
        except OSError:
            pass
    return result


def sample_statistics(x: np.ndarray, domain: str, dist: Any = None) -> tuple[FeatureStats, dict[str, Any]]:
    """Feature statistics and label shares of checked samples x; with a `ddmkit.distributed.Dist` of
    several workers, worker k takes the k-th contiguous block of x and the sums (features, outer
    products, label counts) are all-reduced: no image or feature leaves its worker."""
    if dist is not None and dist.enabled:

        lo, hi = block(len(x), dist.rank, dist.world_size)
        stats, probs = _extract(x[lo:hi], domain)
        stats = reduce_over_workers(stats, dist)
    else:
        stats, probs = _extract(x, domain)
    if domain == "faces":
        counts = np.concatenate([(probs >= 0.5).sum(axis=0),
                                 (np.maximum(probs, 1.0 - probs) >= CONFIDENCE_THRESHOLD).sum(axis=0)])
    else:
        pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
        counts = np.concatenate([np.bincount(pred, minlength=10)[:10],
                                 [(probs.max(axis=1) >= CONFIDENCE_THRESHOLD).sum() if len(probs) else 0]])
    if dist is not None and dist.enabled:
        counts = dist.all_reduce_sum(counts)
    n = max(stats.count, 1)
    shares = np.asarray(counts, np.float64) / n
    if domain == "faces":

        k = len(ATTRIBUTES)
        labels = {"attribute_frequency": {a: float(v) for a, v in zip(ATTRIBUTES, shares[:k])},
                  "confident_fraction": {a: float(v) for a, v in zip(ATTRIBUTES, shares[k:])}}
    else:
        labels = {"class_frequency": {str(c): float(shares[c]) for c in range(10)},
                  "confident_fraction": float(shares[10])}
    return stats, labels


def evaluate_images(x: Any, domain: str = "faces", *, reference_seed: int | None = None,
                    with_noise_floor: bool = True, noise_floor_repeats: int | None = None,
                    use_cache: bool = True, dist: Any = None) -> dict[str, Any] | None:
    """Metrics of samples x (float32 (N, C, 32, 32) in [-1, 1]) for "faces" or "digits".

    Keys: domain, n, fd, fd_noise_floor (+ _std, _n), reference, classifier; faces:
    attribute_frequency, data_attribute_frequency, confident_fraction (attribute -> share of
    samples with max(p, 1 - p) >= 0.9); digits: class_frequency, data_class_frequency,
    confident_fraction (share with max class probability >= 0.9).
    The noise floor averages `noise_floor_repeats` draws (default: 20,000 // n, between 1 and 5).
    Under torchrun pass `dist` (`ddmkit.distributed.init()`): the features are computed in blocks
    across workers and reduced; rank 0 returns the metrics, the other workers None."""
    x = check_images(x, domain)
    stats, labels = sample_statistics(x, domain, dist)
    if dist is not None and not dist.is_main:
        return None
    ref, data_freq, desc = reference_statistics(domain, reference_seed, use_cache)
    out: dict[str, Any] = {"domain": domain, "n": int(len(x)), "fd": frechet_distance(stats, ref)}
    if with_noise_floor:
        nf = noise_floor(domain, len(x), ref, reference_seed, noise_floor_repeats, use_cache=use_cache)
        out.update(fd_noise_floor=nf["mean"], fd_noise_floor_std=nf["std"], fd_noise_floor_n=nf["n"],
                   fd_noise_floor_repeats=nf["repeats"])
    if domain == "faces":
        out["attribute_frequency"] = labels["attribute_frequency"]
        out["data_attribute_frequency"] = data_freq
    else:
        out["class_frequency"] = labels["class_frequency"]
        out["data_class_frequency"] = data_freq
    out["confident_fraction"] = labels["confident_fraction"]
    out["confidence_threshold"] = CONFIDENCE_THRESHOLD
    out["reference"] = desc
    out["features"] = f"{domain}_classifier penultimate layer ({ref.dim} dims)"
    out["classifier_sha256"] = weights_digest(domain)
    return out


# ------------------------------------------------------------------------------ sample folders

def to_metric_range(x: np.ndarray, data_range: Any) -> np.ndarray:
    """Samples in a model's data range (e.g. [0, 1] for VE models) mapped affinely onto [-1, 1], the range the
    metrics read; None or [-1, 1]: unchanged."""
    if data_range is None:
        return x
    lo, hi = float(data_range[0]), float(data_range[1])
    if not lo < hi:
        raise DdmkitError(f"data range [{lo}, {hi}] is empty; it must be [lo, hi] with lo < hi")
    if (lo, hi) == (-1.0, 1.0):
        return x
    return ((np.asarray(x, np.float32) - lo) * (2.0 / (hi - lo)) - 1.0).astype(np.float32)


def read_domain(folder: str | os.PathLike, domain: str | None = None, default: str | None = "faces") -> str | None:
    """`domain` if given, else the "domain" field of the record a ddmkit command left in the folder
    (manifest.json, edit.json or control.json), else `default`."""
    if domain is None:
        name, record = folder_record(Path(folder))
        domain = (record or {}).get("domain") or default
        if domain is not None and domain not in DOMAINS:
            raise DdmkitError(f"{Path(folder) / name} names domain {domain!r}; evaluate supports 'faces' and "
                              "'digits' (pass --domain to override)")
    if domain is not None and domain not in DOMAINS:
        raise DdmkitError(f"unknown domain {domain!r}; choose 'faces' or 'digits'")
    return domain


def load_samples(folder: str | os.PathLike, domain: str, panel: str | None = None) -> tuple[np.ndarray, str]:
    """The images of any output folder (see `ddmkit.metrics.images`) as float32 (N, C, H, W) in [-1, 1]."""
    images = read_image_set(folder, panel)
    return images.unit_range(CHANNELS[domain]), images.source
