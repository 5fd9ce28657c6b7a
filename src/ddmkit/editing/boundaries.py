"""Semantic boundaries: linear SVMs on z = x_{t_m} and on h (spec sections 4 and 7.3, 7.5).

    inv = invert(model, images, t_m, n_inv)                     # z and h of every labelled image
    b = fit_boundaries(model, images, labels, attribute="smiling", t_m=500)   # both spaces
    save_boundary("smiling.safetensors", b)                     # + smiling.json, a readable copy
    b = load_boundary("smiling.safetensors", model)             # refuses a boundary of another model

Classifier: `sklearn.svm.SVC(kernel="linear", C=1)` on raw flattened float64 features, no
standardisation. The unit normal n = w / |w| points to label 1 (attribute present), the intercept is
ignored for the move: distances are projections <x, n> through the origin. Held-out (test)
accuracy is the quality indicator; training accuracy is ~1 whenever dims >> samples.

Recommended editing distance (used when no distance is given, and the unit of relative distances
like "1.5x"), per space:
    d_rec = RECOMMENDED_FACTOR (2) * 95th percentile of |<x_i, n>| over the training latents x_i.
With dims >> samples the training set is separable and its projections sit on the SVM margins, so
the percentile is the larger margin |-b/|w| +- 1/|w||: where the fit put the training examples of
either class. The factor 2 was chosen on an earlier default faces model (t_m = 100, eta = 1, 48 held-out
faces, attribute classifier: 1x the percentile flipped smiling / eyeglasses in 71% / 38% of the faces,
2x in 98% / 94%). One factor does not fit every attribute; where a judge exists, `calibrate` sets the
distance per attribute (`ddmkit boundary fit --calibrate`, used for the shipped boundaries).

Files: one safetensors file per attribute holding `{space}.normal` (unit, float32, latent shape),
`{space}.coef` (raw w, float64) and `{space}.intercept` for space in z, h, with all metadata as JSON
in the safetensors header (key "ddmkit_boundary"); a `.json` copy of the metadata is written next to
it for reading. No pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import DdmkitError
from .ddim import GRID_RULE, invert
from .hspace import DEFAULT_MODULE

SPACES = ("z", "h")
FORMAT = "ddmkit-boundary"
FORMAT_VERSION = 1
LABEL_CONVENTION = "+1 (label 1) = attribute present; positive distance adds the attribute"
RECOMMENDED_FACTOR = 2.0
RECOMMENDED_PERCENTILE = 95.0
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "models" / "weights" / "boundaries"


# ----------------------------------------------------------------------------- model identity
def model_fingerprint(denoiser) -> dict:
    """`model_identity` (name + SHA-256 of the weights file); for an in-memory model without a file,
    the SHA-256 of its state dict (sorted names, raw bytes)."""
    from ..denoisers import unwrap
    from ..models.loading import model_identity

    ident = dict(model_identity(denoiser))
    if ident.get("sha256") is None:
        from .hspace import find_network

        net = find_network(denoiser)
        h = hashlib.sha256()
        for name, t in sorted(net.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        ident["sha256"] = h.hexdigest()
        ident["sha256_of"] = "state_dict"
        ident["name"] = ident.get("name") or getattr(unwrap(denoiser), "name", "in-memory")
    return ident


# ----------------------------------------------------------------------------- one space
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
    proj = xtr @ (w / norm)
    stats = {
        "n_train": int(len(y_train)),
        "n_train_positive": int(y_train.sum()),
        "train_accuracy": float(clf.score(xtr, y_train)),
        "kernel": "linear",
        "C": float(C),
        "fit_seconds": round(fit_seconds, 4),
        "projection_train": _projection_summary(proj, y_train),
    }
    stats["recommended_distance"] = recommended_distance(proj)
    stats["recommended_rule"] = f"{RECOMMENDED_FACTOR:g} * percentile_{RECOMMENDED_PERCENTILE:g}(|<x_train, n>|)"
    if x_test is not None and y_test is not None and len(y_test):
        y_test = normalise_labels(y_test)
        xte = np.asarray(x_test).reshape(len(x_test), -1).astype(np.float64)
        stats["n_test"] = int(len(y_test))
        stats["n_test_positive"] = int(y_test.sum())
        stats["test_accuracy"] = float(clf.score(xte, y_test))
        stats["projection_test"] = _projection_summary(xte @ (w / norm), y_test)
    else:
        stats["n_test"] = 0
        stats["test_accuracy"] = None
    return Boundary(space=space, normal=normal, coef=w.reshape(shape), intercept=float(clf.intercept_[0]), stats=stats)


def recommended_distance(proj: np.ndarray) -> float:
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


# ----------------------------------------------------------------------------- both spaces
@dataclass
class AttributeBoundary:
    """The boundaries of one attribute (or prompt) in z and/or h, with the shared metadata: model
    identity, t_m, n_inv, grid rule, h source, attribute, label convention, data, ddmkit version."""

    spaces: dict[str, Boundary]
    meta: dict
    path: str | None = None

    @property
    def attribute(self) -> str:
        return str(self.meta.get("attribute", "?"))

    @property
    def t_m(self) -> int:
        return int(self.meta["t_m"])

    @property
    def n_inv(self) -> int:
        return int(self.meta["n_inv"])

    @property
    def h_source(self) -> str:
        return str(self.meta.get("h_source", "last"))

    @property
    def hspace_module(self) -> str:
        return str(self.meta.get("hspace_module", DEFAULT_MODULE))

    def __getitem__(self, space: str) -> Boundary:
        if space not in self.spaces:
            raise DdmkitError(f"boundary {self.attribute!r} has no {space}-space normal (has {', '.join(self.spaces)})")
        return self.spaces[space]

    def full_meta(self) -> dict:
        m = dict(self.meta)
        m["spaces"] = {s: {"shape": list(b.shape), "intercept": b.intercept, **b.stats} for s, b in self.spaces.items()}
        return m


def fit_boundaries(denoiser, images: torch.Tensor | np.ndarray, labels: Sequence, *, attribute: str,
                   t_m: int = 500, n_inv: int = 40, h_source: str = "last", n_test: int | float = 0.5,
                   C: float = 1.0, seed: int = 0, batch_size: int = 50, hspace_module: str = DEFAULT_MODULE,
                   data: dict | None = None, inversions: tuple[torch.Tensor, torch.Tensor] | None = None,
                   invert_seconds: float | None = None, progress: bool = False) -> AttributeBoundary:
    """Invert labelled images to t_m and fit one SVM on z and one on h (spec section 4).

    `n_test` images (a count, or a fraction < 1) are held out, stratified, for the test accuracy.
    `inversions` = (z, h) skips the inversion (latents already computed with the same settings); the
    caller may pass the time it took as `invert_seconds` (recorded as null otherwise)."""
    from .. import __version__

    y = normalise_labels(labels)
    check_two_classes(y)
    t0 = time.perf_counter()
    if inversions is None:
        z, h = invert_batched(denoiser, images, t_m, n_inv, h_source=h_source, batch_size=batch_size,
                              hspace_module=hspace_module, progress=progress)
        invert_seconds = time.perf_counter() - t0
    else:
        z, h = inversions
    train_idx, test_idx = split_train_test(y, n_test, seed)
    spaces = {}
    for space, feats in (("z", z), ("h", h)):
        f = feats.cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
        spaces[space] = fit_svm(f[train_idx], y[train_idx], f[test_idx], y[test_idx], space=space, C=C)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "attribute": attribute,
        "label_convention": LABEL_CONVENTION,
        "model": model_fingerprint(denoiser),
        "t_m": int(t_m),
        "n_inv": int(n_inv),
        "grid_rule": GRID_RULE,
        "h_source": h_source,
        "hspace_module": hspace_module,
        "n_images": int(len(y)),
        "n_positive": int(y.sum()),
        "split_seed": int(seed),
        "invert_seconds": None if invert_seconds is None else round(invert_seconds, 3),
        "data": data or {},
        "ddmkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return AttributeBoundary(spaces=spaces, meta=meta)


def invert_batched(denoiser, images, t_m: int, n_inv: int, *, h_source: str = "last", batch_size: int = 50,
                   hspace_module: str = DEFAULT_MODULE, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`invert` over batches; returns (z, h) on the CPU."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images, dtype=torch.float32)
    zs, hs = [], []
    starts = range(0, len(x), max(1, int(batch_size)))
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"invert to t={t_m}", unit="batch")
    for i in starts:
        inv = invert(denoiser, x[i : i + batch_size], t_m, n_inv, h_source=h_source, hspace_module=hspace_module)
        zs.append(inv.z.cpu())
        hs.append(inv.h.cpu())
    return torch.cat(zs), torch.cat(hs)


# ----------------------------------------------------------------------------- files
def save_boundary(path: str | os.PathLike, boundary: AttributeBoundary, *, sidecar: bool = True) -> Path:
    """Write PATH (.safetensors: normals, coefs, intercepts; metadata JSON in the header) and, with
    `sidecar`, PATH with .json (the same metadata, for reading). Both writes are atomic."""
    from safetensors.numpy import save

    from ..io import atomic_write_bytes, atomic_write_json

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    tensors = {}
    for s, b in boundary.spaces.items():
        tensors[f"{s}.normal"] = np.ascontiguousarray(b.normal.astype(np.float32))
        tensors[f"{s}.coef"] = np.ascontiguousarray(b.coef.astype(np.float64))
        tensors[f"{s}.intercept"] = np.array([b.intercept], dtype=np.float64)
    meta = boundary.full_meta()
    data = save(tensors, metadata={"ddmkit_boundary": json.dumps(meta)})
    atomic_write_bytes(path, data)
    if sidecar:
        atomic_write_json(path.with_suffix(".json"), meta)
    boundary.path = str(path)
    return path


def read_boundary_file(path: str | os.PathLike) -> AttributeBoundary:
    """Read a boundary file without any model check."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DdmkitError(f"boundary file {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises SafetensorError / OSError on foreign or truncated files
        raise DdmkitError(f"{path} is not a ddmkit boundary file ({e.__class__.__name__}); fit one with `ddmkit boundary fit`") from None
    if "ddmkit_boundary" not in header:
        raise DdmkitError(f"{path} is a safetensors file without ddmkit boundary metadata; fit one with `ddmkit boundary fit`")
    try:
        meta = json.loads(header["ddmkit_boundary"])
    except json.JSONDecodeError:
        raise DdmkitError(f"{path} has corrupt boundary metadata; refit it") from None
    _check_meta(meta, path)
    spaces = {}
    for s, info in meta.pop("spaces").items():
        if f"{s}.normal" not in arrays:
            raise DdmkitError(f"{path} lacks the {s}-space normal its metadata lists; refit it")
        normal = arrays[f"{s}.normal"]
        if normal.dtype.kind != "f" or normal.ndim < 1 or not np.isfinite(normal).all() or not np.abs(normal).sum() > 0:
            raise DdmkitError(f"{path}: its {s}-space normal is not a finite, non-zero float array; refit it")
        stats = {k: v for k, v in info.items() if k not in ("shape", "intercept")}
        spaces[s] = Boundary(space=s, normal=normal.astype(np.float32),
                             coef=arrays.get(f"{s}.coef", normal).astype(np.float64),
                             intercept=float(np.asarray(arrays.get(f"{s}.intercept", np.zeros(1))).reshape(-1)[0]),
                             stats=stats)
    if not spaces:
        raise DdmkitError(f"{path} holds no normals; refit it")
    return AttributeBoundary(spaces=spaces, meta=meta, path=str(path))


def _check_meta(meta, path) -> None:
    """The metadata a boundary file must carry, with the types the editing code relies on."""
    problem = None
    if not isinstance(meta, dict):
        problem = "is not a JSON object"
    elif not isinstance(meta.get("spaces"), dict) or not all(isinstance(v, dict) for v in meta["spaces"].values()):
        problem = "has no 'spaces' table"
    elif set(meta["spaces"]) - {"z", "h"}:
        problem = f"names unknown spaces {sorted(set(meta['spaces']) - {'z', 'h'})}"
    elif not (isinstance(meta.get("t_m"), int) and meta["t_m"] >= 1):
        problem = "has no integer t_m >= 1"
    elif not (isinstance(meta.get("n_inv"), int) and meta["n_inv"] >= 2):
        problem = "has no integer n_inv >= 2"
    elif meta.get("h_source", "last") not in ("last", "tm"):
        problem = f"has h_source {meta.get('h_source')!r} (not 'last' or 'tm')"
    elif not isinstance(meta.get("hspace_module", DEFAULT_MODULE), str):
        problem = "has a non-text hspace_module"
    elif not isinstance(meta.get("model", {}), dict):
        problem = "has a malformed model fingerprint"
    if problem:
        raise DdmkitError(f"{path}: its boundary metadata {problem}; refit it with `ddmkit boundary fit`")


def check_boundary(boundary: AttributeBoundary, denoiser, *, t_m: int | None = None,
                   h_shape: tuple[int, ...] | None = None) -> list[str]:
    """Reasons why `boundary` does not fit the model (identity, shapes) or the expected t_m; [] if it fits."""
    problems = []
    want = boundary.meta.get("model", {})
    have = model_fingerprint(denoiser)
    if want.get("sha256") != have.get("sha256"):
        problems.append(
            f"it was fitted for model {want.get('name')!r} (sha256 {str(want.get('sha256'))[:12]}...) but the model is "
            f"{have.get('name')!r} (sha256 {str(have.get('sha256'))[:12]}...)"
        )
    if t_m is not None and int(t_m) != boundary.t_m:
        problems.append(f"it was fitted at t_m = {boundary.t_m}, not {t_m}")
    sample_shape = tuple(getattr(denoiser, "sample_shape", ()))
    if "z" in boundary.spaces and sample_shape and boundary["z"].shape != sample_shape:
        problems.append(f"its z shape {boundary['z'].shape} differs from the model's {sample_shape}")
    if "h" in boundary.spaces and h_shape is not None and boundary["h"].shape != tuple(h_shape):
        problems.append(f"its h shape {boundary['h'].shape} differs from the model's {tuple(h_shape)}")
    return problems


def load_boundary(path: str | os.PathLike, denoiser=None, *, force: bool = False, t_m: int | None = None,
                  h_shape: tuple[int, ...] | None = None) -> AttributeBoundary:
    """Read a boundary file and, with a model, refuse it when it was fitted for another model, t_m or
    shape (pass `force=True` to use it anyway)."""
    b = read_boundary_file(path)
    if denoiser is not None:
        if h_shape is None and "h" in b.spaces:
            from .hspace import hspace_shape

            h_shape = hspace_shape(denoiser, b.hspace_module)
        problems = check_boundary(b, denoiser, t_m=t_m, h_shape=h_shape)
        shape_problem = any("shape" in p for p in problems)
        if problems and (not force or shape_problem):
            fix = "fit a boundary for this model with `ddmkit boundary fit`" + ("" if shape_problem else ", or pass --force to use it anyway")
            raise DdmkitError(f"boundary {path} does not match: {'; '.join(problems)}; {fix}")
    return b


def shipped_boundaries() -> dict[str, Path]:
    """Name -> file of the boundaries shipped for the default model."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.safetensors"))}


def resolve_boundary(spec: str, denoiser=None, *, force: bool = False, t_m: int | None = None,
                     h_shape: tuple[int, ...] | None = None) -> AttributeBoundary:
    """`--boundary SPEC`: a file path, or the name of a boundary shipped for the default model."""
    p = Path(spec).expanduser()
    if p.is_file():
        return load_boundary(p, denoiser, force=force, t_m=t_m, h_shape=h_shape)
    if p.with_name(p.name + ".safetensors").is_file():
        return load_boundary(p.with_name(p.name + ".safetensors"), denoiser, force=force, t_m=t_m, h_shape=h_shape)
    shipped = shipped_boundaries()
    if spec in shipped:
        return load_boundary(shipped[spec], denoiser, force=force, t_m=t_m, h_shape=h_shape)
    names = ", ".join(shipped) or "none shipped yet"
    raise DdmkitError(
        f"boundary {spec!r} is neither a file nor a shipped boundary name ({names}); "
        "fit one with `ddmkit boundary fit --out FILE` and pass --boundary FILE"
    )


# ----------------------------------------------------------------------------- conditioning
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
