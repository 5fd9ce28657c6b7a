"""Per-attribute calibration of the editing distance with a judge of the attribute.

The default recommended distance (`svm.recommended_distance`: 2 x the 95th percentile of
|<x_i, n>| over the training latents) is one rule for every attribute. Attributes whose classes lie
far apart in z (dark hair: a large colour change over many pixels) are then over-edited -- the edit
succeeds but drags other attributes with it -- while subtle ones may be under-edited. Where a judge of
the attribute exists (for the synthetic faces: the shipped attribute classifier), the distance can be
set per attribute from held-out labelled latents:

    res = calibrate_distance(model, boundary, z_test, h_test, source_labels, judge)
    boundary = apply_calibration(boundary, res)          # recommended distance x res["chosen_multiple"]

Each held-out latent is edited towards the opposite of its label (move "set", z and h, single h
injection, as `ddmkit edit` does by default) at each multiple D of the recommended distance, and
generated with eta = 1; the success at D is the share the judge then calls flipped. The chosen D is the
smallest multiple whose success reaches `target`: the gentlest edit that still edits, which is what
keeps the other attributes. If no multiple reaches it, the one with the highest success is chosen and
`reached` is False. The latents must not be the ones an evaluation later scores.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import DdmkitError
from ..integrators import PerSampleGenerator
from ..sampling import sample_seed
from .attribute import AttributeBoundary
from .loop import edit_latents
from .plan import Distance, EditPlan
from .settings import EditSettings
from .svm import normalise_labels

DEFAULT_MULTIPLES = (0.25, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0)
DEFAULT_TARGET = 0.95


def calibrate_distance(denoiser, boundary: AttributeBoundary, z: torch.Tensor, h: torch.Tensor,
                       source_labels: Sequence, judge: Callable[[np.ndarray], np.ndarray], *,
                       multiples: Sequence[float] = DEFAULT_MULTIPLES, target: float = DEFAULT_TARGET,
                       n_steps: int = 10, eta: float = 1.0, seed: int = 0, batch_size: int = 50) -> dict:
    """Success of edits at each multiple of the recommended distance and the smallest one reaching `target`.

    `source_labels`: the attribute of each held-out source (0/1, by the judge or the data's labels);
    `judge(images in the model's range, (N, C, H, W) float32) -> (N,)` P(attribute present)."""
    y = normalise_labels(source_labels)
    if len(y) != len(z) or len(z) != len(h):
        raise DdmkitError(f"calibration needs one label per latent (got {len(y)} labels, {len(z)} z, {len(h)} h)")
    if len(y) == 0:
        raise DdmkitError("calibration needs at least one held-out latent")
    mult = sorted(float(m) for m in multiples)
    if not mult or mult[0] <= 0:
        raise DdmkitError(f"calibration multiples must be > 0, got {list(multiples)}")
    if not 0 < target <= 1:
        raise DdmkitError(f"calibration target must be in (0, 1], got {target}")
    settings = EditSettings(eta=eta, n_steps=n_steps, seed=seed, batch_size=batch_size)
    successes = [_success(denoiser, boundary, z, h, 1 - y, judge, m, settings) for m in mult]
    chosen, reached = choose_multiple(mult, successes, target)
    return {"multiples": mult, "success": successes, "target": float(target), "chosen_multiple": chosen,
            "reached": reached, "n": int(len(y)), "n_steps": int(n_steps), "eta": float(eta), "seed": int(seed),
            "rule": "smallest multiple of the uncalibrated recommended distance whose edit success (by the judge, "
                    "edits towards the opposite label, z and h, eta = 1) reaches the target"}


def _success(denoiser, boundary: AttributeBoundary, z: torch.Tensor, h: torch.Tensor, target_label: np.ndarray,
             judge: Callable[[np.ndarray], np.ndarray], multiple: float, settings: EditSettings) -> float:
    """The share of the latents the judge calls flipped after an edit at `multiple` x the recommended distance."""
    flipped = np.zeros(len(target_label), bool)
    bs = settings.batch_size
    for sign, sel in ((+1, np.flatnonzero(target_label == 1)), (-1, np.flatnonzero(target_label == 0))):
        plan = EditPlan([(boundary, Distance(sign * multiple, relative=True))], space="both", move="set")
        for i in range(0, len(sel), bs):
            idx = sel[i:i + bs]
            gen = PerSampleGenerator([sample_seed(settings.seed, int(k)) for k in idx]) if settings.eta > 0 else None
            with torch.no_grad():
                out, _, _ = edit_latents(denoiser, z[idx].to(denoiser.device), h[idx].to(denoiser.device), plan,
                                         settings, generator=gen)
            p = np.asarray(judge(out.float().cpu().numpy())).reshape(-1)
            flipped[idx] = (p > 0.5).astype(np.int64) == target_label[idx]
    return float(flipped.mean())


def choose_multiple(multiples: Sequence[float], successes: Sequence[float], target: float) -> tuple[float, bool]:
    """(the smallest multiple whose success >= target, True), else (the smallest with the highest success, False)."""
    pairs = sorted(zip((float(m) for m in multiples), (float(s) for s in successes)))
    if not pairs:
        raise DdmkitError("calibration needs at least one multiple")
    ok = [m for m, s in pairs if s >= target]
    if ok:
        return ok[0], True
    best = max(s for _, s in pairs)
    return next(m for m, s in pairs if s == best), False


def apply_calibration(boundary: AttributeBoundary, result: dict, judge_name: str = "") -> AttributeBoundary:
    """A copy of `boundary` whose recommended distance is `chosen_multiple` x the current one in every
    space; the calibration (and the uncalibrated distances) is recorded in the metadata."""
    out = copy.deepcopy(boundary)
    m = float(result["chosen_multiple"])
    uncal = {}
    for space, b in out.spaces.items():
        uncal[space] = float(b.stats.get("recommended_distance", 0.0))
        b.stats["recommended_distance"] = uncal[space] * m
        b.stats["recommended_rule"] = f"{b.stats.get('recommended_rule', 'recommended distance')} x {m:g} (calibrated)"
    out.meta["distance_calibration"] = {**result, "judge": judge_name, "uncalibrated_recommended_distance": uncal}
    return out
