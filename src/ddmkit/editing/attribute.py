"""The boundary of one attribute (or prompt): its SVMs in z = x_{t_m} and in h, and the metadata they
share (spec decision 7.5): model identity, the mixing step, attribute, label convention, data, version."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DdmkitError
from .hspace import DEFAULT_MODULE
from .settings import MixingStep
from .svm import Boundary

SPACES = ("z", "h")
FORMAT = "ddmkit-boundary"
FORMAT_VERSION = 1
LABEL_CONVENTION = "+1 (label 1) = attribute present; positive distance adds the attribute"


@dataclass
class AttributeBoundary:
    """The boundaries of one attribute (or prompt) in z and/or h, with the shared metadata: model
    identity, t_m, n_inv, grid rule, h source, attribute, label convention, data, ddmkit version."""

    spaces: dict[str, Boundary]
    meta: dict
    path: str | None = None

    @property
    def attribute(self) -> str:
        return str(self.meta.get("attribute", "?"))

    @property
    def t_m(self) -> int:
        return int(self.meta["t_m"])

    @property
    def n_inv(self) -> int:
        return int(self.meta["n_inv"])

    @property
    def h_source(self) -> str:
        return str(self.meta.get("h_source", "last"))

    @property
    def hspace_module(self) -> str:
        return str(self.meta.get("hspace_module", DEFAULT_MODULE))

    @property
    def step(self) -> MixingStep:
        """The mixing step the boundary was fitted at: edits invert and generate with it."""
        return MixingStep(self.t_m, self.n_inv, self.h_source, self.hspace_module)

    def __getitem__(self, space: str) -> Boundary:
        if space not in self.spaces:
            raise DdmkitError(f"boundary {self.attribute!r} has no {space}-space normal (has {', '.join(self.spaces)})")
        return self.spaces[space]

    def full_meta(self) -> dict:
        m = dict(self.meta)
        m["spaces"] = {s: {"shape": list(b.shape), "intercept": b.intercept, **b.stats} for s, b in self.spaces.items()}
        return m
