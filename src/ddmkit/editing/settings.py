"""The settings of BoundaryDiffusion editing, one object per concern.

- `MixingStep`: where a boundary lives (t_m, the inversion grid N_inv, the call h is read at, the
  bottleneck module). Fitting and editing must share it (spec pitfalls 3 and 7), so a boundary carries
  it and `invert`, `generate` and `sample_to_tm*` take it whole.
- `EditSettings`: the generation after the edit (spec 5.1, decisions 7.1 and 7.4) and the batching.
- `PrefixSettings`: how `control` reaches t_m from x_T ~ N(0, I) (spec 5.3).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from ..errors import DdmkitError
from .hspace import DEFAULT_MODULE

HSource = Literal["last", "tm"]
HInjection = Literal["single", "lagged", "none"]
H_SOURCES = ("last", "tm")
H_INJECTIONS = ("single", "lagged", "none")
PREFIX_INTEGRATORS = ("ddim", "kar1", "kar2")


def check_h_source(h_source: str) -> None:
    if h_source not in H_SOURCES:
        raise DdmkitError(f"h_source must be one of {', '.join(H_SOURCES)}, got {h_source!r}")


def check_h_injection(h_injection: str) -> None:
    if h_injection not in H_INJECTIONS:
        raise DdmkitError(f"h_injection must be one of {', '.join(H_INJECTIONS)}, got {h_injection!r}")


@dataclass(frozen=True)
class MixingStep:
    """The mixing step of a boundary: `t_m`, the DDIM grid of N = `n_inv` points (inversion N - 1 NFE,
    generation N NFE by default), where h is read (`h_source`: "last" inversion call, the official
    code's, or at (z, t_m) with one more NFE; decision 7.2) and the dotted path of the bottleneck module."""

    t_m: int = 500
    n_inv: int = 40
    h_source: HSource = "last"
    hspace_module: str = DEFAULT_MODULE

    def __post_init__(self) -> None:
        check_h_source(self.h_source)

    def differences(self, other: "MixingStep") -> list[tuple[str, object, object]]:
        """(field, mine, theirs) for every field where `other` differs."""
        return [(f.name, getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
                if getattr(self, f.name) != getattr(other, f.name)]


@dataclass(frozen=True)
class EditSettings:
    """Generation after the edit: DDIM `eta` (1, the paper's) on `n_steps` grid points (None: the
    boundary's N_inv), `h_injection` (decision 7.1), x0 clipping (`clip_x0`: None follows the model's
    `clip_denoised`), the noise seed (per image; `same_noise` across a sweep), and the batching."""

    eta: float = 1.0
    n_steps: int | None = None
    h_injection: HInjection = "single"
    seed: int = 0
    same_noise: bool = True
    batch_size: int = 16
    clip_x0: bool | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        check_h_injection(self.h_injection)
        if self.eta < 0:
            raise DdmkitError(f"eta must be >= 0, got {self.eta}")

    def generation_steps(self, step: MixingStep) -> int:
        return int(self.n_steps or step.n_inv)

    def injection(self, space: str) -> HInjection:
        """The h injection an edit of `space` ("both", "z", "h") uses: none for a z-only edit."""
        if space == "h" and self.h_injection == "none":
            raise DdmkitError("--space h with --h-injection none edits nothing; use single or lagged")
        return "none" if space == "z" else self.h_injection


@dataclass(frozen=True)
class PrefixSettings:
    """The path of `control` from x_T down to t_m: DDIM with `eta` in `steps` NFE (the official code:
    eta = 0 on the 999-point grid), or a Karras sampler (`integrator` "kar1"/"kar2", `steps` // 2 Heun
    steps, h read at t_m with one more NFE; `options` are kar2's, `eta` is unused)."""

    integrator: str = "ddim"
    steps: int = 50
    eta: float = 1.0
    options: dict | None = None

    def __post_init__(self) -> None:
        if self.integrator not in PREFIX_INTEGRATORS:
            raise DdmkitError(f"the prefix integrator must be one of {', '.join(PREFIX_INTEGRATORS)}, "
                              f"got {self.integrator!r}")
