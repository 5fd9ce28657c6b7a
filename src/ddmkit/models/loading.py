"""`--model` resolution: the shipped models, exact mixtures, and local diffusers folders.

    load_model("default")            # the shipped faces DDPM (also what None means)
    load_model("digits")             # the shipped digits DDPM
    load_model("gmm:mix.json")       # an exact Gaussian mixture
    load_model("path/to/folder")     # a diffusers folder: pipeline (unet/ + scheduler/) or bare UNet

Everything is local: nothing is downloaded. Weights load from safetensors (or a pickle-free
`.bin` through `torch.load(weights_only=True)`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..denoisers import Denoiser, VPEpsDenoiser, unwrap
from ..errors import ModelLoadError

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {"default": "faces", "faces": "faces", "digits": "digits"}
_SHIPPED_DOMAIN = {"faces": "faces", "digits": "digits"}


def shipped_model_dir(name: str) -> Path:
    return WEIGHTS_DIR / SHIPPED[name]


def load_model(spec: str | None = "default", *, device: str | torch.device = "cpu", timestep_mode: str = "nearest") -> Denoiser:
    """Load a model given on the command line as `--model SPEC` (see the module docstring)."""
    spec = "default" if spec in (None, "") else str(spec)
    if spec.startswith("gmm:"):
        from ..mixtures import load_gmm_denoiser

        return load_gmm_denoiser(spec[4:])
    if spec in SHIPPED:
        folder = shipped_model_dir(spec)
        if not (folder / "unet" / "config.json").is_file():
            raise ModelLoadError(
                f"the shipped {spec!r} model is missing from {folder}; reinstall ddmkit or train it with "
                f"scripts/train_default_{SHIPPED[spec]}.sh"
            )
        den = load_diffusers_folder(folder, device=device, timestep_mode=timestep_mode)
        den.name = spec if spec != "faces" else "default"
        den.domain = _SHIPPED_DOMAIN[SHIPPED[spec]]
        return den
    path = Path(spec).expanduser()
    if path.exists():
        return load_diffusers_folder(path, device=device, timestep_mode=timestep_mode)
    if "/" in spec and not spec.startswith((".", "/", "~")) and spec.count("/") == 1:
        raise ModelLoadError(
            f"{spec!r} is not a local folder and ddmkit never downloads; fetch it elsewhere "
            f"(e.g. `huggingface-cli download {spec} --local-dir DIR`) and pass --model DIR"
        )
    raise ModelLoadError(f"model {spec!r} not found: give 'default', 'digits', gmm:PATH.json or a diffusers folder")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path} is not a readable JSON file ({e.__class__.__name__}); the model folder is corrupt") from None


def _find_unet_dir(folder: Path) -> Path:
    for cand in (folder / "unet", folder):
        if (cand / "config.json").is_file():
            return cand
    raise ModelLoadError(
        f"{folder} is not a diffusers model folder: no unet/config.json or config.json; "
        "give a folder saved by save_pretrained (e.g. a copy of google/ddpm-cifar10-32)"
    )


def _find_scheduler_config(folder: Path) -> dict | None:
    for cand in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if cand.is_file():
            return _read_json(cand)
    return None


def _load_unet(unet_dir: Path, device):
    from diffusers import UNet2DModel

    cfg = _read_json(unet_dir / "config.json")
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ModelLoadError(f"{unet_dir} holds a {cfg.get('_class_name')}; ddmkit loads UNet2DModel folders")
    weights = [unet_dir / n for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")]
    weights = [w for w in weights if w.is_file()]
    if not weights:
        raise ModelLoadError(f"{unet_dir} has config.json but no diffusion_pytorch_model.safetensors weights")
    try:
        unet = UNet2DModel.from_config(cfg)
    except Exception as e:  # diffusers raises many kinds on a bad config
        raise ModelLoadError(f"{unet_dir}/config.json is not a valid UNet2DModel config: {e}") from None
    state = _load_state_dict(weights[0])
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        what = f"missing keys {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else ""
        what += (", " if what else "") + (f"unexpected keys {unexpected[:3]}" if unexpected else "")
        raise ModelLoadError(f"{weights[0]} does not match its config.json: {what}")
    return unet.to(device).eval()


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises SafetensorError / OSError on truncated files
            raise ModelLoadError(f"{path} is truncated or not a safetensors file ({e.__class__.__name__}); re-copy it") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelLoadError(
            f"{path} cannot be loaded safely ({e.__class__.__name__}); ddmkit only reads safetensors or "
            "weights-only torch files: convert it to safetensors"
        ) from None


def load_diffusers_folder(folder: str | os.PathLike, *, device="cpu", timestep_mode: str = "nearest") -> Denoiser:
    """A diffusers folder as a denoiser; the scheduler config decides the parametrisation."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    unet_dir = _find_unet_dir(folder)
    sched_cfg = _find_scheduler_config(folder)
    unet = _load_unet(unet_dir, device)
    cls = (sched_cfg or {}).get("_class_name", "DDPMScheduler")
    size = unet.config.sample_size
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    shape = (unet.config.in_channels, *size)
    if cls == "ScoreSdeVeScheduler":
        from ..denoisers import VEScoreDenoiser

        den: Denoiser = VEScoreDenoiser(
            unet, sigma_min=sched_cfg.get("sigma_min", 0.01), sigma_max=sched_cfg.get("sigma_max", 1348.0),
            sample_shape=shape, data_range=(0.0, 1.0), name=str(folder),
        )
    else:
        from diffusers import DDPMScheduler

        cfg = dict(sched_cfg or {})
        if cfg.get("prediction_type", "epsilon") != "epsilon":
            raise ModelLoadError(f"{folder}: prediction_type {cfg.get('prediction_type')!r} is not supported yet (epsilon only)")
        cfg.pop("_class_name", None)
        sched = DDPMScheduler.from_config(cfg)
        den = VPEpsDenoiser(unet, sched.alphas_cumprod, shape, timestep_mode=timestep_mode, name=str(folder))
    den.folder = str(folder)
    den.domain = None
    return den


def model_identity(denoiser: Denoiser) -> dict:
    """Name and SHA-256 of the weights of a loaded model (for boundaries, classifiers, manifests)."""
    inner = unwrap(denoiser)
    folder = getattr(inner, "folder", None)
    digest = None
    if folder:
        unet_dir = _find_unet_dir(Path(folder))
        for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
            if (unet_dir / n).is_file():
                h = hashlib.sha256()
                with open(unet_dir / n, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                digest = h.hexdigest()
                break
    elif hasattr(inner, "mixture"):
        digest = hashlib.sha256(json.dumps(inner.mixture.to_json()).encode()).hexdigest()
    return {"name": inner.name, "sha256": digest}
