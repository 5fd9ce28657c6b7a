#!/usr/bin/env python
"""BoundaryDiffusion editing on the default faces model, scored by the faces attribute classifier.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing.py            # -> benchmarks/results/editing.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/editing.py --quick    # 16 faces, a smoke run

Sources: `inverted` = NUM held-out faces from the generator (seed EVAL_FACES_SEED), DDIM-inverted;
`generated` = NUM samples x_T ~ N(0, I) (per-sample seeds) run down to t_m in --prefix-steps NFE by DDIM
with --prefix-eta (default 1, as `ddmkit control`; the official code's 0), or by a Karras sampler
(--prefix-integrator kar1/kar2, h then read at t_m); rows are keyed by that prefix. Each source sample is edited toward the opposite of its current attribute (classifier on the
source: the real face, or the unedited sample generated with the same noise): d = +D if absent,
-D if present, with move "set" and D = --distance x the boundary's recommended distance per space.
Post-edit generation: eta = 1 (and eta = 0 for mixing-step), N = 40 steps, the same noise per
sample for every method; a generated sample's reference is generated with the row's eta.

Methods (rows): mixing-step (z and h at t_m, single h injection: the paper), x_T (the same at
t = T-1 with boundaries fitted on latents inverted to T-1: the "distance effect" baseline), z-only,
h-only, lagged-h (the official code's h feedback). Across mixing steps: mixing-step at --t-sweep for
the inverted source. Boundaries: at t_m the shipped ones (or, without them, fitted by the same rule:
100 + 100 balanced faces); at other t one shared pool of 200 faces with their natural labels,
inverted once per t, 100 train / 100 test per attribute.

Per row: success = share whose target attribute flips (classifier, p > 0.5); preservation = share
whose five other attributes all keep the source's predicted values; distance_to_source = mean pixel
RMSE ([-1, 1]) and mean L2 distance of classifier features (128-d). Controls: the eta = 0
reconstruction and an unedited eta = 1 regeneration, scored the same way. Costs: SVM fit time for
100 + 100 images (z and h), inversion time, time per edit against NFE x model-call time.

Resumable: latents, outputs and finished rows are cached in --cache (default runs/bench-editing);
run it again after an interruption. One thread.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("mixing-step", "x_T", "z-only", "h-only", "lagged-h")
DEFAULT_ATTRS = ("smiling", "eyeglasses", "dark_hair")


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


class Cache:
    def __init__(self, folder: Path):
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)

    def arrays(self, name: str, fn):
        from ddmkit.io import atomic_save_npz

        path = self.dir / f"{name}.npz"
        if path.is_file():
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        out = fn()
        atomic_save_npz(path, **out)
        return out


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)


def from_u8(u: np.ndarray) -> np.ndarray:
    return u.astype(np.float32) / 127.5 - 1.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--num", type=int, default=200)
    ap.add_argument("--attributes", default=",".join(DEFAULT_ATTRS))
    ap.add_argument("--t-sweep", default="200,400,600,800", help="other mixing steps for the inverted source")
    ap.add_argument("--distance", type=float, default=1.0, help="D in units of the recommended distance")
    ap.add_argument("--distance-sweep", default="0.5,2,4", help="extra D (mixing-step, first attribute, both sources)")
    ap.add_argument("--n-inv", type=int, default=40)
    ap.add_argument("--gen-steps", type=int, default=40)
    ap.add_argument("--prefix-steps", type=int, default=50)
    ap.add_argument("--prefix-eta", type=float, default=1.0,
                    help="DDIM eta of the generated samples' path down to t_m (ddmkit control's default 1; official 0)")
    ap.add_argument("--prefix-integrator", choices=("ddim", "kar1", "kar2"), default="ddim",
                    help="the generated samples' path down to t_m: DDIM (with --prefix-eta) or a Karras sampler "
                         "(`ddmkit control --prefix-integrator`); Karras rows are keyed by its name")
    ap.add_argument("--prefix-s-tmin", type=float, default=None, help="kar2 prefix: churn window (default: ddmkit's)")
    ap.add_argument("--prefix-s-tmax", type=float, default=None, help="kar2 prefix: churn window (default: ddmkit's)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit-num", type=int, default=200, help="faces per boundary fit (half held out)")
    ap.add_argument("--boundary-dir", default=None,
                    help="take each attribute's boundary from DIR/<attribute>.safetensors instead of the shipped one")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "bench-editing"))
    ap.add_argument("--out", default=str(RESULTS / "editing.json"))
    ap.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, auto")
    ap.add_argument("--quick", action="store_true", help="16 faces, one extra t, no distance sweep (smoke test)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.num, args.t_sweep, args.distance_sweep, args.fit_num = 16, "300", "", 40
        args.cache = args.cache + "-quick"
        args.out = str(Path(args.out).with_name("editing_quick.json"))

    from ddmkit import __version__
    from ddmkit.data.faces import ATTRIBUTES, sample_faces, to_tensor_range
    from ddmkit.editing.edit import prefix_noise_seeds
    from ddmkit.editing import (Distance, EditPlan, edit_latents, fit_boundaries, generate, invert,
                                reconstruction_error, resolve_boundary, sample_to_tm)
    from ddmkit.editing.boundaries import invert_batched, model_fingerprint, read_boundary_file
    from ddmkit.editing.ddim import EpsModel, sample_to_tm_karras
    from ddmkit.editing.labelled import EVAL_FACES_SEED, FIT_FACES_SEED, labelled_faces
    from ddmkit.integrators import PerSampleGenerator
    from ddmkit.io import atomic_write_json
    from ddmkit.metrics.classifiers import load_attribute_classifier
    from ddmkit.models.loading import load_model
    from ddmkit.outputs import image_grid, save_png
    from ddmkit.sampling import sample_seed

    attrs = [a for a in args.attributes.split(",") if a]
    for a in attrs:
        if a not in ATTRIBUTES:
            raise SystemExit(f"unknown attribute {a}")
    from ddmkit.commands.sample import resolve_device

    device = resolve_device(args.device)
    den = load_model(args.model, device=device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    ident = model_fingerprint(den)
    clf = load_attribute_classifier("faces")
    cache = Cache(Path(args.cache) / ident["sha256"][:12])
    T = EpsModel(den).num_timesteps
    top = T - 1
    B = args.batch_size

    # ---------------------------------------------------------------- boundaries at t_m
    bnd_dir = cache.dir / "boundaries"
    boundaries = {}
    origins = {}
    t_fit = 0.0
    for a in attrs:
        if args.boundary_dir and not (Path(args.boundary_dir) / f"{a}.safetensors").is_file():
            raise SystemExit(f"--boundary-dir {args.boundary_dir} has no {a}.safetensors")
        try:
            if args.boundary_dir:
                boundaries[a] = resolve_boundary(str(Path(args.boundary_dir) / f"{a}.safetensors"), den)
                origin = "shipped"  # the same protocol as the shipped ones (scripts/fit_default_boundaries.sh)
            else:
                boundaries[a] = resolve_boundary(a, den)
                origin = "shipped"
        except Exception:
            from ddmkit.editing import load_boundary, save_boundary

            path = bnd_dir / f"{a}_tm_n{args.fit_num}.safetensors"
            if path.is_file():
                boundaries[a] = load_boundary(path, den)
            else:
                t0 = time.time()
                x, y, info = labelled_faces(args.fit_num, a, seed=FIT_FACES_SEED)
                b = fit_boundaries(den, x, y, attribute=a, t_m=T // 2, n_inv=args.n_inv, data=info, batch_size=B)
                t_fit += time.time() - t0
                save_boundary(path, b)
                boundaries[a] = b
            origin = "fitted (no shipped boundary)"
        origins[a] = origin
        log(f"boundary {a}: t_m {boundaries[a].t_m}, {origin}, test acc z {boundaries[a]['z'].stats['test_accuracy']}, "
            f"h {boundaries[a]['h'].stats['test_accuracy']}")
    t_m = boundaries[attrs[0]].t_m
    bkind_tm = "shipped" if all(o == "shipped" for o in origins.values()) else "balanced"
    h_source = boundaries[attrs[0]].h_source

    # ---------------------------------------------------------------- sources
    faces, true_labels = sample_faces(args.num, seed=EVAL_FACES_SEED)
    x_src = to_tensor_range(faces)
    feat_src, prob_src = clf.extract(x_src)
    pred_src = (prob_src > 0.5).astype(np.int64)
    clf_agreement = float((pred_src == true_labels).all(1).mean())
    noise_seeds = [sample_seed(args.seed + 1_000_003, i) for i in range(args.num)]

    def noise(idx):
        return PerSampleGenerator([noise_seeds[i] for i in idx])

    def batched_generate(z, h, t, plan=None, eta=1.0, inj="single", idx=None, space_move=None):
        """Generate from latents at t in batches; with a plan, edit first. Returns float32 images, seconds, nfe."""
        idx = np.arange(len(z)) if idx is None else np.asarray(idx)
        outs, nfe, secs = [], 0, 0.0
        for i in range(0, len(z), B):
            zb, hb = torch.from_numpy(z[i:i + B]), torch.from_numpy(h[i:i + B])
            gen = noise(idx[i:i + B]) if eta > 0 else None
            t0 = time.perf_counter()
            if plan is None:
                out, n = generate(den, zb, t, args.gen_steps, eta=eta, generator=gen)
                out = out.clamp(-1, 1)
            else:
                out, n, _ = edit_latents(den, zb, hb, plan, eta=eta, n_steps=args.gen_steps, h_injection=inj, generator=gen)
            sync()
            secs += time.perf_counter() - t0
            nfe = n
            outs.append(out.detach().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, *z.shape[1:]), np.float32), secs, nfe

    def inverted_latents(t):
        def run():
            t0 = time.perf_counter()
            z, h = invert_batched(den, x_src, t, args.n_inv, h_source=h_source, batch_size=B)
            return {"z": z.numpy(), "h": h.numpy(), "seconds": np.array(time.perf_counter() - t0)}
        log(f"inverted latents at t = {t}")
        return cache.arrays(f"inv_t{t}_n{args.num}", run)

    prefix_options = {k: v for k, v in (("s_tmin", args.prefix_s_tmin), ("s_tmax", args.prefix_s_tmax)) if v is not None}

    def prefix_eta_of(source, t):
        """The generated samples' prefix (a key of their rows): the DDIM prefix's eta, or the Karras
        integrator's name; None where there is no prefix."""
        if source != "generated" or t == top:
            return None
        return float(args.prefix_eta) if args.prefix_integrator == "ddim" else args.prefix_integrator

    def pe_tag(source, t):
        pe = prefix_eta_of(source, t)
        if isinstance(pe, str):
            return f"_pi{pe}" + "".join(f"_{k}{v:g}" for k, v in sorted(prefix_options.items()))
        return f"_pe{pe:g}" if pe else ""

    def generated_latents(t):
        def run():
            x_T = PerSampleGenerator([sample_seed(args.seed, i) for i in range(args.num)]).randn((args.num, 3, 32, 32))
            zs, hs = [], []
            t0 = time.perf_counter()
            for i in range(0, args.num, B):
                seeds = prefix_noise_seeds(args.seed, range(i, min(i + B, args.num)))
                if args.prefix_integrator != "ddim":
                    pre = sample_to_tm_karras(den, x_T[i:i + B], t, args.prefix_steps, integrator=args.prefix_integrator,
                                              generator=PerSampleGenerator(seeds), options=prefix_options)
                else:
                    pre = sample_to_tm(den, x_T[i:i + B], t, args.prefix_steps, h_source=h_source, eta=args.prefix_eta,
                                       generator=PerSampleGenerator(seeds) if args.prefix_eta > 0 else None)
                zs.append(pre.z.cpu().numpy())
                hs.append(pre.h.cpu().numpy())
            return {"z": np.concatenate(zs), "h": np.concatenate(hs), "seconds": np.array(time.perf_counter() - t0)}
        log(f"generated latents at t = {t}")
        return cache.arrays(f"gen_t{t}_n{args.num}_p{args.prefix_steps}{pe_tag('generated', t)}", run)

    def reference(source, t, lat, eta=1.0):
        """The images edits are compared with: the real faces, or the unedited samples (same x_T, noise, eta)."""
        if source == "inverted":
            return x_src.copy(), feat_src, pred_src
        def run():
            x, secs, _ = batched_generate(lat["z"], lat["h"], t, eta=eta)
            return {"u8": to_u8(x)}
        log(f"unedited generated samples from t = {t}, eta = {eta:g}")
        x = from_u8(cache.arrays(f"orig_t{t}_n{args.num}_g{args.gen_steps}_eta{eta:g}{pe_tag(source, t)}", run)["u8"])
        f, p = clf.extract(x)
        return x, f, (p > 0.5).astype(np.int64)

    # boundaries at other t: one pool inverted once per t
    pool_x, pool_labels = sample_faces(args.fit_num, seed=FIT_FACES_SEED + 2)
    pool_x = to_tensor_range(pool_x)

    def pool_boundaries(t):
        from ddmkit.editing import load_boundary, save_boundary

        out = {}
        lat = None
        for a in attrs:
            path = bnd_dir / f"pool_{a}_t{t}_n{args.fit_num}.safetensors"
            if path.is_file():
                out[a] = load_boundary(path, den)
                continue
            if lat is None:
                log(f"pool inversion at t = {t}")
                lat = cache.arrays(f"pool_t{t}_n{args.fit_num}", lambda: dict(zip(("z", "h"), (v.numpy() for v in invert_batched(
                    den, pool_x, t, args.n_inv, h_source=h_source, batch_size=B)))))
            j = ATTRIBUTES.index(a)
            b = fit_boundaries(den, pool_x, pool_labels[:, j], attribute=a, t_m=t, n_inv=args.n_inv, h_source=h_source,
                               n_test=0.5, data={"source": "faces-pool", "seed": FIT_FACES_SEED + 2, "num": args.fit_num},
                               inversions=(torch.from_numpy(lat["z"]), torch.from_numpy(lat["h"])))
            save_boundary(path, b)
            out[a] = b
        return out

    # ---------------------------------------------------------------- rows
    out_path = Path(args.out)
    prev = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for r in prev.get("rows", []):  # rows from before --prefix-eta: the official eta = 0 prefix
        if len(r["key"]) == 7:
            r["prefix_eta"] = 0.0 if r["source"] == "generated" and r["t_m"] != top else None
            r["key"] = r["key"] + [r["prefix_eta"]]
    done = {tuple(r["key"]): r for r in prev.get("rows", []) if r.get("num") == args.num and len(r["key"]) == 8}
    rows: list[dict] = list(done.values())
    strips: dict[tuple, dict] = {}

    def score(x, ref_x, ref_feat, ref_pred, j, target):
        f, p = clf.extract(x)
        pred = (p > 0.5).astype(np.int64)
        others = [k for k in range(len(ATTRIBUTES)) if k != j]
        return {
            "success": float((pred[:, j] == target).mean()) if target is not None else None,
            "preservation": float((pred[:, others] == ref_pred[:, others]).all(1).mean()),
            "other_attribute_flip_rate": {ATTRIBUTES[k]: float((pred[:, k] != ref_pred[:, k]).mean()) for k in others},
            "distance_to_source": {
                "pixel_rmse": float(np.sqrt(((x - ref_x) ** 2).reshape(len(x), -1).mean(1)).mean()),
                "feature_l2": float(np.linalg.norm(f - ref_feat, axis=1).mean()),
            },
        }

    def prefix_order(pe):
        return -1 if pe is None else (pe if isinstance(pe, float) else 10 + len(pe))

    def save():
        result = {
            "benchmark": "editing", "ddmkit_version": __version__, "model": args.model, "model_identity": ident,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "torch": torch.__version__, "device": device,
                        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None},
            "settings": {"num": args.num, "attributes": attrs, "t_m": t_m, "h_source": h_source, "n_inv": args.n_inv,
                         "gen_steps": args.gen_steps, "prefix_steps": args.prefix_steps, "prefix_eta": args.prefix_eta, "eta_after_edit": 1.0,
                         "generated_prefix": "each generated row's own: prefix_eta (DDIM, --prefix-steps NFE) or "
                         "prefix_integrator / prefix_options / prefix_steps (a Karras sampler, +1 NFE for h)",
                         "move": "set", "distance_units": "multiples of each boundary's recommended distance per space",
                         "held_out_seed": EVAL_FACES_SEED, "fit_seed": FIT_FACES_SEED, "batch_size": B,
                         "classifier_agreement_with_true_labels_on_held_out": clf_agreement},
            "boundaries": {a: {"path": b.path, "t_m": b.t_m,
                               "distance_calibration": b.meta.get("distance_calibration"), **{s: {k: bd.stats.get(k) for k in
                           ("n_train", "n_test", "train_accuracy", "test_accuracy", "fit_seconds", "recommended_distance")}
                           for s, bd in b.spaces.items()}} for a, b in boundaries.items()},
            "controls": controls, "costs": costs,
            "strips": {"editing_<attribute>_<source>.png": "rows: the first 8 samples; columns: source (real face, or "
                       "the unedited sample), then " + ", ".join(METHODS) + " at distance --distance (eta = 1), then "
                       "mixing-step with eta = 0",
                       "editing_<attribute>_mixing_steps.png": "inverted source; columns: source, then mixing-step "
                       "edits with pool boundaries at t = " + ", ".join(str(t) for t in sweep_ts)},
            "boundary_origin": origins,
            "rows": sorted(rows, key=lambda r: (r["attribute"], r["source"], METHODS.index(r["method"]), r["t_m"],
                                                r["distance"], r["boundaries"], -r["eta"],
                                                prefix_order(r["key"][7]))),
        }
        atomic_write_json(out_path, result)

    controls: dict = prev.get("controls", {}) if prev.get("settings", {}).get("num") == args.num else {}
    costs: dict = prev.get("costs", {}) if prev.get("settings", {}).get("num") == args.num else {}

    def run_row(attr, source, method, t, dist, bset, lat, ref, bkind, eta=1.0):
        key = (attr, source, method, int(t), float(dist), bkind, float(eta), prefix_eta_of(source, t))
        j = ATTRIBUTES.index(attr)
        ref_x, ref_feat, ref_pred = ref
        space = {"z-only": "z", "h-only": "h"}.get(method, "both")
        inj = "lagged" if method == "lagged-h" else "single"
        b = bset[attr]
        target = 1 - ref_pred[:, j]

        def compute():
            out = np.zeros_like(lat["z"])
            secs, nfe = 0.0, 0
            for sign, sel in ((+1, np.flatnonzero(target == 1)), (-1, np.flatnonzero(target == 0))):
                if len(sel) == 0:
                    continue
                plan = EditPlan([(b, Distance(sign * dist, relative=True))], space=space, move="set")
                x, s, n = batched_generate(lat["z"][sel], lat["h"][sel], t, plan, eta=eta, inj=inj, idx=sel)
                out[sel] = x
                secs += s
                nfe = n
            return {"u8": to_u8(out), "seconds": np.array(secs), "nfe": np.array(nfe)}

        dz = next(iter(b.spaces.values())).recommended_distance  # in the key: a refitted boundary is a new edit
        name = f"edit_{attr}_{source}_{method}_t{t}_d{dist:g}_{bkind}_eta{eta:g}_n{args.num}_r{dz:.5g}{pe_tag(source, t)}"
        res = cache.arrays(name, compute)
        x = from_u8(res["u8"])
        strips[key] = x[:8]
        if key in done:
            return
        row = {"key": list(key), "attribute": attr, "source": source, "method": method, "t_m": int(t),
               "distance": float(dist), "boundaries": bkind, "eta": float(eta),
               "prefix_eta": pe if isinstance(pe := prefix_eta_of(source, t), float) else None,
               **({"prefix_integrator": pe, "prefix_options": prefix_options, "prefix_steps": args.prefix_steps}
                  if isinstance(pe, str) else {}),
               "distance_abs": {s: float(dist * b[s].recommended_distance) for s in b.spaces},
               "boundary_test_accuracy": {s: b[s].stats.get("test_accuracy") for s in b.spaces},
               "num": args.num, **score(x, ref_x, ref_feat, ref_pred, j, target),
               "nfe_generation": int(res["nfe"]), "seconds_per_image": float(res["seconds"]) / args.num}
        rows.append(row)
        done[key] = row
        save()
        log(f"{attr:10s} {source:9s} {method:12s} t={t:4d} d={dist:g} eta={eta:g}: success {row['success']:.3f}, "
            f"preservation {row['preservation']:.3f}, rmse {row['distance_to_source']['pixel_rmse']:.3f}")

    sweep_ts = sorted({int(v) for v in args.t_sweep.split(",") if v} | {t_m})

    # main comparison at t_m and at T-1
    lat_inv = inverted_latents(t_m)
    lat_gen = generated_latents(t_m)
    refs = {"inverted": reference("inverted", t_m, lat_inv), "generated": reference("generated", t_m, lat_gen)}
    b_top = pool_boundaries(top)
    lat_inv_top = inverted_latents(top)

    def gen_top():
        x_T = PerSampleGenerator([sample_seed(args.seed, i) for i in range(args.num)]).randn((args.num, 3, 32, 32))
        hs = []
        for i in range(0, args.num, B):
            hs.append(sample_to_tm(den, x_T[i:i + B], top, 1, h_source=h_source).h.cpu().numpy())
        return {"z": x_T.numpy(), "h": np.concatenate(hs)}

    lat_gen_top = cache.arrays(f"gen_top_n{args.num}", gen_top)
    # the x_T method's reference for generated samples is the unedited sample from the same x_T
    for attr in attrs:
        for source, lat, lat_top in (("inverted", lat_inv, lat_inv_top), ("generated", lat_gen, lat_gen_top)):
            ref = refs[source]
            for method in METHODS:
                if method == "x_T":
                    ref_top = ref if source == "inverted" else reference("generated", top, lat_gen_top)
                    run_row(attr, source, method, top, args.distance, b_top, lat_top, ref_top, "pool")
                else:
                    run_row(attr, source, method, t_m, args.distance, boundaries, lat, ref, bkind_tm)
            # the paper's eta = 1 after the edit re-randomises much of a 32 px face: also eta = 0
            ref0 = ref if source == "inverted" else reference("generated", t_m, lat, eta=0.0)
            run_row(attr, source, "mixing-step", t_m, args.distance, boundaries, lat, ref0, bkind_tm, eta=0.0)
    # ---------------------------------------------------------------- controls
    if "reconstruction" not in controls:
        def recon():
            x, secs, nfe = batched_generate(lat_inv["z"], lat_inv["h"], t_m, eta=0.0)
            return {"x": x, "seconds": np.array(secs), "nfe": np.array(nfe)}
        rec = cache.arrays(f"recon_t{t_m}_n{args.num}", recon)
        err = reconstruction_error(x_src, rec["x"])
        s = score(rec["x"], x_src, feat_src, pred_src, 0, None)
        controls["reconstruction"] = {"eta": 0.0, "t_m": t_m, "n_inv": args.n_inv, "rmse": err["rmse"], "psnr_db": err["psnr_db"],
                                      "max_abs": err["max_abs"], "preservation_all_6": float(
                                          (((clf.extract(rec["x"])[1] > 0.5).astype(int)) == pred_src).all(1).mean()),
                                      "feature_l2": s["distance_to_source"]["feature_l2"]}
        def regen():
            x, secs, nfe = batched_generate(lat_inv["z"], lat_inv["h"], t_m, eta=1.0)
            return {"u8": to_u8(x)}
        x1 = from_u8(cache.arrays(f"regen_t{t_m}_n{args.num}", regen)["u8"])
        s1 = score(x1, x_src, feat_src, pred_src, 0, None)
        controls["unedited_eta1_regeneration"] = {
            "t_m": t_m, "preservation_all_6": float((((clf.extract(x1)[1] > 0.5).astype(int)) == pred_src).all(1).mean()),
            **s1["distance_to_source"]}
        save()
        log(f"controls: {controls}")

    # ---------------------------------------------------------------- costs
    if "svm_fit_seconds" not in costs:
        from ddmkit.editing import fit_svm

        x, y, _ = labelled_faces(args.fit_num, attrs[0], seed=FIT_FACES_SEED)
        t0 = time.perf_counter()
        z, h = invert_batched(den, x, t_m, args.n_inv, h_source=h_source, batch_size=B)
        inv_secs = time.perf_counter() - t0
        tr, te = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
        fits = {}
        for s, f in (("z", z.numpy()), ("h", h.numpy())):
            t0 = time.perf_counter()
            fit_svm(f[tr], y[tr], f[te], y[te], space=s)
            fits[s] = time.perf_counter() - t0
        with EpsModel(den) as m, torch.no_grad():
            xb = torch.randn(B, 3, 32, 32, device=den.device)
            m(xb, t_m)
            sync()
            t0 = time.perf_counter()
            for _ in range(5):
                m(xb, t_m)
            sync()
            call = (time.perf_counter() - t0) / 5
        per_edit = [r["seconds_per_image"] for r in rows if r["method"] == "mixing-step" and r["t_m"] == t_m]
        costs.update({
            "svm_fit_seconds": fits, "svm_fit_target_seconds": 1.0,
            "inversion_seconds": inv_secs, "inversion_images": len(y), "inversion_nfe": args.n_inv - 1,
            "model_call_seconds_per_batch": call, "batch_size": B, "model_call_seconds_per_image": call / B,
            "edit_seconds_per_image": float(np.median(per_edit)) if per_edit else None,
            "edit_nfe": args.gen_steps,
        })
        if per_edit:
            costs["edit_time_over_nfe_x_call"] = costs["edit_seconds_per_image"] / (args.gen_steps * call / B)
        save()
        log(f"costs: {costs}")

    # ---------------------------------------------------------------- strips
    def write_strips():
        def strip(rows_imgs, path):
            u8 = [to_u8(r) for r in rows_imgs]
            n = min(len(r) for r in u8)
            grid = np.stack([r[:n] for r in u8], axis=1)  # (samples, columns, C, H, W)
            k, c = grid.shape[:2]
            tiles = grid.reshape(k * c, *grid.shape[2:]).transpose(0, 2, 3, 1)
            save_png(path, image_grid(tiles, ncols=c), scale=3)

        for attr in attrs:
            for source in ("inverted", "generated"):
                cols = [refs[source][0][:8]]
                for method in METHODS:
                    t = top if method == "x_T" else t_m
                    key = (attr, source, method, t, float(args.distance), "pool" if method == "x_T" else bkind_tm, 1.0,
                           prefix_eta_of(source, t))
                    if key in strips:
                        cols.append(strips[key])
                key = (attr, source, "mixing-step", t_m, float(args.distance), bkind_tm, 0.0, prefix_eta_of(source, t_m))
                if key in strips:
                    cols.append(strips[key])
                tag = f"_{args.prefix_integrator}" if source == "generated" and args.prefix_integrator != "ddim" else ""
                strip(cols, out_path.parent / f"editing_{attr}_{source}{tag}.png")
            cols = [x_src[:8]] + [strips[k] for k in sorted(strips) if k[0] == attr and k[1] == "inverted"
                                  and k[2] == "mixing-step" and k[4] == float(args.distance) and k[5] == "pool"
                                  and k[6] == 1.0]
            strip(cols, out_path.parent / f"editing_{attr}_mixing_steps.png")
    write_strips()
    log(f"wrote {out_path} and strips (main comparison); now the distance and mixing-step sweeps")

    # distance sweep
    for dist in [float(v) for v in args.distance_sweep.split(",") if v]:
        for source, lat in (("inverted", lat_inv), ("generated", lat_gen)):
            run_row(attrs[0], source, "mixing-step", t_m, dist, boundaries, lat, refs[source], bkind_tm)
    # across mixing steps (inverted source; pool boundaries, also at t_m for a consistent curve)
    for t in sweep_ts:
        bt = pool_boundaries(t)
        lat_t = inverted_latents(t)
        for attr in attrs:
            run_row(attr, "inverted", "mixing-step", t, args.distance, bt, lat_t, refs["inverted"], "pool")
    save()

    write_strips()
    log(f"wrote {out_path} and strips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
