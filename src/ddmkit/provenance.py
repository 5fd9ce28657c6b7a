"""What made an output: the command line, the versions of ddmkit and the libraries that compute, and the
git commit of the ddmkit source when it runs from a checkout. Every manifest carries it.

    record = provenance(["ddmkit", "sample", "--num", "64", ...])
"""
from __future__ import annotations

import functools
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Sequence

from . import __version__

LIBRARIES = ("torch", "diffusers", "numpy", "scipy", "scikit-learn", "safetensors")


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"ddmkit": __version__, "python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the ddmkit source checkout (with '-dirty' for uncommitted changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance(command_line: Sequence[str] | None = None) -> dict:
    """The provenance record of a run (command line as given, versions, git commit)."""
    return {"command_line": list(command_line) if command_line is not None else None,
            "versions": library_versions(), "git_commit": git_commit()}
