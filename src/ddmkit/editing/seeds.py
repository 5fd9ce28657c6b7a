"""The per-sample random streams of editing (EDM's per-image seeds): x_T of a generated sample, the
noise of a stochastic prefix, and the eta > 0 noise after an edit, each its own stream, so that a
sample's edit does not depend on the batch it is made in."""
from __future__ import annotations

from typing import Sequence

import torch

from ..integrators import PerSampleGenerator
from ..sampling import sample_seed

# offsets of the noise streams from the x_T seeds (sample_seed(seed, i)): no stream repeats another's draws
EDIT_NOISE_OFFSET = 1_000_003
PREFIX_NOISE_OFFSET = 7_000_003


def generators(seeds: Sequence[int]) -> PerSampleGenerator:
    return PerSampleGenerator(list(seeds))


def x_T(seed: int, indices: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """x_T ~ N(0, I) of samples `indices` (the seeds of `ddmkit sample`)."""
    return generators([sample_seed(seed, i) for i in indices]).randn((len(indices), *shape))


def edit_noise_seeds(seed: int, indices: Sequence[int], k: int, same_noise: bool) -> list[int]:
    """Seeds of the generation noise of edit k (k = -1: the unedited sample); one stream for every k with
    `same_noise`, so a sweep differs only by its distances."""
    return [sample_seed(seed + EDIT_NOISE_OFFSET * (1 if same_noise else k + 2), int(i)) for i in indices]


def prefix_noise_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """Per-sample seeds of a stochastic prefix's noise: a stream apart from x_T's and the generation's."""
    return [sample_seed(seed + PREFIX_NOISE_OFFSET, int(i)) for i in indices]
