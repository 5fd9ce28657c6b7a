"""DDPM checkpoints in the layout of the DDIM / SDEdit / DiffusionCLIP / BoundaryDiffusion code
(`models/diffusion.py`'s `Model`: `celeba_hq.ckpt`, `church_outdoor.ckpt`, `bedroom.ckpt`,
DDIM's `model-790000.ckpt`) -> diffusers `UNet2DModel`, the layout of google/ddpm-celebahq-256.

Original keys (a plain state dict; DDIM training checkpoints are a list
[model, optimizer, epoch, step, ema] with a `module.` prefix):

    temb.dense.{0,1}                          -> time_embedding.linear_{1,2}
    conv_in, norm_out, conv_out               -> conv_in, conv_norm_out, conv_out
    down.{i}.block.{j}.{norm1,conv1,temb_proj,norm2,conv2,nin_shortcut}
                                              -> down_blocks.{i}.resnets.{j}.{..., time_emb_proj, ..., conv_shortcut}
    down.{i}.attn.{j}.{norm,q,k,v,proj_out}   -> down_blocks.{i}.attentions.{j}.{group_norm,to_q,to_k,to_v,to_out.0}
    down.{i}.downsample.conv                  -> down_blocks.{i}.downsamplers.0.conv
    mid.block_1, mid.attn_1, mid.block_2      -> mid_block.resnets.0, mid_block.attentions.0, mid_block.resnets.1
    up.{i}...                                 -> up_blocks.{L-1-i}... (the original indexes up by level)
    up.{i}.upsample.conv                      -> up_blocks.{L-1-i}.upsamplers.0.conv

The attention q/k/v/proj_out are 1x1 convolutions; diffusers uses Linear layers (weights squeezed).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from .checkpoints import build_unet, key_message, load_converted_state, read_checkpoint
from .configs import Arch, get_arch

_RES = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2", "conv2": "conv2",
        "nin_shortcut": "conv_shortcut"}
_ATT = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_PLAIN = {"temb.dense.0": "time_embedding.linear_1", "temb.dense.1": "time_embedding.linear_2",
          "conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}


def ddpm_key(key: str, levels: int) -> tuple[str, bool]:
    """(diffusers key, squeeze 1x1 conv) for one original key; ValueError if the key is unknown."""
    module, _, param = key.rpartition(".")
    if module in _PLAIN:
        return f"{_PLAIN[module]}.{param}", False
    m = re.fullmatch(r"(down|up)\.(\d+)\.(block|attn)\.(\d+)\.(\w+)", module)
    if m:
        side, i, kind, j, leaf = m.groups()
        block = f"down_blocks.{i}" if side == "down" else f"up_blocks.{levels - 1 - int(i)}"
        table = _RES if kind == "block" else _ATT
        if leaf in table:
            return f"{block}.{'resnets' if kind == 'block' else 'attentions'}.{j}.{table[leaf]}.{param}", kind == "attn"
    m = re.fullmatch(r"(down|up)\.(\d+)\.(downsample|upsample)\.conv", module)
    if m:
        side, i, what = m.groups()
        block = f"down_blocks.{i}.downsamplers" if side == "down" else f"up_blocks.{levels - 1 - int(i)}.upsamplers"
        return f"{block}.0.conv.{param}", False
    m = re.fullmatch(r"mid\.(block_1|attn_1|block_2)\.(\w+)", module)
    if m:
        part, leaf = m.groups()
        if part == "attn_1" and leaf in _ATT:
            return f"mid_block.attentions.0.{_ATT[leaf]}.{param}", True
        if part != "attn_1" and leaf in _RES:
            return f"mid_block.resnets.{0 if part == 'block_1' else 1}.{_RES[leaf]}.{param}", False
    raise ValueError(key)


def convert_ddpm_state_dict(state: dict[str, torch.Tensor], arch: Arch) -> dict[str, torch.Tensor]:
    """Original DDPM state dict -> UNet2DModel state dict (ValueError(list) for keys it cannot place)."""
    levels = len(arch.unet["block_out_channels"])
    out, unknown = {}, []
    for key, t in state.items():
        try:
            new, squeeze = ddpm_key(key, levels)
        except ValueError:
            unknown.append(key)
            continue
        out[new] = t.reshape(t.shape[0], t.shape[1]) if squeeze and t.ndim == 4 else t
    if unknown:
        raise ValueError(unknown)
    return out


def ddpm_state_dict(obj: Any, *, use_ema: bool = True, source: str = "checkpoint") -> tuple[dict, dict]:
    """The DDPM state dict inside a loaded checkpoint: a plain state dict, {'state_dict'|'model'|'ema': ...},
    or DDIM's training list [model, optimizer, epoch, step, ema] (EMA preferred)."""
    info: dict[str, Any] = {}
    if isinstance(obj, (list, tuple)):
        if use_ema and len(obj) >= 5 and isinstance(obj[4], dict) and obj[4]:
            obj, info["weights"] = obj[4], "ema (DDIM training checkpoint)"
        elif obj and isinstance(obj[0], dict):
            obj, info["weights"] = obj[0], "raw (DDIM training checkpoint)"
        else:
            raise ModelLoadError(f"{source} is a list, but not a DDIM training checkpoint [model, optimizer, ...]")
    elif isinstance(obj, dict):
        for name in (("ema", "state_dict", "model") if use_ema else ("state_dict", "model")):
            if isinstance(obj.get(name), dict):  # a wrapped state dict ({'state_dict': ...}, ...)
                obj, info["weights"] = obj[name], name
                break
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{source} is not a DDPM state dict, but a {type(obj).__name__}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad or not obj:
        raise ModelLoadError(f"{source} is not a DDPM state dict (entries that are not tensors: {bad[:3]})")
    info.setdefault("weights", "as stored (SDEdit/DiffusionCLIP release files hold the EMA weights)")
    return obj, info


