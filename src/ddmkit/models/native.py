"""diffusers-native loading: networks through diffusers' own `ModelMixin.from_pretrained`, hub ids through
`huggingface_hub.snapshot_download`, both offline unless the caller opts in.

    net = load_network(Path("ddpm-cifar10-32/unet"), variant="fp16", torch_dtype=torch.float16)
    folder = hub_snapshot("google/ddpm-cifar10-32", revision="main")            # the local HF cache only
    folder = hub_snapshot("google/ddpm-cifar10-32", allow_download=True)        # may download

diffusers reads `.bin` weights with `torch.load(weights_only=True)` (`models/model_loading_utils.py`,
`load_state_dict`) and renames the attention weights of early hub uploads (query/key/value/proj_attn,
`ModelMixin._fix_state_dict_keys_on_load`); ddmkit adds what diffusers leaves to a warning: a missing,
unexpected or mis-shaped key is a `ModelLoadError` naming it (the duplicate Fourier features `time_proj.W`
of the google/ncsnpp-* uploads excepted), and a weights file that fails to load is diagnosed by ddmkit's
own pickle-free reader (`read_checkpoint`), so a pickle that needs code gets the message that says so.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .checkpoints import read_checkpoint, unet_classes

WEIGHTS_STEM = "diffusion_pytorch_model"
LEGACY_FOURIER = "time_proj.W"  # score_sde uploads store the Fourier features under two names


def weights_file(unet_dir: Path, variant: str | None = None) -> Path | None:
    """The weights file diffusers reads for `variant`: safetensors first, then .bin (None if neither)."""
    infix = f".{variant}" if variant else ""
    for ext in ("safetensors", "bin"):
        path = unet_dir / f"{WEIGHTS_STEM}{infix}.{ext}"
        if path.is_file():
            return path
    return None


def variants_in(unet_dir: Path) -> list[str]:
    """The weight variants a network folder holds ('fp16' for diffusion_pytorch_model.fp16.safetensors)."""
    names = {p.name[len(WEIGHTS_STEM) + 1:].rsplit(".", 1)[0] for p in unet_dir.glob(f"{WEIGHTS_STEM}.*.*")}
    return sorted(n for n in names if n and "." not in n)


@contextlib.contextmanager
def quiet_diffusers():
    """diffusers' loading warnings off (ddmkit checks the same facts and reports them as errors)."""
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)


def _network_class(unet_dir: Path) -> type:
    try:
        cfg = json.loads((unet_dir / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{unet_dir / 'config.json'} is not a readable JSON file ({e.__class__.__name__}); "
                             "the model folder is corrupt") from None
    classes = unet_classes()
    name = cfg.get("_class_name", "UNet2DModel") if isinstance(cfg, dict) else None
    if name not in classes:
        raise ModelLoadError(f"{unet_dir}/config.json holds a {name}; ddmkit loads {' and '.join(classes)} networks")
    return classes[name]


def load_network(unet_dir: str | Path, *, variant: str | None = None, torch_dtype: torch.dtype | None = None,
                 device: str | torch.device = "cpu") -> torch.nn.Module:
    """The network of a diffusers model folder (`unet/` or a flat hub folder), by `from_pretrained` with
    `local_files_only=True`; every key checked (module docstring). `variant` picks
    diffusion_pytorch_model.<variant>.safetensors, `torch_dtype` the dtype of the weights in memory."""
    unet_dir = Path(unet_dir)
    cls = _network_class(unet_dir)
    weights = weights_file(unet_dir, variant)
    if weights is None:
        have = variants_in(unet_dir)
        what = f"no {WEIGHTS_STEM}{'.' + variant if variant else ''}.safetensors (or .bin) weights"
        hint = f"; it has the variants {', '.join(have)} (pass variant=..., --variant)" if have else ""
        raise ModelLoadError(f"{unet_dir} has config.json but {what}{hint}")
    try:
        with quiet_diffusers():
            net, info = cls.from_pretrained(unet_dir, variant=variant, torch_dtype=torch_dtype, local_files_only=True,
                                            use_safetensors=weights.suffix == ".safetensors",
                                            output_loading_info=True, low_cpu_mem_usage=False)
    except Exception as e:  # diffusers raises OSError / ValueError / RuntimeError; say why in one line
        read_checkpoint(weights)  # a pickle that needs code, a truncated file: ddmkit's own message
        detail = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())[:300]
        raise ModelLoadError(f"{unet_dir}: diffusers cannot load it ({e.__class__.__name__}: {detail}); "
                             "is it an intact folder saved by save_pretrained?") from None
    _check_keys(net, info, weights)
    own_memory(net)
    return net.to(device).eval()


