"""`ddmkit edit`: boundary-guided semantic edits of real images (BoundaryDiffusion, spec 5.1)."""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DdmkitError
from ..output_guard import check_target, json_file_says, refuse_inputs
from ..provenance import provenance
from .argtypes import MAX_BATCH, MAX_STEPS, float_range, int_range, path_text, seed
from .common import add_model_argument, add_overwrite_argument, model_input_paths, model_options, resolve_device, run_lock

EXAMPLE = ("example: ddmkit edit photo.png --boundary smiling --distance 20 --out runs/edit\n"
           "  ddmkit edit faces/ --boundary smiling --sweep -2x:2x:5 --out runs/sweep\n"
           "  ddmkit edit photo.png --boundary smiling --distance 1x --boundary eyeglasses --distance -1x "
           "--condition dark_hair --out runs/multi")


def add_edit_arguments(p: argparse.ArgumentParser) -> None:
    """Boundary, distance and generation options shared by `edit` and `control`."""
    add_model_argument(p)
    p.add_argument("--boundary", action="append", required=True, metavar="B",
                   help="a boundary file or the name of a shipped one (smiling, eyeglasses, dark_hair, round_face, "
                   "open_eyes, warm_background for the default model); repeat for multi-attribute edits, "
                   "applied in order (an extrapolation: the paper has no routine for several at once)")
    p.add_argument("--distance", action="append", default=None, metavar="D",
                   help="signed distance per --boundary (one value applies to all): a number, the same in z and h "
                   "as in the paper, or a multiple of each space's recommended distance like 1.5x "
                   "(default: 1x, add the attribute; -1x removes it)")
    p.add_argument("--sweep", default=None, metavar="A:B:K",
                   help="an editing strip of K distances linspace(A, B, K), e.g. -20:20:5 or -2x:2x:5 (one --boundary)")
    p.add_argument("--condition", action="append", default=[], metavar="B",
                   help="keep this attribute fixed: project every edited normal off its normal "
                   "(InterFaceGAN conditional manipulation); repeatable")
    p.add_argument("--space", choices=("both", "z", "h"), default="both",
                   help="edit z and h (default), z only, or h only")
    p.add_argument("--move", choices=("set", "add"), default="set",
                   help="set: <x', n> = d (default); add: x' = x + d n (InterFaceGAN style)")
    p.add_argument("--h-injection", choices=("single", "lagged", "none"), default="single",
                   help="single: h' in the first call after t_m only (the paper; default); lagged: the official "
                   "code's one-step-lagged feedback of h; none: z only")
    p.add_argument("--eta", type=float_range(0, 10), default=1.0, help="DDIM eta after the edit (default: 1, as in the paper)")
    p.add_argument("--steps", type=int_range(2, MAX_STEPS), default=None,
                   help="DDIM grid points N for generation from t_m (N NFE; default: the boundary's N_inv, 40)")
    p.add_argument("--no-clip", action="store_true",
                   help="do not clamp the x0 estimate to the data range during generation (the official step); "
                   "default: clamp when the model does (clip_denoised, on for DDPMs)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the eta > 0 noise (per image)")
    p.add_argument("--different-noise", action="store_true",
                   help="draw new noise for every distance of a sweep (default: the same noise for all)")
    p.add_argument("--batch-size", type=int_range(1, MAX_BATCH), default=16)
    p.add_argument("--force", action="store_true",
                   help="use boundaries fitted for another model or t_m (shape mismatches are still refused)")
    p.add_argument("--png-scale", type=int_range(1, 32), default=None,
                   help="upscaling of the strips, 1..32 (default: to ~128 px)")
    p.add_argument("--out", required=True, type=path_text,
                   help="output folder (must not exist, or be empty; --overwrite replaces it)")
    add_overwrite_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_plans(args: argparse.Namespace, denoiser):
    """The edit plans (one per sweep distance) from the arguments; every boundary is checked against the model."""
    from ..editing.files import resolve_boundary
    from ..editing.plan import Distance, EditPlan, parse_distance, parse_sweep

    def load(spec: str):
        return resolve_boundary(spec, denoiser, force=args.force)

    boundaries = [load(s) for s in args.boundary]
    conditions = [load(s) for s in args.condition]
    if args.space in ("both", "h") and any("h" not in b.spaces for b in boundaries + conditions):
        raise DdmkitError("a boundary has no h-space normal; use --space z")
    if args.space in ("both", "z") and any("z" not in b.spaces for b in boundaries + conditions):
        raise DdmkitError("a boundary has no z-space normal; use --space h")
    if args.sweep is not None:
        if args.distance:
            raise DdmkitError("give either --distance or --sweep, not both")
        if len(boundaries) != 1:
            raise DdmkitError("--sweep edits one attribute: give a single --boundary")
        base = EditPlan([(boundaries[0], Distance(0.0))], conditions, args.space, args.move)
        return [base.with_distance(d) for d in parse_sweep(args.sweep)]
    dists = [parse_distance(d) for d in (args.distance or ["1x"])]
    if len(dists) == 1:
        dists = dists * len(boundaries)
    if len(dists) != len(boundaries):
        raise DdmkitError(f"{len(boundaries)} --boundary but {len(dists)} --distance: give one per boundary, or one for all")
    return [EditPlan(list(zip(boundaries, dists)), conditions, args.space, args.move)]


