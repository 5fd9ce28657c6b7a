"""`ddmkit demo`: sample, measure and plot on the shipped models; writes ddmkit-demo/index.html."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..demo_page import MARK
from .argtypes import int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the demo on the shipped models and write an HTML page",
        description="Samples an exact 2-D mixture with every integrator, the default faces model with a few "
        "integrators at a few NFE budgets, Denoising MCMC beside plain sampling on the same seeds, and attribute "
        "edits beside their source faces; writes OUT/index.html with image grids, metric tables and plots. "
        "The default size is a first run (about 2 minutes on a 2-core CPU); --full is the long version.",
        epilog="example: ddmkit demo --out ddmkit-demo",
    )
    p.add_argument("--out", default="ddmkit-demo", help="output folder (default: ddmkit-demo; new, empty or an earlier demo)")
    p.add_argument("--overwrite", action="store_true", help="write into an --out folder that is not an earlier demo")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_const", const="full", dest="size", default="default",
                      help="the long version: 4x the faces per point, every setting (about 6x longer)")
    size.add_argument("--quick", action="store_const", const="quick", dest="size",
                      help="the smallest version, for the tests (tiny n: the FD figures mean little)")
    p.add_argument("--threads", type=int_range(0, 1024), default=1,
                   help="torch CPU threads (default 1: on a busy 2-core machine 2 threads made a small demo 9x slower; "
                   "0: torch's default)")
    p.set_defaults(func=run)


def is_demo_folder(folder: Path) -> bool:
    page = folder / "index.html"
    try:
        return page.is_file() and MARK in page.read_text(errors="replace")
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    import torch

    from ..demo import SIZES, run_demo
    from ..output_guard import claim_folder
    from .common import run_lock

    out = claim_folder(args.out, is_demo_folder, overwrite=args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    with run_lock(out):
        claim_folder(args.out, is_demo_folder, overwrite=args.overwrite)
        page = run_demo(out, size=SIZES[args.size])
    print(f"demo written to {page}")
    return 0
