"""BoundaryDiffusion (Zhu et al., NeurIPS 2023): learning-free semantic editing of frozen DDPMs.

- `hspace`: read/replace the UNet bottleneck h through a forward hook (`HSpace`).
- `ddim`: DDIM inversion to a mixing step t_m and generation from it (the official step and grid).
- `boundaries`: linear SVMs on z = x_{t_m} and h; files (safetensors + JSON metadata); shipped names.
- `mixing`: the mixing-step search (documented criterion, spec 7.6).
- `edit`: moves, edit plans, real-image edits and unconditional control.
- `labelled`: labelled image sets (synthetic faces, folder + CSV, two folders).
"""
from __future__ import annotations

from .boundaries import (AttributeBoundary, Boundary, condition_normal, fit_boundaries, fit_svm, load_boundary,
                         resolve_boundary, save_boundary, shipped_boundaries)
from .ddim import Inversion, ddim_grid, ddim_step, generate, invert, reconstruction_error, sample_to_tm
from .edit import Distance, EditPlan, control, edit_images, edit_latents, move, parse_distance, parse_sweep
from .hspace import DEFAULT_MODULE, HSpace, hspace_shape
from .mixing import choose_mixing_step, default_candidates, mixing_step_search

__all__ = [
    "AttributeBoundary", "Boundary", "DEFAULT_MODULE", "Distance", "EditPlan", "HSpace", "Inversion",
    "choose_mixing_step", "condition_normal", "control", "ddim_grid", "ddim_step", "default_candidates",
    "edit_images", "edit_latents", "fit_boundaries", "fit_svm", "generate", "hspace_shape", "invert", "load_boundary",
    "mixing_step_search", "move", "parse_distance", "parse_sweep", "reconstruction_error", "resolve_boundary",
    "sample_to_tm", "save_boundary", "shipped_boundaries",
]
