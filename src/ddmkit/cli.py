"""`ddmkit` command line: one entry point, one module per subcommand in `ddmkit.commands`.

Each command module defines `register(subparsers)`, which adds its parser and sets `func`.
Bad input raises `DdmkitError`; it is printed on one line and the exit status is 2.
"""
from __future__ import annotations

import argparse
import re
import importlib
import sys
from typing import Sequence

from . import __version__
from .commands.argv import attach_negative_values
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


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error (the problem and where to read more), exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        message = re.sub(r"^argument (\S+): (must|needs) ", r"\1 \2 ", message).removeprefix("argument ")
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ddmkit",
        description="Denoising MCMC and BoundaryDiffusion editing for frozen pre-trained diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"ddmkit {__version__}")
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
    try:
        args = parser.parse_args(attach_negative_values(argv))
    except SystemExit as e:  # --help, --version, or a one-line argument error (status 2)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    args.command_line = ["ddmkit", *argv]  # recorded in every manifest (ddmkit.provenance)
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
    except OSError as e:  # a path that cannot be read or written: bad input, not a crash
        where_path = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"ddmkit {args.command}: error{where}: cannot use{where_path}: {e.strerror or e}; check the path, "
              "its permissions and the free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddmkit {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
