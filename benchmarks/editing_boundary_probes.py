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
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--attributes", default="eyeglasses,dark_hair")
    ap.add_argument("--mask-rows", default="16,20", help="keep the z normal's rows above each of these")
    ap.add_argument("--multiples", default="0.25,0.4,0.5,0.75,1")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--out", default="editing_boundary_probes.json", help="file name under results/")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from ddmkit.data.faces import ATTRIBUTES, sample_faces, to_tensor_range
    from ddmkit.editing import Distance, EditPlan, edit_latents, generate, resolve_boundary, sample_to_tm
    from ddmkit.editing.boundaries import AttributeBoundary, fit_svm, invert_batched
    from ddmkit.editing.edit import prefix_noise_seeds
    from ddmkit.editing.labelled import FIT_FACES_SEED
    from ddmkit.integrators import PerSampleGenerator
    from ddmkit.metrics.classifiers import load_attribute_classifier
    from ddmkit.models.loading import load_model
    from ddmkit.sampling import sample_seed

    t0 = time.time()
    den = load_model("default")
    clf = load_attribute_classifier("faces")
    n, B = args.num, args.batch_size
    attrs = args.attributes.split(",")
    t_m = resolve_boundary(attrs[0], den).t_m

    def log(msg):
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    def calls(x: np.ndarray) -> np.ndarray:  # as benchmarks/editing.py: through uint8 images
        u = np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)
        return (clf.extract(u.astype(np.float32) / 127.5 - 1)[1] > 0.5).astype(np.int64)

    x_T = PerSampleGenerator([sample_seed(0, i) for i in range(n)]).randn((n, 3, 32, 32))
    zs, hs = [], []
    for i in range(0, n, B):
        pre = sample_to_tm(den, x_T[i:i + B], t_m, 50, eta=1.0, generator=PerSampleGenerator(prefix_noise_seeds(0, range(i, min(i + B, n)))))
        zs.append(pre.z)
        hs.append(pre.h)
    z, h = torch.cat(zs), torch.cat(hs)
    noise_seeds = [sample_seed(1_000_003, i) for i in range(n)]  # benchmarks/editing.py's post-edit noise

    def batched(fn) -> np.ndarray:
        return np.concatenate([fn(np.arange(i, min(i + B, n)), PerSampleGenerator([noise_seeds[k] for k in range(i, min(i + B, n))]))
                               for i in range(0, n, B)])

    ref = batched(lambda idx, g: generate(den, z[idx], t_m, 10, eta=1.0, generator=g)[0].clamp(-1, 1).numpy())
    ref_calls = calls(ref)
    log(f"{n} generated latents at t_m = {t_m} and their unedited samples")
    rows = []

    def score(x, j, target, **what):
        p = calls(x)
        others = [k for k in range(len(ATTRIBUTES)) if k != j]
        row = {**what, "success": float((p[:, j] == target).mean()),
               "preservation": float((p[:, others] == ref_calls[:, others]).all(1).mean()),
               "other_attribute_flip_rate": {ATTRIBUTES[k]: float((p[:, k] != ref_calls[:, k]).mean()) for k in others}}
        rows.append(row)
        log({k: v for k, v in row.items() if k != "other_attribute_flip_rate"})

    for attr in attrs:
        j = ATTRIBUTES.index(attr)
        target = 1 - ref_calls[:, j]
        sign = np.where(target == 1, 1.0, -1.0)
        shipped = resolve_boundary(attr, den)
        nz = shipped["z"].normal.astype(np.float64)
        flat = z.reshape(n, -1).double().numpy()
        step = sign * shipped["z"].recommended_distance - flat @ nz.reshape(-1)  # "set" along the whole normal
        for keep in [32] + [int(r) for r in args.mask_rows.split(",") if r]:
            m = nz.copy()
            m[:, keep:, :] = 0.0
            z2 = torch.from_numpy((flat + step[:, None] * m.reshape(1, -1)).reshape(z.shape).astype(np.float32))
            x = batched(lambda idx, g: generate(den, z2[idx], t_m, 10, eta=1.0, generator=g)[0].clamp(-1, 1).numpy())
            score(x, j, target, probe="masked", attribute=attr, rows_kept=keep,
                  normal_energy_kept=float((m**2).sum() / (nz**2).sum()))

        seed = FIT_FACES_SEED + 777
        pos, _ = sample_faces(args.pairs, seed=seed, fixed={attr: 1})
        neg, _ = sample_faces(args.pairs, seed=seed, fixed={attr: 0})
        faces = np.concatenate([to_tensor_range(pos), to_tensor_range(neg)])
        labels = np.r_[np.ones(args.pairs, np.int64), np.zeros(args.pairs, np.int64)]
        fz, fh = invert_batched(den, faces, t_m, 40, batch_size=B)
        spaces = {s: fit_svm(f.numpy(), labels, space=s) for s, f in (("z", fz), ("h", fh))}
        paired = AttributeBoundary(spaces=spaces, meta=dict(shipped.meta))
        cos = {s: float((spaces[s].normal.ravel().astype(np.float64) * shipped[s].normal.ravel()).sum()) for s in spaces}
        log(f"{attr}: paired boundary fitted; cosine with the shipped normals {cos}")
        for mult in [float(v) for v in args.multiples.split(",") if v]:
            out = np.zeros(tuple(z.shape), np.float32)
            for s, sel in ((+1, np.flatnonzero(target == 1)), (-1, np.flatnonzero(target == 0))):
                plan = EditPlan([(paired, Distance(s * mult, relative=True))], space="both", move="set")
                for i in range(0, len(sel), B):
                    idx = sel[i:i + B]
                    o, _, _ = edit_latents(den, z[idx], h[idx], plan, eta=1.0, n_steps=10,
                                           generator=PerSampleGenerator([noise_seeds[k] for k in idx]))
                    out[idx] = o.numpy()
            score(out, j, target, probe="paired", attribute=attr, multiple=mult, pairs=args.pairs,
                  cosine_with_shipped=cos, recommended_distance={s: spaces[s].recommended_distance for s in spaces})

    write_json(args.out, {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing_boundary_probes.py " + " ".join(sys.argv[1:]),
                          "machine": machine(), "settings": {**vars(args), "t_m": int(t_m)}, "rows": rows,
                          "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
