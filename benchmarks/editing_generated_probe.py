"""Why edits of *generated* faces change other attributes: two probes on the default faces model.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing_generated_probe.py [--num 200]
    # -> results/editing_generated_probe.json

1. Ambiguity at t_m: generated latents x_{t_m} (DDIM from x_T with --prefix-eta 0 and 1, as `ddmkit
   control`) regenerated twice with eta = 1 and *different* noise, no edit: the share of samples whose
   attribute calls (the faces classifier) differ. The same for inverted real faces. An edit cannot
   keep what the latent does not decide.
2. Distance: success / preservation of mixing-step edits of the generated samples (prefix eta 1) at
   fractions of each shipped boundary's recommended distance.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import attribute_scores, machine, write_json

from ddmkit.data.faces import ATTRIBUTES, sample_faces, to_tensor_range
from ddmkit.editing import (Distance, EditPlan, EditSettings, edit_latents, generate, invert_batched,
                            resolve_boundary, sample_to_tm, seeds)
from ddmkit.editing.labelled import EVAL_FACES_SEED
from ddmkit.integrators import PerSampleGenerator
from ddmkit.metrics.classifiers import load_attribute_classifier
from ddmkit.models.loading import load_model
from ddmkit.sampling import sample_seed


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--prefix-steps", type=int, default=50)
    ap.add_argument("--gen-steps", type=int, default=10)
    ap.add_argument("--attributes", default="eyeglasses,dark_hair,smiling")
    ap.add_argument("--distances", default="0.6,0.8,1")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--boundary-dir", default=None, help="boundaries DIR/<attribute>.safetensors instead of the shipped")
    ap.add_argument("--out", default="editing_generated_probe.json", help="file name under results/")
    return ap.parse_args()


class Probe:
    def __init__(self, args: argparse.Namespace):
        self.args, self.n, self.B = args, args.num, args.batch_size
        self.den = load_model("default")
        self.clf = load_attribute_classifier("faces")
        self.attrs = args.attributes.split(",")
        self.b0 = self.boundary(self.attrs[0])

    def boundary(self, attr: str):
        d = self.args.boundary_dir
        return resolve_boundary(str(Path(d) / f"{attr}.safetensors") if d else attr, self.den)

    def calls(self, x: torch.Tensor) -> np.ndarray:
        return (self.clf.extract(x.clamp(-1, 1).numpy())[1] > 0.5).astype(np.int64)

    def regen(self, z: torch.Tensor, seed: int, h=None, plan=None, idx=None) -> torch.Tensor:
        """Generate (eta = 1) from latents at t_m, edited by `plan` if given, with per-sample seeds."""
        idx = np.arange(len(z)) if idx is None else idx
        outs, B = [], self.B
        for i in range(0, len(z), B):
            gen = PerSampleGenerator([sample_seed(seed, int(j)) for j in idx[i:i + B]])
            if plan is None:
                out, _ = generate(self.den, z[i:i + B], self.b0.step, self.args.gen_steps, eta=1.0, generator=gen)
            else:
                out, _, _ = edit_latents(self.den, z[i:i + B], h[i:i + B], plan,
                                         EditSettings(eta=1.0, n_steps=self.args.gen_steps), generator=gen)
            outs.append(out)
        return torch.cat(outs)

    def generated(self, prefix_eta: float) -> tuple[torch.Tensor, torch.Tensor]:
        n, B = self.n, self.B
        x_T = seeds.x_T(0, range(n), (3, 32, 32))
        zs, hs = [], []
        for i in range(0, n, B):
            gen = PerSampleGenerator(seeds.prefix_noise_seeds(0, range(i, min(i + B, n)))) if prefix_eta > 0 else None
            pre = sample_to_tm(self.den, x_T[i:i + B], self.b0.step, self.args.prefix_steps, eta=prefix_eta, generator=gen)
            zs.append(pre.z)
            hs.append(pre.h)
        return torch.cat(zs), torch.cat(hs)

    def ambiguity(self) -> tuple[list[dict], dict]:
        """Two eta = 1 regenerations with different noise, no edit: the share whose attribute calls differ."""
        faces, _ = sample_faces(self.n, seed=EVAL_FACES_SEED)
        sources = {"inverted": invert_batched(self.den, to_tensor_range(faces), self.b0.step, batch_size=self.B)}
        latents = {}
        for pe in (0.0, 1.0):
            sources[f"generated, prefix eta {pe:g}"] = latents[pe] = self.generated(pe)
        rows = []
        for name, (z, _) in sources.items():
            a, b = self.calls(self.regen(z, 11)), self.calls(self.regen(z, 12))
            rows.append({"source": name, "any_attribute_differs": float((a != b).any(1).mean()),
                         "per_attribute": {k: float((a[:, j] != b[:, j]).mean()) for j, k in enumerate(ATTRIBUTES)}})
            print(rows[-1], flush=True)
        return rows, latents

    def distance_rows(self, z: torch.Tensor, h: torch.Tensor) -> list[dict]:
        """Mixing-step edits toward the opposite attribute at fractions of the recommended distance."""
        ref = self.calls(self.regen(z, 11))
        rows = []
        for attr in self.attrs:
            b = self.boundary(attr)
            j = ATTRIBUTES.index(attr)
            target = 1 - ref[:, j]
            for d in (float(v) for v in self.args.distances.split(",")):
                out = torch.zeros(self.n, 3, 32, 32)
                for sign, sel in ((+1, np.flatnonzero(target == 1)), (-1, np.flatnonzero(target == 0))):
                    plan = EditPlan([(b, Distance(sign * d, relative=True))], space="both", move="set")
                    out[sel] = self.regen(z[sel], 11, h[sel], plan, idx=sel)
                rows.append({"attribute": attr, "distance": d, **attribute_scores(self.calls(out), ref, j, target)})
                print(rows[-1], flush=True)
        return rows


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    p = Probe(args)
    t0 = time.time()
    ambiguity, latents = p.ambiguity()
    rows = p.distance_rows(*latents[1.0])
    write_json(args.out, {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing_generated_probe.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "settings": {**vars(args), "t_m": p.b0.t_m, "regeneration_eta": 1.0},
        "ambiguity": ambiguity, "distance_rows": rows, "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
