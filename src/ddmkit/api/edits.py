"""BoundaryDiffusion editing from Python: boundaries by name, fitted from arrays, folders or labels, and
edits of PIL images, uint8 arrays or tensors (one result dataclass per call).

    model = ddmkit.load_model("default")
    out = ddmkit.edit(model, Image.open("face.png"), "smiling", distance="1x")      # out.images: [PIL image]
    b = ddmkit.boundary("smiling", model)                     # a shipped boundary (checked against the model)
    b = ddmkit.fit_boundary(model, positive="smiling/", negative="neutral/", attribute="smiling", t_m=100)
    b = ddmkit.fit_boundary(model, images, labels, attribute="smiling")             # arrays + 0/1 labels

Edits are those of `ddmkit edit` (DDIM inversion to the boundary's t_m, one move of z and h, DDIM with eta
= 1 from there; `ddmkit.editing.edit_images`), with the same defaults, seeds and pixel mapping: the same
image gives the same edit as the CLI.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..editing.attribute import AttributeBoundary
from ..editing.edit import edit_images
from ..editing.files import check_boundary, resolve_boundary, save_boundary
from ..editing.fitting import fit_boundaries
from ..editing.hspace import hspace_shape
from ..editing.labelled import FIT_FACES_SEED, labelled_faces, labelled_folder, labelled_two_folders
from ..editing.plan import Distance, EditPlan, parse_distance
from ..editing.settings import EditSettings, MixingStep
from ..errors import DdmkitError
from .images import check_output_type, image_shape, model_images, to_output
from .models import as_denoiser, resolve_seed


@dataclass
class Edits:
    """`images`: the edited images as `output_type` asked ("pil" a list, "pt" (N, C, H, W) in the model's
    range, "np"); `reconstruction` (eta = 0, no edit; only with `reconstruct=True`, else None) in the same
    type; `nfe` per image (inversion, per_edit, ...); `distances` used per attribute and space; `settings`."""

    images: Any
    reconstruction: Any
    nfe: dict
    distances: dict
    seed: int
    settings: dict


def boundary(name_or_path: str | os.PathLike | AttributeBoundary, model: Any = None, *,
             force: bool = False) -> AttributeBoundary:
    """A boundary: a shipped one by name (smiling, eyeglasses, dark_hair, round_face, open_eyes,
    warm_background: fitted for the default model) or a file; with `model`, refused if fitted for another."""
    if isinstance(name_or_path, AttributeBoundary):
        if model is not None:
            _check_fit(name_or_path, as_denoiser(model), force)
        return name_or_path
    return resolve_boundary(str(name_or_path), None if model is None else as_denoiser(model), force=force)


def _check_fit(b: AttributeBoundary, den, force: bool) -> None:
    """A boundary object is refused for a model it was not fitted for, as a boundary file is (`load_boundary`)."""
    problems = check_boundary(b, den, h_shape=hspace_shape(den, b.hspace_module) if "h" in b.spaces else None)
    shape = any("shape" in p for p in problems)
    if problems and (shape or not force):
        raise DdmkitError(f"boundary {b.attribute!r} does not match the model: {'; '.join(problems)}; fit one for this "
                          "model with ddmkit.fit_boundary" + ("" if shape else ", or pass force=True to use it anyway"))


def _plan(den, boundaries, distance, space: str, force: bool) -> EditPlan:
    names = list(boundaries) if isinstance(boundaries, (list, tuple)) else [boundaries]
    dists = list(distance) if isinstance(distance, (list, tuple)) else [distance] * len(names)
    if len(dists) != len(names):
        raise DdmkitError(f"{len(names)} boundaries but {len(dists)} distances: give one per boundary, or one for all")
    for d in dists:
        if isinstance(d, bool) or not isinstance(d, (int, float, str, Distance)):
            raise DdmkitError(f"a distance is a number or a string like '1x' or '-1.5x', got {d!r}")
    return EditPlan([(boundary(b, den, force=force), d if isinstance(d, Distance) else parse_distance(d))
                     for b, d in zip(names, dists)], space=space)


def edit(model: Any, images: Any, boundary: Any = "smiling", distance: Any = "1x", *, seed: int | None = None,
         generator: torch.Generator | None = None, eta: float = 1.0, steps: int | None = None, space: str = "both",
         h_injection: str = "single", reconstruct: bool = False, force: bool = False, batch_size: int = 16,
         output_type: str | None = None, progress: bool = False) -> Edits:
    """Edit images across one boundary (or several, applied in order) at `distance` (a number, or 'Kx': K x the
    recommended distance; one per boundary or one for all). `images`: module docstring of `ddmkit.api.images`.
    `output_type` defaults to "pil" for PIL input, else "pt". `steps`: DDIM grid points after the edit
    (default: the boundary's N_inv). Seeds per image, as `ddmkit edit --seed`."""
    den = as_denoiser(model)
    image_shape(den)
    plan = _plan(den, boundary, distance, space, force)
    x, was_pil = model_images(images, den)
    output_type = check_output_type(output_type or ("pil" if was_pil else "pt"), den)
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 2):
        raise DdmkitError(f"steps must be a whole number >= 2 (DDIM grid points after the edit), got {steps!r}")
    base = resolve_seed(seed, generator)
    settings = EditSettings(eta=float(eta), n_steps=None if steps is None else int(steps), h_injection=h_injection,
                            seed=base, batch_size=int(batch_size), progress=progress)
    res = edit_images(den, x.numpy(), plan, settings, reconstruct=reconstruct)
    recon = None if res.reconstruction is None else to_output(torch.from_numpy(res.reconstruction), den, output_type)
    return Edits(to_output(torch.from_numpy(res.edits[0]), den, output_type), recon, res.nfe.to_json(),
                 res.distances_used[0], base, res.settings)


