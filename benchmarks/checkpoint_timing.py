"""Seconds per NFE of the real architectures, as ddmkit calls them, to plan runs with the real weights.

    OMP_NUM_THREADS=1 python benchmarks/checkpoint_timing.py            # writes benchmarks/results/checkpoint_timing.json
    python benchmarks/checkpoint_timing.py --threads 8 --out my.json    # another machine / thread count

Each architecture is built from its real config (configs.py) with random weights (the time does not
depend on the values), wrapped in the denoiser ddmkit uses for it (VP epsilon or VE score) and timed
on one batched call D(x, sigma) under torch.no_grad: the median of `--reps` calls after one warm-up
call, in CPU seconds of the process (with one thread: the compute time of one core, unaffected by
other jobs waiting for the same cores; wall seconds are recorded beside them). It is measured at batch 1 and at a measured batch `b`; when the paper runs use a larger batch
(DMCMC: 200 chains on CIFAR-10, 20 on CelebA-HQ), their time per NFE is extrapolated linearly from
the per-sample time at `b`, and the JSON says so ("extrapolated_from_batch").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from ddmkit.models.checkpoints import build_unet
from ddmkit.models.configs import get_arch
from ddmkit.models.loading import denoiser_from_unet

ROOT = Path(__file__).resolve().parents[1]

# (architecture, what uses it, measured batch b, paper batch)
CASES = [
    ("google/ddpm-cifar10-32", "DDPM CIFAR-10 (diffusers; DDIM cifar10.ckpt)", 16, 200),
    ("cifar10_ncsnpp_continuous", "VE NCSN++ CIFAR-10, DMCMC checkpoint_24.pth", 16, 200),
    ("celebahq_256_ncsnpp_continuous", "VE NCSN++ CelebA-HQ 256, DMCMC checkpoint_48.pth / google/ncsnpp-celebahq-256", 2, 20),
    ("google/ddpm-celebahq-256", "DDPM 256: SDEdit celeba_hq / church / bedroom (BoundaryDiffusion), google/ddpm-*-256", 2, 1),
    ("afhqdog_p2", "iDDPM/ADM AFHQ-Dog 256 (BoundaryDiffusion)", 2, 1),
]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_calls(den, batch: int, reps: int) -> tuple[float, float]:
    """(median CPU seconds, median wall seconds) of one batched call, after one warm-up call."""
    x = torch.randn(batch, *den.sample_shape)
    sigma = torch.full((batch,), 1.0)
    with torch.no_grad():
        den(x, sigma)  # warm-up
        cpu, wall = [], []
        for _ in range(reps):
            c0, w0 = time.process_time(), time.perf_counter()
            den(x, sigma)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=2, help="timed calls per batch size (median), after one warm-up")
    p.add_argument("--only", nargs="*", default=None, help="architecture names to time (default: all)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "checkpoint_timing.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, use, b, paper in CASES:
        if args.only and name not in args.only:
            continue
        arch = get_arch(name)
        torch.manual_seed(0)
        net = build_unet(arch.unet).eval()
        den = denoiser_from_unet(net, arch.scheduler, name=name)
        n_params = sum(q.numel() for q in net.parameters())
        t1, w1 = time_calls(den, 1, args.reps)
        tb, wb = time_calls(den, b, args.reps) if b > 1 else (t1, w1)
        per_sample = tb / b
        paper_s = tb if paper == b else (t1 if paper == 1 else per_sample * paper)
        row = {
            "arch": name, "used_for": use, "class": type(net).__name__, "params_millions": round(n_params / 1e6, 1),
            "resolution": arch.resolution, "s_per_nfe_batch1": round(t1, 3), "measured_batch": b,
            f"s_per_nfe_batch{b}": round(tb, 3), "s_per_sample_nfe": round(per_sample, 4), "paper_batch": paper,
            "s_per_nfe_paper_batch": round(paper_s, 2),
            "paper_batch_extrapolated_from_batch": b if paper not in (1, b) else None,
            "wall_s_batch1": round(w1, 3), f"wall_s_batch{b}": round(wb, 3),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        del net, den
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "what": "seconds per NFE (one batched denoiser call, torch.no_grad, float32) of each real architecture",
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "torch_threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "load_average_at_end": [round(v, 2) for v in load] if load else None},
        "method": f"median of {args.reps} calls after 1 warm-up, random weights. s_* are CPU seconds of the process "
                  "(time.process_time; with one torch thread, the compute time of one core), because the machine was "
                  "shared with a training job and wall times (wall_s_*) are inflated by waiting for a core. "
                  "Paper-batch times beyond the measured batch are per-sample time x paper batch (linear extrapolation)",
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    lines = ["| architecture | params | px | s/NFE batch 1 | s/NFE batch b (b) | s per sample-NFE | paper batch | s/NFE at paper batch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        b = r["measured_batch"]
        ext = " (extrapolated)" if r["paper_batch_extrapolated_from_batch"] else ""
        lines.append(f"| {r['arch']} | {r['params_millions']}M | {r['resolution']} | {r['s_per_nfe_batch1']} | "
                     f"{r[f's_per_nfe_batch{b}']} ({b}) | {r['s_per_sample_nfe']} | {r['paper_batch']} | "
                     f"{r['s_per_nfe_paper_batch']}{ext} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
