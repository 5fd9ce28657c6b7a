"""Helpers shared by the benchmark scripts (not part of the installed package).

Scripts run as `python benchmarks/NAME.py`, so this folder is on `sys.path` and they `from common import ...`;
ddmkit itself is installed (`pip install -e .`): no script edits `sys.path`.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ddmkit.data.faces import ATTRIBUTES
from ddmkit.denoisers import Denoiser, NFECounter, unwrap
from ddmkit.io import atomic_save_npz, atomic_write_json

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(name: str, obj) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    atomic_write_json(path, obj)
    return path


def read_json(name: str, default=None):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else default


def log(msg) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


class Cache:
    """Arrays computed once and kept as FOLDER/NAME.npz, so that an interrupted benchmark resumes."""

    def __init__(self, folder: Path):
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)

    def arrays(self, name: str, fn: Callable[[], dict]) -> dict:
        path = self.dir / f"{name}.npz"
        if path.is_file():
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        out = fn()
        atomic_save_npz(path, **out)
        return out


def to_u8(x: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] as the uint8 a PNG holds."""
    return np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)


def from_u8(u: np.ndarray) -> np.ndarray:
    return u.astype(np.float32) / 127.5 - 1.0


def attribute_scores(pred: np.ndarray, ref_pred: np.ndarray, j: int, target: np.ndarray | None) -> dict:
    """An attribute edit judged by the faces classifier's calls (0/1, one column per attribute): `success` =
    share whose attribute j is the target, `preservation` = share whose five other calls all match the
    reference's, and each other attribute's flip rate."""
    others = [k for k in range(len(ATTRIBUTES)) if k != j]
    return {
        "success": float((pred[:, j] == target).mean()) if target is not None else None,
        "preservation": float((pred[:, others] == ref_pred[:, others]).all(1).mean()),
        "other_attribute_flip_rate": {ATTRIBUTES[k]: float((pred[:, k] != ref_pred[:, k]).mean()) for k in others},
    }


class PixelStats:
    """Running pixel statistics of image batches (N, C, H, W): per-channel mean and std over samples and
    pixels, the RMS, and the spread over samples (sqrt of the per-pixel variance across samples, averaged
    over pixels): for the exact posterior mean D(x, sigma) with x ~ p_sigma it is sqrt(Var x0 - MMSE)."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None

    def update(self, x: torch.Tensor | np.ndarray) -> "PixelStats":
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().double().cpu()
        if self.sum is None:
            self.sum, self.sumsq = torch.zeros(x.shape[1:], dtype=torch.float64), torch.zeros(x.shape[1:], dtype=torch.float64)
        self.n += len(x)
        self.sum += x.sum(0)
        self.sumsq += (x**2).sum(0)
        return self

    def to_json(self) -> dict:
        mean_img = self.sum / self.n
        ms_img = self.sumsq / self.n
        dims = tuple(range(1, mean_img.ndim))
        ch_mean = mean_img.mean(dims) if dims else mean_img
        ch_ms = ms_img.mean(dims) if dims else ms_img
        return {"n": self.n, "rms": float(ms_img.mean().sqrt()),
                "channel_mean": [round(float(v), 4) for v in ch_mean.reshape(-1)],
                "channel_std": [round(float(v), 4) for v in (ch_ms - ch_mean**2).clamp(min=0).sqrt().reshape(-1)],
                "spread_over_samples": float((ms_img - mean_img**2).clamp(min=0).mean().sqrt())}


def pixel_stats(x: torch.Tensor | np.ndarray) -> dict:
    """`PixelStats` of one array of images."""
    return PixelStats().update(x).to_json()


class RecordingDenoiser(NFECounter):
    """Counts calls and records `PixelStats` of D(x, sigma) (and of x) at the k-th call of every batch.

    D is computed as the wrapped model computes it (its `denoise`, then its clamp to the data range when
    it clips), so a sampler given this wrapper draws the same samples; `saturated` is the share of pixels
    of the unclamped D outside the data range. Call `next_batch()` between batches (e.g. from `sample`'s
    callback)."""

    def __init__(self, inner: Denoiser):
        super().__init__(inner)
        self.calls: list[dict] = []
        self._k = 0

    def next_batch(self, *_args) -> None:
        self._k = 0

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        model = unwrap(self.inner)
        raw = model.denoise(x, sigma)
        out = raw
        if model.clip_denoised and model.data_range is not None:
            out = raw.clamp(*model.data_range)
        if self._k == len(self.calls):
            self.calls.append({"sigma": float(sigma[0]), "d": PixelStats(), "x": PixelStats(), "saturated": 0.0, "px": 0})
        rec = self.calls[self._k]
        rec["d"].update(out)
        rec["x"].update(x)
        if model.data_range is not None:
            rec["saturated"] += float(((raw < model.data_range[0]) | (raw > model.data_range[1])).sum())
        rec["px"] += raw.numel()
        self._k += 1
        return out

    def to_json(self) -> list[dict]:
        return [{"call": k, "sigma": c["sigma"], "d": c["d"].to_json(), "x_rms": c["x"].to_json()["rms"],
                 "saturated": c["saturated"] / max(c["px"], 1)} for k, c in enumerate(self.calls)]
