"""The evaluation of one folder: FD on a domain classifier and/or Inception FID, validated up front.

    plan = prepare_evaluation("runs/cifar", EvaluationRequest(ref="cifar10-train/", fid=True,
                                                               inception_weights="weights-....pth"))
    metrics, stats = run_evaluation(plan)

`prepare_evaluation` reads and checks everything -- the images, the domain, the FID reference
(folder, statistics file or domain set), the Inception weights (checked and loaded as tensors),
the statistics target -- before any slow work and before anything is written; `run_evaluation`
computes.

What is scored:
- FD-<domain> when the domain is known (the request's, else the folder's record, else "faces" when no
  FID reference option -- ref, ref_stats, save_stats -- is given);
- FID when asked (`fid`, `ref`, `ref_stats`, or `inception_weights` without `save_stats`), against `ref` (a folder that
  `ddmkit.metrics.images` reads), `ref_stats` (pytorch-fid's mu/sigma), else the domain's FD reference set;
- the samples' Inception statistics when `save_stats` is given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DdmkitError
from . import fid as fidlib
from . import fidelity, inception
from .evaluate import CHANNELS, check_images, evaluate_images, read_domain
from .images import ImageSet, read_image_set


@dataclass
class EvaluationRequest:
    """What to score (see the module docstring); paths as given by the user."""

    domain: str | None = None
    panel: str | None = None
    reference_seed: int | None = None
    fid: bool = False
    inception_weights: str | os.PathLike | None = None
    weights_label: str = "--inception-weights"
    ref: str | os.PathLike | None = None
    ref_stats: str | os.PathLike | None = None
    save_stats: str | os.PathLike | None = None

    @property
    def wants_fid(self) -> bool:
        """--fid, a reference, or Inception weights given for anything but --save-stats alone."""
        return bool(self.fid or self.ref or self.ref_stats or (self.inception_weights and not self.save_stats))


@dataclass
class EvaluationPlan:
    images: ImageSet
    domain: str | None
    fd_x: np.ndarray | None = None
    fid_reference: ImageSet | dict[str, Any] | None = None
    fid_reference_desc: dict[str, Any] = field(default_factory=dict)
    weights: inception.InceptionWeights | None = None
    state: dict[str, Any] | None = None
    save_stats: Path | None = None


def prepare_evaluation(folder: str | os.PathLike, req: EvaluationRequest) -> EvaluationPlan:
    """Read and validate everything the evaluation needs; raise the one-line DdmkitError otherwise."""
    if req.ref is not None and req.ref_stats is not None:
        raise DdmkitError("give --ref DIR or --ref-stats FILE, not both")
    fid_mode = req.ref is not None or req.ref_stats is not None or req.save_stats is not None
    domain = read_domain(folder, req.domain, default=None if fid_mode else "faces")
    images = read_image_set(folder, req.panel)
    if req.reference_seed is not None and domain != "faces":
        raise DdmkitError("--reference-seed applies to the faces only (the FD/FID reference of the faces domain)")
    plan = EvaluationPlan(images, domain)
    if domain is not None:
        plan.fd_x = check_images(images.unit_range(CHANNELS[domain]), domain)
    if req.wants_fid or req.save_stats is not None:
        fidlib.check_fid_images(images)
        _prepare_reference(plan, req)
        fidelity.inception_class()  # the library, before the weights
        label = req.weights_label if req.inception_weights is not None else "Inception weights"
        plan.weights = inception.check_weights_file(req.inception_weights, label)
        plan.state = inception.load_state_dict(plan.weights)
    if req.save_stats is not None:
        plan.save_stats = fidlib.check_stats_target(req.save_stats, req.ref_stats)
    return plan


def _prepare_reference(plan: EvaluationPlan, req: EvaluationRequest) -> None:
    if not req.wants_fid:
        return
    if req.ref_stats is not None:
        plan.fid_reference = fidlib.read_stats(req.ref_stats)
        plan.fid_reference_desc = {"stats": str(req.ref_stats), "n": plan.fid_reference["n"]}
        return
    if req.ref is not None:
        ref = read_image_set(req.ref, what="reference folder")
    elif plan.domain is not None:
        ref = fidlib.domain_reference(plan.domain, req.reference_seed)
    else:
        raise DdmkitError("FID needs a reference: --ref DIR (images) or --ref-stats FILE.npz, or --domain "
                          "faces/digits for the synthetic reference set")
    fidlib.check_fid_images(ref, "reference images")
    fidlib.check_same_resolution(plan.images, ref)
    plan.fid_reference = ref
    plan.fid_reference_desc = {"images": ref.source, "n": ref.n}


def run_evaluation(plan: EvaluationPlan, *, reference_seed: int | None = None, with_noise_floor: bool = True,
                   use_cache: bool = True, dist: Any = None, device: str = "cpu"
                   ) -> tuple[dict[str, Any] | None, Any]:
    """(metrics, the samples' Inception FeatureStats or None); with several torchrun workers the
    features are computed in blocks and reduced, and the workers other than rank 0 get (None, None)."""
    main = dist is None or dist.is_main
    metrics: dict[str, Any] = {}
    if plan.fd_x is not None:
        metrics = evaluate_images(plan.fd_x, plan.domain, reference_seed=reference_seed,
                                  with_noise_floor=with_noise_floor, use_cache=use_cache, dist=dist) or {}
    stats = None
    if plan.state is not None:
        model = inception.build_extractor(plan.state, f"Inception weights {plan.weights.path}", device)
        stats = fidlib.inception_stats(plan.images, model, dist=dist)
        if plan.fid_reference is not None:
            ref = plan.fid_reference
            ref_stats = fidlib.inception_stats(ref, model, dist=dist) if isinstance(ref, ImageSet) else ref
            if main:
                metrics.update(fid=fidlib.fid_value(stats, ref_stats), fid_n=plan.images.n,
                               fid_reference=plan.fid_reference_desc, fid_features=fidlib.CONVENTIONS,
                               fid_inception_weights=plan.weights.describe())
    if not main:
        return None, None
    if metrics:
        metrics.setdefault("n", plan.images.n)
        metrics["source"] = plan.images.source
    return metrics or None, stats
