"""The model-free linear algebra of semantic boundaries (InterFaceGAN's three functions, in one space).

    b = fit_svm(x_train, y_train, x_test, y_test, space="z")   # train a boundary: a linear SVM
    x2 = move(x, b.normal, d)                                  # move along the unit normal
    n = condition_normal(b.normal, [other.normal])             # conditional manipulation

Classifier (BoundaryDiffusion spec section 4): `sklearn.svm.SVC(kernel="linear", C=1)` on raw
flattened float64 features, no standardisation. The unit normal n = w / |w| points to label 1
(attribute present), the intercept is ignored for the move: distances are projections <x, n> through
the origin. Held-out (test) accuracy is the quality indicator; training accuracy is ~1 whenever
dims >> samples.

Recommended editing distance (used when no distance is given, and the unit of relative distances
like "1.5x"), per space:
    d_rec = RECOMMENDED_FACTOR (2) * 95th percentile of |<x_i, n>| over the training latents x_i.
With dims >> samples the training set is separable and its projections sit on the SVM margins, so
the percentile is the larger margin |-b/|w| +- 1/|w||: where the fit put the training examples of
either class. The factor 2 was chosen on an earlier default faces model (t_m = 100, eta = 1, 48 held-out
faces, attribute classifier: 1x the percentile flipped smiling / eyeglasses in 71% / 38% of the faces,
2x in 98% / 94%). One factor does not fit every attribute; where a judge exists, `calibrate` sets the
distance per attribute (`ddmkit boundary fit --calibrate`, used for the shipped boundaries).

Moves (spec decision 7.3): "set" x' = x + (d - <x, n>) n puts the projection at d; "add" x' = x + d n.
Nothing here touches a model: arrays in, arrays out.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import DdmkitError

RECOMMENDED_FACTOR = 2.0
RECOMMENDED_PERCENTILE = 95.0
MOVES = ("set", "add")


@dataclass
class Boundary:
    """The SVM of one space: unit `normal` (latent shape, float32), raw `coef` (float64), `intercept`,
    and `stats` (n_train, n_test, accuracies, projection percentiles, recommended distance)."""

    space: str
    normal: np.ndarray
    coef: np.ndarray
    intercept: float
    stats: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.normal.shape)

    @property
    def recommended_distance(self) -> float:
        return float(self.stats.get("recommended_distance", 0.0))

    def normal_tensor(self, like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.normal).to(device=like.device, dtype=like.dtype)

    def project(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """<x, n> per sample (float64), the signed distance through the origin."""
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        x = x.reshape(len(x), -1).astype(np.float64)
        if x.shape[1] != self.normal.size:
            raise DdmkitError(f"{self.space} latents have {x.shape[1]} dims but the boundary has {self.normal.size}")
        return x @ self.normal.reshape(-1).astype(np.float64)

    def margin(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """The SVM's signed margin <x, n> + b / |w| (diagnostics only; edits use `project`)."""
        return self.project(x) + self.intercept / float(np.linalg.norm(self.coef))


def fit_svm(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray | None = None,
            y_test: np.ndarray | None = None, *, space: str = "z", C: float = 1.0) -> Boundary:
    """A linear SVM (SVC(kernel="linear", C)) on flattened float64 features; labels 0/1, -1/+1 or bool."""
    from sklearn.svm import SVC

    y_train = normalise_labels(y_train)
    check_two_classes(y_train, "training")
    xtr = np.asarray(x_train).reshape(len(x_train), -1).astype(np.float64)
    t0 = time.perf_counter()
    clf = SVC(kernel="linear", C=C)
    clf.fit(xtr, y_train)
    fit_seconds = time.perf_counter() - t0
    w = clf.coef_.reshape(-1).astype(np.float64)
    if list(clf.classes_) != [0, 1]:
        raise DdmkitError("internal: expected SVM classes [0, 1]")
    norm = float(np.linalg.norm(w))
    if not norm > 0:
        raise DdmkitError(f"the {space} SVM found no direction (|w| = 0); the two classes' latents do not differ")
    shape = tuple(np.asarray(x_train).shape[1:])
    normal = (w / norm).reshape(shape).astype(np.float32)
    stats = _train_stats(clf, xtr, y_train, w / norm, C, fit_seconds)
    stats.update(_test_stats(clf, x_test, y_test, w / norm))
    return Boundary(space=space, normal=normal, coef=w.reshape(shape), intercept=float(clf.intercept_[0]), stats=stats)


def _train_stats(clf, xtr: np.ndarray, y: np.ndarray, unit: np.ndarray, C: float, fit_seconds: float) -> dict:
    proj = xtr @ unit
    stats = {
        "n_train": int(len(y)),
        "n_train_positive": int(y.sum()),
        "train_accuracy": float(clf.score(xtr, y)),
        "kernel": "linear",
        "C": float(C),
        "fit_seconds": round(fit_seconds, 4),
        "projection_train": _projection_summary(proj, y),
    }
    stats["recommended_distance"] = recommended_distance(proj)
    stats["recommended_rule"] = f"{RECOMMENDED_FACTOR:g} * percentile_{RECOMMENDED_PERCENTILE:g}(|<x_train, n>|)"
    return stats


