"""Two more boundary levers for edits of *generated* faces, probed on the default faces model.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing_boundary_probes.py [--attributes eyeglasses,dark_hair]
    # -> results/editing_boundary_probes.json   (about 8 minutes on one CPU thread)

The same 200 generated faces as `benchmarks/editing.py` (x_T of seed 0, `ddmkit control`'s DDIM eta 1
prefix to t_m in 50 NFE, 10 DDIM eta 1 steps after the edit, the same per-sample noise as the unedited
reference). Edits move z only (h is left to the network) to the shipped boundary's recommended signed
distance; success and preservation by the faces classifier, as in `editing.json`.

1. `masked`: is the preservation lost through what the z normal holds outside the attribute? The shipped
   z normal is applied whole, then with its rows below `--mask-rows` zeroed (the mouth is below row 20 of
   these 32 px faces, the eyes and glasses above), the step along it unchanged.
2. `paired`: boundaries fitted on counterfactual pairs from the face generator (the same face rendered with
   and without the attribute, `sample_faces(n, seed, fixed={attribute: 0 or 1})`), so that the two classes
   differ in the attribute only; 100 pairs inverted to t_m (N_inv 40), SVMs on z and h; mixing-step edits
   (z and h) at multiples of its recommended distance.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from common import attribute_scores, machine, write_json

from ddmkit.data.faces import ATTRIBUTES, sample_faces, to_tensor_range
from ddmkit.editing import (AttributeBoundary, Distance, EditPlan, EditSettings, MixingStep, edit_latents, fit_svm,
                            generate, invert_batched, resolve_boundary, sample_to_tm, seeds)
from ddmkit.editing.labelled import FIT_FACES_SEED
from ddmkit.integrators import PerSampleGenerator
from ddmkit.metrics.classifiers import load_attribute_classifier
from ddmkit.models.loading import load_model
from ddmkit.sampling import sample_seed

GEN_STEPS = 10  # DDIM eta 1 steps after the edit


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--attributes", default="eyeglasses,dark_hair")
    ap.add_argument("--mask-rows", default="16,20", help="keep the z normal's rows above each of these")
    ap.add_argument("--multiples", default="0.25,0.4,0.5,0.75,1")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--out", default="editing_boundary_probes.json", help="file name under results/")
    return ap.parse_args()


class Probes:
    """The generated latents at t_m, their unedited samples and classifier calls, and the rows so far."""

    def __init__(self, args: argparse.Namespace):
        self.t0 = time.time()
        self.args, self.n, self.B = args, args.num, args.batch_size
        self.den = load_model("default")
        self.clf = load_attribute_classifier("faces")
        self.attrs = args.attributes.split(",")
        self.step = MixingStep(resolve_boundary(self.attrs[0], self.den).t_m)
        self.z, self.h = self.generated()
        self.noise_seeds = [sample_seed(1_000_003, i) for i in range(self.n)]  # benchmarks/editing.py's post-edit noise
        self.ref_calls = self.calls(self.batched(lambda idx, g: self.generate(self.z[idx], g)))
        self.log(f"{self.n} generated latents at t_m = {self.step.t_m} and their unedited samples")
        self.rows: list[dict] = []

    def log(self, msg) -> None:
        print(f"[{time.time() - self.t0:6.0f}s] {msg}", flush=True)

    def generated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`ddmkit control`'s prefix: x_T of seed 0, DDIM eta 1 down to t_m in 50 NFE."""
        n, B = self.n, self.B
        x_T = seeds.x_T(0, range(n), (3, 32, 32))
        zs, hs = [], []
        for i in range(0, n, B):
            noise = PerSampleGenerator(seeds.prefix_noise_seeds(0, range(i, min(i + B, n))))
            pre = sample_to_tm(self.den, x_T[i:i + B], self.step, 50, eta=1.0, generator=noise)
            zs.append(pre.z)
            hs.append(pre.h)
        return torch.cat(zs), torch.cat(hs)

    def calls(self, x: np.ndarray) -> np.ndarray:  # as benchmarks/editing.py: through uint8 images
        u = np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)
        return (self.clf.extract(u.astype(np.float32) / 127.5 - 1)[1] > 0.5).astype(np.int64)

    def generate(self, z: torch.Tensor, g) -> np.ndarray:
        return generate(self.den, z, self.step, GEN_STEPS, eta=1.0, generator=g)[0].clamp(-1, 1).numpy()

    def batched(self, fn) -> np.ndarray:
        n, B = self.n, self.B
        return np.concatenate([fn(np.arange(i, min(i + B, n)),
                                  PerSampleGenerator([self.noise_seeds[k] for k in range(i, min(i + B, n))]))
                               for i in range(0, n, B)])

    def score(self, x, j, target, **what) -> None:
        row = {**what, **attribute_scores(self.calls(x), self.ref_calls, j, target)}
        self.rows.append(row)
        self.log({k: v for k, v in row.items() if k != "other_attribute_flip_rate"})

    def masked(self, attr: str, shipped: AttributeBoundary, target: np.ndarray) -> None:
        """z-only "set" edits along the whole shipped z normal, then with its rows below each mask row zeroed."""
        j, n, z = ATTRIBUTES.index(attr), self.n, self.z
        sign = np.where(target == 1, 1.0, -1.0)
        nz = shipped["z"].normal.astype(np.float64)
        flat = z.reshape(n, -1).double().numpy()
        step = sign * shipped["z"].recommended_distance - flat @ nz.reshape(-1)  # "set" along the whole normal
        for keep in [32] + [int(r) for r in self.args.mask_rows.split(",") if r]:
            m = nz.copy()
            m[:, keep:, :] = 0.0
            z2 = torch.from_numpy((flat + step[:, None] * m.reshape(1, -1)).reshape(z.shape).astype(np.float32))
            x = self.batched(lambda idx, g: self.generate(z2[idx], g))
            self.score(x, j, target, probe="masked", attribute=attr, rows_kept=keep,
                       normal_energy_kept=float((m**2).sum() / (nz**2).sum()))

    def paired_boundary(self, attr: str, shipped: AttributeBoundary) -> tuple[AttributeBoundary, dict]:
        """SVMs on counterfactual pairs (the same face with and without the attribute), inverted to t_m."""
        seed, pairs = FIT_FACES_SEED + 777, self.args.pairs
        pos, _ = sample_faces(pairs, seed=seed, fixed={attr: 1})
        neg, _ = sample_faces(pairs, seed=seed, fixed={attr: 0})
        faces = np.concatenate([to_tensor_range(pos), to_tensor_range(neg)])
        labels = np.r_[np.ones(pairs, np.int64), np.zeros(pairs, np.int64)]
        fz, fh = invert_batched(self.den, faces, MixingStep(self.step.t_m, 40), batch_size=self.B)
        spaces = {s: fit_svm(f.numpy(), labels, space=s) for s, f in (("z", fz), ("h", fh))}
        cos = {s: float((spaces[s].normal.ravel().astype(np.float64) * shipped[s].normal.ravel()).sum()) for s in spaces}
        return AttributeBoundary(spaces=spaces, meta=dict(shipped.meta)), cos

    def paired(self, attr: str, shipped: AttributeBoundary, target: np.ndarray) -> None:
        j, B = ATTRIBUTES.index(attr), self.B
        paired, cos = self.paired_boundary(attr, shipped)
        self.log(f"{attr}: paired boundary fitted; cosine with the shipped normals {cos}")
        settings = EditSettings(eta=1.0, n_steps=GEN_STEPS)
        for mult in [float(v) for v in self.args.multiples.split(",") if v]:
            out = np.zeros(tuple(self.z.shape), np.float32)
            for s, sel in ((+1, np.flatnonzero(target == 1)), (-1, np.flatnonzero(target == 0))):
                plan = EditPlan([(paired, Distance(s * mult, relative=True))], space="both", move="set")
                for i in range(0, len(sel), B):
                    idx = sel[i:i + B]
                    o, _, _ = edit_latents(self.den, self.z[idx], self.h[idx], plan, settings,
                                           generator=PerSampleGenerator([self.noise_seeds[k] for k in idx]))
                    out[idx] = o.numpy()
            self.score(out, j, target, probe="paired", attribute=attr, multiple=mult, pairs=self.args.pairs,
                       cosine_with_shipped=cos,
                       recommended_distance={s: paired[s].recommended_distance for s in paired.spaces})


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    p = Probes(args)
    for attr in p.attrs:
        target = 1 - p.ref_calls[:, ATTRIBUTES.index(attr)]
        shipped = resolve_boundary(attr, p.den)
        p.masked(attr, shipped, target)
        p.paired(attr, shipped, target)
    write_json(args.out, {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing_boundary_probes.py " + " ".join(sys.argv[1:]),
                          "machine": machine(), "settings": {**vars(args), "t_m": int(p.step.t_m)}, "rows": p.rows,
                          "seconds": round(time.time() - p.t0, 1)})


if __name__ == "__main__":
    main()
