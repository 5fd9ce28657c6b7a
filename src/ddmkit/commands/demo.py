"""`ddmkit demo`: sample, measure and plot on the shipped models; writes ddmkit-demo/index.html."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the demo on the shipped models and write an HTML page",
        description="Samples an exact 2-D mixture with all seven integrators and the default faces model with "
        "a few integrators at a few NFE budgets (plus the sections of later capabilities), and writes "
        "OUT/index.html with image grids, metric tables and plots.",
        epilog="example: ddmkit demo --out ddmkit-demo",
    )
    p.add_argument("--out", default="ddmkit-demo", help="output folder (default: ddmkit-demo; new, empty or an earlier demo)")
    p.add_argument("--overwrite", action="store_true", help="write into an --out folder that is not an earlier demo")
    p.add_argument("--quick", action="store_true", help="fewer samples and settings (about a minute)")
    p.set_defaults(func=run)


def is_demo_folder(folder: Path) -> bool:
    page = folder / "index.html"
    try:
        return page.is_file() and "Made by <code>ddmkit demo</code>" in page.read_text(errors="replace")
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..output_guard import claim_folder
    from .common import run_lock

    out = claim_folder(args.out, is_demo_folder, overwrite=args.overwrite)
    with run_lock(out):
        claim_folder(args.out, is_demo_folder, overwrite=args.overwrite)
        page = run_demo(out, quick=args.quick)
    print(f"demo written to {page}")
    return 0
