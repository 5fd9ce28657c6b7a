"""Where ddmkit keeps what it may recompute: the one module that reads the cache locations from the
environment (the XDG base-directory convention, and ddmkit's own override)."""
from __future__ import annotations

import os
from pathlib import Path


def user_cache_base() -> Path:
    """$XDG_CACHE_HOME, else ~/.cache: where run locks live (`ddmkit.output_guard`), so that every run of
    a user sees the same locks whatever DDMKIT_CACHE_DIR says."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"))


def cache_dir() -> Path:
    """$DDMKIT_CACHE_DIR, else $XDG_CACHE_HOME/ddmkit, else ~/.cache/ddmkit: reference statistics and noise
    floors (`ddmkit.metrics.evaluate`)."""
    if os.environ.get("DDMKIT_CACHE_DIR"):
        return Path(os.environ["DDMKIT_CACHE_DIR"])
    return user_cache_base() / "ddmkit"
