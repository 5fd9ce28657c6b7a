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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--prefix-steps", type=int, default=50)
    ap.add_argument("--gen-steps", type=int, default=10)
    ap.add_argument("--attributes", default="eyeglasses,dark_hair,smiling")
    ap.add_argument("--distances", default="0.6,0.8,1")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--boundary-dir", default=None, help="boundaries DIR/<attribute>.safetensors instead of the shipped")
    ap.add_argument("--out", default="editing_generated_probe.json", help="file name under results/")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from ddmkit.data.faces import ATTRIBUTES, sample_faces, to_tensor_range
    from ddmkit.editing import Distance, EditPlan, edit_latents, generate, resolve_boundary, sample_to_tm
    from ddmkit.editing.boundaries import invert_batched
    from ddmkit.editing.edit import prefix_noise_seeds
    from ddmkit.editing.labelled import EVAL_FACES_SEED
    from ddmkit.integrators import PerSampleGenerator
    from ddmkit.metrics.classifiers import load_attribute_classifier
    from ddmkit.models.loading import load_model
    from ddmkit.sampling import sample_seed

    den = load_model("default")
    clf = load_attribute_classifier("faces")
    attrs = args.attributes.split(",")
    def boundary(attr: str):
        return resolve_boundary(str(Path(args.boundary_dir) / f"{attr}.safetensors") if args.boundary_dir else attr, den)

    b0 = boundary(attrs[0])
    t_m, n, B = b0.t_m, args.num, args.batch_size

    def calls(x: torch.Tensor) -> np.ndarray:
        return (clf.extract(x.clamp(-1, 1).numpy())[1] > 0.5).astype(np.int64)

    def regen(z: torch.Tensor, seed: int, h=None, plan=None, idx=None) -> torch.Tensor:
        idx = np.arange(len(z)) if idx is None else idx
        outs = []
        for i in range(0, len(z), B):
            gen = PerSampleGenerator([sample_seed(seed, int(j)) for j in idx[i:i + B]])
            if plan is None:
                out, _ = generate(den, z[i:i + B], t_m, args.gen_steps, eta=1.0, generator=gen)
            else:
                out, _, _ = edit_latents(den, z[i:i + B], h[i:i + B], plan, eta=1.0, n_steps=args.gen_steps, generator=gen)
            outs.append(out)
        return torch.cat(outs)

    def generated(prefix_eta: float):
        x_T = PerSampleGenerator([sample_seed(0, i) for i in range(n)]).randn((n, 3, 32, 32))
        zs, hs = [], []
        for i in range(0, n, B):
            gen = PerSampleGenerator(prefix_noise_seeds(0, range(i, min(i + B, n)))) if prefix_eta > 0 else None
            pre = sample_to_tm(den, x_T[i:i + B], t_m, args.prefix_steps, h_source=b0.h_source, eta=prefix_eta, generator=gen)
            zs.append(pre.z)
            hs.append(pre.h)
        return torch.cat(zs), torch.cat(hs)

    t0 = time.time()
    ambiguity = []
    latents = {}
    faces, _ = sample_faces(n, seed=EVAL_FACES_SEED)
    z_inv, h_inv = invert_batched(den, to_tensor_range(faces), t_m, b0.n_inv, h_source=b0.h_source, batch_size=B)
    sources = {"inverted": (z_inv, h_inv)}
    for pe in (0.0, 1.0):
        sources[f"generated, prefix eta {pe:g}"] = latents[pe] = generated(pe)
    for name, (z, _) in sources.items():
        a, b = calls(regen(z, 11)), calls(regen(z, 12))
        ambiguity.append({"source": name, "any_attribute_differs": float((a != b).any(1).mean()),
                          "per_attribute": {k: float((a[:, j] != b[:, j]).mean()) for j, k in enumerate(ATTRIBUTES)}})
        print(ambiguity[-1], flush=True)

    z, h = latents[1.0]
    ref = calls(regen(z, 11))
    rows = []
    for attr in attrs:
        b = boundary(attr)
        j = ATTRIBUTES.index(attr)
        target = 1 - ref[:, j]
        others = [k for k in range(len(ATTRIBUTES)) if k != j]
        for d in (float(v) for v in args.distances.split(",")):
            out = torch.zeros(n, 3, 32, 32)
            for sign, sel in ((+1, np.flatnonzero(target == 1)), (-1, np.flatnonzero(target == 0))):
                plan = EditPlan([(b, Distance(sign * d, relative=True))], space="both", move="set")
                out[sel] = regen(z[sel], 11, h[sel], plan, idx=sel)
            got = calls(out)
            rows.append({"attribute": attr, "distance": d, "success": float((got[:, j] == target).mean()),
                         "preservation": float((got[:, others] == ref[:, others]).all(1).mean()),
                         "other_attribute_flip_rate": {ATTRIBUTES[k]: float((got[:, k] != ref[:, k]).mean()) for k in others}})
            print(rows[-1], flush=True)
    write_json(args.out, {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing_generated_probe.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "settings": {**vars(args), "t_m": t_m, "regeneration_eta": 1.0},
        "ambiguity": ambiguity, "distance_rows": rows, "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
