"""`ddmkit boundary`: fit BoundaryDiffusion boundaries (z and h SVMs) from labelled images; show, list."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..errors import DdmkitError
from ..provenance import provenance
from .argtypes import MAX_BATCH, MAX_STEPS, float_range, int_range, path_text, seed
from .common import add_model_argument, model_input_paths, model_options, resolve_device, run_lock


class ParagraphFormatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog on its own (keeps the examples one per line)."""

    def _fill_text(self, text, width, indent):
        import textwrap

        return "\n".join(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent,
                                       break_on_hyphens=False)
                         if line.strip() else "" for line in text.splitlines())


FIT_EXAMPLE = "example: ddmkit boundary fit --faces 200 --attribute smiling --out boundaries/smiling.safetensors"


def add_label_arguments(p: argparse.ArgumentParser) -> None:
    """The three sources of labelled images (shared with `ddmkit mixing-step`)."""
    g = p.add_argument_group("labelled images (choose one source)")
    g.add_argument("--faces", type=int_range(2, 1_000_000), metavar="N",
                   help="N synthetic faces, balanced (N/2 with --attribute, N/2 without)")
    g.add_argument("--images", metavar="DIR", help="a folder of images, labelled by --labels")
    g.add_argument("--labels", metavar="CSV",
                   help="label table for --images: a CSV with a header (a file column + one column per "
                   "attribute, values 0/1 or -1/+1), or CelebA's list_attr_celeba.txt")
    g.add_argument("--positive", metavar="DIR", help="images with the attribute / matching the prompt")
    g.add_argument("--negative", metavar="DIR", help="images without it (with --positive)")
    g.add_argument("--attribute", metavar="NAME",
                   help="attribute (a face attribute with --faces, a column of --labels); with "
                   "--positive/--negative a free name for the boundary, e.g. the prompt")
    g.add_argument("--num", type=int_range(2, 10_000_000), default=None, metavar="N",
                   help="use a seeded subset of N labelled images of --images / --positive --negative (only those "
                   "are read and inverted)")
    g.add_argument("--balance", action="store_true",
                   help="with --num: half the subset with the attribute, half without")
    g.add_argument("--seed", type=seed, default=0,
                   help="seed of the faces (offset from a fixed base), of the --num subset and of the train/test "
                   "split (default: 0)")


def add_inversion_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-inv", type=int_range(2, MAX_STEPS), default=40, help="DDIM inversion grid points N (N-1 NFE per image; default: 40)")
    p.add_argument("--h-source", choices=("last", "tm"), default="last",
                   help="h from the last inversion call (official; default) or read at (z, t_m) with 1 extra NFE")
    p.add_argument("--test", default="0.5",
                   help="held-out images for the test accuracy: a fraction < 1 or a count (default: 0.5)")
    p.add_argument("--C", type=float_range(0, 1e6, low_open=True), default=1.0, help="SVM C (default: 1, sklearn's default as in the official code)")
    p.add_argument("--batch-size", type=int_range(1, MAX_BATCH), default=50)
    p.add_argument("--hspace-module", default="mid_block",
                   help="dotted path of the network's bottleneck module (default: mid_block, diffusers UNet2DModel)")


def parse_test(text: str) -> int | float:
    try:
        v = float(text)
    except ValueError:
        raise DdmkitError(f"--test must be a fraction < 1 or a count, got {text!r}") from None
    if v < 0:
        raise DdmkitError(f"--test must be >= 0, got {text}")
    return v if v < 1 else int(v)


