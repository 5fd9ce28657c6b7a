"""Helpers shared by the benchmark scripts (not part of the installed package)."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    import os

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
    from ddmkit.io import atomic_write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    atomic_write_json(path, obj)
    return path


def read_json(name: str, default=None):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else default
