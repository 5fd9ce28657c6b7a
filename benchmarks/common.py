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
