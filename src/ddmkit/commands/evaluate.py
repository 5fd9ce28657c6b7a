"""`ddmkit evaluate`: FD-faces / FD-digits, attribute frequencies and Inception FID of any output folder."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..metrics.fidelity import INSTALL
from ..provenance import provenance
from .argtypes import path_text, seed
from .boundary import ParagraphFormatter
from .common import on_main, run_lock

WEIGHTS_ENV = "DDMKIT_INCEPTION_WEIGHTS"

DESCRIPTION = (
    "Score the images of DIR and write DIR/metrics.json. DIR is the output folder of any command: "
    "'sample' and 'sample --dmcmc' (DIR/samples.npz, in the data range of DIR/manifest.json), 'edit' and "
    "'control' (the edited images DIR/images/*/edit_00.png; --panel picks another edit, or the unedited "
    "original / source / reconstruction; a run with several edits must name one), or any folder of images of "
    "one size (DIR/images/, else DIR). A 'mixing-step' folder holds only a plot and is refused. "
    "FD: the Frechet distance on the domain classifier's features against a fixed reference set, with "
    "fd_noise_floor (what real data of the same size scores: read fd against it) and attribute (or class) "
    "frequencies; the domain is --domain, else the folder's record, else faces (with --ref, --ref-stats or "
    "--save-stats: only when named). FID (--fid): Inception-v3 pool3 features through torch-fidelity's "
    f"extractor ({INSTALL}) with the FID weights from --inception-weights, ${WEIGHTS_ENV} or the torch hub "
    "cache, loaded as tensors only; images enter as uint8 RGB (samples quantised as their PNGs, grey "
    "repeated) and are resized to 299x299 with TensorFlow's bilinear inside the "
    "extractor; the reference is --ref DIR (images of the samples' resolution), --ref-stats FILE.npz "
    "(pytorch-fid's mu/sigma), else the FD reference set. --save-stats FILE.npz writes the samples' mu/sigma."
)
EPILOG = (
    "example: ddmkit evaluate runs/samples --domain faces\n"
    "  ddmkit evaluate cifar10-train-pngs --save-stats cifar10.npz --inception-weights weights-inception-2015-12-05-6726825d.pth\n"
    "  ddmkit evaluate runs/cifar --ref-stats cifar10.npz --inception-weights weights-inception-2015-12-05-6726825d.pth\n"
    "  ddmkit evaluate runs/control --panel edit_00\n"
    "on N workers (features reduced across them): torchrun --nproc_per_node N -m ddmkit -- evaluate DIR"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", description=DESCRIPTION, epilog=EPILOG, formatter_class=ParagraphFormatter,
                       help="score any output folder: FD on classifier features, attribute frequencies, Inception FID")
    p.add_argument("dir", metavar="DIR", help="an output folder of sample/edit/control, or a folder of images")
    p.add_argument("--domain", choices=("faces", "digits"), default=None,
                   help="data domain of the FD (default: the folder's record, else faces)")
    p.add_argument("--panel", default=None,
                   help="edit/control folders: which images to score: edit_KK (default: the only edit), "
                   "original (control), source or reconstruction (edit)")
    p.add_argument("--reference-seed", type=seed, default=None,
                   help="faces only: seed of the 10,000 reference faces (default: 30000000)")
    p.add_argument("--no-noise-floor", action="store_true", help="skip fd_noise_floor (faster)")
    p.add_argument("--no-cache", action="store_true", help="recompute the reference statistics")
    p.add_argument("--fid", action="store_true", help="also compute the standard Inception FID")
    p.add_argument("--inception-weights", metavar="PATH", default=None,
                   help="FID Inception weights weights-inception-2015-12-05-6726825d.pth (torch-fidelity's; "
                   f"default: ${WEIGHTS_ENV}, else the torch hub cache); implies --fid, except with --save-stats alone")
    p.add_argument("--ref", metavar="DIR", default=None,
                   help="FID reference: a folder of real images (same resolution as the samples); implies --fid")
    p.add_argument("--ref-stats", metavar="FILE", default=None,
                   help="FID reference statistics: pytorch-fid's .npz of mu (2048,) and sigma (2048, 2048); implies --fid")
    p.add_argument("--save-stats", metavar="FILE", default=None, type=path_text,
                   help="write the Inception mu/sigma of DIR's images to FILE.npz (pytorch-fid's format)")
    p.add_argument("--out", default=None, type=path_text,
                   help="metrics file (default: DIR/metrics.json); an existing file is replaced only if it is "
                   "ddmkit's metrics (else add --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out / --save-stats file that ddmkit did not write")
    p.add_argument("--device", default="auto",
                   help="device of the Inception network: auto (CUDA if present), cpu, cuda, cuda:N "
                   "(the small FD classifier runs on the CPU)")
    p.set_defaults(func=run)


def request_from_args(args: argparse.Namespace):
    """The EvaluationRequest; the Inception weights path from --inception-weights, else $DDMKIT_INCEPTION_WEIGHTS."""
    from ..metrics.scoring import EvaluationRequest

    weights, label = args.inception_weights, "--inception-weights"
    if weights is None and os.environ.get(WEIGHTS_ENV):
        weights, label = os.environ[WEIGHTS_ENV], WEIGHTS_ENV
    return EvaluationRequest(domain=args.domain, panel=args.panel, reference_seed=args.reference_seed,
                             fid=args.fid, inception_weights=weights, weights_label=label, ref=args.ref,
                             ref_stats=args.ref_stats, save_stats=args.save_stats)


def is_metrics_file(path: Path) -> bool:
    from ..output_guard import json_file_says

    return json_file_says(path, n=None) and (json_file_says(path, fd=None) or json_file_says(path, fid=None))


def claim_outputs(args: argparse.Namespace, folder: Path) -> tuple[Path, Path | None]:
    """The metrics file (absent, an earlier ddmkit metrics file, or --overwrite) and the --save-stats
    file (absent or --overwrite); neither may be an input."""
    from ..output_guard import claim_files

    out = Path(args.out) if args.out else folder / "metrics.json"
    inputs = [folder / "samples.npz", folder / "manifest.json", folder / "images", args.ref, args.ref_stats,
              args.inception_weights]
    claim_files([out], overwrite=args.overwrite, inputs=inputs, owned=is_metrics_file)
    stats = claim_files([args.save_stats], overwrite=args.overwrite, inputs=inputs)[0] if args.save_stats else None
    return out, stats


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..errors import DdmkitError
    from ..metrics.scoring import prepare_evaluation

    folder = Path(args.dir)
    if not folder.is_dir():
        raise DdmkitError(f"folder {folder} does not exist; give an output folder or a folder of images")
    out, _ = claim_outputs(args, folder)
    plan = prepare_evaluation(folder, request_from_args(args))
    with distributed.session(args.device) as dist, run_lock(out, dist):
        on_main(dist, lambda: claim_outputs(args, folder))  # again under the lock
        return _evaluate(args, plan, out, dist)


def _evaluate(args: argparse.Namespace, plan, out: Path, dist) -> int:
    from ..io import atomic_write_json
    from ..metrics.fid import write_stats
    from ..metrics.scoring import run_evaluation

    metrics, stats = run_evaluation(plan, reference_seed=args.reference_seed,
                                    with_noise_floor=not args.no_noise_floor, use_cache=not args.no_cache,
                                    dist=dist, device=dist.device)
    if not dist.is_main:
        return 0
    said = []
    if plan.save_stats is not None:
        write_stats(plan.save_stats, stats, plan.weights.sha256)
        said.append(f"Inception statistics of {stats.count} images written to {plan.save_stats}")
    if metrics:
        metrics["world_size"] = dist.world_size
        metrics["provenance"] = provenance(args.command_line)
        atomic_write_json(out, metrics)
        said.insert(0, _summary(metrics) + f"; metrics written to {out}")
    print("; ".join(said))
    return 0


def _summary(m: dict) -> str:
    parts = []
    if "fd" in m:
        floor = f" (noise floor at n={m['n']}: {m['fd_noise_floor']:.3f})" if "fd_noise_floor" in m else ""
        parts.append(f"FD-{m['domain']} {m['fd']:.3f}{floor}")
    if "fid" in m:
        parts.append(f"FID {m['fid']:.3f} (n={m['fid_n']})")
    return "; ".join(parts)
