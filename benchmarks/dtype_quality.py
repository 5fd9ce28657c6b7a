"""Mixed precision: what `--dtype bf16/fp16` (CUDA autocast) does to sample quality and speed.

The shipped faces model (`--model default`), kar1 at 50 NFE (--steps 26: 2*26-3 = 49 + 1 Tweedie), the
same per-sample seeds under each dtype, so the runs differ only in the network's precision. Per dtype:
FD-faces (and its noise floor at the same n), samples per second (CUDA-synchronised wall time of the
sampling), and the paired pixel difference from the fp32 samples (mean / max |x_dtype - x_fp32| in
[-1, 1] units). Results: benchmarks/results/dtype_quality.json.

    python benchmarks/dtype_quality.py                                   # on a GPU: fp32, bf16, fp16, 10,000 faces
    python benchmarks/dtype_quality.py --device cpu --dtypes fp32 --num 64 --out /tmp/dq.json   # CPU smoke test

bf16/fp16 need CUDA: asked for without it, the script stops with a one-line error before sampling.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from common import RESULTS, machine
from ddmkit.errors import DdmkitError

STEPS = 26  # kar1: 2N - 3 = 49 NFE + 1 Tweedie = 50


def sample_faces_with(dtype: str, num: int, batch_size: int, device: str, seed: int) -> tuple[np.ndarray, float, float]:
    """Samples (N, 3, 32, 32), seconds of sampling, measured NFE per sample."""
    from ddmkit.denoisers import set_precision
    from ddmkit.models.loading import load_model
    from ddmkit.sampling import sample

    den = set_precision(load_model("default", device=device), dtype)
    sample(den, integrator="kar1", steps=STEPS, num=min(batch_size, num), seed=seed + 1, batch_size=batch_size)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = sample(den, integrator="kar1", steps=STEPS, num=num, seed=seed, batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return res.x.numpy(), time.perf_counter() - t0, res.nfe_per_sample


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--dtypes", default="fp32,bf16,fp16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "dtype_quality.json"))
    a = ap.parse_args()
    from ddmkit.distributed import resolve_device
    from ddmkit.metrics.evaluate import evaluate_images

    try:
        device = resolve_device(a.device)
        dtypes = sorted({d.strip() for d in a.dtypes.split(",") if d.strip()}, key=lambda d: (d != "fp32", d))
        bad = [d for d in dtypes if d not in ("fp32", "bf16", "fp16")]
        if bad or not dtypes:
            raise DdmkitError(f"--dtypes: choose from fp32, bf16, fp16, got {a.dtypes!r}")
        if not device.startswith("cuda") and any(d != "fp32" for d in dtypes):
            raise DdmkitError(f"--dtypes {a.dtypes}: bf16/fp16 need a CUDA device (here: {device}); "
                              "on CPU run --dtypes fp32")
        if a.num < 2:
            raise DdmkitError("--num must be >= 2 (FD needs at least 2 samples)")
    except DdmkitError as e:
        print(f"dtype_quality: error: {e}", file=sys.stderr)
        return 2
    rows, ref_x = [], None
    for dt in dtypes:
        x, seconds, nfe = sample_faces_with(dt, a.num, a.batch_size, device, a.seed)
        m = evaluate_images(x, "faces")
        row = {"dtype": dt, "n": a.num, "nfe_per_sample": nfe, "fd_faces": m["fd"],
               "fd_noise_floor": m["fd_noise_floor"], "fd_noise_floor_std": m["fd_noise_floor_std"],
               "sampling_s": round(seconds, 3), "samples_per_s": round(a.num / seconds, 2),
               "finite": bool(np.isfinite(x).all())}
        if dt == "fp32":
            ref_x = x
        if ref_x is not None:
            d = np.abs(x - ref_x)
            row.update(mean_abs_diff_vs_fp32=float(d.mean()), max_abs_diff_vs_fp32=float(d.max()))
        rows.append(row)
        print(f"{dt}: FD-faces {row['fd_faces']:.3f} (floor {row['fd_noise_floor']:.3f}), "
              f"{row['samples_per_s']:.1f} samples/s", flush=True)
    result = {
        "what": "FD-faces and speed of the default faces model under --dtype fp32/bf16/fp16 (CUDA autocast), "
                "kar1 at 50 NFE, the same per-sample seeds",
        "command": "python benchmarks/dtype_quality.py " + " ".join(sys.argv[1:]),
        "model": "default", "integrator": "kar1", "steps": STEPS, "num": a.num, "batch_size": a.batch_size,
        "seed": a.seed, "device": device, "machine": machine(), "rows": rows,
    }
    from ddmkit.io import atomic_write_json

    atomic_write_json(a.out, result)
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
