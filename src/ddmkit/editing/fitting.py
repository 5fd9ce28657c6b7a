"""Fitting boundaries on a model: invert labelled images to the mixing step, one SVM on z and one on h
(spec section 4).

    step = MixingStep(t_m=500, n_inv=40)
    z, h = invert_batched(model, images, step)                  # z and h of every labelled image
    b = fit_boundaries(model, images, labels, attribute="smiling", step=step)   # both spaces
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from .attribute import FORMAT, FORMAT_VERSION, LABEL_CONVENTION, AttributeBoundary
from .ddim import GRID_RULE, invert
from .fingerprint import model_fingerprint
from .settings import MixingStep
from .svm import check_two_classes, fit_svm, normalise_labels, split_train_test


def invert_batched(denoiser, images, step: MixingStep, *, batch_size: int = 50,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`invert` over batches; returns (z, h) on the CPU."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images, dtype=torch.float32)
    zs, hs = [], []
    starts = range(0, len(x), max(1, int(batch_size)))
    if progress:
        starts = tqdm(starts, desc=f"invert to t={step.t_m}", unit="batch")
    for i in starts:
        inv = invert(denoiser, x[i : i + batch_size], step)
        zs.append(inv.z.cpu())
        hs.append(inv.h.cpu())
    return torch.cat(zs), torch.cat(hs)


def fit_boundaries(denoiser, images: torch.Tensor | np.ndarray, labels: Sequence, *, attribute: str,
                   step: MixingStep = MixingStep(), n_test: int | float = 0.5, C: float = 1.0, seed: int = 0,
                   batch_size: int = 50, data: dict | None = None,
                   inversions: tuple[torch.Tensor, torch.Tensor] | None = None,
                   invert_seconds: float | None = None, progress: bool = False) -> AttributeBoundary:
    """Invert labelled images to `step.t_m` and fit one SVM on z and one on h (spec section 4).

    `n_test` images (a count, or a fraction < 1) are held out, stratified, for the test accuracy.
    `inversions` = (z, h) skips the inversion (latents already computed with the same settings); the
    caller may pass the time it took as `invert_seconds` (recorded as null otherwise)."""
    y = normalise_labels(labels)
    check_two_classes(y)
    t0 = time.perf_counter()
    if inversions is None:
        z, h = invert_batched(denoiser, images, step, batch_size=batch_size, progress=progress)
        invert_seconds = time.perf_counter() - t0
    else:
        z, h = inversions
    train_idx, test_idx = split_train_test(y, n_test, seed)
    spaces = {}
    for space, feats in (("z", z), ("h", h)):
        f = feats.cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
        spaces[space] = fit_svm(f[train_idx], y[train_idx], f[test_idx], y[test_idx], space=space, C=C)
    meta = boundary_meta(denoiser, step, attribute=attribute, labels=y, seed=seed, invert_seconds=invert_seconds,
                         data=data)
    return AttributeBoundary(spaces=spaces, meta=meta)


def boundary_meta(denoiser, step: MixingStep, *, attribute: str, labels: np.ndarray, seed: int,
                  invert_seconds: float | None, data: dict | None) -> dict:
    """The metadata of a freshly fitted boundary (spec decision 7.5; the spaces' stats are added on save)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "attribute": attribute,
        "label_convention": LABEL_CONVENTION,
        "model": model_fingerprint(denoiser),
        "t_m": int(step.t_m),
        "n_inv": int(step.n_inv),
        "grid_rule": GRID_RULE,
        "h_source": step.h_source,
        "hspace_module": step.hspace_module,
        "n_images": int(len(labels)),
        "n_positive": int(labels.sum()),
        "split_seed": int(seed),
        "invert_seconds": None if invert_seconds is None else round(invert_seconds, 3),
        "data": data or {},
        "ddmkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
