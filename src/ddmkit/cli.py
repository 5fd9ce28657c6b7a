"""`ddmkit` command line: one entry point, one module per subcommand in `ddmkit.commands`.

Each command module defines `register(subparsers)`, which adds its parser and sets `func`.
Bad input raises `DdmkitError`; it is printed on one line and the exit status is 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .errors import DdmkitError

COMMAND_MODULES = (
    "demo",
    "sample",
    "data",
    "train",
    "evaluate",
    "noise_classifier",
    "tune_dmcmc",
    "boundary",
    "mixing_step",
    "edit",
    "control",
    "convert",
)

# commands that split their work across torchrun workers (ddmkit.distributed)
DISTRIBUTED_COMMANDS = ("sample", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddmkit",
        description="Denoising MCMC and BoundaryDiffusion editing for frozen pre-trained diffusion models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"ddmkit.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"ddmkit.commands.{name}":
                continue  # a command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `torchrun ... -m ddmkit -- sample --num ...`: the `--` shields ddmkit's flags
        argv = argv[1:]
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    where = ""
    try:
        from .distributed import env_world

        rank, world, _ = env_world()
        if world > 1:
            where = f" (worker {rank} of {world})"
            if args.command not in DISTRIBUTED_COMMANDS:
                raise DdmkitError(f"`ddmkit {args.command}` runs in one process; under torchrun only "
                                  f"{' and '.join(DISTRIBUTED_COMMANDS)} split their work (run it without torchrun)")
        return int(args.func(args) or 0)
    except DdmkitError as e:
        print(f"ddmkit {args.command}: error{where}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddmkit {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
