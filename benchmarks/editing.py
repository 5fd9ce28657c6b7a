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
from common import Cache, attribute_scores, from_u8, log, to_u8

from ddmkit import __version__
from ddmkit.data.faces import ATTRIBUTES, sample_faces, to_tensor_range
from ddmkit.distributed import resolve_device
from ddmkit.editing import (Distance, EditPlan, EditSettings, MixingStep, edit_latents, fit_boundaries, fit_svm,
                            generate, invert_batched, load_boundary, model_fingerprint, reconstruction_error,
                            resolve_boundary, sample_to_tm, sample_to_tm_karras, save_boundary, seeds)
from ddmkit.editing.ddim import EpsModel
from ddmkit.editing.labelled import EVAL_FACES_SEED, FIT_FACES_SEED, labelled_faces
from ddmkit.integrators import PerSampleGenerator
from ddmkit.io import atomic_write_json
from ddmkit.metrics.classifiers import load_attribute_classifier
from ddmkit.models.loading import load_model
from ddmkit.outputs import image_grid, save_png
from ddmkit.sampling import sample_seed

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("mixing-step", "x_T", "z-only", "h-only", "lagged-h")
DEFAULT_ATTRS = ("smiling", "eyeglasses", "dark_hair")
SHAPE = (3, 32, 32)  # the default faces model's samples


def parse_args(argv=None) -> argparse.Namespace:
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
    if args.quick:
        args.num, args.t_sweep, args.distance_sweep, args.fit_num = 16, "300", "", 40
        args.cache = args.cache + "-quick"
        args.out = str(Path(args.out).with_name("editing_quick.json"))
    return args


def prefix_order(pe) -> float:
    """Rows of one method: no prefix, then DDIM prefixes by eta, then Karras ones."""
    return -1 if pe is None else (pe if isinstance(pe, float) else 10 + len(pe))


