"""The public Python API of ddmkit, re-exported from `ddmkit` itself (see the README's "From Python").

    import ddmkit
    model = ddmkit.load_model("default")                 # or a folder, a hub id, a raw checkpoint, gmm:...
    plain = ddmkit.sample(model, 8, seed=0)              # Samples: .images, .nfe_per_sample
    dlg = ddmkit.sample_dlg(model, 8, seed=0)            # DLGSamples: .images, .nfe, .chain
    edited = ddmkit.edit(model, image, "smiling")        # Edits: .images, .nfe

Modules: `models` (load_model, from_diffusers, wrap, as_denoiser), `draw` (sample, sample_dlg,
noise_classifier), `edits` (boundary, fit_boundary, edit), `images` (inputs and output types); the diffusers
pipelines live in `ddmkit.pipelines`.
"""
from __future__ import annotations

from ..denoisers import Denoiser
from ..editing.files import save_boundary
from ..models.loading import load_model
from .draw import DLGSamples, Samples, noise_classifier, sample, sample_dlg, train_noise_classifier
from .edits import Edits, boundary, edit, fit_boundary
from .models import as_denoiser, from_diffusers, wrap

__all__ = ["DLGSamples", "Denoiser", "Edits", "Samples", "as_denoiser", "boundary", "edit", "fit_boundary",
           "from_diffusers", "load_model", "noise_classifier", "sample", "sample_dlg", "save_boundary", "train_noise_classifier", "wrap"]
