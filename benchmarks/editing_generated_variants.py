"""Can a better sampler or generated-latent boundaries lift the preservation of *generated*-face edits?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing_generated_variants.py [--num 200]
    # -> results/editing_generated_variants.json

The same 200 generated faces (x_T of seed 0, as `editing_generated_probe.py`), edited at t_m = 100 with
the mixing-step method at the shipped boundaries' recommended distance, under four variants:

- `ddim-prefix/ddim-gen`: `ddmkit control`'s default path (DDIM eta 1 from x_T to t_m in 50 NFE,
  DDIM eta 1 generation in 10 NFE) -- the baseline;
- `kar2-prefix/ddim-gen`: the prefix drawn by the default model's best sampler instead (kar2 with churn
  at sigma >= 1, 50 NFE from sigma_max down to sigma(t_m)), h read at (x_{t_m}, t_m);
- `kar2-prefix/heun-gen`: that prefix and a deterministic Heun (kar1) generation from sigma(t_m), 19 NFE,
  the edited h injected at its first call;
- `ddim-prefix/generated-boundaries`: the baseline path with boundaries fitted on 1,000 *generated*
  latents at t_m (x_T of seed 5, labels = the faces classifier on their DDIM regeneration), as
  InterFaceGAN fits its boundaries on a generator's own samples; at 1x and 1.5x their distance.

Per variant: the share of faces with a borderline attribute (classifier probability in (0.1, 0.9)),
the ambiguity (two regenerations with different noise, no edit: the share whose calls differ; for the
stochastic generations), and per attribute the success, the preservation (all five other calls kept)
and each other attribute's flip rate.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from common import attribute_scores, machine, write_json

from ddmkit.data.faces import ATTRIBUTES
from ddmkit.denoisers import unwrap
from ddmkit.editing import (DEFAULT_MODULE, Distance, EditPlan, HSpace, MixingStep, fit_boundaries, generate,
                            resolve_boundary, sample_to_tm, sample_to_tm_karras, seeds)
from ddmkit.integrators import PerSampleGenerator, kar1
from ddmkit.metrics.classifiers import load_attribute_classifier
from ddmkit.models.loading import load_model
from ddmkit.sampling import sample_seed
from ddmkit.schedules import karras_sigmas


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--fit-num", type=int, default=1000, help="generated latents for the generated-latent boundaries")
    ap.add_argument("--attributes", default="eyeglasses,dark_hair,smiling")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--out", default="editing_generated_variants.json", help="file name under results/")
    return ap.parse_args()


class Variants:
    """The default model, the classifier, the shipped boundaries and the samplers of the four variants."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.n, self.B = args, args.num, args.batch_size
        self.den = load_model("default")
        self.inner = unwrap(self.den)
        self.clf = load_attribute_classifier("faces")
        self.attrs = args.attributes.split(",")
        self.shipped = {a: resolve_boundary(a, self.den) for a in self.attrs}
        self.t_m = self.shipped[self.attrs[0]].t_m
        self.s_tm, self.s_min = float(self.inner.sigmas[self.t_m]), float(self.inner.sigma_min)
        self.c_tm = (1 + self.s_tm**2) ** 0.5  # VP x_{t_m} = sigma-space x / sqrt(1 + sigma^2)
        self.shape = tuple(self.inner.sample_shape)

    def probs(self, x: torch.Tensor) -> np.ndarray:
        return self.clf.extract(x.clamp(-1, 1).numpy())[1]

    def _prefix(self, seed: int, count: int, fn) -> tuple[torch.Tensor, torch.Tensor]:
        xt, zs, hs, B = seeds.x_T(seed, range(count), self.shape), [], [], self.B
        for i in range(0, count, B):
            pre = fn(xt[i:i + B], PerSampleGenerator(seeds.prefix_noise_seeds(seed, range(i, min(i + B, count)))))
            zs.append(pre.z)
            hs.append(pre.h)
        return torch.cat(zs), torch.cat(hs)

    def ddim_prefix(self, seed: int, count: int):
        return self._prefix(seed, count, lambda x, gen: sample_to_tm(self.den, x, MixingStep(self.t_m, h_source="last"),
                                                                     50, eta=1.0, generator=gen))

    def kar2_prefix(self, seed: int, count: int):
        """`ddmkit control --prefix-integrator kar2 --prefix-steps 50 --prefix-s-tmin 1 --prefix-s-tmax 400`."""
        return self._prefix(seed, count, lambda x, gen: sample_to_tm_karras(
            self.den, x, MixingStep(self.t_m), 50, integrator="kar2", generator=gen,
            options={"s_tmin": 1.0, "s_tmax": 400.0}))

    def ddim_gen(self, z, h_new, seed, idx):
        outs, B = [], self.B
        for i in range(0, len(z), B):
            gen = PerSampleGenerator([sample_seed(seed, int(j)) for j in idx[i:i + B]])
            h = None if h_new is None else h_new[i:i + B]
            out, _ = generate(self.den, z[i:i + B], MixingStep(self.t_m), 10, eta=1.0, h=h, generator=gen)
            outs.append(out)
        return torch.cat(outs) if outs else torch.zeros(0, *self.shape)

    def heun_gen(self, z, h_new, seed, idx):
        outs, B = [], self.B
        for i in range(0, len(z), B):
            sig = karras_sigmas(11, self.s_min, self.s_tm).expand(len(z[i:i + B]), -1)  # 9 Heun steps + 1 Euler = 19 NFE
            with HSpace(self.inner, DEFAULT_MODULE) as hsp:
                if h_new is not None:
                    hsp.replace(h_new[i:i + B], once=True)
                x, _ = kar1(self.den, z[i:i + B] * self.c_tm, sig)
            outs.append(x)
        return torch.cat(outs) if outs else torch.zeros(0, *self.shape)

    def frequencies(self, z, gen_fn, stochastic: bool) -> tuple[dict, np.ndarray]:
        """Borderline shares, attribute frequencies and (stochastic generations) the ambiguity; the calls."""
        idx = np.arange(len(z))
        p = self.probs(gen_fn(z, None, 11, idx))
        ref = (p > 0.5).astype(np.int64)
        res = {"borderline_any": float(((p > 0.1) & (p < 0.9)).any(1).mean()),
               "borderline": {k: float(((p[:, j] > 0.1) & (p[:, j] < 0.9)).mean()) for j, k in enumerate(ATTRIBUTES)},
               "frequency": {k: float(ref[:, j].mean()) for j, k in enumerate(ATTRIBUTES)}}
        if stochastic:
            other = (self.probs(gen_fn(z, None, 12, idx)) > 0.5).astype(np.int64)
            res["ambiguity_any"] = float((other != ref).any(1).mean())
            res["ambiguity"] = {k: float((other[:, j] != ref[:, j]).mean()) for j, k in enumerate(ATTRIBUTES)}
        return res, ref

    def evaluate(self, name: str, z, h, gen_fn, boundaries: dict, multiples=(1.0,), stochastic=True) -> dict:
        t0 = time.time()
        res, ref = self.frequencies(z, gen_fn, stochastic)
        res = {"variant": name, **res}
        rows = []
        for attr, bd in boundaries.items():
            j = ATTRIBUTES.index(attr)
            target = 1 - ref[:, j]
            for mult in multiples:
                out = torch.zeros(len(z), *self.shape)
                for sign, sel in ((+1, np.flatnonzero(target == 1)), (-1, np.flatnonzero(target == 0))):
                    plan = EditPlan([(bd, Distance(sign * mult, relative=True))], space="both", move="set")
                    z2, h2, _ = plan.apply(z[sel], h[sel])
                    out[sel] = gen_fn(z2, h2, 11, sel)
                got = (self.probs(out) > 0.5).astype(np.int64)
                rows.append({"attribute": attr, "distance": mult, **attribute_scores(got, ref, j, target)})
                print(name, rows[-1], flush=True)
        res["edits"] = rows
        res["seconds"] = round(time.time() - t0, 1)
        return res

    def generated_boundaries(self, z, h) -> dict:
        """Boundaries fitted on fit_num generated latents at t_m (x_T of seed 5), labelled by the classifier
        on their DDIM regeneration; evaluated at 1x and 1.5x their distance."""
        zf, hf = self.ddim_prefix(5, self.args.fit_num)
        yf = (self.probs(self.ddim_gen(zf, None, 21, np.arange(len(zf)))) > 0.5).astype(np.int64)
        fitted, fit_info = {}, {}
        ref_b = self.shipped[self.attrs[0]]
        for attr in self.attrs:
            j = ATTRIBUTES.index(attr)
            fitted[attr] = fit_boundaries(self.den, None, yf[:, j], attribute=attr,
                                          step=MixingStep(self.t_m, ref_b.n_inv, ref_b.h_source), inversions=(zf, hf),
                                          n_test=0.2)
            fit_info[attr] = {s: {"test_accuracy": fitted[attr][s].stats.get("test_accuracy"),
                                  "recommended_distance": fitted[attr][s].recommended_distance} for s in ("z", "h")}
        gb = self.evaluate("ddim-prefix/generated-boundaries", z, h, self.ddim_gen, fitted, multiples=(1.0, 1.5))
        gb["fit"] = {"num": self.args.fit_num, "x_T_seed": 5, "label_noise_seed": 21,
                     "positives": {a: float(yf[:, ATTRIBUTES.index(a)].mean()) for a in self.attrs},
                     "boundaries": fit_info}
        return gb


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    v = Variants(args)
    t0 = time.time()
    z, h = v.ddim_prefix(0, v.n)
    variants = [v.evaluate("ddim-prefix/ddim-gen", z, h, v.ddim_gen, v.shipped)]
    zk, hk = v.kar2_prefix(0, v.n)
    variants.append(v.evaluate("kar2-prefix/ddim-gen", zk, hk, v.ddim_gen, v.shipped))
    variants.append(v.evaluate("kar2-prefix/heun-gen", zk, hk, v.heun_gen, v.shipped, stochastic=False))
    variants.append(v.generated_boundaries(z, h))
    write_json(args.out, {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing_generated_variants.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "settings": {**vars(args), "t_m": v.t_m, "sigma_t_m": v.s_tm,
                                           "distance_units": "multiples of each boundary's recommended distance"},
        "variants": variants, "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
