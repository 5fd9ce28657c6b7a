"""Training options that keep a GPU busy: `ddmkit train --device-batches --dtype bf16 --channels-last --compile`.

The default path renders each batch with numpy on the CPU and draws its timesteps and noise from a CPU
generator (the same numbers on every device); on an H200 that kept the GPU waiting (about 3,900 images/s at
batch 1,024, docs/reproduce.md section 6). These options move that work to the training device:

- `device_batches`: the synthetic faces of step k are the default path's faces (the same numpy parameters,
  `data/faces_torch.py` renders them on the device); a folder or the digits is held on the device as one
  float32 bank, sampled with a generator on the device seeded by (seed, step). The timesteps and the noise
  come from a generator on the device seeded like the CPU one: a run is reproducible on the same kind of
  device, and a CUDA run draws other noise than a CPU run.
- `dtype="bf16"`: the UNet under CUDA autocast (weights, optimizer and loss in float32).
- `channels_last`: NHWC weights and inputs (cuDNN's fast layout for bf16 convolutions).
- `compile`: `torch.compile` of the UNet (the optimizer and EMA stay eager; the first step compiles).

bf16 and compile are refused on a CPU: on this project's CPU (one thread, batch 32, forward + backward) a bf16
step was barely faster than fp32 (67 vs 63 images/s; 58 vs 64 with channels-last) while changing the
numerics, and compiling the UNet took 5 minutes for steps 20% slower (0.61 vs 0.51 CPU-seconds). Device batches and channels-last are allowed there (the CPU dry run of
the GPU job uses them).

Large batches: `scaled_lr` is the square-root rule for Adam (Malladi et al., NeurIPS 2022: lr x sqrt(k) for a
k-times larger batch), with the linear warm-up of `TrainConfig.warmup_steps`; the shipped model's stage 3
used it (3e-4 at batch 256 -> 6e-4 at 1,024).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .data.faces_torch import faces_batch
from .errors import DdmkitError

TRAIN_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class FastOptions:
    """Where batches and noise are made and how the UNet runs; all off by default (the default path)."""

    device_batches: bool = False
    dtype: str = "fp32"  # "fp32", or "bf16" autocast (CUDA)
    channels_last: bool = False
    compile: bool = False


def fast_option_problems(opts: FastOptions, device: str, workers: int) -> list[str]:
    """One line per setting that cannot run (or makes no sense) on `device`; empty when all is well."""
    problems = []
    on_cpu = torch.device(device).type == "cpu"
    if opts.dtype not in TRAIN_PRECISIONS:
        problems.append(f"--dtype must be one of {', '.join(TRAIN_PRECISIONS)}, got {opts.dtype!r}")
    elif opts.dtype != "fp32" and on_cpu:
        problems.append(f"--dtype {opts.dtype} needs a CUDA device (on a CPU it is barely faster and changes the "
                        "numerics); use --dtype fp32 or --device cuda")
    if opts.compile and on_cpu:
        problems.append("--compile needs a CUDA device (on a CPU the UNet compiles for minutes and steps slower); "
                        "drop --compile or use --device cuda")
    if opts.device_batches and workers:
        problems.append("--workers renders batches on the CPU, --device-batches on the device: drop --workers")
    return problems


def check_fast_options(opts: FastOptions, device: str, workers: int) -> None:
    problems = fast_option_problems(opts, device, workers)
    if problems:
        raise DdmkitError("; ".join(problems))


def scaled_lr(lr: float, batch_size: int, reference_batch: int) -> float:
    """The square-root rule: `lr` tuned at `reference_batch`, used at `batch_size` (module docstring)."""
    if batch_size < 1 or reference_batch < 1:
        raise DdmkitError(f"batch sizes must be >= 1, got {batch_size} and {reference_batch}")
    return lr * math.sqrt(batch_size / reference_batch)


def step_generator(opts: FastOptions, seed: int, device: torch.device | str) -> torch.Generator:
    """The generator of one step's timesteps and noise: on the CPU (the default path: the same numbers on
    every device), or on the training device with `device_batches`."""
    where = torch.device(device) if opts.device_batches else torch.device("cpu")
    return torch.Generator(device=where).manual_seed(seed)


class DeviceFaces:
    """step -> the faces of the CPU source's step (`batch_size`, `seed_of(step)`), rendered on `device`."""

    def __init__(self, source, device: torch.device | str):
        self.source, self.device = source, torch.device(device)

    def __call__(self, step: int) -> torch.Tensor:
        return faces_batch(self.source.batch_size, self.source.seed_of(step), self.device)


class DeviceBank:
    """step -> `batch_size` images drawn (with replacement) from a bank held on `device`, each flipped
    left-right with probability 1/2 when `flips`; a device generator seeded by (seed, step) draws both."""

    def __init__(self, data: np.ndarray, batch_size: int, seed: int, flips: bool, device: torch.device | str):
        self.device = torch.device(device)
        self.bank = torch.from_numpy(np.ascontiguousarray(data)).to(self.device)
        self.batch_size, self.seed, self.flips = batch_size, seed, flips

    def __call__(self, step: int) -> torch.Tensor:
        gen = torch.Generator(device=self.device).manual_seed((self.seed * 1_000_003 + step) % 2**63)
        idx = torch.randint(0, len(self.bank), (self.batch_size,), generator=gen, device=self.device)
        batch = self.bank[idx]
        if self.flips:
            flip = torch.rand(self.batch_size, generator=gen, device=self.device) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        return batch


class NetOutput(NamedTuple):
    sample: torch.Tensor  # float32, like the output of diffusers' UNet2DModel


class FastNetwork:
    """Calls the UNet as `net(x, t).sample` with the options: channels-last input, bf16 autocast, compiled.
    The module itself (its weights, the optimizer's, the EMA) is the caller's, unchanged but for the layout."""

    def __init__(self, model: torch.nn.Module, opts: FastOptions, device: torch.device | str):
        self.device_type = torch.device(device).type
        self.dtype = TRAIN_PRECISIONS[opts.dtype]
        self.channels_last = opts.channels_last
        if opts.channels_last:
            model.to(memory_format=torch.channels_last)
        self.fn: Callable = torch.compile(model, dynamic=False) if opts.compile else model

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> NetOutput:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            out = self.fn(x, t).sample
        return NetOutput(out.float())


def prepare_network(model: torch.nn.Module, opts: FastOptions, device: torch.device | str):
    """The callable the training loop runs the UNet through: the model itself on the default path."""
    if opts.dtype == "fp32" and not opts.channels_last and not opts.compile:
        return model
    return FastNetwork(model, opts, device)
