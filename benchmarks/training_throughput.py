"""Training throughput of `ddmkit train` in images/s: the default path (CPU batches) vs the device-batch path.

    OMP_NUM_THREADS=1 python benchmarks/training_throughput.py                 # -> results/training_throughput.json
    python benchmarks/training_throughput.py --device cuda --part gpu          # -> results/training_throughput.gpu.json
    python benchmarks/training_throughput.py --runs device-batches@64 --warmup 2 --steps 4 --part dry   # a quick look

Each run is the library's `train()` on the faces with the default model's architecture (2.7M parameters)
and one of the configurations below, for `--warmup` + `--steps` optimizer steps. A callback reads the
clocks when the warm-up steps are done and when the last step is done (waiting for the device at both),
so building the UNet, compiling it, the first steps, the checkpoint and the export stay out of the figure:
images/s = steps x batch / wall seconds between the two. On the CPU the runs use one thread (`--threads`)
and the rate per CPU-second of the process is recorded beside it (what one core does, unaffected by the
other jobs sharing the machine's cores). Configurations:

    cpu-batches                    the default path: numpy faces, noise from a CPU generator, fp32
                                   (`--workers` processes render ahead on a GPU, as the earlier GPU runs did)
    device-batches                 faces rendered in torch on the device, noise drawn there (fp32)
    device-batches+channels-last   and NHWC weights and inputs
    device-batches+bf16+channels-last[+compile]      and bf16 autocast [and torch.compile] (CUDA only)

Also recorded: the torch renderer against the numpy one on the device (`--check-faces` faces, uint8 pixels
equal, largest difference) and both renderers' faces/s.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, replace

import numpy as np
import torch

from common import log, machine, write_json
from ddmkit.data.faces import render_faces, sample_face_params, sample_faces, to_tensor_range
from ddmkit.data.faces_torch import face_params_to_torch, faces_batch, render_faces_torch
from ddmkit.fast_training import FastOptions
from ddmkit.training import TrainConfig, train

CONFIGS = {
    "cpu-batches": FastOptions(),
    "device-batches": FastOptions(device_batches=True),
    "device-batches+channels-last": FastOptions(device_batches=True, channels_last=True),
    "device-batches+bf16+channels-last": FastOptions(device_batches=True, dtype="bf16", channels_last=True),
    "device-batches+bf16+channels-last+compile": FastOptions(device_batches=True, dtype="bf16", channels_last=True,
                                                             compile=True),
}
DEFAULT_RUNS = {
    "cpu": ["cpu-batches@32", "device-batches@32", "device-batches+channels-last@32",
            "cpu-batches@128", "device-batches@128", "device-batches+channels-last@128",
            "cpu-batches@256", "device-batches@256", "device-batches+channels-last@256"],
    "cuda": ["cpu-batches@1024", "device-batches@1024", "device-batches@4096",
             "device-batches+bf16+channels-last@1024", "device-batches+bf16+channels-last@4096",
             "device-batches+bf16+channels-last@8192", "device-batches+bf16+channels-last+compile@4096"],
}


class StepClock:
    """A `train` callback: wall and process-CPU clocks after step `start` and after step `end`."""

    def __init__(self, start: int, end: int, cuda: bool):
        self.start, self.end, self.cuda = start, end, cuda
        self.marks: dict[int, tuple[float, float]] = {}
        self.loss = float("nan")

    def __call__(self, info: dict) -> None:
        if info["step"] in (self.start, self.end):
            if self.cuda:
                torch.cuda.synchronize()
            self.marks[info["step"]] = (time.perf_counter(), time.process_time())
            self.loss = float(info["loss"])


def time_run(name: str, batch: int, args) -> dict:
    """One configuration at one batch size: train warm-up + steps, time the steps after the warm-up."""
    cuda = torch.device(args.device).type == "cuda"
    fast = CONFIGS[name]
    cfg = replace(TrainConfig(), steps=args.warmup + args.steps, batch_size=batch, checkpoint_every=10**8,
                  device=args.device, threads=args.threads, fast=fast,
                  workers=args.workers if cuda and not fast.device_batches else 0)
    clock = StepClock(args.warmup, args.warmup + args.steps, cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ddmkit-throughput-") as tmp:
        train(cfg, tmp, progress=False, callback=clock)
    (w0, c0), (w1, c1) = clock.marks[clock.start], clock.marks[clock.end]
    row = {"config": name, "batch": batch, "warmup_steps": args.warmup, "steps": args.steps,
           "wall_s": round(w1 - w0, 4), "images_per_s": round(args.steps * batch / (w1 - w0), 1),
           "process_cpu_s": round(c1 - c0, 4), "run_wall_s": round(time.perf_counter() - t0, 1),
           "loss_at_end": round(clock.loss, 5), "workers": cfg.workers, "options": asdict(fast)}
    if not cuda:
        row["images_per_cpu_s"] = round(args.steps * batch / (c1 - c0), 1)
    else:
        row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def _seconds(fn, cuda: bool, reps: int = 3) -> float:
    """Seconds per call of `fn` after one warm-up call: wall (waiting for the GPU) on CUDA, process CPU
    seconds on the CPU."""
    fn(0)
    if cuda:
        torch.cuda.synchronize()
    clock = time.perf_counter if cuda else time.process_time
    t0 = clock()
    for rep in range(reps):
        fn(rep + 1)
    if cuda:
        torch.cuda.synchronize()
    return (clock() - t0) / reps


def check_faces(device: str, num: int) -> dict:
    """The torch renderer on `device` against the numpy one on the same parameters, and both renderers' speed."""
    params = sample_face_params(num, seed=12345)
    ref = np.concatenate([render_faces({k: v[i:i + 256] for k, v in params.items()}) for i in range(0, num, 256)])
    got = render_faces_torch(face_params_to_torch(params, device)).cpu().numpy()
    diff = np.abs(ref.astype(np.int16) - got.astype(np.int16))
    cuda = torch.device(device).type == "cuda"
    numpy_s = _seconds(lambda seed: to_tensor_range(sample_faces(num, seed)[0]), cuda=False)
    torch_s = _seconds(lambda seed: faces_batch(num, seed, device), cuda)
    return {"faces": num, "device": device, "pixels_equal_fraction": float((diff == 0).mean()),
            "max_abs_difference": int(diff.max()),
            "faces_with_a_difference": int((diff.reshape(num, -1).max(1) > 0).sum()),
            "numpy_faces_per_cpu_s": round(num / numpy_s, 1), "torch_faces_per_s": round(num / torch_s, 1),
            "timing": "a batch in [-1, 1] from its seed (parameters, render, mapping); numpy in CPU seconds of "
                      "one thread, torch likewise on the CPU and in wall seconds on CUDA"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", default=None, help="comma-separated CONFIG@BATCH (default: per device, see DEFAULT_RUNS)")
    ap.add_argument("--warmup", type=int, default=None, help="steps before the clock starts (default: 3 CPU, 10 CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 24 CPU, 30 CUDA)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    ap.add_argument("--workers", type=int, default=12, help="rendering processes of the cpu-batches path on a GPU")
    ap.add_argument("--check-faces", type=int, default=4096)
    ap.add_argument("--part", default="", help="write results/training_throughput.PART.json instead")
    args = ap.parse_args()
    kind = torch.device(args.device).type
    args.warmup = args.warmup if args.warmup is not None else (10 if kind == "cuda" else 3)
    args.steps = args.steps if args.steps is not None else (30 if kind == "cuda" else 24)
    if args.threads:
        torch.set_num_threads(args.threads)
    if kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    runs = args.runs.split(",") if args.runs else DEFAULT_RUNS[kind]
    name = f"training_throughput.{args.part}.json" if args.part else "training_throughput.json"
    command = "python benchmarks/training_throughput.py " + " ".join(sys.argv[1:])
    result = {"command": command.strip(), "machine": machine(), "device": args.device, "model": "default faces architecture (32,64,128; attention 0,0,1)",
              "faces_check": check_faces(args.device, args.check_faces), "rows": []}
    log(f"faces check: {result['faces_check']}")
    for spec in runs:
        config, batch = spec.rsplit("@", 1)
        try:
            row = time_run(config, int(batch), args)
        except Exception as e:  # one failing configuration (say, compile) must not lose the others' rows
            row = {"config": config, "batch": int(batch), "error": f"{type(e).__name__}: {e}"[:500]}
        result["rows"].append(row)
        log(row)
        write_json(name, result)
    print(f"\n{'config':<44} {'batch':>6} {'images/s':>10} {'images/cpu-s':>13}")
    for r in result["rows"]:
        print(f"{r['config']:<44} {r['batch']:>6} {r.get('images_per_s', 'error'):>10} {r.get('images_per_cpu_s', ''):>13}")


if __name__ == "__main__":
    main()
