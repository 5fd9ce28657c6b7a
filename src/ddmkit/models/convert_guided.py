"""iDDPM / ADM checkpoints (guided-diffusion `UNetModel`: `afhqdog_p2.pt`, the P2 / ILVR releases,
BoundaryDiffusion's AFHQ-Dog model) -> diffusers `UNet2DModel`.

No architecture is forked: the ADM options these checkpoints use map onto UNet2DModel options
(`configs.adm_unet_config`): resblock_updown -> resnet down/up-sampling blocks, use_scale_shift_norm
-> resnet_time_scale_shift="scale_shift", num_head_channels -> attention_head_dim, [cos, sin]
timestep features -> flip_sin_to_cos=True, freq_shift=0, learn_sigma -> 6 output channels (the
VPEpsDenoiser takes the first 3 as epsilon).

Keys: `time_embed.{0,2}`, `input_blocks.<n>.<m>`, `middle_block.{0,1,2}`, `output_blocks.<n>.<m>`,
`out.{0,2}`; a ResBlock is `in_layers.{0,2}`, `emb_layers.1`, `out_layers.{0,3}`, `skip_connection`;
an AttentionBlock is `norm`, `qkv` (a 1x1 conv1d to 3C channels) and `proj_out`. The legacy attention
order (guided-diffusion's default, use_new_attention_order=False) interleaves q, k, v per head.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import ModelLoadError
from .checkpoints import build_unet, key_message, load_converted_state, read_checkpoint
from .configs import Arch, get_arch

_RES = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.0": "norm2",
        "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def adm_modules(arch: Arch) -> Iterator[tuple[str, str, str]]:
    """(kind, original prefix, diffusers prefix) for every module of the ADM UNet of `arch`."""
    o = arch.original
    levels, nrb, res = len(o["channel_mult"]), o["num_res_blocks"], o["image_size"]
    attn = [int(r) for r in str(o["attention_resolutions"]).split(",")]
    yield "plain", "time_embed.0", "time_embedding.linear_1"
    yield "plain", "time_embed.2", "time_embedding.linear_2"
    yield "plain", "input_blocks.0.0", "conv_in"
    n = 1
    for i in range(levels):
        for j in range(nrb):
            yield "resnet", f"input_blocks.{n}.0", f"down_blocks.{i}.resnets.{j}"
            if res // 2**i in attn:
                yield "attn", f"input_blocks.{n}.1", f"down_blocks.{i}.attentions.{j}"
            n += 1
        if i != levels - 1:
            yield "resnet", f"input_blocks.{n}.0", f"down_blocks.{i}.downsamplers.0"
            n += 1
    yield "resnet", "middle_block.0", "mid_block.resnets.0"
    yield "attn", "middle_block.1", "mid_block.attentions.0"
    yield "resnet", "middle_block.2", "mid_block.resnets.1"
    n = 0
    for k, i in enumerate(reversed(range(levels))):
        at = res // 2**i in attn
        for j in range(nrb + 1):
            yield "resnet", f"output_blocks.{n}.0", f"up_blocks.{k}.resnets.{j}"
            if at:
                yield "attn", f"output_blocks.{n}.1", f"up_blocks.{k}.attentions.{j}"
            if j == nrb and i != 0:
                yield "resnet", f"output_blocks.{n}.{2 if at else 1}", f"up_blocks.{k}.upsamplers.0"
            n += 1
    yield "plain", "out.0", "conv_norm_out"
    yield "plain", "out.2", "conv_out"


def convert_adm_state_dict(state: dict[str, torch.Tensor], arch: Arch) -> dict[str, torch.Tensor]:
    """ADM state dict -> UNet2DModel state dict. KeyError(list) for missing keys, ValueError(list) for extra."""
    head = arch.original["num_head_channels"]
    legacy = not arch.original.get("use_new_attention_order", False)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []

    def get(key: str) -> torch.Tensor | None:
        if key not in state:
            missing.append(key)
            return None
        used.add(key)
        return state[key]

    for kind, src, dst in adm_modules(arch):
        if kind == "plain":
            for p in ("weight", "bias"):
                t = get(f"{src}.{p}")
                if t is not None:
                    out[f"{dst}.{p}"] = t
        elif kind == "resnet":
            for a, b in _RES.items():
                if a == "skip_connection" and f"{src}.skip_connection.weight" not in state:
                    continue  # identity skip
                for p in ("weight", "bias"):
                    t = get(f"{src}.{a}.{p}")
                    if t is not None:
                        out[f"{dst}.{b}.{p}"] = t
        else:  # attention
            for p in ("weight", "bias"):
                t = get(f"{src}.norm.{p}")
                if t is not None:
                    out[f"{dst}.group_norm.{p}"] = t
                t = get(f"{src}.proj_out.{p}")
                if t is not None:
                    out[f"{dst}.to_out.0.{p}"] = t.reshape(t.shape[0], -1) if p == "weight" else t
                qkv = get(f"{src}.qkv.{p}")
                if qkv is None:
                    continue
                c = qkv.shape[0] // 3
                flat = qkv.reshape(3 * c, -1)  # (3C, C) weight or (3C, 1) bias
                if legacy:  # per head: [q (d), k (d), v (d)]
                    parts = flat.reshape(c // head, 3, head, -1).unbind(1)
                    q, k, v = (x.reshape(c, -1) for x in parts)
                else:  # [q (C), k (C), v (C)], heads within each
                    q, k, v = flat.chunk(3, dim=0)
                for name, t in (("to_q", q), ("to_k", k), ("to_v", v)):
                    out[f"{dst}.{name}.{p}"] = (t if p == "weight" else t.reshape(-1)).contiguous()
    if missing:
        raise KeyError(missing)
    extra = [k for k in state if k not in used]
    if extra:
        raise ValueError(extra)
    return out


def adm_state_dict(obj: Any, source: str = "checkpoint") -> dict:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{source} is not an ADM state dict (name -> tensor)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def convert_guided_checkpoint(path: str | Path, config: str, *, use_ema: bool = True):
    """Read an ADM `.pt` and return (UNet2DModel, Arch, info) for the named config.

    Released ADM files are the EMA weights already (guided-diffusion saves ema_*.pt separately), so
    `use_ema` changes nothing here.
    """

    arch = get_arch(config, "guided")
    state = adm_state_dict(read_checkpoint(path), source=str(path))
    try:
        new = convert_adm_state_dict(state, arch)
    except KeyError as e:
        raise ModelLoadError(key_message(path, config, "is missing", e.args[0])) from None
    except ValueError as e:
        raise ModelLoadError(key_message(path, config, "has keys the config does not know:", e.args[0])) from None
    unet = build_unet(arch.unet)
    load_converted_state(unet, new, f"{path} (ADM config {config})")
    return unet, arch, {"weights": "as stored (released ADM files hold the EMA weights)"}
