"""Reading checkpoint files and filling networks from them, shared by the loader and the converters.

Weights load from safetensors or through `torch.load(weights_only=True)`: a file that would need
arbitrary code to unpickle is refused.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import ModelLoadError
from .ncsnpp import NCSNppResidualUNet2DModel


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object in a weights file: safetensors, or a pickle-free torch file (`weights_only=True`).

    Tensors, dicts, lists, tuples, numbers and strings load (score_sde's {model, ema, optimizer, step}
    does); anything that needs a class or function from some module to unpickle is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises SafetensorError / OSError on truncated files
            raise ModelLoadError(f"{path} is truncated or not a safetensors file ({e.__class__.__name__}); re-copy it") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)|global[^\n]*?[`'\"]([\w.]+)[`'\"]", str(e))
        what = next((g for g in (found.groups() if found else ()) if g), None)
        garbage = re.search(r"Unsupported operand|invalid load key|could not find MARK|stack underflow|truncated|"
                            r"pickle data was|unpickling stack|EOF", str(e)) is not None
        if what or (not garbage and ("weights_only" in str(e) or "Unsupported" in str(e))):
            raise ModelLoadError(
                f"{path} needs arbitrary code to unpickle ({what or 'a non-tensor object'}); ddmkit only reads "
                "tensors, numbers and containers (torch.load weights_only=True) or safetensors. Re-save only the "
                "state dict (torch.save(model.state_dict(), ...)) where you trust the file"
            ) from None
        detail = next((ln.strip() for ln in str(e).splitlines() if ln.strip().startswith(("Unsupported", "invalid"))),
                      (str(e).splitlines() or [""])[0][:80])
        raise ModelLoadError(f"{path} is truncated or not a PyTorch checkpoint (unpickling failed: {detail}); re-copy it") from None
    except Exception as e:  # RuntimeError (zip central directory), EOFError, ...
        raise ModelLoadError(
            f"{path} is truncated or not a PyTorch checkpoint ({e.__class__.__name__}: {(str(e).splitlines() or [''])[0][:120]}); "
            "re-copy it"
        ) from None


def unet_classes() -> dict[str, type]:
    from diffusers import UNet2DModel

    return {"UNet2DModel": UNet2DModel, "NCSNppResidualUNet2DModel": NCSNppResidualUNet2DModel}


def build_unet(config: dict, source: str = "config") -> torch.nn.Module:
    """A randomly initialised network from a diffusers config (its `_class_name` picks the class)."""
    classes = unet_classes()
    name = config.get("_class_name", "UNet2DModel")
    if name not in classes:
        raise ModelLoadError(f"{source} holds a {name}; ddmkit loads {' and '.join(classes)} networks")
    try:
        return classes[name].from_config({k: v for k, v in config.items() if k != "_class_name"})
    except Exception as e:  # diffusers raises many kinds on a bad config
        raise ModelLoadError(f"{source} is not a valid {name} config: {e}") from None


def load_converted_state(unet: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                         original_key: Callable[[str], str] | None = None) -> None:
    """Copy `state` into `unet` strictly; a missing, extra or mis-shaped key is a ModelLoadError naming it."""
    own = unet.state_dict()
    name = original_key or (lambda k: k)
    missing = [name(k) for k in own if k not in state]
    extra = [name(k) for k in state if k not in own]
    shapes = [f"{name(k)} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    for what, items in (("is missing", missing), ("has unexpected keys", extra), ("has mis-shaped tensors", shapes)):
        if items:
            shown = ", ".join(items[:4]) + (f", ... ({len(items)} in all)" if len(items) > 4 else "")
            raise ModelLoadError(f"{source} {what}: {shown}; is this the right config and an intact file?")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.dtype))


def key_message(path, config, what, keys) -> str:
    shown = ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")
    return (f"{path} {what} {shown} for config {config!r}; check the config name (`ddmkit convert --list`) "
            "or re-copy the file")