def own_memory(net: torch.nn.Module) -> None:
    """Give every parameter and buffer freshly allocated memory. diffusers assigns the tensors it read (views of
    the memory-mapped weights file) as the parameters; their alignment can change which CPU kernels run, and so
    the last bits of the results, with the file's layout. Fresh tensors compute the same whatever the file."""
    with torch.no_grad():
        for module in net.modules():
            for table in (module._parameters, module._buffers):
                for key, t in table.items():
                    if t is not None:
                        t.data = t.data.clone(memory_format=torch.contiguous_format)


def _check_keys(net: torch.nn.Module, info: dict, weights: Path) -> None:
    """Refuse what diffusers only warns about: weights missing (left random), unexpected or mis-shaped."""
    missing = sorted(info.get("missing_keys", []))
    unexpected = sorted(k for k in info.get("unexpected_keys", []) if k != LEGACY_FOURIER)
    if missing == ["time_proj.weight"] and LEGACY_FOURIER in info.get("unexpected_keys", []):
        state = read_checkpoint(weights)  # only the legacy name holds the Fourier features: copy them over
        with torch.no_grad():
            net.time_proj.weight.copy_(state[LEGACY_FOURIER])
        missing = []
    shapes = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in info.get("mismatched_keys", [])]
    for what, items in (("is missing", missing), ("has unexpected keys", unexpected), ("has mis-shaped tensors", shapes)):
        if items:
            shown = ", ".join(items[:4]) + (f", ... ({len(items)} in all)" if len(items) > 4 else "")
            raise ModelLoadError(f"{weights} (against its config.json) {what}: {shown}; is this the right config "
                                 "and an intact file?")


def hub_snapshot(repo_id: str, *, revision: str | None = None, allow_download: bool = False,
                 cache_dir: str | Path | None = None) -> Path:
    """The folder of hub model `repo_id` at `revision` (default: main) from the Hugging Face cache
    (`huggingface_hub.snapshot_download(local_files_only=True)`: no network, and a snapshot whose cached file
    listing shows missing files is refused); `allow_download=True` lets huggingface_hub fetch what is missing."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                      local_files_only=not allow_download))
    except IncompleteSnapshotError as e:
        raise ModelLoadError(f"{repo_id}: {str(e).splitlines()[0]}") from None
    except LocalEntryNotFoundError:
        raise ModelLoadError(_not_cached(repo_id, revision, allow_download)) from None
    except HFValidationError as e:
        raise ModelLoadError(f"{repo_id!r} is not a hub id ({str(e).splitlines()[0]}); give a folder or owner/name") from None
    except Exception as e:  # network errors, a repository that does not exist, a gated one
        raise ModelLoadError(f"{repo_id}: the download failed ({e.__class__.__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:200]}); check the id and the network") from None


def _not_cached(repo_id: str, revision: str | None, allow_download: bool) -> str:
    from huggingface_hub import constants

    rev = f" at revision {revision!r}" if revision else ""
    local = f"models/{repo_id.split('/')[-1]}"
    if allow_download:
        return f"{repo_id}{rev} could not be downloaded and is not in the Hugging Face cache {constants.HF_HUB_CACHE}"
    return (f"{repo_id!r}{rev} is neither a local folder nor in the Hugging Face cache {constants.HF_HUB_CACHE}, and ddmkit "
            f"never downloads unless asked: pass --allow-download (Python: allow_download=True) where there is internet, "
            f"or run `hf download {repo_id} --local-dir {local}` on a machine with internet, copy that folder here "
            f"and pass --model {local}")
