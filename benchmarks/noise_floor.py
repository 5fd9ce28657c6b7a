#!/usr/bin/env python
"""FD-faces / FD-digits between real data sets, by sample size: the scale against which `fd` reads.

    .venv/bin/python benchmarks/noise_floor.py      # writes benchmarks/results/fd_noise_floor.json

For each n two numbers (mean and std over repeats):
- vs_reference: n fresh real images against the fixed reference statistics, exactly what
  `ddmkit evaluate` reports as fd_noise_floor (faces: 10,000 reference faces of seed 30,000,000;
  digits: n digits of one random half against the other half, n <= 898).
- pairwise: two disjoint real sets of size n each against each other.
Also: the face generator's images/second and the time to compute the faces reference statistics.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddmkit.data.faces import sample_faces, to_tensor_range
from ddmkit.io import atomic_write_json
from ddmkit.metrics import evaluate as ev
from ddmkit.metrics.classifiers import load_attribute_classifier
from ddmkit.metrics.frechet import FeatureStats, frechet_distance

SIZES = (100, 500, 1000, 2000)
REPEATS = 5
PAIR_SEED_BASE = 50_000_000  # faces for the pairwise sets (disjoint from every other seed range)


def faces_features(n: int, seed: int) -> np.ndarray:
    return load_attribute_classifier("faces").extract(to_tensor_range(sample_faces(n, seed=seed)[0]), 1000)[0]


def summary(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
            "values": [round(v, 4) for v in values]}


def main() -> int:
    torch.set_num_threads(1)
    out: dict = {"about": __doc__.strip().splitlines()[0], "repeats": REPEATS,
                 "machine": {"cpu_count": os.cpu_count(), "torch_threads": 1, "platform": platform.platform(),
                             "python": sys.version.split()[0], "torch": torch.__version__,
                             "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}}

    # the generator's speed (best of 3, 10,000 faces)
    sample_faces(256, seed=0)
    best = min(_timed(lambda: sample_faces(10_000, seed=1)) for _ in range(3))
    out["faces_generator_images_per_second"] = round(10_000 / best)

    # reference statistics from scratch (what the first `ddmkit evaluate` pays)
    t = time.perf_counter()
    ref, _, desc = ev.reference_statistics("faces", use_cache=False)
    out["faces_reference"] = {**desc, "seconds_to_compute": round(time.perf_counter() - t, 2)}

    faces = {}
    for n in SIZES:
        vs_ref = [frechet_distance(FeatureStats.from_features(faces_features(n, ev.NOISE_FLOOR_SEED_BASE + r)), ref)
                  for r in range(REPEATS)]
        pair = [frechet_distance(FeatureStats.from_features(faces_features(n, PAIR_SEED_BASE + 2 * r)),
                                 FeatureStats.from_features(faces_features(n, PAIR_SEED_BASE + 2 * r + 1)))
                for r in range(REPEATS)]
        faces[str(n)] = {"vs_reference": summary(vs_ref), "pairwise": summary(pair)}
        print(f"faces n={n}: vs reference {np.mean(vs_ref):.3f} +- {np.std(vs_ref):.3f}, "
              f"pairwise {np.mean(pair):.3f} +- {np.std(pair):.3f}", flush=True)
    out["fd_faces"] = faces

    feats, _ = ev._digits_features(ev.weights_digest("digits"))
    half = len(feats) // 2
    digits = {}
    for n in (100, 500, half):
        vs_ref, pair = [], []
        for r in range(REPEATS):
            perm = np.random.default_rng(1000 + r).permutation(len(feats))
            a, b = feats[perm[:half]], feats[perm[half:]]
            vs_ref.append(frechet_distance(FeatureStats.from_features(b[:n]), FeatureStats.from_features(a)))
            pair.append(frechet_distance(FeatureStats.from_features(a[:n]), FeatureStats.from_features(b[:n])))
        digits[str(n)] = {"vs_reference": summary(vs_ref), "pairwise": summary(pair)}
        print(f"digits n={n}: vs half-set reference {np.mean(vs_ref):.3f}, pairwise {np.mean(pair):.3f}", flush=True)
    out["fd_digits"] = digits
    out["digits_reference"] = {"vs_reference": f"the other half of the set ({half} digits)",
                               "evaluate_reference": "all 1,797 digits"}

    path = Path(__file__).resolve().parent / "results" / "fd_noise_floor.json"
    atomic_write_json(path, out)
    print("wrote", path)
    return 0


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
