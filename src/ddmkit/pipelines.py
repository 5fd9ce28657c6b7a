"""Two diffusers pipelines: Denoising MCMC sampling (`DLGPipeline`) and BoundaryDiffusion edits
(`BoundaryEditPipeline`), in diffusers' shape, for any folder diffusers' `DDPMPipeline` loads.

    from ddmkit import DLGPipeline, BoundaryEditPipeline
    pipe = DLGPipeline.from_pretrained("default")                  # or a DDPMPipeline folder, or a hub id
    images = pipe(batch_size=8, generator=torch.Generator().manual_seed(0)).images    # 8 PIL images
    edit = BoundaryEditPipeline.from_pretrained("default")
    smiling = edit(image, boundary="smiling", distance="1x").images[0]

Both are `DiffusionPipeline`s holding `unet` and `scheduler` (`register_modules`), so `from_pretrained`,
`save_pretrained` and `.to("cuda")` are diffusers' own; `from_pretrained` also takes ddmkit's shipped model
names and reads only local files unless `local_files_only=False` is passed. The network and the scheduler
are seen through D(x, sigma) (`ddmkit.from_diffusers`), so every scheduler with a beta schedule (DDPM, DDIM,
PNDM, ...) and every prediction type works; the scheduler's own stepping is not used.

Seeds: a `torch.Generator` is turned into ddmkit's base seed by one draw, torch.randint(0, 2**63 - 1,
generator=generator) (`ddmkit.api.models.resolve_seed`); sample i then uses sample_seed(seed, i) (DLG:
chain c its own streams), so the same generator state gives the same images, whatever the batch size.
Without a generator the seed is 0 (or `seed=`).

Outputs follow diffusers: `output_type="pil"` a list of PIL images (quantised as ddmkit's PNGs), "np" a float
array (N, H, W, C) in [0, 1], "pt" a float tensor (N, C, H, W) in [0, 1]; `return_dict=False` gives a tuple.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .api.draw import sample_dlg
from .api.edits import edit
from .api.images import data_range, to_output
from .api.models import from_diffusers
from .assets import shipped_model
from .denoisers import Denoiser
from .errors import DdmkitError
from .models.loading import denoiser_for_folder
from .models.native import load_network, own_memory
from .models.parametrisation import scheduler_class

PIPELINE_OUTPUTS = ("pil", "np", "pt")


def _components_only(folder: Path) -> bool:
    return (folder.is_dir() and not (folder / "model_index.json").is_file() and (folder / "unet" / "config.json").is_file()
            and (folder / "scheduler").is_dir())


class _DdmkitPipeline(DiffusionPipeline):
    """What both pipelines share: loading (shipped names, local files by default), the denoiser, the outputs."""

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self._ddmkit_source: tuple[str | None, str | None] = (None, None)  # (folder, shipped model name)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """diffusers' `from_pretrained`, with ddmkit's shipped names ('default', 'digits') and
        `local_files_only=True` unless given."""
        spec = str(pretrained_model_name_or_path)
        asset = shipped_model(spec) if not Path(spec).exists() else None
        path = asset.model_dir if asset is not None else pretrained_model_name_or_path
        kwargs.setdefault("local_files_only", True)
        kwargs.setdefault("low_cpu_mem_usage", False)  # what diffusers falls back to without accelerate, silently
        if _components_only(Path(path)):
            pipe = cls._from_components(Path(path), **kwargs)
        else:
            try:
                pipe = super().from_pretrained(str(path), **kwargs)
            except (OSError, ValueError) as e:
                raise DdmkitError(f"{cls.__name__}.from_pretrained({spec!r}): "
                                  f"{(str(e).splitlines() or [''])[0][:300]}") from None
        own_memory(pipe.unet)  # as ddmkit.load_model: results do not depend on the file's layout
        folder = Path(path) if Path(path).is_dir() else None
        pipe._ddmkit_source = (str(folder) if folder else None,
                               (spec if spec != "faces" else "default") if asset is not None else None)
        return pipe

    @classmethod
    def _from_components(cls, folder: Path, **kwargs):
        """A folder of unet/ + scheduler/ without model_index.json (what `ddmkit train` and many checkpoints
        converted by hand hold): each component by its own from_pretrained, local files only."""
        extra = {k: kwargs.pop(k) for k in ("noise_classifier",) if k in kwargs}
        unet = load_network(folder / "unet", variant=kwargs.get("variant"), torch_dtype=kwargs.get("torch_dtype"))
        try:
            config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DdmkitError(f"{folder / 'scheduler' / 'scheduler_config.json'} is not a readable JSON file "
                              f"({e.__class__.__name__}); the model folder is corrupt") from None
        source = str(folder / "scheduler")
        scheduler = scheduler_class(str(config.get("_class_name", "DDPMScheduler")), source).from_config(config)
        return cls(unet=unet, scheduler=scheduler, **extra)

    def denoiser(self) -> Denoiser:
        """The pipeline's unet + scheduler seen through D(x, sigma); loaded from a folder, it keeps that folder's
        identity (the SHA-256 of its weights: shipped boundaries and classifiers check it)."""
        cfg = {**dict(self.scheduler.config), "_class_name": type(self.scheduler).__name__}
        folder, shipped = self._ddmkit_source
        if folder is None:
            return from_diffusers(self.unet, self.scheduler)
        den = denoiser_for_folder(self.unet.eval(), cfg, folder)
        if shipped is not None:
            den.name, den.domain = shipped, shipped_model(shipped).domain
        return den

    @staticmethod
    def _output(x: torch.Tensor, den: Denoiser, output_type: str, return_dict: bool):
        """diffusers' output types (module docstring) from samples in the model's range."""
        if output_type not in PIPELINE_OUTPUTS:
            raise DdmkitError(f"output_type must be one of {', '.join(PIPELINE_OUTPUTS)}, got {output_type!r}")
        lo, hi = data_range(den)
        unit = ((x.float().cpu() - lo) / (hi - lo)).clamp(0, 1)
        if output_type == "pt":
            images: Any = unit
        elif output_type == "np":
            images = unit.permute(0, 2, 3, 1).numpy()
        else:
            images = to_output(x, den, "pil")
        return ImagePipelineOutput(images=images) if return_dict else (images,)


class DLGPipeline(_DdmkitPipeline):
    """Denoising MCMC (Kim & Ye 2023) as a diffusers pipeline: `noise_classifier` is a classifier, a name or a
    path (default: the one shipped for a shipped model); `__call__` draws `batch_size` samples with DLG + kar2.
    `num_inference_steps` is the integrator's N: 7 with n_skip 8 gives 20 NFE per image (the README's faces
    setting; 11 integrator + 8 Langevin + 1 Tweedie), after a one-time burn-in per chain."""

    def __init__(self, unet, scheduler, noise_classifier: Any = None):
        super().__init__(unet, scheduler)
        self.noise_classifier = noise_classifier

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, generator: torch.Generator | None = None, num_inference_steps: int = 7,
                 output_type: str = "pil", return_dict: bool = True, *, n_skip: int = 8, eta: float = 0.4,
                 integrator: str = "kar2", chains: int | None = None, seed: int | None = None, **options: float):
        den = self.denoiser()
        res = sample_dlg(den, batch_size, noise_classifier=self.noise_classifier, seed=seed, generator=generator, integrator=integrator,
                         steps=num_inference_steps, n_skip=n_skip, eta=eta, chains=chains, **options)
        return self._output(res.images, den, output_type, return_dict)


class BoundaryEditPipeline(_DdmkitPipeline):
    """BoundaryDiffusion (Zhu et al. 2023) edits as a diffusers pipeline: `__call__(image, boundary, distance)`
    inverts the images to the boundary's t_m, moves z and h across it, and generates (DDIM, eta = 1;
    `num_inference_steps`: the grid points after the edit, default the boundary's N_inv)."""

    @torch.no_grad()
    def __call__(self, image: Any, boundary: Any = "smiling", distance: Any = "1x",
                 generator: torch.Generator | None = None, num_inference_steps: int | None = None,
                 output_type: str = "pil", return_dict: bool = True, *, eta: float = 1.0, seed: int | None = None,
                 space: str = "both"):
        den = self.denoiser()
        res = edit(den, image, boundary, distance, seed=seed, generator=generator, eta=eta, steps=num_inference_steps,
                   space=space, output_type="pt")
        return self._output(res.images, den, output_type, return_dict)
