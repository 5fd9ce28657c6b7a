"""Sample folders: resumable per-batch parts, the merged `samples.npz`, PNGs, grid and manifest.

Layout of an output folder DIR:
    DIR/parts/part-<first>-<last>.npz   indices + samples of one finished batch (atomic writes)
    DIR/parts/settings.json             what the parts were made with; a resumed run must match
    DIR/samples.npz                     array `x` (N, ...) float32 in the model's data range, `index`
    DIR/images/000000.png ..., DIR/grid.png   for image models
    DIR/manifest.json                   settings, seed, measured NFE per sample
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from . import __version__
from .errors import DdmkitError
from .io import atomic_save_npz, atomic_write_bytes, atomic_write_json, replace_dir


DIGEST_KEY = "settings_sha256"


def settings_digest(settings: dict) -> str:
    """The SHA-256 of the canonical JSON of a run's settings (carried by every part file)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def settings_diff(old, new, prefix: str = "") -> list[str]:
    """The dotted keys where two settings dicts differ (dmcmc.eta, options.s_tmin, ...)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [prefix.rstrip(".") or "settings"] if old != new else []
    keys = sorted(set(old) | set(new))
    return [d for k in keys for d in settings_diff(old.get(k), new.get(k), f"{prefix}{k}.")]


def _corrupt(path: Path, what: str, fix: str) -> DdmkitError:
    return DdmkitError(f"{path} is {what}; {fix}")


class PartStore:
    """Finished batches of a run, one file each, so an interrupted run resumes where it stopped.

    Every part carries the digest of the settings it was made with; parts of other settings are
    refused when the run is resumed or merged."""

    def __init__(self, out: str | os.PathLike, settings: dict):
        self.out = Path(out)
        self.dir = self.out / "parts"
        self.settings = json.loads(json.dumps(settings))
        self.digest = settings_digest(self.settings)
        settings_file = self.dir / "settings.json"
        if settings_file.is_file():
            try:
                old = json.loads(settings_file.read_text())
            except (ValueError, UnicodeDecodeError):
                raise _corrupt(settings_file, "not valid JSON (corrupt)",
                               f"delete {self.dir} to start the run over, or choose a new --out") from None
            if old != self.settings:
                diff = settings_diff(old, self.settings)
                raise DdmkitError(
                    f"{self.out} holds an unfinished run with other settings ({', '.join(diff)}); "
                    "rerun the same command to resume, or choose a new --out"
                )

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "settings.json").is_file():
            atomic_write_json(self.dir / "settings.json", self.settings)

    def remove(self) -> None:
        """Delete the parts once the merged output is written."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def _read(self, f: Path) -> dict[str, np.ndarray]:
        fix = f"delete that file and rerun the same command to recompute its samples"
        try:
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # truncated zip, object arrays (pickles are refused), not an npz
            raise _corrupt(f, f"unreadable ({e.__class__.__name__})", fix) from None
        digest = arrays.pop(DIGEST_KEY, None)
        if digest is None or str(digest) != self.digest:
            raise _corrupt(f, "a part of a run with other settings", fix)
        if "index" not in arrays or arrays["index"].dtype.kind not in "iu" or "x" not in arrays:
            raise _corrupt(f, "not a part file of this run (no integer index or no x)", fix)
        return arrays

    def done_indices(self) -> set[int]:
        done: set[int] = set()
        if self.dir.is_dir():
            for f in sorted(self.dir.glob("part-*.npz")):
                done.update(int(i) for i in self._read(f)["index"])
        return done

    def write(self, indices: Iterable[int], x: np.ndarray, **extra: np.ndarray) -> None:
        idx = np.asarray(list(indices), dtype=np.int64)
        atomic_save_npz(self.dir / f"part-{idx.min():08d}-{idx.max():08d}.npz", index=idx, x=x.astype(np.float32),
                        **extra, **{DIGEST_KEY: np.array(self.digest)})

    def gather(self, wanted: Iterable[int], shared_hint: bool = False) -> dict[str, np.ndarray]:
        """All parts merged and ordered by index; fails if any wanted index is missing
        (`shared_hint`: the run had several workers, so the message asks about a shared filesystem)."""
        arrays: dict[str, list[np.ndarray]] = {}
        for f in sorted(self.dir.glob("part-*.npz")):
            for k, v in self._read(f).items():
                arrays.setdefault(k, []).append(v)
        if not arrays:
            raise DdmkitError(f"no finished samples in {self.dir}"
                              + (" (is --out on a filesystem shared by every worker?)" if shared_hint else ""))
        merged = {k: np.concatenate(v) for k, v in arrays.items()}
        order = np.argsort(merged["index"], kind="stable")
        merged = {k: v[order] for k, v in merged.items()}
        idx = merged["index"]
        _, first = np.unique(idx, return_index=True)  # a batch written twice (e.g. killed mid-rename)
        merged = {k: v[first] for k, v in merged.items()}
        wanted = np.unique(np.asarray(list(wanted), dtype=np.int64))
        missing = np.setdiff1d(wanted, merged["index"])
        if len(missing):
            where = (" (with several workers, --out must be on a filesystem that every worker writes to)"
                     if shared_hint else "")
            raise DdmkitError(f"{len(missing)} samples are missing from {self.dir}{where}; "
                              "rerun the command to finish them")
        keep = np.isin(merged["index"], wanted)
        return {k: v[keep] for k, v in merged.items()}


