"""`--model` resolution: the shipped models, exact mixtures, diffusers folders and raw checkpoints.

    load_model("default")                                   # the shipped faces DDPM (also what None means)
    load_model("digits")                                    # the shipped digits DDPM
    load_model("digits-ve")                                 # the shipped digits VE model (EDM, data in [0, 1])
    load_model("gmm:mix.json")                              # an exact Gaussian mixture
    load_model("path/to/folder")                            # a diffusers folder (pipeline or bare UNet)
    load_model("google/ddpm-cifar10-32")                    # a hub id: only from the local HF cache
    load_model("score-sde:checkpoint_24.pth@cifar10_ncsnpp_continuous")   # score_sde VE NCSN++
    load_model("ddpm:celeba_hq.ckpt@celeba_hq")             # SDEdit / DiffusionCLIP / DDIM DDPM
    load_model("guided:afhqdog_p2.pt@afhqdog_p2")           # iDDPM / ADM (guided-diffusion)

The scheduler config picks the parametrisation: DDPMScheduler / DDIMScheduler (VP, its `prediction_type`
epsilon, v_prediction or sample; data in [-1, 1]) -> `VPEpsDenoiser`; ScoreSdeVeScheduler (VE score with
Fourier sigma embedding, data in [0, 1]; the network centres its input itself) -> `VEScoreDenoiser`;
EDMEulerScheduler (EDM preconditioning with its sigma_data and prediction_type; data in [-1, 1] unless the
folder's `ddmkit_model.json` gives its `data_range`) -> `EDMDenoiser`. Raw checkpoints are converted in
memory on every load; `ddmkit convert` writes the diffusers folder once (`save_diffusers_folder`).

Offline by design: nothing is downloaded and `from_pretrained` is never called with a hub id. A
hub id is looked up only in the local Hugging Face cache; weights load from safetensors or through
`torch.load(weights_only=True)`, so a file that would need arbitrary code to unpickle is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from ..assets import shipped_model
from ..denoisers import Denoiser, EDMDenoiser, VPEpsDenoiser, unwrap
from ..errors import DdmkitError, ModelLoadError
from .checkpoints import build_unet, file_sha256, load_converted_state, read_checkpoint
from ..mixtures import GMMDenoiser

RAW_FORMATS = ("score-sde", "ddpm", "guided")
VP_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")
VE_SCHEDULERS = ("ScoreSdeVeScheduler",)
EDM_SCHEDULERS = ("EDMEulerScheduler",)
MODEL_INFO_FILE = "ddmkit_model.json"  # optional facts a scheduler config cannot state: {"data_range": [lo, hi]}
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def load_model(spec: str | None = "default", *, device: str | torch.device = "cpu", timestep_mode: str = "nearest") -> Denoiser:
    """Load a model given on the command line as `--model SPEC` (see the module docstring)."""
    spec = "default" if spec in (None, "") else str(spec)
    if spec.startswith("gmm:"):
        from ..mixtures import load_gmm_denoiser

        return load_gmm_denoiser(spec[4:])
    asset = shipped_model(spec)
    if asset is not None:
        if not (asset.model_dir / "unet" / "config.json").is_file():
            raise ModelLoadError(
                f"the shipped {spec!r} model is missing from {asset.model_dir}; reinstall ddmkit or train it with "
                f"{asset.train_script}"
            )
        den = load_diffusers_folder(asset.model_dir, device=device, timestep_mode=timestep_mode)
        den.name = spec if spec != "faces" else "default"
        den.domain = asset.domain
        return den
    raw = parse_raw_spec(spec)
    if raw is not None:
        fmt, path, config = raw
        return load_raw_checkpoint(fmt, path, config, device=device, timestep_mode=timestep_mode)
    path = Path(spec).expanduser()
    if path.exists():
        return load_diffusers_folder(path, device=device, timestep_mode=timestep_mode)
    if _looks_like_hub_id(spec):
        cached = hub_cache_snapshot(spec)
        if cached is not None:
            den = load_diffusers_folder(cached, device=device, timestep_mode=timestep_mode)
            den.name = spec
            return den
        raise ModelLoadError(
            f"{spec!r} is neither a local folder nor a Hugging Face hub id in the local cache, and ddmkit never downloads. "
            f"On a machine with internet run `huggingface-cli download {spec} --local-dir models/{spec.split('/')[1]}`, "
            f"copy that folder here and pass --model models/{spec.split('/')[1]} (or fill the HF cache "
            f"{hub_cache_dir()} and pass the id)"
        )
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
        from .configs import arch_names

        raise ModelLoadError(
            f"--model {spec!r}: write {fmt}:PATH@CONFIG, e.g. {fmt}:{rest or 'model.pth'}@{arch_names(fmt)[0]} "
            f"(configs for {fmt}: {', '.join(arch_names(fmt))})"
        )
    return fmt, Path(path).expanduser(), config


# ---------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------

def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def hub_cache_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub model in the HF cache (refs/main, else the newest), or None."""
    repo = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    snaps = repo / "snapshots"
    if not snaps.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        cand = snaps / ref.read_text().strip()
        if cand.is_dir():
            return cand
    dirs = sorted((d for d in snaps.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    return dirs[-1] if dirs else None


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

def _load_unet(unet_dir: Path, device) -> torch.nn.Module:
    cfg = _read_json(unet_dir / "config.json")
    weights = [unet_dir / n for n in _WEIGHT_FILES if (unet_dir / n).is_file()]
    if not weights:
        raise ModelLoadError(f"{unet_dir} has config.json but no diffusion_pytorch_model.safetensors weights")
    unet = build_unet(cfg, f"{unet_dir}/config.json")
    state = read_checkpoint(weights[0])
    if not isinstance(state, dict):
        raise ModelLoadError(f"{weights[0]} is not a state dict")
    state = _rename_legacy_attention(unet, dict(state))
    load_converted_state(unet, state, f"{weights[0]} (against its config.json)")
    return unet.to(device).eval()


def _rename_legacy_attention(unet: torch.nn.Module, state: dict) -> dict:
    """Early hub uploads (google/ddpm-*, google/ncsnpp-*) name attention weights query/key/value/proj_attn
    and may store the Fourier features twice (time_proj.W and time_proj.weight, one parameter under two
    names); rename / drop them as diffusers' from_pretrained does."""
    if "time_proj.W" in state:
        w = state.pop("time_proj.W")
        if "time_proj.weight" not in state:
            state["time_proj.weight"] = w
        elif not torch.equal(w, state["time_proj.weight"]):
            raise ModelLoadError("the weights hold two different Fourier feature vectors (time_proj.W, time_proj.weight)")
    table = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
    for path, module in unet.named_modules():
        if getattr(module, "_from_deprecated_attn_block", False):
            for old, new in table.items():
                for p in ("weight", "bias"):
                    if f"{path}.{old}.{p}" in state:
                        state[f"{path}.{new}.{p}"] = state.pop(f"{path}.{old}.{p}")
    return state


# ---------------------------------------------------------------------------------------------------
# denoisers
# ---------------------------------------------------------------------------------------------------

def denoiser_from_unet(unet: torch.nn.Module, sched_cfg: dict | None, *, name: str, timestep_mode: str = "nearest",
                       source: str = "model", data_range: tuple[float, float] | None = None) -> Denoiser:
    """Wrap a network in the denoiser its scheduler config calls for (VP, VE score or EDM); `data_range`
    overrides the parametrisation's usual one (EDM folders state theirs in ddmkit_model.json)."""
    from .configs import bottleneck_module_name

    cls = (sched_cfg or {}).get("_class_name", "DDPMScheduler")
    size = unet.config.sample_size
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    shape = (unet.config.in_channels, *size)
    if cls in VE_SCHEDULERS:
        from ..denoisers import VEScoreDenoiser

        if unet.config.get("time_embedding_type", "fourier") != "fourier":
            raise ModelLoadError(
                f"{source}: a ScoreSdeVeScheduler model must embed sigma with Fourier features "
                f"(time_embedding_type 'fourier'), this one has {unet.config.get('time_embedding_type')!r}"
            )
        if not unet.config.get("center_input_sample", False):
            import warnings

            warnings.warn(
                f"{source}: a VE score model whose UNet does not centre its input (center_input_sample false) is fed "
                "[0, 1] data as is; score_sde NCSN++ weights expect 2x - 1 (their data.centered = False). If the "
                "weights come from score_sde, set center_input_sample true in its config.json or convert the original "
                "checkpoint with `ddmkit convert --format score-sde`", stacklevel=2,
            )
        den: Denoiser = VEScoreDenoiser(
            unet, sigma_min=float(sched_cfg.get("sigma_min", 0.01)), sigma_max=float(sched_cfg.get("sigma_max", 1348.0)),
            sample_shape=shape, data_range=data_range or (0.0, 1.0), name=name,
        )
    elif cls in VP_SCHEDULERS:
        from diffusers import DDPMScheduler

        cfg = {k: v for k, v in (sched_cfg or {}).items() if not k.startswith("_")}
        ptype = cfg.get("prediction_type", "epsilon")
        if ptype not in ("epsilon", "v_prediction", "sample"):
            raise ModelLoadError(f"{source}: prediction_type {ptype!r} is not supported (epsilon, v_prediction, sample)")
        try:
            sched = DDPMScheduler.from_config(cfg)
        except Exception as e:
            raise ModelLoadError(f"{source}: bad scheduler config ({e})") from None
        den = VPEpsDenoiser(unet, sched.alphas_cumprod, shape, timestep_mode=timestep_mode, name=name,
                            prediction_type=ptype, data_range=data_range or (-1.0, 1.0))
    elif cls in EDM_SCHEDULERS:
        den = _edm_denoiser(unet, sched_cfg, shape, name, source, data_range)
    else:
        raise ModelLoadError(
            f"{source}: scheduler {cls} is not supported; ddmkit reads "
            f"{', '.join(VP_SCHEDULERS + VE_SCHEDULERS + EDM_SCHEDULERS)} folders (edit scheduler_config.json if "
            "the network is a DDPM, a VE score or an EDM-preconditioned model)"
        )
    den.bottleneck = bottleneck_module_name(unet)
    den.domain = None
    return den


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


def load_diffusers_folder(folder: str | os.PathLike, *, device="cpu", timestep_mode: str = "nearest") -> Denoiser:
    """A diffusers folder as a denoiser; the scheduler config decides the parametrisation."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    unet_dir = _find_unet_dir(folder)
    sched_cfg = _find_scheduler_config(folder)
    rng = read_model_info(folder).get("data_range")
    unet = _load_unet(unet_dir, device)
    den = denoiser_from_unet(unet, sched_cfg, name=str(folder), timestep_mode=timestep_mode, source=str(folder),
                             data_range=tuple(float(v) for v in rng) if rng else None)
    den.folder = str(folder)
    return den


def convert_raw_checkpoint(fmt: str, path: str | os.PathLike, config: str, *, use_ema: bool = True):
    """(network, Arch, info) for a raw checkpoint of format `fmt` ('score-sde', 'ddpm', 'guided')."""
    if fmt == "score-sde":
        from .convert_score_sde import convert_score_sde_checkpoint as convert
    elif fmt == "ddpm":
        from .convert_ddpm import convert_ddpm_checkpoint as convert
    elif fmt == "guided":
        from .convert_guided import convert_guided_checkpoint as convert
    else:
        raise ModelLoadError(f"unknown checkpoint format {fmt!r}; give one of {', '.join(RAW_FORMATS)}")
    from .configs import get_arch

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
    file (`identity_sha256` in ddmkit_conversion.json); other folders: the SHA-256 of their weights.
    """
    inner = unwrap(denoiser)
    folder = inner.folder
    checkpoint = inner.checkpoint
    digest = None
    conversion = {k: v for k, v in (inner.conversion or {}).items() if k in ("format", "config", "weights")}
    if folder:
        prov_path = Path(folder) / "ddmkit_conversion.json"
        prov = _read_json(prov_path) if prov_path.is_file() else {}
        if prov.get("identity_sha256"):
            digest = prov["identity_sha256"]
            conversion = {k: prov.get(k) for k in ("format", "config", "weights")}
        else:
            unet_dir = _find_unet_dir(Path(folder))
            for n in _WEIGHT_FILES:
                if (unet_dir / n).is_file():
                    digest = file_sha256(unet_dir / n)
                    break
    elif checkpoint:
        digest = file_sha256(checkpoint)
    elif isinstance(inner, GMMDenoiser):
        digest = hashlib.sha256(json.dumps(inner.mixture.to_json()).encode()).hexdigest()
    ident = {"name": inner.name, "sha256": digest}
    if conversion:
        ident["conversion"] = conversion
    return ident