def convert_ddpm_checkpoint(path: str | Path, config: str, *, use_ema: bool = True):
    """Read a DDPM `.ckpt` and return (UNet2DModel, Arch, info) for the named config."""

    arch = get_arch(config, "ddpm")
    state, info = ddpm_state_dict(read_checkpoint(path), use_ema=use_ema, source=str(path))
    try:
        new = convert_ddpm_state_dict(state, arch)
    except ValueError as e:
        raise ModelLoadError(key_message(path, config, "has keys that are not DDPM `Model` keys:", e.args[0])) from None
    unet = build_unet(arch.unet)
    load_converted_state(unet, new, f"{path} (DDPM config {config})", original_key=_original_ddpm_key(arch))
    return unet, arch, info


def _original_ddpm_key(arch: Arch):
    """diffusers key -> original key, for error messages that name what the file lacks."""
    levels = len(arch.unet["block_out_channels"])
    inv_res = {v: k for k, v in _RES.items()}
    inv_att = {v: k for k, v in _ATT.items()}
    inv_plain = {v: k for k, v in _PLAIN.items()}

    def name(key: str) -> str:
        module, _, param = key.rpartition(".")
        if module in inv_plain:
            return f"{inv_plain[module]}.{param}"
        m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", module)
        if m:
            side, i, kind, j, leaf = m.groups()
            lvl = int(i) if side == "down" else levels - 1 - int(i)
            leaf = (inv_res if kind == "resnets" else inv_att).get(leaf, leaf)
            return f"{side}.{lvl}.{'block' if kind == 'resnets' else 'attn'}.{j}.{leaf}.{param}"
        m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d)\.(.+)", module)
        if m:
            kind, j, leaf = m.groups()
            part = "attn_1" if kind == "attentions" else ("block_1" if j == "0" else "block_2")
            return f"mid.{part}.{(inv_res if kind == 'resnets' else inv_att).get(leaf, leaf)}.{param}"
        m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(downsamplers|upsamplers)\.0\.conv", module)
        if m:
            side, i, _ = m.groups()
            lvl = int(i) if side == "down" else levels - 1 - int(i)
            return f"{side}.{lvl}.{'downsample' if side == 'down' else 'upsample'}.conv.{param}"
        return key

    return name
