"""`ddmkit control`: boundary-guided edits of generated (unconditional) samples (BoundaryDiffusion, spec 5.3)."""
from __future__ import annotations

import argparse
from pathlib import Path


from ..errors import DdmkitError
from ..provenance import provenance
from .argtypes import MAX_STEPS, float_range, int_range
from .common import model_options, resolve_device, run_lock

EXAMPLE = ("example: ddmkit control --boundary smiling --distance 1x --num 8 --out runs/control\n"
           "  ddmkit control --boundary eyeglasses --sweep -2x:2x:5 --num 4 --prefix-steps 498 --out runs/official-cost")


def register(sub: argparse._SubParsersAction) -> None:
    from .boundary import ParagraphFormatter

    from .edit import add_edit_arguments

    p = sub.add_parser(
        "control",
        help="generate samples and edit them along semantic boundaries at the mixing step",
        description="Unconditional BoundaryDiffusion control: draw x_T ~ N(0, I) (per-sample seeds), run DDIM "
        "(--prefix-eta, default 1; the official code uses 0; or --prefix-integrator kar1/kar2) from T-1 down to the boundary's t_m in --prefix-steps "
        "NFE (default 50; the official code "
        "walks the 999-point grid, about T - t_m = 498 NFE for t_m = 500: pass --prefix-steps 498 for that), "
        "take h from the last call (or at t_m, as the boundary says), move z and h as in `ddmkit edit`, and "
        "generate with --steps (default: the boundary's N_inv, 40) at eta = 1. The unedited sample (same x_T, "
        "same noise, no move) is generated too. Writes OUT/images/NNNNNN/{original,edit_K}.png, "
        "OUT/strips/NNNNNN.png (original | edits), OUT/strip.png and OUT/control.json.",
        epilog=EXAMPLE,
        formatter_class=ParagraphFormatter,
    )
    add_edit_arguments(p)
    p.add_argument("--num", type=int_range(1, 100_000), default=8, help="number of samples (default: 8)")
    p.add_argument("--prefix-steps", type=int_range(1, MAX_STEPS), default=50,
                   help="NFE from T-1 down to t_m (default: 50; the official DDIM path uses ~T - t_m; a Karras "
                        "prefix takes steps // 2 Heun steps)")
    p.add_argument("--prefix-eta", type=float_range(0, 10), default=None,
                   help="DDIM eta of the steps down to t_m: 1 (default) DDPM-like ancestral steps, seeded per sample; "
                        "0 the official code's deterministic path. On the default model eta = 1 gives better samples "
                        "and edits that change fewer other attributes (benchmarks/results/editing.json)")
    p.add_argument("--prefix-integrator", choices=("ddim", "kar1", "kar2"), default="ddim",
                   help="the sampler from x_T down to t_m: DDIM (default, the paper's), or Karras' Heun sampler "
                        "(kar1) / with churn (kar2) in sigma space with about --prefix-steps NFE, h then read at t_m "
                        "with one more NFE (benchmarks/results/editing_generated_variants.json)")
    p.add_argument("--prefix-s-tmin", type=float_range(0), default=None,
                   help="kar2 prefix: churn only at sigma >= this (default: as `ddmkit sample`)")
    p.add_argument("--prefix-s-tmax", type=float_range(0), default=None,
                   help="kar2 prefix: churn only at sigma <= this (default: as `ddmkit sample`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..output_guard import check_target
    from .edit import check_common

    check_common(args, "control.json")
    if args.prefix_integrator != "ddim" and args.prefix_eta is not None:
        raise DdmkitError(f"--prefix-eta applies to the DDIM prefix only, not --prefix-integrator {args.prefix_integrator}")
    if args.prefix_integrator != "kar2" and (args.prefix_s_tmin is not None or args.prefix_s_tmax is not None):
        raise DdmkitError("--prefix-s-tmin/--prefix-s-tmax apply to --prefix-integrator kar2 only")
    args.prefix_eta = 1.0 if args.prefix_eta is None else args.prefix_eta
    if args.prefix_steps < (1 if args.prefix_integrator == "ddim" else 2):
        raise DdmkitError(f"--prefix-steps must be >= {1 if args.prefix_integrator == 'ddim' else 2} for the "
                          f"{args.prefix_integrator} prefix, got {args.prefix_steps}")
    with run_lock(check_target(args.out, "folder")):  # checked again under the lock
        return _run_locked(args, check_common(args, "control.json"))


def _run_locked(args: argparse.Namespace, out: Path) -> int:
    import time

    from ..denoisers import unwrap
    from ..editing.settings import PrefixSettings
    from ..editing.unconditional import control
    from ..models.loading import load_model
    from .edit import build_plans, edit_panels, edit_settings, write_folder

    options = {k: v for k, v in (("s_tmin", args.prefix_s_tmin), ("s_tmax", args.prefix_s_tmax)) if v is not None}
    prefix = PrefixSettings(integrator=args.prefix_integrator, steps=args.prefix_steps, eta=args.prefix_eta,
                            options=options)
    denoiser = load_model(args.model, device=resolve_device(args.device), **model_options(args))
    shape = tuple(unwrap(denoiser).sample_shape)
    if len(shape) != 3:
        raise DdmkitError(f"control needs an image model; this one has samples of shape {shape}")
    plans = build_plans(args, denoiser)
    t0 = time.time()
    res = control(denoiser, plans, edit_settings(args), prefix, num=args.num)
    lo, hi = unwrap(denoiser).data_range or (-1.0, 1.0)
    names = [f"{i:06d}" for i in range(args.num)]
    rows = [(n, [("original", res.original[i])] + edit_panels(res, i)) for i, n in enumerate(names)]
    write_folder(out, rows, _record(args, denoiser, res, names, t0), "control.json", (lo, hi), args.png_scale)
    print(f"{args.num} sample(s), {len(plans)} edit(s) each, {res.nfe.total} NFE per sample -> {out}")
    return 0


def _record(args: argparse.Namespace, denoiser, res, names: list[str], t0: float) -> dict:
    """OUT/control.json: settings, edits, NFE, timings, per-sample projections."""
    import time

    from .. import __version__
    from ..editing.fingerprint import model_fingerprint
    from .edit import edits_record, projections_of

    return {
        "command": "control", "ddmkit_version": __version__, "provenance": provenance(args.command_line),
        "model": args.model,
        "domain": denoiser.domain,
        "model_identity": model_fingerprint(denoiser), "num": args.num, "settings": res.settings,
        "edits": edits_record(res),
        "nfe_per_sample": res.nfe.to_json(),
        "seconds": {**res.seconds, "total": round(time.time() - t0, 3)},
        "samples": [{"name": n, **projections_of(res, i)} for i, n in enumerate(names)],
    }
