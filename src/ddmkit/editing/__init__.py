"""BoundaryDiffusion (Zhu et al., NeurIPS 2023): learning-free semantic editing of frozen DDPMs.

- `svm`: the model-free linear algebra of one space (fit a linear SVM, move along a unit normal,
  project a normal off others) and the label helpers.
- `settings`: `MixingStep` (t_m, N_inv, h source, bottleneck module: what a boundary fixes),
  `EditSettings` (generation after the edit), `PrefixSettings` (control's path down to t_m).
- `hspace`: read/replace the UNet bottleneck h through a forward hook (`HSpace`).
- `ddim`: DDIM inversion to t_m and generation from it (the official step and grid); `prefix`: from
  x_T ~ N(0, I) down to t_m (DDIM or a Karras sampler); `clipping`: x0 clipping as a view.
- `attribute`: `AttributeBoundary` (both spaces + metadata); `fingerprint`: the model identity;
  `fitting`: invert labelled images and fit; `files`: save, read, check, load, shipped names.
- `plan`: distances and `EditPlan`; `loop`: the per-batch, per-plan loop and the NFE tally;
  `edit`: real-image edits; `unconditional`: edits of generated samples (`control`); `seeds`.
- `mixing`: the mixing-step search (documented criterion, spec 7.6); `calibrate`: per-attribute
  distances; `labelled`: labelled image sets (synthetic faces, folder + CSV, two folders).
"""
from __future__ import annotations

from .attribute import AttributeBoundary
from .ddim import Inversion, ddim_grid, ddim_step, generate, invert, reconstruction_error
from .edit import EditNFE, EditResult, edit_images
from .files import load_boundary, resolve_boundary, save_boundary, shipped_boundaries
from .fingerprint import model_fingerprint
from .fitting import fit_boundaries, invert_batched
from .hspace import DEFAULT_MODULE, HSpace, hspace_shape
from .loop import NFETally, edit_latents
from .mixing import choose_mixing_step, default_candidates, mixing_step_search
from .plan import Distance, EditPlan, parse_distance, parse_sweep
from .prefix import sample_to_tm, sample_to_tm_karras
from .settings import EditSettings, MixingStep, PrefixSettings
from .svm import Boundary, condition_normal, fit_svm, move
from .unconditional import ControlNFE, ControlResult, control

__all__ = [
    "AttributeBoundary", "Boundary", "ControlNFE", "ControlResult", "DEFAULT_MODULE", "Distance", "EditNFE",
    "EditPlan", "EditResult", "EditSettings", "HSpace", "Inversion", "MixingStep", "NFETally", "PrefixSettings",
    "choose_mixing_step", "condition_normal", "control", "ddim_grid", "ddim_step", "default_candidates",
    "edit_images", "edit_latents", "fit_boundaries", "fit_svm", "generate", "hspace_shape", "invert",
    "invert_batched", "load_boundary", "mixing_step_search", "model_fingerprint", "move", "parse_distance",
    "parse_sweep", "reconstruction_error", "resolve_boundary", "sample_to_tm", "sample_to_tm_karras",
    "save_boundary", "shipped_boundaries",
]