class Run:
    """One benchmark run: the model, the classifier, the cache, the sources, and the finished rows."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.attrs = [a for a in args.attributes.split(",") if a]
        for a in self.attrs:
            if a not in ATTRIBUTES:
                raise SystemExit(f"unknown attribute {a}")
        self.device = resolve_device(args.device)
        self.den = load_model(args.model, device=self.device)
        self.ident = model_fingerprint(self.den)
        self.clf = load_attribute_classifier("faces")
        self.cache = Cache(Path(args.cache) / self.ident["sha256"][:12])
        self.T = EpsModel(self.den).num_timesteps
        self.top = self.T - 1
        self.B = args.batch_size
        self.prefix_options = {k: v for k, v in (("s_tmin", args.prefix_s_tmin), ("s_tmax", args.prefix_s_tmax))
                               if v is not None}
        self.strips: dict[tuple, np.ndarray] = {}

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    # ---------------------------------------------------------------- boundaries at t_m
    def load_boundaries(self) -> None:
        """The shipped boundaries (or --boundary-dir's); fitted by the same rule where there are none."""
        args = self.args
        self.boundaries, self.origins = {}, {}
        for a in self.attrs:
            if args.boundary_dir and not (Path(args.boundary_dir) / f"{a}.safetensors").is_file():
                raise SystemExit(f"--boundary-dir {args.boundary_dir} has no {a}.safetensors")
            try:
                spec = str(Path(args.boundary_dir) / f"{a}.safetensors") if args.boundary_dir else a
                self.boundaries[a] = resolve_boundary(spec, self.den)
                origin = "shipped"  # --boundary-dir: the same protocol as the shipped ones (scripts/fit_default_boundaries.sh)
            except Exception:
                self.boundaries[a] = self._fitted_boundary(a)
                origin = "fitted (no shipped boundary)"
            self.origins[a] = origin
            b = self.boundaries[a]
            log(f"boundary {a}: t_m {b.t_m}, {origin}, test acc z {b['z'].stats['test_accuracy']}, "
                f"h {b['h'].stats['test_accuracy']}")
        first = self.boundaries[self.attrs[0]]
        self.t_m, self.h_source = first.t_m, first.h_source
        self.bkind_tm = "shipped" if all(o == "shipped" for o in self.origins.values()) else "balanced"

    def _fitted_boundary(self, a: str):
        path = self.cache.dir / "boundaries" / f"{a}_tm_n{self.args.fit_num}.safetensors"
        if path.is_file():
            return load_boundary(path, self.den)
        x, y, info = labelled_faces(self.args.fit_num, a, seed=FIT_FACES_SEED)
        b = fit_boundaries(self.den, x, y, attribute=a, step=MixingStep(self.T // 2, self.args.n_inv), data=info,
                           batch_size=self.B)
        save_boundary(path, b)
        return b

    # ---------------------------------------------------------------- sources and latents
    def load_sources(self) -> None:
        """The held-out faces (their classifier features and calls), the noise seeds, the boundary-fit pool."""
        args = self.args
        faces, true_labels = sample_faces(args.num, seed=EVAL_FACES_SEED)
        self.x_src = to_tensor_range(faces)
        self.feat_src, prob_src = self.clf.extract(self.x_src)
        self.pred_src = (prob_src > 0.5).astype(np.int64)
        self.clf_agreement = float((self.pred_src == true_labels).all(1).mean())
        self.noise_seeds = [sample_seed(args.seed + 1_000_003, i) for i in range(args.num)]
        pool_x, self.pool_labels = sample_faces(args.fit_num, seed=FIT_FACES_SEED + 2)
        self.pool_x = to_tensor_range(pool_x)

    def noise(self, idx) -> PerSampleGenerator:
        return PerSampleGenerator([self.noise_seeds[i] for i in idx])

    def batched_generate(self, z, h, t, plan=None, eta=1.0, inj="single", idx=None):
        """Generate from latents at t in batches; with a plan, edit first. Returns float32 images, seconds, nfe."""
        idx = np.arange(len(z)) if idx is None else np.asarray(idx)
        outs, nfe, secs, B = [], 0, 0.0, self.B
        for i in range(0, len(z), B):
            zb, hb = torch.from_numpy(z[i:i + B]), torch.from_numpy(h[i:i + B])
            gen = self.noise(idx[i:i + B]) if eta > 0 else None
            t0 = time.perf_counter()
            if plan is None:
                out, n = generate(self.den, zb, MixingStep(t), self.args.gen_steps, eta=eta, generator=gen)
                out = out.clamp(-1, 1)
            else:
                settings = EditSettings(eta=eta, n_steps=self.args.gen_steps, h_injection=inj)
                out, n, _ = edit_latents(self.den, zb, hb, plan, settings, generator=gen)
            self.sync()
            secs += time.perf_counter() - t0
            nfe = n
            outs.append(out.detach().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, *z.shape[1:]), np.float32), secs, nfe

    def inverted_latents(self, t: int) -> dict:
        def run():
            t0 = time.perf_counter()
            z, h = invert_batched(self.den, self.x_src, MixingStep(t, self.args.n_inv, self.h_source), batch_size=self.B)
            return {"z": z.numpy(), "h": h.numpy(), "seconds": np.array(time.perf_counter() - t0)}
        log(f"inverted latents at t = {t}")
        return self.cache.arrays(f"inv_t{t}_n{self.args.num}", run)

    def prefix_key(self, source: str, t: int):
        """The generated samples' prefix (a key of their rows): the DDIM prefix's eta, or the Karras
        integrator's name; None where there is no prefix."""
        if source != "generated" or t == self.top:
            return None
        return float(self.args.prefix_eta) if self.args.prefix_integrator == "ddim" else self.args.prefix_integrator

    def pe_tag(self, source: str, t: int) -> str:
        pe = self.prefix_key(source, t)
        if isinstance(pe, str):
            return f"_pi{pe}" + "".join(f"_{k}{v:g}" for k, v in sorted(self.prefix_options.items()))
        return f"_pe{pe:g}" if pe else ""

    def x_T(self) -> torch.Tensor:
        return seeds.x_T(self.args.seed, range(self.args.num), SHAPE)

    def _prefix(self, x_T: torch.Tensor, t: int, lo: int, hi: int):
        args = self.args
        noise = PerSampleGenerator(seeds.prefix_noise_seeds(args.seed, range(lo, hi)))
        if args.prefix_integrator != "ddim":
            return sample_to_tm_karras(self.den, x_T[lo:hi], MixingStep(t), args.prefix_steps,
                                       integrator=args.prefix_integrator, generator=noise, options=self.prefix_options)
        return sample_to_tm(self.den, x_T[lo:hi], MixingStep(t, h_source=self.h_source), args.prefix_steps,
                            eta=args.prefix_eta, generator=noise if args.prefix_eta > 0 else None)

    def generated_latents(self, t: int) -> dict:
        args = self.args

        def run():
            x_T, zs, hs = self.x_T(), [], []
            t0 = time.perf_counter()
            for i in range(0, args.num, self.B):
                pre = self._prefix(x_T, t, i, min(i + self.B, args.num))
                zs.append(pre.z.cpu().numpy())
                hs.append(pre.h.cpu().numpy())
            return {"z": np.concatenate(zs), "h": np.concatenate(hs), "seconds": np.array(time.perf_counter() - t0)}
        log(f"generated latents at t = {t}")
        return self.cache.arrays(f"gen_t{t}_n{args.num}_p{args.prefix_steps}{self.pe_tag('generated', t)}", run)

    def generated_top(self) -> dict:
        """x_T itself and h at (x_T, T-1): the generated source of the x_T method."""
        def run():
            x_T = self.x_T()
            hs = [sample_to_tm(self.den, x_T[i:i + self.B], MixingStep(self.top, h_source=self.h_source), 1).h.cpu().numpy()
                  for i in range(0, self.args.num, self.B)]
            return {"z": x_T.numpy(), "h": np.concatenate(hs)}
        return self.cache.arrays(f"gen_top_n{self.args.num}", run)

    def reference(self, source: str, t: int, lat: dict, eta: float = 1.0):
        """The images edits are compared with: the real faces, or the unedited samples (same x_T, noise, eta)."""
        if source == "inverted":
            return self.x_src.copy(), self.feat_src, self.pred_src

        def run():
            x, secs, _ = self.batched_generate(lat["z"], lat["h"], t, eta=eta)
            return {"u8": to_u8(x)}
        log(f"unedited generated samples from t = {t}, eta = {eta:g}")
        name = f"orig_t{t}_n{self.args.num}_g{self.args.gen_steps}_eta{eta:g}{self.pe_tag(source, t)}"
        x = from_u8(self.cache.arrays(name, run)["u8"])
        f, p = self.clf.extract(x)
        return x, f, (p > 0.5).astype(np.int64)

    def pool_boundaries(self, t: int) -> dict:
        """Boundaries at t from one pool of faces with their natural labels, inverted once per t."""
        args, out, lat = self.args, {}, None
        step = MixingStep(t, args.n_inv, self.h_source)
        for a in self.attrs:
            path = self.cache.dir / "boundaries" / f"pool_{a}_t{t}_n{args.fit_num}.safetensors"
            if path.is_file():
                out[a] = load_boundary(path, self.den)
                continue
            if lat is None:
                log(f"pool inversion at t = {t}")
                lat = self.cache.arrays(f"pool_t{t}_n{args.fit_num}", lambda: dict(zip(("z", "h"), (
                    v.numpy() for v in invert_batched(self.den, self.pool_x, step, batch_size=self.B)))))
            j = ATTRIBUTES.index(a)
            b = fit_boundaries(self.den, self.pool_x, self.pool_labels[:, j], attribute=a, step=step, n_test=0.5,
                               data={"source": "faces-pool", "seed": FIT_FACES_SEED + 2, "num": args.fit_num},
                               inversions=(torch.from_numpy(lat["z"]), torch.from_numpy(lat["h"])))
            save_boundary(path, b)
            out[a] = b
        return out

    # ---------------------------------------------------------------- rows
    def load_previous(self) -> None:
        """Rows, controls and costs of an earlier run of the same --num (resumable)."""
        args = self.args
        self.out_path = Path(args.out)
        prev = json.loads(self.out_path.read_text()) if self.out_path.is_file() else {}
        for r in prev.get("rows", []):  # rows from before --prefix-eta: the official eta = 0 prefix
            if len(r["key"]) == 7:
                r["prefix_eta"] = 0.0 if r["source"] == "generated" and r["t_m"] != self.top else None
                r["key"] = r["key"] + [r["prefix_eta"]]
        self.done = {tuple(r["key"]): r for r in prev.get("rows", []) if r.get("num") == args.num and len(r["key"]) == 8}
        self.rows: list[dict] = list(self.done.values())
        same = prev.get("settings", {}).get("num") == args.num
        self.controls: dict = prev.get("controls", {}) if same else {}
        self.costs: dict = prev.get("costs", {}) if same else {}
        self.sweep_ts = sorted({int(v) for v in args.t_sweep.split(",") if v} | {self.t_m})

    def score(self, x, ref_x, ref_feat, ref_pred, j, target) -> dict:
        f, p = self.clf.extract(x)
        pred = (p > 0.5).astype(np.int64)
        return {
            **attribute_scores(pred, ref_pred, j, target),
            "distance_to_source": {
                "pixel_rmse": float(np.sqrt(((x - ref_x) ** 2).reshape(len(x), -1).mean(1)).mean()),
                "feature_l2": float(np.linalg.norm(f - ref_feat, axis=1).mean()),
            },
        }

    def result(self) -> dict:
        args, B = self.args, self.B
        return {
            "benchmark": "editing", "ddmkit_version": __version__, "model": args.model, "model_identity": self.ident,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "torch": torch.__version__, "device": self.device,
                        "cuda": torch.cuda.get_device_name(0) if self.device.startswith("cuda") else None},
            "settings": {"num": args.num, "attributes": self.attrs, "t_m": self.t_m, "h_source": self.h_source,
                         "n_inv": args.n_inv, "gen_steps": args.gen_steps, "prefix_steps": args.prefix_steps,
                         "prefix_eta": args.prefix_eta, "eta_after_edit": 1.0,
                         "generated_prefix": "each generated row's own: prefix_eta (DDIM, --prefix-steps NFE) or "
                         "prefix_integrator / prefix_options / prefix_steps (a Karras sampler, +1 NFE for h)",
                         "move": "set", "distance_units": "multiples of each boundary's recommended distance per space",
                         "held_out_seed": EVAL_FACES_SEED, "fit_seed": FIT_FACES_SEED, "batch_size": B,
                         "classifier_agreement_with_true_labels_on_held_out": self.clf_agreement},
            "boundaries": {a: {"path": b.path, "t_m": b.t_m,
                               "distance_calibration": b.meta.get("distance_calibration"), **{s: {k: bd.stats.get(k) for k in
                           ("n_train", "n_test", "train_accuracy", "test_accuracy", "fit_seconds", "recommended_distance")}
                           for s, bd in b.spaces.items()}} for a, b in self.boundaries.items()},
            "controls": self.controls, "costs": self.costs,
            "strips": {"editing_<attribute>_<source>.png": "rows: the first 8 samples; columns: source (real face, or "
                       "the unedited sample), then " + ", ".join(METHODS) + " at distance --distance (eta = 1), then "
                       "mixing-step with eta = 0",
                       "editing_<attribute>_mixing_steps.png": "inverted source; columns: source, then mixing-step "
                       "edits with pool boundaries at t = " + ", ".join(str(t) for t in self.sweep_ts)},
            "boundary_origin": self.origins,
            "rows": sorted(self.rows, key=lambda r: (r["attribute"], r["source"], METHODS.index(r["method"]), r["t_m"],
                                                     r["distance"], r["boundaries"], -r["eta"],
                                                     prefix_order(r["key"][7]))),
        }

    def save(self) -> None:
        atomic_write_json(self.out_path, self.result())

    def _edit_outputs(self, b, method: str, t: int, dist: float, lat: dict, target: np.ndarray, eta: float) -> dict:
        """Every source edited toward the opposite of its attribute (d = +D if absent, -D if present)."""
        space = {"z-only": "z", "h-only": "h"}.get(method, "both")
        inj = "lagged" if method == "lagged-h" else "single"
        out = np.zeros_like(lat["z"])
        secs, nfe = 0.0, 0
        for sign, sel in ((+1, np.flatnonzero(target == 1)), (-1, np.flatnonzero(target == 0))):
            if len(sel) == 0:
                continue
            plan = EditPlan([(b, Distance(sign * dist, relative=True))], space=space, move="set")
            x, s, n = self.batched_generate(lat["z"][sel], lat["h"][sel], t, plan, eta=eta, inj=inj, idx=sel)
            out[sel] = x
            secs += s
            nfe = n
        return {"u8": to_u8(out), "seconds": np.array(secs), "nfe": np.array(nfe)}

    def run_row(self, attr, source, method, t, dist, bset, lat, ref, bkind, eta=1.0) -> None:
        args = self.args
        pe = self.prefix_key(source, t)
        key = (attr, source, method, int(t), float(dist), bkind, float(eta), pe)
        j = ATTRIBUTES.index(attr)
        ref_x, ref_feat, ref_pred = ref
        b = bset[attr]
        target = 1 - ref_pred[:, j]
        dz = next(iter(b.spaces.values())).recommended_distance  # in the key: a refitted boundary is a new edit
        name = (f"edit_{attr}_{source}_{method}_t{t}_d{dist:g}_{bkind}_eta{eta:g}_n{args.num}_r{dz:.5g}"
                f"{self.pe_tag(source, t)}")
        res = self.cache.arrays(name, lambda: self._edit_outputs(b, method, t, dist, lat, target, eta))
        x = from_u8(res["u8"])
        self.strips[key] = x[:8]
        if key in self.done:
            return
        row = {"key": list(key), "attribute": attr, "source": source, "method": method, "t_m": int(t),
               "distance": float(dist), "boundaries": bkind, "eta": float(eta),
               "prefix_eta": pe if isinstance(pe, float) else None,
               **({"prefix_integrator": pe, "prefix_options": self.prefix_options, "prefix_steps": args.prefix_steps}
                  if isinstance(pe, str) else {}),
               "distance_abs": {s: float(dist * b[s].recommended_distance) for s in b.spaces},
               "boundary_test_accuracy": {s: b[s].stats.get("test_accuracy") for s in b.spaces},
               "num": args.num, **self.score(x, ref_x, ref_feat, ref_pred, j, target),
               "nfe_generation": int(res["nfe"]), "seconds_per_image": float(res["seconds"]) / args.num}
        self.rows.append(row)
        self.done[key] = row
        self.save()
        log(f"{attr:10s} {source:9s} {method:12s} t={t:4d} d={dist:g} eta={eta:g}: success {row['success']:.3f}, "
            f"preservation {row['preservation']:.3f}, rmse {row['distance_to_source']['pixel_rmse']:.3f}")

    # ---------------------------------------------------------------- the comparisons
    def main_comparison(self) -> None:
        """Every method at t_m (x_T: at T-1) for both sources, and mixing-step with eta = 0."""
        args, t_m, top = self.args, self.t_m, self.top
        self.lat_inv = self.inverted_latents(t_m)
        self.lat_gen = self.generated_latents(t_m)
        self.refs = {"inverted": self.reference("inverted", t_m, self.lat_inv),
                     "generated": self.reference("generated", t_m, self.lat_gen)}
        b_top = self.pool_boundaries(top)
        lat_inv_top = self.inverted_latents(top)
        lat_gen_top = self.generated_top()
        # the x_T method's reference for generated samples is the unedited sample from the same x_T
        for attr in self.attrs:
            for source, lat, lat_top in (("inverted", self.lat_inv, lat_inv_top), ("generated", self.lat_gen, lat_gen_top)):
                ref = self.refs[source]
                for method in METHODS:
                    if method == "x_T":
                        ref_top = ref if source == "inverted" else self.reference("generated", top, lat_gen_top)
                        self.run_row(attr, source, method, top, args.distance, b_top, lat_top, ref_top, "pool")
                    else:
                        self.run_row(attr, source, method, t_m, args.distance, self.boundaries, lat, ref, self.bkind_tm)
                # the paper's eta = 1 after the edit re-randomises much of a 32 px face: also eta = 0
                ref0 = ref if source == "inverted" else self.reference("generated", t_m, lat, eta=0.0)
                self.run_row(attr, source, "mixing-step", t_m, args.distance, self.boundaries, lat, ref0, self.bkind_tm,
                             eta=0.0)

    def measure_controls(self) -> None:
        """The eta = 0 reconstruction and an unedited eta = 1 regeneration, scored as the edits are."""
        if "reconstruction" in self.controls:
            return
        t_m, lat, x_src = self.t_m, self.lat_inv, self.x_src

        def recon():
            x, secs, nfe = self.batched_generate(lat["z"], lat["h"], t_m, eta=0.0)
            return {"x": x, "seconds": np.array(secs), "nfe": np.array(nfe)}
        rec = self.cache.arrays(f"recon_t{t_m}_n{self.args.num}", recon)
        err = reconstruction_error(x_src, rec["x"])
        s = self.score(rec["x"], x_src, self.feat_src, self.pred_src, 0, None)
        self.controls["reconstruction"] = {
            "eta": 0.0, "t_m": t_m, "n_inv": self.args.n_inv, "rmse": err["rmse"], "psnr_db": err["psnr_db"],
            "max_abs": err["max_abs"], "preservation_all_6": self._preservation_all(rec["x"]),
            "feature_l2": s["distance_to_source"]["feature_l2"]}

        def regen():
            x, secs, nfe = self.batched_generate(lat["z"], lat["h"], t_m, eta=1.0)
            return {"u8": to_u8(x)}
        x1 = from_u8(self.cache.arrays(f"regen_t{t_m}_n{self.args.num}", regen)["u8"])
        s1 = self.score(x1, x_src, self.feat_src, self.pred_src, 0, None)
        self.controls["unedited_eta1_regeneration"] = {
            "t_m": t_m, "preservation_all_6": self._preservation_all(x1), **s1["distance_to_source"]}
        self.save()
        log(f"controls: {self.controls}")

    def _preservation_all(self, x: np.ndarray) -> float:
        return float((((self.clf.extract(x)[1] > 0.5).astype(int)) == self.pred_src).all(1).mean())

    def _model_call_seconds(self) -> float:
        """Seconds of one batched network call: the mean of 5, after a warm-up call."""
        with EpsModel(self.den) as m, torch.no_grad():
            xb = torch.randn(self.B, *SHAPE, device=self.den.device)
            m(xb, self.t_m)
            self.sync()
            t0 = time.perf_counter()
            for _ in range(5):
                m(xb, self.t_m)
            self.sync()
            return (time.perf_counter() - t0) / 5

    def measure_costs(self) -> None:
        """SVM fit time for fit_num faces (z and h), inversion time, time per edit against NFE x call time."""
        if "svm_fit_seconds" in self.costs:
            return
        args, t_m = self.args, self.t_m
        x, y, _ = labelled_faces(args.fit_num, self.attrs[0], seed=FIT_FACES_SEED)
        t0 = time.perf_counter()
        z, h = invert_batched(self.den, x, MixingStep(t_m, args.n_inv, self.h_source), batch_size=self.B)
        inv_secs = time.perf_counter() - t0
        tr, te = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
        fits = {}
        for s, f in (("z", z.numpy()), ("h", h.numpy())):
            t0 = time.perf_counter()
            fit_svm(f[tr], y[tr], f[te], y[te], space=s)
            fits[s] = time.perf_counter() - t0
        call = self._model_call_seconds()
        per_edit = [r["seconds_per_image"] for r in self.rows if r["method"] == "mixing-step" and r["t_m"] == t_m]
        self.costs.update({
            "svm_fit_seconds": fits, "svm_fit_target_seconds": 1.0,
            "inversion_seconds": inv_secs, "inversion_images": len(y), "inversion_nfe": args.n_inv - 1,
            "model_call_seconds_per_batch": call, "batch_size": self.B, "model_call_seconds_per_image": call / self.B,
            "edit_seconds_per_image": float(np.median(per_edit)) if per_edit else None,
            "edit_nfe": args.gen_steps,
        })
        if per_edit:
            self.costs["edit_time_over_nfe_x_call"] = self.costs["edit_seconds_per_image"] / (args.gen_steps * call / self.B)
        self.save()
        log(f"costs: {self.costs}")

    # ---------------------------------------------------------------- strips
    @staticmethod
    def strip(rows_imgs: list[np.ndarray], path: Path) -> None:
        u8 = [to_u8(r) for r in rows_imgs]
        n = min(len(r) for r in u8)
        grid = np.stack([r[:n] for r in u8], axis=1)  # (samples, columns, C, H, W)
        k, c = grid.shape[:2]
        tiles = grid.reshape(k * c, *grid.shape[2:]).transpose(0, 2, 3, 1)
        save_png(path, image_grid(tiles, ncols=c), scale=3)

    def write_strips(self) -> None:
        args, t_m, folder = self.args, self.t_m, self.out_path.parent
        dist = float(args.distance)
        for attr in self.attrs:
            for source in ("inverted", "generated"):
                cols = [self.refs[source][0][:8]]
                for method in METHODS:
                    t = self.top if method == "x_T" else t_m
                    key = (attr, source, method, t, dist, "pool" if method == "x_T" else self.bkind_tm, 1.0,
                           self.prefix_key(source, t))
                    if key in self.strips:
                        cols.append(self.strips[key])
                key = (attr, source, "mixing-step", t_m, dist, self.bkind_tm, 0.0, self.prefix_key(source, t_m))
                if key in self.strips:
                    cols.append(self.strips[key])
                tag = f"_{args.prefix_integrator}" if source == "generated" and args.prefix_integrator != "ddim" else ""
                self.strip(cols, folder / f"editing_{attr}_{source}{tag}.png")
            cols = [self.x_src[:8]] + [self.strips[k] for k in sorted(self.strips) if k[0] == attr and k[1] == "inverted"
                                       and k[2] == "mixing-step" and k[4] == dist and k[5] == "pool" and k[6] == 1.0]
            self.strip(cols, folder / f"editing_{attr}_mixing_steps.png")

    # ---------------------------------------------------------------- sweeps
    def sweeps(self) -> None:
        """Mixing-step edits at other distances (first attribute, both sources) and at other t (pool boundaries,
        also at t_m for a consistent curve; inverted source)."""
        args = self.args
        for dist in [float(v) for v in args.distance_sweep.split(",") if v]:
            for source, lat in (("inverted", self.lat_inv), ("generated", self.lat_gen)):
                self.run_row(self.attrs[0], source, "mixing-step", self.t_m, dist, self.boundaries, lat,
                             self.refs[source], self.bkind_tm)
        for t in self.sweep_ts:
            bt = self.pool_boundaries(t)
            lat_t = self.inverted_latents(t)
            for attr in self.attrs:
                self.run_row(attr, "inverted", "mixing-step", t, args.distance, bt, lat_t, self.refs["inverted"], "pool")
        self.save()


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    run = Run(args)
    run.load_boundaries()
    run.load_sources()
    run.load_previous()
    run.main_comparison()
    run.measure_controls()
    run.measure_costs()
    run.write_strips()
    log(f"wrote {run.out_path} and strips (main comparison); now the distance and mixing-step sweeps")
    run.sweeps()
    run.write_strips()
    log(f"wrote {run.out_path} and strips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