def _test_stats(clf, x_test: np.ndarray | None, y_test: np.ndarray | None, unit: np.ndarray) -> dict:
    if x_test is None or y_test is None or not len(y_test):
        return {"n_test": 0, "test_accuracy": None}
    y_test = normalise_labels(y_test)
    xte = np.asarray(x_test).reshape(len(x_test), -1).astype(np.float64)
    return {"n_test": int(len(y_test)), "n_test_positive": int(y_test.sum()),
            "test_accuracy": float(clf.score(xte, y_test)), "projection_test": _projection_summary(xte @ unit, y_test)}


def recommended_distance(proj: np.ndarray) -> float:
    """RECOMMENDED_FACTOR x the RECOMMENDED_PERCENTILE-th percentile of |projections| (module docstring)."""
    return float(RECOMMENDED_FACTOR * np.percentile(np.abs(proj), RECOMMENDED_PERCENTILE))


def _projection_summary(proj: np.ndarray, y: np.ndarray) -> dict:
    out = {}
    for name, sel in (("positive", y == 1), ("negative", y == 0)):
        p = proj[sel]
        out[name] = {"mean": float(p.mean()), "std": float(p.std()), "p5": float(np.percentile(p, 5)),
                     "p95": float(np.percentile(p, 95))} if len(p) else None
    return out


def normalise_labels(y: Iterable) -> np.ndarray:
    """Labels as int 0/1: accepts 0/1, -1/+1 and booleans (+1 / 1 / True = attribute present)."""
    y = np.asarray(list(y) if not isinstance(y, np.ndarray) else y)
    if y.dtype == bool:
        return y.astype(np.int64)
    vals = set(np.unique(y).tolist())
    if vals <= {0, 1}:
        return y.astype(np.int64)
    if vals <= {-1, 1}:
        return (y > 0).astype(np.int64)
    raise DdmkitError(f"labels must be 0/1 or -1/+1, got values {sorted(vals)[:6]}")


def check_two_classes(y: np.ndarray, what: str = "label") -> None:
    """Refuse a label set without both classes (an SVM needs images with and without the attribute)."""
    n1 = int(np.sum(y == 1))
    n0 = int(np.sum(y == 0))
    if n1 == 0 or n0 == 0:
        present = "present" if n0 == 0 else "absent"
        raise DdmkitError(
            f"the {what} set has a single class (all {len(y)} images have the attribute {present}); "
            "a boundary needs images with and without the attribute"
        )


def split_train_test(labels: np.ndarray, n_test: int | float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified shuffled split: (train indices, test indices). `n_test` is a count or a fraction < 1."""
    y = normalise_labels(labels)
    check_two_classes(y)
    n = len(y)
    k = int(round(n * n_test)) if isinstance(n_test, float) and n_test < 1 else int(n_test)
    if not 0 <= k < n - 1:
        raise DdmkitError(f"cannot hold out {k} of {n} images for testing; need at least 2 for training")
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        take = int(round(k * len(idx) / n))
        test.extend(idx[:take].tolist())
    test_idx = np.array(sorted(test), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(n), test_idx)
    check_two_classes(y[train_idx], "training")
    return rng.permutation(train_idx), test_idx


def condition_normal(normal: np.ndarray, conditions: Sequence[np.ndarray]) -> np.ndarray:
    """InterFaceGAN's conditional manipulation: remove from `normal` its components along the
    condition normals and renormalise. One condition: n1' = (n1 - <n1,n2> n2) / |...|; several: the
    projection onto the orthogonal complement of their span (Gram-Schmidt)."""
    n = np.asarray(normal, np.float64).reshape(-1)
    basis: list[np.ndarray] = []
    for c in conditions:
        v = np.asarray(c, np.float64).reshape(-1).copy()
        if v.shape != n.shape:
            raise DdmkitError(f"a condition normal has {v.size} dims but the edited normal has {n.size}")
        for b in basis:
            v -= (v @ b) * b
        nv = np.linalg.norm(v)
        if nv > 1e-8:
            basis.append(v / nv)
    for b in basis:
        n = n - (n @ b) * b
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise DdmkitError("the edited normal lies (almost) in the span of the condition normals; nothing is left to edit")
    return (n / norm).reshape(np.asarray(normal).shape).astype(np.float32)


def move(x: torch.Tensor, normal: np.ndarray | torch.Tensor, d: float | torch.Tensor, mode: str = "set") -> torch.Tensor:
    """Move each sample of x along the unit normal: "set" <x', n> = d, or "add" x' = x + d n (float64 math)."""
    if mode not in MOVES:
        raise DdmkitError(f"move must be 'set' or 'add', got {mode!r}")
    n = torch.as_tensor(np.asarray(normal) if not isinstance(normal, torch.Tensor) else normal).to(x.device, torch.float64).reshape(-1)
    flat = x.reshape(x.shape[0], math.prod(x.shape[1:])).double()  # also for an empty batch
    if flat.shape[1] != n.numel():
        raise DdmkitError(f"latents have {flat.shape[1]} dims but the normal has {n.numel()}")
    d = torch.as_tensor(d, dtype=torch.float64, device=x.device).reshape(-1)
    step = d - flat @ n if mode == "set" else d.expand(flat.shape[0])
    return (flat + step[:, None] * n[None, :]).reshape(x.shape).to(x.dtype)
