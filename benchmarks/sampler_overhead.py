"""Sampler overhead: wall time / (measured NFE x bare model call time), per integrator.

On a 32x32 UNet2DModel with the default model's architecture (random weights: the cost does not
depend on the weights) at batch 64 on this CPU. The bare call time is the median of timed calls made
right before and after each sampler run and, more robustly, inside the run itself (a wrapper times
every model call); `overhead.json` uses the latter. Times are CPU times of this process (`time.process_time`,
one torch thread), which other processes on the machine do not inflate; wall times are recorded too.
Target: <= 1.05.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sampler_overhead.py    # -> results/overhead.json
"""
from __future__ import annotations

import statistics
import time

import torch

from common import machine, write_json
from ddmkit.denoisers import VPEpsDenoiser
from ddmkit.integrators import PerSampleGenerator
from ddmkit.sampling import integrate
from ddmkit.training import TrainConfig, build_scheduler, build_unet

SETTINGS = {"kar1": 6, "kar2": 6, "rd": 10, "em": 10, "pf": 10, "rk45": 1, "ddim": 10}
BATCH = 64


class TimedModel(torch.nn.Module):
    """Wraps the UNet and accumulates the CPU time spent inside its calls."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def forward(self, x, t):
        t0 = time.process_time()
        out = self.inner(x, t)
        self.seconds += time.process_time() - t0
        self.calls += 1
        return out


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = TrainConfig()
    unet = build_unet(cfg).eval()
    timed = TimedModel(unet)
    den = VPEpsDenoiser(timed, build_scheduler(cfg).alphas_cumprod, (3, 32, 32))
    x_vp = torch.randn(BATCH, 3, 32, 32)
    t = torch.full((BATCH,), 500)

    @torch.no_grad()
    def bare_call_time(repeats: int = 5) -> float:
        unet(x_vp, t)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            unet(x_vp, t)
            times.append(time.process_time() - t0)
        return statistics.median(times)

    rows = {}
    details = {}
    for name, steps in SETTINGS.items():
        call = bare_call_time()
        gen = PerSampleGenerator(range(BATCH))
        x = gen.randn((BATCH, 3, 32, 32)) * den.sigma_max
        opts = {"rtol": 1e-2, "atol": 1e-2} if name == "rk45" else None
        start = torch.full((BATCH,), den.sigma_max, dtype=torch.float64)
        timed.seconds, timed.calls = 0.0, 0
        t0, w0 = time.process_time(), time.perf_counter()
        _, nfe = integrate(den, x, start, name, steps, generator=gen, tweedie_sigma=den.sigma_min, options=opts)
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
        call_after = bare_call_time()
        per_call = (call + call_after) / 2
        assert timed.calls == nfe
        inside = timed.seconds / nfe  # the model call time measured during this very run
        rows[name] = round(cpu / (nfe * inside), 4)
        details[name] = {"nfe": nfe, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                         "model_call_cpu_s_during_run": round(inside, 4), "bare_call_cpu_s_separate": round(per_call, 4),
                         "ratio_vs_separate_bare_call": round(cpu / (nfe * per_call), 4)}
        print(f"{name}: NFE {nfe}, cpu {cpu:.2f}s, call {inside:.3f}s (separately {per_call:.3f}s), "
              f"ratio {rows[name]:.4f}", flush=True)
    write_json("overhead.json", rows)
    write_json("overhead_details.json", {"batch": BATCH, "model": "UNet2DModel (32,64,128), attention at 8x8, random weights",
                                         "machine": machine(), "integrators": details,
                                         "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sampler_overhead.py"})


if __name__ == "__main__":
    main()
