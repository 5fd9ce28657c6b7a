"""argparse value types that refuse bad numbers at parse time (one line, exit 2, nothing written).

    p.add_argument("--steps", type=int_range(1, MAX_STEPS))
    p.add_argument("--lr", type=float_range(0, 1, low_open=True))
    p.add_argument("--seed", type=seed)

Bounds that protect memory and time live here (MAX_STEPS, MAX_NUM); range rules that belong to a
method (kar steps >= 2, s_tmin <= s_tmax) are checked by the library's config validation.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

MAX_STEPS = 10_000  # integrator grid points / NFE; the papers' longest schedules are 1,000-4,000
MAX_NUM = 10_000_000  # samples of one run (its samples.npz is held in memory when merged)
MAX_BATCH = 100_000
SEED_LIMIT = 2**64


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _fmt(lo: float | None, hi: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if low_open else '>='} {_num(lo)}")
    if hi is not None:
        parts.append(f"{'<' if high_open else '<='} {_num(hi)}")
    return " and ".join(parts)


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi] ('1e3' and '3.0' are accepted when they are whole numbers)."""
    def parse(text: str) -> int:
        try:
            value = float(text)
            if not math.isfinite(value) or value != int(value):
                raise ValueError
            value = int(value) if abs(value) < 2**53 else int(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"must be a whole number {_fmt(lo, hi, False, False)}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_fmt(lo, hi, False, False)}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, low_open: bool = False,
                high_open: bool = False) -> Callable[[str], float]:
    """A finite number in the interval (open or closed at each end)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        bad = not math.isfinite(value)
        bad |= lo is not None and (value <= lo if low_open else value < lo)
        bad |= hi is not None and (value >= hi if high_open else value > hi)
        if bad:
            rule = _fmt(lo, hi, low_open, high_open)
            what = rule if math.isfinite(value) else f"a finite number{' ' + rule if rule else ''}"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def seed(text: str) -> int:
    """A seed: a whole number in [0, 2^64)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number in [0, 2^64), got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^64), got {text}")
    return value


def path_text(text: str) -> str:
    """A path that is not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty; give a path")
    return text


def float_list(lo: float | None = None, hi: float | None = None, *, low_open: bool = False,
               high_open: bool = False) -> Callable[[str], tuple[float, ...]]:
    """Comma-separated finite numbers, each in the interval; at least one."""
    one = float_range(lo, hi, low_open=low_open, high_open=high_open)

    def parse(text: str) -> tuple[float, ...]:
        values = tuple(one(v.strip()) for v in text.split(",") if v.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"needs at least one number, got {text!r}")
        return values

    parse.__name__ = "numbers"
    return parse


def int_list(lo: int | None = None, hi: int | None = None) -> Callable[[str], tuple[int, ...]]:
    """Comma-separated whole numbers, each in [lo, hi]; at least one."""
    one = int_range(lo, hi)

    def parse(text: str) -> tuple[int, ...]:
        values = tuple(one(v.strip()) for v in text.split(",") if v.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"needs at least one whole number, got {text!r}")
        return values

    parse.__name__ = "integers"
    return parse
