"""`ddmkit evaluate`: FD-faces / FD-digits, attribute frequencies and confidence of a sample folder."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a folder of samples: FD on classifier features, attribute frequencies (writes metrics.json)",
        description="Read DIR/samples.npz (array x, float32 (N, C, 32, 32) in the data range DIR/manifest.json "
        "states, [-1, 1] if none) or else the PNGs in DIR, "
        "and write DIR/metrics.json: n, fd (Frechet distance on the domain classifier's features against a "
        "fixed reference set), fd_noise_floor (what real data of the same size scores: read fd against it), "
        "attribute (or class) frequencies of samples and data, and the share of confidently classified "
        "samples. The domain comes from --domain, else DIR/manifest.json's 'domain', else faces. "
        "With --fid, also the standard Inception FID against the same reference set (needs torch-fidelity "
        "and the FID Inception weights file; see --inception-weights).",
        epilog="example: ddmkit evaluate runs/samples --domain faces; on N workers (features reduced across "
        "them): torchrun --nproc_per_node N -m ddmkit -- evaluate DIR",
    )
    p.add_argument("dir", metavar="DIR", help="folder with samples.npz or PNG images")
    p.add_argument("--domain", choices=("faces", "digits"), default=None,
                   help="data domain (default: DIR/manifest.json's 'domain', else faces)")
    p.add_argument("--reference-seed", type=int, default=None,
                   help="faces only: seed of the 10,000 reference faces (default: 30000000)")
    p.add_argument("--no-noise-floor", action="store_true", help="skip fd_noise_floor (faster)")
    p.add_argument("--no-cache", action="store_true", help="recompute the reference statistics")
    p.add_argument("--fid", action="store_true",
                   help="also compute standard Inception FID (needs torch-fidelity: pip install 'ddmkit[fid]')")
    p.add_argument("--inception-weights", metavar="PATH", default=None,
                   help="FID Inception weights weights-inception-2015-12-05-6726825d.pth "
                   "(default: $DDMKIT_INCEPTION_WEIGHTS, else the torch hub cache); implies --fid")
    p.add_argument("--out", default=None, help="metrics file (default: DIR/metrics.json)")
    p.add_argument("--device", default="auto",
                   help="device of the Inception network for --fid: auto (CUDA if present), cpu, cuda, cuda:N "
                   "(the small FD classifier runs on the CPU)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json
    from ..metrics.evaluate import evaluate_images, load_samples, read_domain
    from ..errors import DdmkitError

    folder = Path(args.dir)
    if not folder.is_dir():
        raise DdmkitError(f"folder {folder} does not exist; give a folder with samples.npz or PNG images")
    domain = read_domain(folder, args.domain)
    if args.reference_seed is not None and domain != "faces":
        raise DdmkitError("--reference-seed applies to the faces only (the digits reference is the whole set)")
    want_fid = args.fid or args.inception_weights is not None
    if want_fid:
        from ..metrics.fid import check_fid_available

        check_fid_available(args.inception_weights)  # fail before the slow part
    from .. import distributed

    x, source = load_samples(folder, domain)
    with distributed.session(args.device) as dist:
        metrics = evaluate_images(x, domain, reference_seed=args.reference_seed,
                                  with_noise_floor=not args.no_noise_floor, use_cache=not args.no_cache, dist=dist)
        fid = None
        if want_fid:
            from ..metrics.fid import fid_images

            fid = fid_images(x, domain, inception_weights=args.inception_weights,
                             reference_seed=args.reference_seed, device=dist.device, dist=dist)
    if not dist.is_main:
        return 0
    metrics["source"] = source
    metrics["world_size"] = dist.world_size
    if want_fid:
        metrics["fid"] = fid
        metrics["fid_features"] = "Inception-v3 pool3 (torch-fidelity), reference as for fd"
    out = Path(args.out) if args.out else folder / "metrics.json"
    atomic_write_json(out, metrics)
    floor = f" (noise floor at n={metrics['n']}: {metrics['fd_noise_floor']:.3f})" if "fd_noise_floor" in metrics else ""
    print(f"FD-{domain} {metrics['fd']:.3f}{floor}; metrics written to {out}")
    return 0
