"""`--model` resolution: the shipped models, exact mixtures, diffusers folders and raw checkpoints.

    load_model("default")                                   # the shipped faces DDPM (also what None means)
    load_model("digits")                                    # the shipped digits DDPM
    load_model("digits-ve")                                 # the shipped digits VE model (EDM, data in [0, 1])
    load_model("gmm:mix.json")                              # an exact Gaussian mixture
    load_model("path/to/folder")                            # a diffusers folder (pipeline or bare UNet)
    load_model("google/ddpm-cifar10-32")                    # a hub id: from the local HF cache (no download)
    load_model("google/ddpm-cifar10-32", allow_download=True, revision="main")   # may download
    load_model("folder", variant="fp16", torch_dtype=torch.float16)              # a weights variant, a dtype
    load_model("score-sde:checkpoint_24.pth@cifar10_ncsnpp_continuous")   # score_sde VE NCSN++
    load_model("ddpm:celeba_hq.ckpt@celeba_hq")             # SDEdit / DiffusionCLIP / DDIM DDPM
    load_model("guided:afhqdog_p2.pt@afhqdog_p2")           # iDDPM / ADM (guided-diffusion)

The scheduler config picks the parametrisation (`ddmkit.models.parametrisation`): any scheduler with a
beta schedule -- DDPM, DDIM, PNDM, Euler, DPM-Solver, ... (VP, its `prediction_type` epsilon, v_prediction or
sample; the betas as that scheduler class computes them; data in [-1, 1]) -> `VPEpsDenoiser`; ScoreSdeVeScheduler (VE score with
Fourier sigma embedding, data in [0, 1]; the network centres its input itself) -> `VEScoreDenoiser`;
EDMEulerScheduler (EDM preconditioning with its sigma_data and prediction_type; data in [-1, 1] unless the
folder's `ddmkit_model.json` gives its `data_range`) -> `EDMDenoiser`. Raw checkpoints are converted in
memory on every load; `ddmkit convert` writes the diffusers folder once (`save_diffusers_folder`).

diffusers-native (`ddmkit.models.native`): networks load through diffusers' `from_pretrained` with
`local_files_only=True` (weights from safetensors or `torch.load(weights_only=True)`, so a file that would need
arbitrary code to unpickle is refused; every key is checked); a hub id resolves through huggingface_hub's
`snapshot_download`, offline unless `allow_download=True` (CLI `--allow-download`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from ..assets import shipped_model
from ..denoisers import Denoiser, EDMDenoiser, VEScoreDenoiser, VPEpsDenoiser, unwrap
from ..errors import DdmkitError, ModelLoadError
from ..io import file_sha256
from ..mixtures import GMMDenoiser, load_gmm_denoiser
from .configs import arch_names, bottleneck_module_name, get_arch
from .convert_ddpm import convert_ddpm_checkpoint
from .convert_guided import convert_guided_checkpoint
from .convert_score_sde import convert_score_sde_checkpoint
from .native import hub_snapshot, load_network, weights_file
from .parametrisation import VE_SCHEDULERS, family, vp_schedule

RAW_FORMATS = ("score-sde", "ddpm", "guided")
MODEL_INFO_FILE = "ddmkit_model.json"  # optional facts a scheduler config cannot state: {"data_range": [lo, hi]}
TORCH_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
                "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A load dtype: a torch dtype or its name (float32, float16, bfloat16; fp32, fp16, bf16); None: as stored."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in TORCH_DTYPES:
        raise DdmkitError(f"torch_dtype must be one of float32, float16, bfloat16 (or a torch.dtype), got {dtype!r}")
    return TORCH_DTYPES[str(dtype)]


def load_model(spec: str | os.PathLike | None = "default", *, device: str | torch.device = "cpu",
               timestep_mode: str = "nearest", revision: str | None = None, variant: str | None = None,
               torch_dtype: str | torch.dtype | None = None, allow_download: bool = False) -> Denoiser:
    """Load a model given on the command line as `--model SPEC` (see the module docstring). `variant` and
    `torch_dtype` apply to diffusers folders and hub ids, `revision` and `allow_download` to hub ids."""
    spec = "default" if spec in (None, "") else str(spec)
    net = {"variant": variant, "torch_dtype": parse_torch_dtype(torch_dtype), "device": device,
           "timestep_mode": timestep_mode}
    if spec.startswith("gmm:"):
        return load_gmm_denoiser(spec[4:])
    asset = shipped_model(spec)
    if asset is not None:
        if not (asset.model_dir / "unet" / "config.json").is_file():
            raise ModelLoadError(
                f"the shipped {spec!r} model is missing from {asset.model_dir}; reinstall ddmkit or train it with "
                f"{asset.train_script}"
            )
        den = load_diffusers_folder(asset.model_dir, **net)
        den.name = spec if spec != "faces" else "default"
        den.domain = asset.domain
        return den
    raw = parse_raw_spec(spec)
    if raw is not None:
        fmt, path, config = raw
        return load_raw_checkpoint(fmt, path, config, device=device, timestep_mode=timestep_mode)
    path = Path(spec).expanduser()
    if path.exists():
        return load_diffusers_folder(path, **net)
    if _looks_like_hub_id(spec):
        den = load_diffusers_folder(hub_snapshot(spec, revision=revision, allow_download=allow_download), **net)
        den.name = spec
        return den
    raise ModelLoadError(
        f"model {spec!r} not found: give 'default', 'digits', gmm:PATH.json, a diffusers folder, or a raw checkpoint "
        "as score-sde:PATH.pth@CONFIG, ddpm:PATH.ckpt@CONFIG or guided:PATH.pt@CONFIG (configs: `ddmkit convert --list`)"
    )


def _looks_like_hub_id(spec: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec) is not None and not spec.startswith(".")


def parse_raw_spec(spec: str) -> tuple[str, Path, str] | None:
    """`FORMAT:PATH@CONFIG` -> (format, path, config); None when `spec` names no raw format."""
    fmt, sep, rest = spec.partition(":")
    if not sep or fmt not in RAW_FORMATS:
        return None
    path, at, config = rest.rpartition("@")
    if not at or not path or not config:
        raise ModelLoadError(
            f"--model {spec!r}: write {fmt}:PATH@CONFIG, e.g. {fmt}:{rest or 'model.pth'}@{arch_names(fmt)[0]} "
            f"(configs for {fmt}: {', '.join(arch_names(fmt))})"
        )
    return fmt, Path(path).expanduser(), config


# ---------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------

def hub_cache_dir() -> Path:
    """The Hugging Face cache huggingface_hub uses (HF_HUB_CACHE / HF_HOME, read by huggingface_hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_cache_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of a hub model in the local HF cache (`snapshot_download(local_files_only=True)`),
    or None when it is not there."""
    try:
        return hub_snapshot(repo_id, revision=revision)
    except ModelLoadError:
        return None


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


# ---------------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------------

def _load_unet(unet_dir: Path, device, *, variant: str | None = None,
               torch_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The network of a folder through diffusers' from_pretrained (`ddmkit.models.native.load_network`: the
    legacy attention names of early hub uploads are renamed by diffusers; every key is checked)."""
    return load_network(unet_dir, variant=variant, torch_dtype=torch_dtype, device=device)


# ---------------------------------------------------------------------------------------------------
# denoisers
# ---------------------------------------------------------------------------------------------------

def denoiser_from_unet(unet: torch.nn.Module, sched_cfg: dict | None, *, name: str, timestep_mode: str = "nearest",
                       source: str = "model", data_range: tuple[float, float] | None = None) -> Denoiser:
    """Wrap a network in the denoiser its scheduler config calls for (VP, VE score or EDM;
    `ddmkit.models.parametrisation`); `data_range` overrides the parametrisation's usual one (EDM folders
    state theirs in ddmkit_model.json)."""
    size = unet.config.sample_size
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    shape = (unet.config.in_channels, *size)
    kind = family(sched_cfg, source)
    if kind == "ve":
        den = _ve_denoiser(unet, sched_cfg, shape, name, source, data_range)
    elif kind == "vp":
        abar, ptype = vp_schedule(sched_cfg, source)
        den = VPEpsDenoiser(unet, abar, shape, timestep_mode=timestep_mode, name=name,
                            prediction_type=ptype, data_range=data_range or (-1.0, 1.0))
    else:
        den = _edm_denoiser(unet, sched_cfg, shape, name, source, data_range)
    den.bottleneck = bottleneck_module_name(unet)
    den.domain = None
    return den


def _ve_denoiser(unet, sched_cfg: dict, shape, name: str, source: str, data_range) -> Denoiser:
    """ScoreSdeVeScheduler config -> `VEScoreDenoiser` (Fourier sigma embedding, [0, 1] data)."""
    if unet.config.get("time_embedding_type", "fourier") != "fourier":
        raise ModelLoadError(
            f"{source}: a ScoreSdeVeScheduler model must embed sigma with Fourier features "
            f"(time_embedding_type 'fourier'), this one has {unet.config.get('time_embedding_type')!r}"
        )
    if not unet.config.get("center_input_sample", False):
        warnings.warn(
            f"{source}: a VE score model whose UNet does not centre its input (center_input_sample false) is fed "
            "[0, 1] data as is; score_sde NCSN++ weights expect 2x - 1 (their data.centered = False). If the "
            "weights come from score_sde, set center_input_sample true in its config.json or convert the original "
            "checkpoint with `ddmkit convert --format score-sde`", stacklevel=3,
        )
    return VEScoreDenoiser(
        unet, sigma_min=float(sched_cfg.get("sigma_min", 0.01)), sigma_max=float(sched_cfg.get("sigma_max", 1348.0)),
        sample_shape=shape, data_range=data_range or (0.0, 1.0), name=name,
    )


def _edm_denoiser(unet, sched_cfg: dict, shape, name: str, source: str, data_range) -> Denoiser:
    """EDMEulerScheduler config -> `EDMDenoiser` (diffusers' defaults where the config is silent)."""
    if unet.config.get("time_embedding_type", "positional") == "fourier":
        raise ModelLoadError(f"{source}: an EDM model's UNet takes c_noise = ln(sigma)/4 as its timestep; this one "
                             "has Fourier features (a score model: use a ScoreSdeVeScheduler config)")
    try:
        return EDMDenoiser(unet, float(sched_cfg.get("sigma_min", 0.002)), float(sched_cfg.get("sigma_max", 80.0)),
                           float(sched_cfg.get("sigma_data", 0.5)), shape,
                           prediction_type=sched_cfg.get("prediction_type", "epsilon"),
                           data_range=data_range or (-1.0, 1.0), name=name)
    except DdmkitError as e:
        raise ModelLoadError(f"{source}: bad EDMEulerScheduler config ({e})") from None


def read_model_info(folder: Path) -> dict:
    """The folder's ddmkit_model.json (facts a scheduler config cannot state), or {}; its data_range is checked."""
    path = folder / MODEL_INFO_FILE
    if not path.is_file():
        return {}
    info = _read_json(path)
    rng = info.get("data_range")
    if rng is not None and not (isinstance(rng, list) and len(rng) == 2 and float(rng[0]) < float(rng[1])):
        raise ModelLoadError(f"{path}: data_range must be [lo, hi] with lo < hi, got {rng!r}")
    return info


def load_diffusers_folder(folder: str | os.PathLike, *, device="cpu", timestep_mode: str = "nearest",
                          variant: str | None = None, torch_dtype: torch.dtype | None = None) -> Denoiser:
    """A diffusers folder as a denoiser; the scheduler config decides the parametrisation. The network loads
    through diffusers' from_pretrained (`variant`: its weights variant, `torch_dtype`: its dtype in memory)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    unet_dir = _find_unet_dir(folder)
    sched_cfg = _find_scheduler_config(folder)
    family(sched_cfg, str(folder))  # an unsupported scheduler is refused before the weights are read
    read_model_info(folder)  # a corrupt ddmkit_model.json is refused before the weights are read
    unet = _load_unet(unet_dir, device, variant=variant, torch_dtype=torch_dtype)
    return denoiser_for_folder(unet, sched_cfg, folder, timestep_mode=timestep_mode, variant=variant)


def denoiser_for_folder(unet: torch.nn.Module, sched_cfg: dict | None, folder: str | os.PathLike, *,
                        timestep_mode: str = "nearest", variant: str | None = None) -> Denoiser:
    """The denoiser of a network loaded from `folder` (which gives it its identity, `model_identity`), with the
    facts of its ddmkit_model.json: the data range and the default sampling start level."""
    info = read_model_info(Path(folder))
    rng = info.get("data_range")
    den = denoiser_from_unet(unet, sched_cfg, name=str(folder), timestep_mode=timestep_mode, source=str(folder),
                             data_range=tuple(float(v) for v in rng) if rng else None)
    den.folder = str(folder)
    den.variant = variant
    start = info.get("sampling_sigma_max")
    if start is not None:
        if not (isinstance(start, (int, float)) and den.sigma_min < float(start) <= den.sigma_max):
            raise ModelLoadError(f"{Path(folder) / MODEL_INFO_FILE}: sampling_sigma_max must be a number in "
                                 f"({den.sigma_min:g}, {den.sigma_max:g}], got {start!r}")
        den.sampling_sigma_max = float(start)
    return den


def convert_raw_checkpoint(fmt: str, path: str | os.PathLike, config: str, *, use_ema: bool = True):
    """(network, Arch, info) for a raw checkpoint of format `fmt` ('score-sde', 'ddpm', 'guided')."""
    converters = {"score-sde": convert_score_sde_checkpoint, "ddpm": convert_ddpm_checkpoint,
                  "guided": convert_guided_checkpoint}
    if fmt not in converters:
        raise ModelLoadError(f"unknown checkpoint format {fmt!r}; give one of {', '.join(RAW_FORMATS)}")
    convert = converters[fmt]
    get_arch(config, fmt)  # a wrong config name fails before the (slow) read
    return convert(path, config, use_ema=use_ema)


def load_raw_checkpoint(fmt: str, path: str | os.PathLike, config: str, *, device="cpu", timestep_mode: str = "nearest",
                        use_ema: bool = True) -> Denoiser:
    """A raw score_sde / DDPM / ADM checkpoint, converted in memory, as a denoiser."""
    unet, arch, info = convert_raw_checkpoint(fmt, path, config, use_ema=use_ema)
    unet = unet.to(device).eval()
    den = denoiser_from_unet(unet, arch.scheduler, name=f"{fmt}:{Path(path).name}@{config}",
                             timestep_mode=timestep_mode, source=str(path))
    den.checkpoint = str(path)
    den.conversion = {"format": fmt, "config": config, **info}
    return den


def save_diffusers_folder(unet: torch.nn.Module, scheduler_config: dict, out: str | os.PathLike, *,
                          provenance: dict | None = None) -> Path:
    """Write a diffusers pipeline folder (unet/ safetensors + scheduler/) atomically: all or nothing.

    `out` must not exist yet (or be an empty folder). Also writes model_index.json and, when given,
    ddmkit_conversion.json with where the weights came from.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelLoadError(f"{out} already exists; choose a new --out (ddmkit does not overwrite models)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        sched = dict(scheduler_config)
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2) + "\n")
        pipeline = "ScoreSdeVePipeline" if sched.get("_class_name") in VE_SCHEDULERS else "DDPMPipeline"
        library = "diffusers" if type(unet).__name__ == "UNet2DModel" else "ddmkit"
        index = {"_class_name": pipeline, "unet": [library, type(unet).__name__],
                 "scheduler": ["diffusers", sched.get("_class_name")]}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        if provenance is not None:
            (tmp / "ddmkit_conversion.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def model_identity(denoiser: Denoiser) -> dict:
    """Name and SHA-256 of the weights of a loaded model (for boundaries, classifiers, manifests).

    The same weights get the same identity by either route: a raw checkpoint is identified by the
    SHA-256 of its file, and so is a folder that `ddmkit convert` wrote from it with the default
    (EMA) weights; a folder re-saved from a diffusers folder keeps the SHA-256 of the source weights
    file (`identity_sha256` in ddmkit_conversion.json); other folders: the SHA-256 of their weights file (of
    the variant's file for a variant: other weights, another identity).
    """
    inner = unwrap(denoiser)
    folder = inner.folder
    checkpoint = inner.checkpoint
    digest = None
    conversion = {k: v for k, v in (inner.conversion or {}).items() if k in ("format", "config", "weights")}
    if folder:
        prov_path = Path(folder) / "ddmkit_conversion.json"
        prov = _read_json(prov_path) if prov_path.is_file() and not inner.variant else {}
        if prov.get("identity_sha256"):
            digest = prov["identity_sha256"]
            conversion = {k: prov.get(k) for k in ("format", "config", "weights")}
        else:
            weights = weights_file(_find_unet_dir(Path(folder)), inner.variant)
            digest = file_sha256(weights) if weights is not None else None
    elif checkpoint:
        digest = file_sha256(checkpoint)
    elif isinstance(inner, GMMDenoiser):
        digest = hashlib.sha256(json.dumps(inner.mixture.to_json()).encode()).hexdigest()
    ident = {"name": inner.name, "sha256": digest}
    if conversion:
        ident["conversion"] = conversion
    return ident