def load_labelled(args: argparse.Namespace, denoiser):
    """(images, labels, description, attribute name) from the chosen source; validates the arguments."""
    from ..denoisers import unwrap
    from ..editing.labelled import FIT_FACES_SEED, labelled_faces, labelled_folder, labelled_two_folders

    shape = tuple(unwrap(denoiser).sample_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise DdmkitError(f"boundaries need a square image model; this one has samples of shape {shape}")
    channels, res = shape[0], shape[1]
    sources = [s for s, on in (("--faces", args.faces is not None), ("--images", args.images is not None),
                               ("--positive/--negative", args.positive is not None or args.negative is not None)) if on]
    if len(sources) != 1:
        raise DdmkitError("give exactly one source of labelled images: --faces N, --images DIR --labels CSV, "
                          "or --positive DIR --negative DIR" + (f" (got {' and '.join(sources)})" if sources else ""))
    if args.faces is not None and (args.num is not None or args.balance):
        raise DdmkitError("--num and --balance choose from a folder's images; --faces N is already balanced N faces")
    subset = {"num": args.num, "balance": args.balance, "seed": args.seed}
    if args.faces is not None:
        if not args.attribute:
            raise DdmkitError("--faces needs --attribute (smiling, eyeglasses, dark_hair, round_face, open_eyes, warm_background)")
        x, y, info = labelled_faces(args.faces, args.attribute, seed=FIT_FACES_SEED + args.seed, resolution=res, channels=channels)
        return x, y, info, args.attribute
    if args.images is not None:
        if not args.labels or not args.attribute:
            raise DdmkitError("--images needs --labels CSV and --attribute NAME (a column of the CSV)")
        x, y, info = labelled_folder(args.images, args.labels, args.attribute, resolution=res, channels=channels,
                                     **subset)
        return x, y, info, args.attribute
    if not (args.positive and args.negative):
        raise DdmkitError("--positive and --negative go together: give both folders")
    x, y, info = labelled_two_folders(args.positive, args.negative, resolution=res, channels=channels, **subset)
    name = args.attribute or Path(args.positive).name
    return x, y, info, name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "boundary",
        help="fit semantic boundaries (z and h SVMs at a mixing step) from labelled images; show, list",
        description="BoundaryDiffusion boundaries: `fit` inverts labelled images to t_m and fits linear SVMs on "
        "z = x_{t_m} and on the UNet bottleneck h; `show` prints a boundary's metadata; `list` the shipped ones.",
        epilog=FIT_EXAMPLE,
    )
    bsub = p.add_subparsers(dest="action", metavar="ACTION")
    f = bsub.add_parser(
        "fit",
        help="fit a boundary pair (z and h) for one attribute",
        description="Invert labelled images to t_m by DDIM (N_inv grid points, eta = 0), then fit "
        "SVC(kernel='linear', C) on flattened z and on h, holding out --test images for the test accuracy "
        "(the quality indicator: training accuracy is ~1 whenever dims >> images). Writes OUT (.safetensors: "
        "unit normals, raw coefficients, intercepts, metadata) and OUT with .json (the metadata, readable). "
        "The recommended editing distance stored per space, used by `ddmkit edit` when --distance is not "
        "given and the unit of relative distances (1.5x), is 2 x the 95th percentile of |<x, n>| over the "
        "training latents (calibrated on the default faces model).",
        epilog=FIT_EXAMPLE + "\n  ddmkit boundary fit --images data/faces/images --labels data/faces/labels.csv "
        "--attribute eyeglasses --out eyeglasses.safetensors\n  ddmkit boundary fit --positive red_cars/ "
        "--negative cars/ --attribute 'red car' --out red.safetensors",
        formatter_class=ParagraphFormatter,
    )
    add_model_argument(f)
    add_label_arguments(f)
    f.add_argument("--t-m", type=int_range(1, 100_000), default=None,
                   help="mixing step (default: T/2, i.e. 500 for 1000-step models; see `ddmkit mixing-step`)")
    add_inversion_arguments(f)
    c = f.add_argument_group("distance calibration (synthetic faces only: the shipped attribute classifier judges)")
    c.add_argument("--calibrate", action="store_true",
                   help="set the recommended distance per attribute: edit the held-out (--test) images at each "
                   "--calibrate-multiples x the default distance and keep the smallest whose success (share flipped, "
                   "by the faces classifier) reaches --calibrate-target (ddmkit.editing.calibrate)")
    c.add_argument("--calibrate-multiples", default="0.25,0.4,0.6,0.8,1,1.5,2",
                   help="multiples of the default recommended distance to try (default: 0.25,0.4,0.6,0.8,1,1.5,2)")
    c.add_argument("--calibrate-target", type=float_range(0, 1, low_open=True), default=0.95, help="edit success to reach (default: 0.95)")
    c.add_argument("--calibrate-steps", type=int_range(1, MAX_STEPS), default=10,
                   help="DDIM steps of the post-edit generation, eta = 1 (default: 10)")
    f.add_argument("--out", required=True, type=path_text,
                   help="boundary file to write (.safetensors; a .json copy of the metadata beside it)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing OUT (and its .json)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=run_fit)
    s = bsub.add_parser("show", help="print a boundary's metadata as JSON",
                        description="Print the metadata of a boundary file or shipped name as JSON.",
                        epilog="example: ddmkit boundary show smiling")
    s.add_argument("boundary", help="a boundary file or the name of a shipped boundary")
    s.set_defaults(func=run_show)
    ls = bsub.add_parser("list", help="list the boundaries shipped for the default model",
                         description="List the shipped boundaries with their t_m and test accuracies.",
                         epilog="example: ddmkit boundary list")
    ls.set_defaults(func=run_list)
    p.set_defaults(func=_missing)


def _missing(args: argparse.Namespace) -> int:
    raise DdmkitError("name an action: 'ddmkit boundary fit ...', 'ddmkit boundary show B' or 'ddmkit boundary list'")


def fit_outputs(args: argparse.Namespace) -> list[Path]:
    """OUT.safetensors and its .json metadata copy, checked: absent (or --overwrite), never an input."""
    from ..output_guard import claim_files

    out = Path(args.out)
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    inputs = model_input_paths(args.model) + [Path(p) for p in (args.images, args.labels, args.positive, args.negative) if p]
    return claim_files([out, out.with_suffix(".json")], overwrite=args.overwrite, inputs=inputs)


def run_fit(args: argparse.Namespace) -> int:
    out = fit_outputs(args)[0]
    with run_lock(out):
        fit_outputs(args)  # again under the lock: a run that finished meanwhile is not overwritten
        return _fit(args, out)


def _fit(args: argparse.Namespace, out: Path) -> int:
    from ..editing.ddim import EpsModel, ddim_grid
    from ..editing.files import save_boundary
    from ..editing.fitting import fit_boundaries, invert_batched
    from ..editing.hspace import find_network, resolve_module
    from ..editing.settings import MixingStep
    from ..models.loading import load_model

    n_test = parse_test(args.test)
    denoiser = load_model(args.model, device=resolve_device(args.device), **model_options(args))
    with EpsModel(denoiser, args.hspace_module) as m:
        T = m.num_timesteps
    resolve_module(find_network(denoiser), args.hspace_module)
    t_m = args.t_m if args.t_m is not None else T // 2
    if not 1 <= t_m < T:
        raise DdmkitError(f"--t-m must be in 1..{T - 1}, got {t_m}")
    ddim_grid(t_m, args.n_inv)
    step = MixingStep(t_m, args.n_inv, args.h_source, args.hspace_module)
    multiples = _calibration_multiples(args) if args.calibrate else None
    x, y, info, name = load_labelled(args, denoiser)
    t0 = time.time()
    inversions, invert_seconds = None, None
    if args.calibrate:  # the latents are needed twice: invert once
        t_inv = time.perf_counter()
        inversions = invert_batched(denoiser, x, step, batch_size=args.batch_size, progress=not args.quiet)
        invert_seconds = time.perf_counter() - t_inv
    b = fit_boundaries(denoiser, x, y, attribute=name, step=step, n_test=n_test, C=args.C, seed=args.seed,
                       batch_size=args.batch_size, data=info, inversions=inversions, invert_seconds=invert_seconds,
                       progress=not args.quiet)
    if args.calibrate:
        b = _calibrate(args, denoiser, b, x, y, n_test, inversions, multiples)
    b.meta["model_spec"] = args.model
    b.meta["provenance"] = provenance(args.command_line)
    b.meta["seconds"] = round(time.time() - t0, 3)
    path = save_boundary(out, b)
    parts = []
    for s, bd in b.spaces.items():
        te = bd.stats.get("test_accuracy")
        parts.append(f"{s}: train acc {bd.stats['train_accuracy']:.3f}, test acc "
                     f"{'n/a' if te is None else f'{te:.3f}'}, d_rec {bd.recommended_distance:.3g}, "
                     f"SVM {bd.stats['fit_seconds']:.2f} s")
    print(f"{name} at t_m = {t_m} ({b.meta['n_images']} images, {b.spaces['z'].stats['n_test']} held out): "
          + "; ".join(parts) + f" -> {path}")
    return 0


def _calibration_multiples(args: argparse.Namespace) -> list[float]:
    """Validate the --calibrate options before any work: faces only, held-out images, positive multiples."""
    if args.faces is None:
        raise DdmkitError("--calibrate needs --faces N: the judge of the edits is the shipped faces attribute classifier")
    if parse_test(args.test) == 0:
        raise DdmkitError("--calibrate edits the held-out images: give --test > 0")
    try:
        multiples = [float(v) for v in args.calibrate_multiples.split(",") if v.strip()]
    except ValueError:
        raise DdmkitError(f"--calibrate-multiples must be comma-separated numbers, got {args.calibrate_multiples!r}") from None
    if not multiples or min(multiples) <= 0:
        raise DdmkitError(f"--calibrate-multiples must be positive numbers, got {args.calibrate_multiples!r}")
    if not 0 < args.calibrate_target <= 1:
        raise DdmkitError(f"--calibrate-target must be in (0, 1], got {args.calibrate_target}")
    if args.calibrate_steps < 1:
        raise DdmkitError("--calibrate-steps must be >= 1")
    return multiples


def _calibrate(args, denoiser, b, x, y, n_test, inversions, multiples):
    """Calibrate the recommended distance on the held-out split (the same split as the SVM test accuracy)."""
    from ..data.faces import ATTRIBUTES
    from ..editing.calibrate import apply_calibration, calibrate_distance
    from ..editing.svm import normalise_labels, split_train_test
    from ..metrics.classifiers import load_attribute_classifier

    clf = load_attribute_classifier("faces")
    j = ATTRIBUTES.index(args.attribute)
    judge = lambda images: clf.predict_proba(images)[:, j]  # noqa: E731
    _, test = split_train_test(normalise_labels(y), n_test, args.seed)
    xt = np.asarray(x)[test]
    source = (judge(xt) > 0.5).astype(np.int64)
    z, h = inversions
    res = calibrate_distance(denoiser, b, z[test], h[test], source, judge, multiples=multiples,
                             target=args.calibrate_target, n_steps=args.calibrate_steps, seed=args.seed,
                             batch_size=args.batch_size)
    curve = ", ".join(f"{m:g}x: {s:.2f}" for m, s in zip(res["multiples"], res["success"]))
    print(f"{args.attribute}: calibration on {res['n']} held-out faces (success by multiple: {curve}) -> "
          f"{res['chosen_multiple']:g}x" + ("" if res["reached"] else f" (target {res['target']:g} not reached)"))
    return apply_calibration(b, res, judge_name=f"faces attribute classifier, {args.attribute}, p > 0.5")


def run_show(args: argparse.Namespace) -> int:
    from ..editing.files import resolve_boundary

    b = resolve_boundary(args.boundary)
    print(json.dumps({"path": b.path, **b.full_meta()}, indent=2))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..editing.files import read_boundary_file, shipped_boundaries

    shipped = shipped_boundaries()
    if not shipped:
        print("no shipped boundaries (they are fitted by scripts/fit_default_boundaries.sh)")
        return 0
    for name, path in shipped.items():
        b = read_boundary_file(path)
        acc = ", ".join(f"{s} test acc {bd.stats.get('test_accuracy', float('nan')):.3f}" for s, bd in b.spaces.items())
        print(f"{name:18s} t_m = {b.t_m:4d}, N_inv = {b.n_inv}, {acc}")
    return 0
