"""What an edit does: boundaries with signed distances, conditions held fixed, the space and the move
(spec section 5, decisions 7.3 and 7.4).

    plan = EditPlan([(resolve_boundary("smiling", model), Distance(20.0))])
    z2, h2, used = plan.apply(z, h)                    # moved latents at the plan's mixing step

Spaces: "both" (default: z and h), "z" (h untouched), "h" (z untouched). Several boundaries are
applied one after the other (an extrapolation: the paper shows multi-attribute edits but has no
routine for them); `conditions` project every edited normal off the condition normals (InterFaceGAN
conditional manipulation) so those attributes' projections stay fixed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DdmkitError
from .attribute import AttributeBoundary
from .settings import MixingStep
from .svm import MOVES, condition_normal, move

EDIT_SPACES = ("both", "z", "h")


@dataclass(frozen=True)
class Distance:
    """A signed editing distance: absolute (`value`) or relative (`value` x the space's recommended distance)."""

    value: float
    relative: bool = False

    def resolve(self, recommended: float) -> float:
        return float(self.value * recommended) if self.relative else float(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}x" if self.relative else f"{self.value:g}"


def parse_distance(text: str | float) -> Distance:
    """'20', '-7.5' (absolute) or '1.5x' (times each space's recommended distance)."""
    if isinstance(text, (int, float)):
        return Distance(float(text))
    s = str(text).strip()
    rel = s.lower().endswith("x")
    try:
        v = float(s[:-1] if rel else s)
    except ValueError:
        raise DdmkitError(f"bad distance {text!r}: give a number (e.g. 20, -7.5) or a multiple of the recommended distance (e.g. 1.5x)") from None
    if not np.isfinite(v):
        raise DdmkitError(f"bad distance {text!r}: must be finite")
    return Distance(v, rel)


def parse_sweep(text: str) -> list[Distance]:
    """'A:B:K' -> K distances linspace(A, B, K); A and B may be relative ('-2x:2x:5')."""
    parts = str(text).split(":")
    if len(parts) != 3:
        raise DdmkitError(f"bad --sweep {text!r}: give FROM:TO:COUNT, e.g. -20:20:5 or -2x:2x:5")
    a, b = parse_distance(parts[0]), parse_distance(parts[1])
    if a.relative != b.relative:
        raise DdmkitError(f"bad --sweep {text!r}: both ends must be absolute or both relative (x)")
    try:
        k = int(parts[2])
    except ValueError:
        raise DdmkitError(f"bad --sweep {text!r}: COUNT must be an integer") from None
    if k < 1:
        raise DdmkitError(f"bad --sweep {text!r}: COUNT must be >= 1")
    return [Distance(float(v), a.relative) for v in np.linspace(a.value, b.value, k)]


def _check_boundary(b) -> None:
    if not isinstance(b, AttributeBoundary):
        raise DdmkitError(f"an edit plan holds AttributeBoundary objects, got {b!r}; load a boundary by name or file "
                          "with resolve_boundary(name, model) (or ddmkit.boundary)")


def _edit_pair(edit) -> tuple[AttributeBoundary, Distance]:
    """(boundary, distance) of one edit; a number or a string such as '1x' becomes a `Distance`."""
    if not (isinstance(edit, (tuple, list)) and len(edit) == 2):
        raise DdmkitError(f"each edit is a (boundary, distance) pair, got {edit!r}")
    b, d = edit
    _check_boundary(b)
    if isinstance(d, bool) or not isinstance(d, (Distance, int, float, str)):
        raise DdmkitError(f"a distance is a number, a string like '1.5x' or a Distance, got {d!r}")
    return b, d if isinstance(d, Distance) else parse_distance(d)


@dataclass
class EditPlan:
    """What one edit does: boundaries with their distances (a `Distance`, a number or a string like '1x'),
    applied in order, normals projected off the `conditions`, in `space` with `move`. Every boundary shares
    one mixing step (`step`)."""

    edits: list[tuple[AttributeBoundary, Distance]]
    conditions: list[AttributeBoundary] = field(default_factory=list)
    space: str = "both"
    move: str = "set"

    def __post_init__(self) -> None:
        if not self.edits:
            raise DdmkitError("an edit needs at least one boundary")
        self.edits = [_edit_pair(e) for e in self.edits]
        for c in self.conditions:
            _check_boundary(c)
        if self.space not in EDIT_SPACES:
            raise DdmkitError(f"space must be one of {', '.join(EDIT_SPACES)}, got {self.space!r}")
        if self.move not in MOVES:
            raise DdmkitError(f"move must be 'set' or 'add', got {self.move!r}")
        ref = self.edits[0][0]
        for b in [e[0] for e in self.edits] + list(self.conditions):
            differ = ref.step.differences(b.step)
            if differ:
                key, mine, theirs = differ[0]
                raise DdmkitError(f"boundaries {ref.attribute!r} and {b.attribute!r} differ in {key} "
                                  f"({mine} vs {theirs}); fit them with the same settings")
        for c in self.conditions:
            if any(c.path is not None and c.path == e[0].path for e in self.edits):
                raise DdmkitError(f"boundary {c.attribute!r} is both edited and held fixed (--condition)")

    @property
    def step(self) -> MixingStep:
        return self.edits[0][0].step

    def spaces(self) -> tuple[str, ...]:
        return ("z", "h") if self.space == "both" else (self.space,)

    def with_distance(self, distance: Distance) -> "EditPlan":
        """The same plan with every boundary at `distance` (a sweep)."""
        return EditPlan([(b, distance) for b, _ in self.edits], self.conditions, self.space, self.move)

    def edit_normals(self, space: str) -> list[np.ndarray]:
        normals = []
        for b, _ in self.edits:
            n = b[space].normal
            if self.conditions:
                n = condition_normal(n, [c[space].normal for c in self.conditions])
            normals.append(n)
        return normals

    def apply(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """(z', h', the distances used per attribute and space). h' is None when h is not edited."""
        used: dict = {}
        new = {"z": z, "h": h}
        for space in self.spaces():
            for (b, dist), n in zip(self.edits, self.edit_normals(space)):
                d = dist.resolve(b[space].recommended_distance)
                used.setdefault(b.attribute, {})[space] = d
                new[space] = move(new[space], n, d, self.move)
        return new["z"], (new["h"] if "h" in self.spaces() else None), used

    def describe(self) -> dict:
        return {
            "boundaries": [{"attribute": b.attribute, "path": b.path, "distance": str(d)} for b, d in self.edits],
            "conditions": [{"attribute": c.attribute, "path": c.path} for c in self.conditions],
            "space": self.space, "move": self.move, "t_m": self.step.t_m, "n_inv": self.step.n_inv,
            "h_source": self.step.h_source,
            "order": "sequential" if len(self.edits) > 1 else "single",
        }


def projections(plan: EditPlan, z: torch.Tensor, h: torch.Tensor | None) -> dict:
    """<x, n> per attribute (edited and condition boundaries, original normals) and space, per sample."""
    out: dict = {}
    for b in [e[0] for e in plan.edits] + list(plan.conditions):
        for space, x in (("z", z), ("h", h)):
            if x is not None and space in b.spaces:
                out.setdefault(b.attribute, {})[space] = [round(float(v), 5) for v in b[space].project(x)]
    return out
