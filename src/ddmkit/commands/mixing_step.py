"""`ddmkit mixing-step`: sweep candidate timesteps and choose the mixing step t_m (spec 7.6)."""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from ..errors import DdmkitError
from ..provenance import provenance
from .argtypes import MAX_STEPS, float_range, int_range, path_text
from .common import add_model_argument, add_overwrite_argument, model_input_paths, model_options, resolve_device, run_lock

EXAMPLE = "example: ddmkit mixing-step --faces 200 --attribute smiling --out runs/mixing-smiling"


def register(sub: argparse._SubParsersAction) -> None:
    from .boundary import add_inversion_arguments, add_label_arguments

    p = sub.add_parser(
        "mixing-step",
        help="choose the mixing step t_m: sweep t, held-out SVM accuracy and latent radii (JSON + PNG)",
        description="For each candidate t (default T/10 .. 9T/10: 100..900 for a 1000-step model), invert the "
        "labelled images to t, fit the z and h SVMs on the same train/test split, and record the held-out "
        "accuracies, the mean radius |x_t| of the inverted latents (r_inv) and of DDIM (eta = 0) trajectories "
        "from x_T ~ N(0, I) (r_samp). t_m is the largest t whose accuracy (mean of z and h) is within "
        "--tol-acc of the best and, with --radius-check, whose radius gap |r_inv - r_samp| / r_samp <= --tol-r; "
        "if none qualifies, the accuracy argmax (with a warning). Writes OUT/mixing_step.json "
        "(the whole curve, the choice and why) and OUT/mixing_step.png.",
        epilog=EXAMPLE,
    )
    add_model_argument(p)
    add_label_arguments(p)
    add_inversion_arguments(p)
    p.add_argument("--candidates", default=None, help="comma-separated timesteps (default: T/10 .. 9T/10)")
    p.add_argument("--tol-acc", type=float_range(0, 1), default=0.02, help="accuracy tolerance below the best (default: 0.02)")
    p.add_argument("--tol-r", type=float_range(0, 10), default=0.01, help="relative radius gap tolerance (default: 0.01)")
    p.add_argument("--radius-check", action="store_true",
                   help="also require the radius gap <= --tol-r (off by default: on the default model the gap is "
                   ">= 0.05 at every t because its samples are more saturated than the data; the radii are "
                   "measured and saved either way)")
    p.add_argument("--radius-samples", type=int_range(1, 100_000), default=64, help="trajectories from N(0, I) for r_samp (default: 64)")
    p.add_argument("--radius-steps", type=int_range(1, MAX_STEPS), default=100,
                   help="DDIM steps of those trajectories from T-1 to the smallest candidate (default: 100)")
    p.add_argument("--accuracy", choices=("mean", "z", "h", "min"), default="mean",
                   help="which held-out accuracy the criterion uses (default: mean of z and h)")
    p.add_argument("--out", required=True, type=path_text, help="output folder (mixing_step.json, mixing_step.png)")
    add_overwrite_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def claim_output(args: argparse.Namespace) -> Path:
    """OUT is new, empty, or (--overwrite) reused; a finished search is kept unless --overwrite."""
    from ..output_guard import claim_folder, json_file_says

    inputs = model_input_paths(args.model) + [Path(p) for p in (args.images, args.labels, args.positive, args.negative) if p]
    out = claim_folder(args.out, lambda d: json_file_says(d / "mixing_step.json", command="mixing-step"),
                       overwrite=args.overwrite, inputs=inputs)
    if (out / "mixing_step.json").exists() and not args.overwrite:
        raise DdmkitError(f"{out} already holds mixing_step.json; choose another --out, or add --overwrite")
    return out


def run(args: argparse.Namespace) -> int:
    out = claim_output(args)
    with run_lock(out):
        claim_output(args)  # again under the lock
        return _run_locked(args, out)


def _run_locked(args: argparse.Namespace, out: Path) -> int:
    from .. import __version__
    from ..editing.ddim import EpsModel
    from ..editing.fingerprint import model_fingerprint
    from ..editing.mixing import default_candidates, mixing_step_search, plot_curve
    from ..io import atomic_write_json
    from ..models.loading import load_model
    from .boundary import load_labelled, parse_test

    n_test = parse_test(args.test)
    candidates = None
    if args.candidates:
        try:
            candidates = [int(v) for v in args.candidates.split(",") if v.strip()]
        except ValueError:
            raise DdmkitError(f"--candidates must be comma-separated integers, got {args.candidates!r}") from None
    denoiser = load_model(args.model, device=resolve_device(args.device), **model_options(args))
    with EpsModel(denoiser, args.hspace_module) as m:
        T = m.num_timesteps
    x, y, info, name = load_labelled(args, denoiser)
    t0 = time.time()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        curve = mixing_step_search(
            denoiser, x, y, candidates=candidates or default_candidates(T), n_inv=args.n_inv, h_source=args.h_source,
            n_test=n_test, C=args.C, seed=args.seed, tol_acc=args.tol_acc, tol_r=args.tol_r,
            radius_check=args.radius_check, radius_samples=args.radius_samples, radius_steps=args.radius_steps,
            accuracy=args.accuracy, batch_size=args.batch_size, hspace_module=args.hspace_module,
            progress=not args.quiet,
        )
    result = {"command": "mixing-step", "provenance": provenance(args.command_line), "model": args.model,
              "model_identity": model_fingerprint(denoiser),
              "attribute": name, "data": info, "ddmkit_version": __version__, "seconds": round(time.time() - t0, 2),
              **curve.to_json()}
    out.mkdir(parents=True, exist_ok=True)
    plot_curve(curve, out / "mixing_step.png", title=f"{name}: t_m = {curve.t_m}")
    atomic_write_json(out / "mixing_step.json", result)
    for r in curve.rows:
        gap = f", radius gap {r['radius_gap']:.3f}" if "radius_gap" in r else ""
        print(f"t = {r['t']:4d}: acc z {r['acc_z']:.3f}, acc h {r['acc_h']:.3f}, r_inv {r['r_inv']:.2f}{gap}")
    if curve.fallback:
        print(f"ddmkit mixing-step: warning: {curve.reason}", file=sys.stderr)
    print(f"t_m = {curve.t_m} ({curve.reason}) -> {out}/mixing_step.json, mixing_step.png")
    return 0