SAMPLE_OUTPUTS = ("manifest.json", "samples.npz", "grid.png", "images", "metrics.json", "parts")


def clear_sample_outputs(out: str | os.PathLike) -> None:
    """Remove what `ddmkit sample` writes into a folder (the manifest first: the folder is then unfinished)."""
    out = Path(out)
    for name in SAMPLE_OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def manifest_header(settings: dict, denoiser, device: str, **extra) -> dict:
    """The part of a sample folder's manifest.json that every sampler writes: its settings, then the
    model's facts (domain, data range, sample shape) and the device."""
    rng = denoiser.data_range
    return {**settings, "ddmkit_version": __version__, "domain": denoiser.domain,
            "data_range": list(rng) if rng else None, "sample_shape": list(denoiser.sample_shape), **extra,
            "device": device}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_uint8(x: np.ndarray, data_range: tuple[float, float]) -> np.ndarray:
    """(N, C, H, W) in data_range -> uint8 (N, H, W, C), rounded."""
    lo, hi = data_range
    u = np.clip(np.round((x - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    return u.transpose(0, 2, 3, 1)


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 image with the samples tiled row by row."""
    n, h, w, c = images.shape
    ncols = ncols or max(1, int(math.ceil(math.sqrt(n))))
    nrows = int(math.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, ncols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = im
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray, scale: int = 1) -> None:
    """Write a uint8 (H, W, C) image as PNG atomically; C = 1 is saved as grey."""
    import io

    from PIL import Image

    im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_sample_folder(out: str | os.PathLike, x: np.ndarray, index: np.ndarray, manifest: dict,
                        data_range: tuple[float, float] | None, is_image: bool, extra: dict | None = None) -> None:
    """samples.npz, PNGs + grid for images, then manifest.json last (its presence means done)."""
    out = Path(out)
    atomic_save_npz(out / "samples.npz", x=x.astype(np.float32), index=index.astype(np.int64), **(extra or {}))
    if is_image and data_range is not None:
        u8 = to_uint8(x, data_range)
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".images.", suffix=".tmp"))
        try:
            for i, im in zip(index, u8):
                save_png(tmp / f"{int(i):06d}.png", im)
            os.chmod(tmp, 0o777 & ~_umask())
            replace_dir(tmp, out / "images")  # the folder holds exactly this run's images
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        save_png(out / "grid.png", image_grid(u8[:64]), scale=2)
    atomic_write_json(out / "manifest.json", manifest)
