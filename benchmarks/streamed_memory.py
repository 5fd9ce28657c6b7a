"""Peak memory of training from an image folder against the folder's size: folders are streamed, so the peak
should not grow with the number of images (issue 19, data at scale).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/streamed_memory.py    # -> results/streamed_memory.json

For folders of 500, 2,000, 8,000 and 20,000 random 32x32 RGB PNGs, each command runs in its own process and its
peak resident memory (`wait4`'s ru_maxrss) is recorded: `ddmkit noise-classifier train --model default
--data FOLDER` (20 steps of 64) and `ddmkit train --data FOLDER` (a small UNet, 5 steps of 16). `in_memory_mb`
is what holding the folder as float32 (N, 3, 32, 32) would take: the size the peak would grow by. The noise
classifier's held-out set is 10% of the folder, at most 500 images (held in memory, scored in one batch): it
grows up to 5,000 images and is flat after.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import machine, write_json

SIZES = (500, 2000, 8000, 20000)
DDMKIT = [sys.executable, "-m", "ddmkit"]


def make_folder(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"im{i:05d}.png")


def peak_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak resident MB of the process, seconds)."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-500:]}")
    return usage.ru_maxrss / 1024.0, time.time() - t0


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            folder = Path(tmp) / f"f{n}"
            make_folder(folder, n)
            commands = {
                "noise-classifier train": DDMKIT + ["noise-classifier", "train", "--model", "default", "--data", str(folder),
                                                    "--steps", "20", "--batch-size", "64", "--k", "100", "--quiet",
                                                    "--out", str(Path(tmp) / f"clf{n}")],
                "train": DDMKIT + ["train", "--data", str(folder), "--steps", "5", "--batch-size", "16", "--channels",
                                   "16,32", "--attention", "0,0", "--quiet", "--out", str(Path(tmp) / f"run{n}")],
            }
            for name, cmd in commands.items():
                mb, secs = peak_mb(cmd)
                rows.append({"command": name, "images": n, "peak_mb": round(mb, 1), "seconds": round(secs, 1),
                             "in_memory_mb": round(n * 3 * 32 * 32 * 4 / 2**20, 1)})
                print(rows[-1], flush=True)
    growth = {}
    for name in ("noise-classifier train", "train"):
        r = {x["images"]: x["peak_mb"] for x in rows if x["command"] == name}
        growth[name] = {"500_to_20000": round(r[20000] - r[500], 1), "8000_to_20000": round(r[20000] - r[8000], 1)}
    write_json("streamed_memory.json", {"command": "OMP_NUM_THREADS=1 python benchmarks/streamed_memory.py",
                                        "machine": machine(), "rows": rows, "peak_growth_mb": growth,
                                        "in_memory_growth_mb": {"500_to_20000": round(19500 * 12288 / 2**20, 1),
                                                                "8000_to_20000": round(12000 * 12288 / 2**20, 1)}})


if __name__ == "__main__":
    main()
