"""ddmkit: Denoising MCMC and BoundaryDiffusion editing for frozen, pre-trained diffusion models.

    import ddmkit
    model = ddmkit.load_model("default")
    out = ddmkit.sample(model, 8, seed=0)

The public API (`ddmkit.api`, the pipelines of `ddmkit.pipelines`) is imported on first use, so that
`import ddmkit` (and the CLI's `--help`) stays light.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .errors import DdmkitError  # noqa: E402

_LAZY = {
    **{name: "ddmkit.api" for name in (
        "DLGSamples", "Denoiser", "Edits", "Samples", "as_denoiser", "boundary", "edit", "fit_boundary",
        "from_diffusers", "load_model", "noise_classifier", "sample", "sample_dlg", "save_boundary", "train_noise_classifier", "wrap")},
    "DLGPipeline": "ddmkit.pipelines",
    "BoundaryEditPipeline": "ddmkit.pipelines",
    "NCSNppResidualUNet2DModel": "ddmkit.models.ncsnpp",  # diffusers finds ("ddmkit", class) pipeline components here
}

__all__ = ["DdmkitError", "__version__", *sorted(_LAZY)]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ddmkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
