"""ddmkit: Denoising MCMC and BoundaryDiffusion editing for frozen, pre-trained diffusion models."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import DdmkitError  # noqa: E402

__all__ = ["DdmkitError", "__version__"]
