"""Command-line words before argparse reads them (nothing heavy imported: `ddmkit --help` stays fast)."""
from __future__ import annotations

import re

NEGATIVE_VALUE_OPTIONS = ("--distance", "--sweep")  # `edit` / `control` values may start with "-": -1x, -20:20:5
_NEGATIVE = re.compile(r"^-\.?\d")


def attach_negative_values(argv: list[str]) -> list[str]:
    """`--distance -1x` as `--distance=-1x` (and `--sweep -2x:2x:5`), so argparse reads a value that starts
    with '-' as the option's value, not as an unknown flag."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in NEGATIVE_VALUE_OPTIONS and i + 1 < len(argv) and _NEGATIVE.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out