def _labelled(den, images, labels, positive, negative, faces, attribute,
              subset: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """(images in [-1, 1], 0/1 labels, a description) from one of the four sources of `fit_boundary`."""
    c, res, _ = image_shape(den)
    given = [n for n, v in (("images", images), ("positive/negative", positive if positive is not None else negative),
                            ("faces", faces)) if v is not None]
    if len(given) != 1:
        raise DdmkitError("give one source of labelled images: images + labels, positive + negative, or faces=N"
                          + (f" (got {' and '.join(given)})" if given else ""))
    if faces is not None:
        return labelled_faces(int(faces), attribute, seed=FIT_FACES_SEED, resolution=res, channels=c)
    if positive is not None or negative is not None:
        if positive is None or negative is None:
            raise DdmkitError("positive and negative go together: give both (folders or images)")
        if all(isinstance(p, (str, os.PathLike)) and Path(p).is_dir() for p in (positive, negative)):
            return labelled_two_folders(positive, negative, resolution=res, channels=c, **subset)
        pos, neg = (model_images(v, den, map_range=False)[0].numpy() for v in (positive, negative))
        y = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
        return np.concatenate([pos, neg]), y, {"source": "arrays", "num_positive": len(pos), "num_negative": len(neg)}
    if labels is None:
        raise DdmkitError("images need labels: a sequence of 0/1 (or -1/+1) per image, or a CSV file for a folder")
    if isinstance(labels, (str, os.PathLike)):
        return labelled_folder(images, labels, attribute, resolution=res, channels=c, **subset)
    x = model_images(images, den, map_range=False)[0].numpy()
    y = np.asarray(labels)
    if len(y) != len(x):
        raise DdmkitError(f"{len(x)} images but {len(y)} labels: give one label per image")
    return x, y, {"source": "arrays", "num": int(len(x))}


def fit_boundary(model: Any, images: Any = None, labels: Sequence | str | os.PathLike | None = None, *,
                 attribute: str, positive: Any = None, negative: Any = None, faces: int | None = None,
                 t_m: int | None = None, n_inv: int = 40, h_source: str = "last", n_test: int | float = 0.5,
                 C: float = 1.0, seed: int = 0, batch_size: int = 50, out: str | os.PathLike | None = None,
                 num: int | None = None, balance: bool = False, progress: bool = False) -> AttributeBoundary:
    """Fit the z and h boundaries of `attribute` (BoundaryDiffusion section 4): images + labels (arrays,
    PIL images, or a folder + a label CSV), positive + negative (folders or images), or `faces=N` synthetic
    faces; DDIM-inverted to `t_m` (default T // 2, as `ddmkit boundary fit`); `n_test` held out. Written to
    `out` (.safetensors + .json) when given. `num` / `balance`: a seeded (balanced) subset of a folder source,
    only its images read (as `ddmkit boundary fit --num N --balance`)."""
    den = as_denoiser(model)
    x, y, info = _labelled(den, images, labels, positive, negative, faces, attribute,
                           {"num": num, "balance": balance, "seed": seed})
    lo, hi = tuple(den.data_range or (-1.0, 1.0))
    if (lo, hi) != (-1.0, 1.0):
        x = lo + (x + 1.0) * (hi - lo) / 2.0
    num_t = len(getattr(den, "sigmas", [])) or 1000
    t_m = num_t // 2 if t_m is None else t_m
    if isinstance(t_m, bool) or int(t_m) != t_m or not 1 <= t_m < num_t:
        raise DdmkitError(f"t_m must be a whole number in 1..{num_t - 1}, got {t_m!r}")
    step = MixingStep(int(t_m), int(n_inv), h_source)
    b = fit_boundaries(den, x, y, attribute=attribute, step=step, n_test=n_test, C=C, seed=seed,
                       batch_size=batch_size, data=info, progress=progress)
    if out is not None:
        save_boundary(out, b)
    return b
