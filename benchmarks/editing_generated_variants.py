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
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--fit-num", type=int, default=1000, help="generated latents for the generated-latent boundaries")
    ap.add_argument("--attributes", default="eyeglasses,dark_hair,smiling")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--out", default="editing_generated_variants.json", help="file name under results/")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from ddmkit.data.faces import ATTRIBUTES
    from ddmkit.denoisers import unwrap
    from ddmkit.editing import Distance, EditPlan, edit_latents, generate, resolve_boundary, sample_to_tm
    from ddmkit.editing.boundaries import fit_boundaries
    from ddmkit.editing.ddim import sample_to_tm_karras
    from ddmkit.editing.edit import prefix_noise_seeds
    from ddmkit.editing.hspace import DEFAULT_MODULE, HSpace
    from ddmkit.integrators import PerSampleGenerator, kar1
    from ddmkit.metrics.classifiers import load_attribute_classifier
    from ddmkit.models.loading import load_model
    from ddmkit.sampling import sample_seed
    from ddmkit.schedules import karras_sigmas

    den = load_model("default")
    inner = unwrap(den)
    clf = load_attribute_classifier("faces")
    attrs = args.attributes.split(",")
    shipped = {a: resolve_boundary(a, den) for a in attrs}
    t_m, n, B = shipped[attrs[0]].t_m, args.num, args.batch_size
    s_tm, s_min = float(inner.sigmas[t_m]), float(inner.sigma_min)
    c_tm = (1 + s_tm**2) ** 0.5  # VP x_{t_m} = sigma-space x / sqrt(1 + sigma^2)
    shape = tuple(inner.sample_shape)

    def probs(x: torch.Tensor) -> np.ndarray:
        return clf.extract(x.clamp(-1, 1).numpy())[1]

    def x_T(seed: int, count: int) -> torch.Tensor:
        return PerSampleGenerator([sample_seed(seed, i) for i in range(count)]).randn((count, *shape))

    def ddim_prefix(seed: int, count: int):
        xt, zs, hs = x_T(seed, count), [], []
        for i in range(0, count, B):
            gen = PerSampleGenerator(prefix_noise_seeds(seed, range(i, min(i + B, count))))
            pre = sample_to_tm(den, xt[i:i + B], t_m, 50, h_source="last", eta=1.0, generator=gen)
            zs.append(pre.z)
            hs.append(pre.h)
        return torch.cat(zs), torch.cat(hs)

    def kar2_prefix(seed: int, count: int):
        """`ddmkit control --prefix-integrator kar2 --prefix-steps 50 --prefix-s-tmin 1 --prefix-s-tmax 400`."""
        xt, zs, hs = x_T(seed, count), [], []
        for i in range(0, count, B):
            gen = PerSampleGenerator(prefix_noise_seeds(seed, range(i, min(i + B, count))))
            pre = sample_to_tm_karras(den, xt[i:i + B], t_m, 50, integrator="kar2", generator=gen,
                                      options={"s_tmin": 1.0, "s_tmax": 400.0})
            zs.append(pre.z)
            hs.append(pre.h)
        return torch.cat(zs), torch.cat(hs)

    def ddim_gen(z, h_new, seed, idx):
        outs = []
        for i in range(0, len(z), B):
            gen = PerSampleGenerator([sample_seed(seed, int(j)) for j in idx[i:i + B]])
            if h_new is None:
                out, _ = generate(den, z[i:i + B], t_m, 10, eta=1.0, generator=gen)
            else:
                out, _ = generate(den, z[i:i + B], t_m, 10, eta=1.0, h=h_new[i:i + B], generator=gen)
            outs.append(out)
        return torch.cat(outs) if outs else torch.zeros(0, *shape)

    def heun_gen(z, h_new, seed, idx):
        outs = []
        for i in range(0, len(z), B):
            sig = karras_sigmas(11, s_min, s_tm).expand(len(z[i:i + B]), -1)  # 9 Heun steps + 1 Euler = 19 NFE
            with HSpace(inner, DEFAULT_MODULE) as hsp:
                if h_new is not None:
                    hsp.replace(h_new[i:i + B], once=True)
                x, _ = kar1(den, z[i:i + B] * c_tm, sig)
            outs.append(x)
        return torch.cat(outs) if outs else torch.zeros(0, *shape)

    def evaluate(name: str, z, h, gen_fn, boundaries: dict, multiples=(1.0,), stochastic=True) -> dict:
        t0 = time.time()
        idx = np.arange(len(z))
        p = probs(gen_fn(z, None, 11, idx))
        ref = (p > 0.5).astype(np.int64)
        res = {"variant": name, "borderline_any": float(((p > 0.1) & (p < 0.9)).any(1).mean()),
               "borderline": {k: float(((p[:, j] > 0.1) & (p[:, j] < 0.9)).mean()) for j, k in enumerate(ATTRIBUTES)},
               "frequency": {k: float(ref[:, j].mean()) for j, k in enumerate(ATTRIBUTES)}}
        if stochastic:
            other = (probs(gen_fn(z, None, 12, idx)) > 0.5).astype(np.int64)
            res["ambiguity_any"] = float((other != ref).any(1).mean())
            res["ambiguity"] = {k: float((other[:, j] != ref[:, j]).mean()) for j, k in enumerate(ATTRIBUTES)}
        rows = []
        for attr, bd in boundaries.items():
            j = ATTRIBUTES.index(attr)
            target, others = 1 - ref[:, j], [k for k in range(len(ATTRIBUTES)) if k != j]
            for mult in multiples:
                out = torch.zeros(len(z), *shape)
                for sign, sel in ((+1, np.flatnonzero(target == 1)), (-1, np.flatnonzero(target == 0))):
                    plan = EditPlan([(bd, Distance(sign * mult, relative=True))], space="both", move="set")
                    z2, h2, _ = plan.apply(z[sel], h[sel])
                    out[sel] = gen_fn(z2, h2, 11, sel)
                got = (probs(out) > 0.5).astype(np.int64)
                rows.append({"attribute": attr, "distance": mult, "success": float((got[:, j] == target).mean()),
                             "preservation": float((got[:, others] == ref[:, others]).all(1).mean()),
                             "other_attribute_flip_rate": {ATTRIBUTES[k]: float((got[:, k] != ref[:, k]).mean()) for k in others}})
                print(name, rows[-1], flush=True)
        res["edits"] = rows
        res["seconds"] = round(time.time() - t0, 1)
        return res

    t0 = time.time()
    variants = []
    z, h = ddim_prefix(0, n)
    variants.append(evaluate("ddim-prefix/ddim-gen", z, h, ddim_gen, shipped))
    zk, hk = kar2_prefix(0, n)
    variants.append(evaluate("kar2-prefix/ddim-gen", zk, hk, ddim_gen, shipped))
    variants.append(evaluate("kar2-prefix/heun-gen", zk, hk, heun_gen, shipped, stochastic=False))
    zf, hf = ddim_prefix(5, args.fit_num)
    yf = (probs(ddim_gen(zf, None, 21, np.arange(len(zf)))) > 0.5).astype(np.int64)
    fitted, fit_info = {}, {}
    ref_b = shipped[attrs[0]]
    for attr in attrs:
        j = ATTRIBUTES.index(attr)
        fitted[attr] = fit_boundaries(den, None, yf[:, j], attribute=attr, t_m=t_m, n_inv=ref_b.n_inv,
                                      h_source=ref_b.h_source, inversions=(zf, hf), n_test=0.2)
        fit_info[attr] = {s: {"test_accuracy": fitted[attr][s].stats.get("test_accuracy"),
                              "recommended_distance": fitted[attr][s].recommended_distance} for s in ("z", "h")}
    gb = evaluate("ddim-prefix/generated-boundaries", z, h, ddim_gen, fitted, multiples=(1.0, 1.5))
    gb["fit"] = {"num": args.fit_num, "x_T_seed": 5, "label_noise_seed": 21, "positives": {a: float(yf[:, ATTRIBUTES.index(a)].mean()) for a in attrs},
                 "boundaries": fit_info}
    variants.append(gb)
    write_json(args.out, {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing_generated_variants.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "settings": {**vars(args), "t_m": t_m, "sigma_t_m": s_tm, "distance_units": "multiples of each boundary's recommended distance"},
        "variants": variants, "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
