"""Boundary files: save, read, check against a model, load, and find the shipped ones (spec decision 7.5).

    save_boundary("smiling.safetensors", b)                     # + smiling.json, a readable copy
    b = load_boundary("smiling.safetensors", model)             # refuses a boundary of another model
    b = resolve_boundary("smiling", model)                      # a file, or a boundary shipped for the default model

One safetensors file per attribute holding `{space}.normal` (unit, float32, latent shape),
`{space}.coef` (raw w, float64) and `{space}.intercept` for space in z, h, with all metadata as JSON
in the safetensors header (key "ddmkit_boundary"); a `.json` copy of the metadata is written next to
it for reading. No pickle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from ..assets import shipped_model
from ..errors import DdmkitError
from ..io import atomic_write_bytes, atomic_write_json
from .attribute import SPACES, AttributeBoundary
from .fingerprint import model_fingerprint
from .hspace import DEFAULT_MODULE, hspace_shape
from .settings import H_SOURCES
from .svm import Boundary

SHIPPED_DIR = shipped_model("default").boundaries_dir  # the boundaries shipped for the default model
HEADER_KEY = "ddmkit_boundary"


def save_boundary(path: str | os.PathLike, boundary: AttributeBoundary, *, sidecar: bool = True) -> Path:
    """Write PATH (.safetensors: normals, coefs, intercepts; metadata JSON in the header) and, with
    `sidecar`, PATH with .json (the same metadata, for reading). Both writes are atomic."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    tensors = {}
    for s, b in boundary.spaces.items():
        tensors[f"{s}.normal"] = np.ascontiguousarray(b.normal.astype(np.float32))
        tensors[f"{s}.coef"] = np.ascontiguousarray(b.coef.astype(np.float64))
        tensors[f"{s}.intercept"] = np.array([b.intercept], dtype=np.float64)
    meta = boundary.full_meta()
    data = save(tensors, metadata={HEADER_KEY: json.dumps(meta)})
    atomic_write_bytes(path, data)
    if sidecar:
        atomic_write_json(path.with_suffix(".json"), meta)
    boundary.path = str(path)
    return path


def read_boundary_file(path: str | os.PathLike) -> AttributeBoundary:
    """Read a boundary file without any model check."""
    path = Path(path)
    header, arrays = _read_safetensors(path)
    try:
        meta = json.loads(header[HEADER_KEY])
    except json.JSONDecodeError:
        raise DdmkitError(f"{path} has corrupt boundary metadata; refit it") from None
    _check_meta(meta, path)
    spaces = {s: _read_space(path, s, info, arrays) for s, info in meta.pop("spaces").items()}
    if not spaces:
        raise DdmkitError(f"{path} holds no normals; refit it")
    return AttributeBoundary(spaces=spaces, meta=meta, path=str(path))


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    """(header metadata, arrays) of a safetensors file that carries ddmkit boundary metadata."""
    if not path.is_file():
        raise DdmkitError(f"boundary file {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises SafetensorError / OSError on foreign or truncated files
        raise DdmkitError(f"{path} is not a ddmkit boundary file ({e.__class__.__name__}); fit one with `ddmkit boundary fit`") from None
    if HEADER_KEY not in header:
        raise DdmkitError(f"{path} is a safetensors file without ddmkit boundary metadata; fit one with `ddmkit boundary fit`")
    return header, arrays


def _read_space(path: Path, s: str, info: dict, arrays: dict) -> Boundary:
    if f"{s}.normal" not in arrays:
        raise DdmkitError(f"{path} lacks the {s}-space normal its metadata lists; refit it")
    normal = arrays[f"{s}.normal"]
    if normal.dtype.kind != "f" or normal.ndim < 1 or not np.isfinite(normal).all() or not np.abs(normal).sum() > 0:
        raise DdmkitError(f"{path}: its {s}-space normal is not a finite, non-zero float array; refit it")
    stats = {k: v for k, v in info.items() if k not in ("shape", "intercept")}
    return Boundary(space=s, normal=normal.astype(np.float32),
                    coef=arrays.get(f"{s}.coef", normal).astype(np.float64),
                    intercept=float(np.asarray(arrays.get(f"{s}.intercept", np.zeros(1))).reshape(-1)[0]),
                    stats=stats)


def _meta_problem(meta) -> str | None:
    """What is wrong with a boundary file's metadata (the types the editing code relies on), or None."""
    if not isinstance(meta, dict):
        return "is not a JSON object"
    if not isinstance(meta.get("spaces"), dict) or not all(isinstance(v, dict) for v in meta["spaces"].values()):
        return "has no 'spaces' table"
    if set(meta["spaces"]) - set(SPACES):
        return f"names unknown spaces {sorted(set(meta['spaces']) - set(SPACES))}"
    if not (isinstance(meta.get("t_m"), int) and meta["t_m"] >= 1):
        return "has no integer t_m >= 1"
    if not (isinstance(meta.get("n_inv"), int) and meta["n_inv"] >= 2):
        return "has no integer n_inv >= 2"
    if meta.get("h_source", "last") not in H_SOURCES:
        return f"has h_source {meta.get('h_source')!r} (not 'last' or 'tm')"
    if not isinstance(meta.get("hspace_module", DEFAULT_MODULE), str):
        return "has a non-text hspace_module"
    if not isinstance(meta.get("model", {}), dict):
        return "has a malformed model fingerprint"
    return None


def _check_meta(meta, path) -> None:
    problem = _meta_problem(meta)
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