def check_common(args: argparse.Namespace, json_name: str, inputs=()) -> Path:
    """Validate the shared options and the output folder before any work: OUT is new, empty, or (with
    --overwrite) replaced at the end, and never an input of the command."""
    out = check_target(args.out, "folder")
    refuse_inputs([out], list(inputs) + model_input_paths(args.model) + _boundary_paths(args))
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        own = " (an earlier run's)" if json_file_says(out / json_name, command=json_name.split(".")[0]) else ""
        raise DdmkitError(f"{out} exists and is not an empty folder{own}; choose another --out, or add --overwrite "
                          "to replace it")
    if args.space == "h" and args.h_injection == "none":
        raise DdmkitError("--space h with --h-injection none edits nothing; use single or lagged")
    return out


def _boundary_paths(args: argparse.Namespace) -> list[Path]:
    return [Path(b) for b in list(args.boundary) + list(args.condition) if Path(b).exists()]


def write_folder(out: Path, rows: list[tuple[str, list[tuple[str, np.ndarray]]]], record: dict, json_name: str,
                 data_range, scale: int | None) -> None:
    """Write OUT/images/<name>/<label>.png, OUT/strips/<name>.png, OUT/strip.png and OUT/<json_name>
    into a temporary folder, then rename it onto OUT (nothing appears on failure)."""
    from ..io import atomic_write_json, replace_dir
    from ..outputs import image_grid, save_png, to_uint8

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        strips = []
        for name, panels in rows:
            u8 = to_uint8(np.stack([p for _, p in panels]), data_range)
            for (label, _), im in zip(panels, u8):
                save_png(tmp / "images" / name / f"{label}.png", im)
            res = u8.shape[1]
            s = scale or max(1, 128 // res)
            strip = image_grid(u8, ncols=len(u8), pad=1)
            strips.append(strip)
            save_png(tmp / "strips" / f"{name}.png", strip, scale=s)
        if strips and len(strips) <= 64 and len({st.shape for st in strips}) == 1:
            all_strips = np.concatenate(strips)
            save_png(tmp / "strip.png", all_strips, scale=scale or max(1, 128 // rows[0][1][0][1].shape[-1]))
        atomic_write_json(tmp / json_name, record)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; give it a normal folder's mode
        replace_dir(tmp, out)  # an empty folder, or (--overwrite, checked before) an old one: replaced whole
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def image_names(files: list[Path]) -> list[str]:
    names, seen = [], set()
    for i, f in enumerate(files):
        n = f.stem if f.stem not in seen else f"{f.stem}_{i}"
        seen.add(n)
        names.append(n)
    return names


def register(sub: argparse._SubParsersAction) -> None:
    from .boundary import ParagraphFormatter

    p = sub.add_parser(
        "edit",
        help="edit real images along semantic boundaries (invert to t_m, move z and h, regenerate)",
        description="BoundaryDiffusion editing of real images. Each image (any size or mode: centre-cropped, "
        "resized to the model resolution, scaled to its range) is DDIM-inverted to the boundary's t_m with its "
        "N_inv (N_inv - 1 NFE), z and h are moved to the signed distance along the unit normals in one "
        "operation at t_m, and the edit is generated with eta = 1 (N NFE). The eta = 0 reconstruction without "
        "edit is made too, and its error reported. Writes OUT/images/NAME/{source,reconstruction,edit_K}.png, "
        "OUT/strips/NAME.png (source | reconstruction | edits), OUT/strip.png and OUT/edit.json (settings, "
        "distances, NFE, reconstruction error, projections before/after, timings). Nothing is written on bad input.",
        epilog=EXAMPLE,
        formatter_class=ParagraphFormatter,
    )
    p.add_argument("input", metavar="IMAGE_OR_FOLDER", help="an image file or a folder of images")
    add_edit_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    src = Path(args.input)
    with run_lock(check_target(args.out, "folder")):  # checked again under the lock: no run can slip in between
        return _run_locked(args, src, check_common(args, "edit.json", inputs=[src]))


def edit_settings(args: argparse.Namespace):
    """The `EditSettings` of `edit` and `control` from their shared options."""
    from ..editing.settings import EditSettings

    return EditSettings(eta=args.eta, n_steps=args.steps, h_injection=args.h_injection, seed=args.seed,
                        same_noise=not args.different_noise, batch_size=args.batch_size,
                        clip_x0=False if args.no_clip else None, progress=not args.quiet)


def edits_record(res) -> list[dict]:
    """One entry per edit (plan) of an edit or control result."""
    return [{"index": k, "file": f"edit_{k:02d}.png", "plan": p.describe(), "distances_used": res.distances_used[k]}
            for k, p in enumerate(res.plans)]


def projections_of(res, i: int) -> dict:
    """Sample i's projections before and after each edit, per attribute and space."""
    return {"projections_before": {a: {s: v[i] for s, v in sp.items()} for a, sp in res.projections_before.items()},
            "projections_after": [{a: {s: v[i] for s, v in sp.items()} for a, sp in pa.items()}
                                  for pa in res.projections_after]}


def edit_panels(res, i: int) -> list[tuple[str, np.ndarray]]:
    return [(f"edit_{k:02d}", res.edits[k, i]) for k in range(len(res.plans))]


def _input_files(src: Path) -> list[Path]:
    from ..data.folders import list_images

    if src.is_dir():
        return list_images(src)
    if src.is_file():
        return [src]
    raise DdmkitError(f"{src} does not exist; give an image file or a folder of images")


def _load_images(files: list[Path], denoiser) -> tuple[np.ndarray, tuple[float, float]]:
    """The images in the model's range, and that range."""
    from ..data.folders import load_image
    from ..denoisers import unwrap

    shape = tuple(unwrap(denoiser).sample_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise DdmkitError(f"editing needs a square image model; this one has samples of shape {shape}")
    x = np.stack([load_image(f, shape[1], shape[0]) for f in files])
    lo, hi = unwrap(denoiser).data_range or (-1.0, 1.0)
    return lo + (x + 1.0) * (hi - lo) / 2.0, (lo, hi)  # [-1, 1] -> the model's range


def _run_locked(args: argparse.Namespace, src: Path, out: Path) -> int:
    import time

    from ..editing.edit import edit_images
    from ..models.loading import load_model

    files = _input_files(src)
    denoiser = load_model(args.model, device=resolve_device(args.device), **model_options(args))
    x, data_range = _load_images(files, denoiser)
    plans = build_plans(args, denoiser)
    t0 = time.time()
    res = edit_images(denoiser, x, plans, edit_settings(args))
    names = image_names(files)
    rows = [(name, [("source", res.source[i]), ("reconstruction", res.reconstruction[i])] + edit_panels(res, i))
            for i, name in enumerate(names)]
    record = _record(args, denoiser, res, names, files, t0)
    write_folder(out, rows, record, "edit.json", data_range, args.png_scale)
    err = res.reconstruction_error
    print(f"edited {len(x)} image(s), {len(plans)} edit(s) each, {res.nfe.total} NFE per image; "
          f"reconstruction RMSE {err['rmse']:.4f} (PSNR {err['psnr_db']:.1f} dB) -> {out}")
    return 0


def _boundaries_record(plan) -> list[dict]:
    return [{"attribute": b.attribute, "path": b.path, "t_m": b.t_m, "n_inv": b.n_inv,
             "test_accuracy": {s: bd.stats.get("test_accuracy") for s, bd in b.spaces.items()},
             "recommended_distance": {s: bd.recommended_distance for s, bd in b.spaces.items()}}
            for b, _ in plan.edits] + [{"attribute": c.attribute, "path": c.path, "condition": True}
                                       for c in plan.conditions]


def _record(args: argparse.Namespace, denoiser, res, names: list[str], files: list[Path], t0: float) -> dict:
    """OUT/edit.json: settings, edits, boundaries, NFE, reconstruction error, timings, per-image projections."""
    import time

    from .. import __version__
    from ..editing.fingerprint import model_fingerprint

    n_calls = max(1, -(-len(files) // args.batch_size))
    n_edits = len(res.plans)
    return {
        "command": "edit", "ddmkit_version": __version__, "provenance": provenance(args.command_line),
        "model": args.model, "model_identity": model_fingerprint(denoiser),
        "domain": denoiser.domain,
        "settings": res.settings,
        "edits": edits_record(res),
        "boundaries": _boundaries_record(res.plans[0]),
        "nfe_per_image": res.nfe.to_json(),
        "reconstruction_error": dict(res.reconstruction_error),
        "seconds": {**res.seconds, "total": round(time.time() - t0, 3),
                    "per_edit_per_batch": round(res.seconds["edits"] / (n_edits * n_calls), 4),
                    "per_nfe_per_batch": round(res.seconds["edits"] / max(1, n_edits * n_calls * res.nfe.per_edit), 5)},
        "images": [{"name": n, "file": str(f), **projections_of(res, i),
                    "reconstruction_rmse": res.reconstruction_error["rmse_per_image"][i]}
                   for i, (n, f) in enumerate(zip(names, files))],
    }
