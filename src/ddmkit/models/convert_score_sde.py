"""score_sde (Song et al. 2021) VE NCSN++ checkpoints -> diffusers models.

A score_sde checkpoint is `{"model", "ema", "optimizer", "step"}` (`checkpoint_24.pth`, ...):

- `model`: the NCSNpp state dict, keys `module.all_modules.<i>.<...>` (DataParallel prefix) plus the
  `module.sigmas` buffer. Modules are numbered in construction order (`models/ncsnpp.py`).
- `ema`: `{"decay", "num_updates", "shadow_params"}`; the shadows cover only the *trainable*
  parameters, in module order. The Gaussian-Fourier `W` is not trainable, so it comes from `model`
  (DMCMC spec section 9, pitfall 9). ddmkit uses the EMA weights unless told otherwise.

Targets (`configs.ncsnpp_unet_config`):

- progressive output_skip / input_skip (CelebA-HQ, FFHQ, LSUN, 1024 px): `UNet2DModel` with Skip
  blocks, the layout of google/ncsnpp-celebahq-256, mapped module by module as diffusers' own
  conversion script does.
- progressive none / input residual (the CIFAR-10 configs, DMCMC's `checkpoint_24.pth`): UNet2DModel
  cannot express the residual input pyramid (its Skip blocks only add a 1x1-conv of an FIR-downsampled
  image) nor FIR resnet up-sampling without the output pyramid, so these load into
  `NCSNppResidualUNet2DModel` (ddmkit.models.ncsnpp): the same diffusers layers (ResnetBlock2D with FIR kernels,
  Attention, FirDownsample2D, UNetMidBlock2D, GaussianFourierProjection), wired as NCSN++ wires them,
  with UNet2DModel's attribute names (`mid_block` is h-space) and call signature.

Both compute model(x, sigma) = score for data x in [0, 1]: they centre the input (2x - 1), embed
log(sigma) with Fourier features and divide the output by sigma.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import ModelLoadError
from .checkpoints import build_unet, key_message, load_converted_state, read_checkpoint
from .configs import Arch, get_arch

# score_sde module names -> diffusers module names (the network: ddmkit.models.ncsnpp)
_RESNET = {"GroupNorm_0": "norm1", "Conv_0": "conv1", "Dense_0": "time_emb_proj", "GroupNorm_1": "norm2",
           "Conv_1": "conv2", "Conv_2": "conv_shortcut"}
_ATTN = {"GroupNorm_0": "group_norm", "NIN_0": "to_q", "NIN_1": "to_k", "NIN_2": "to_v", "NIN_3": "to_out.0"}


def ncsnpp_modules(arch: Arch) -> Iterator[tuple[str, str]]:
    """(kind, diffusers prefix) for `all_modules.0, 1, 2, ...`, in NCSNpp's construction order."""
    o = arch.original
    levels, nrb = len(o["ch_mult"]), o["num_res_blocks"]
    res = o["image_size"]
    skip_out = o["progressive"] == "output_skip"
    yield "fourier", "time_proj"
    yield "plain", "time_embedding.linear_1"
    yield "plain", "time_embedding.linear_2"
    yield "plain", "conv_in"
    for i in range(levels):
        at = res // 2**i in o["attn_resolutions"]
        for j in range(nrb):
            yield "resnet", f"down_blocks.{i}.resnets.{j}"
            if at:
                yield "attn", f"down_blocks.{i}.attentions.{j}"
        if i != levels - 1:
            yield "resnet", f"down_blocks.{i}.resnet_down"
            if o["progressive_input"] == "input_skip":
                yield "combine", f"down_blocks.{i}.skip_conv"
            else:
                yield "firconv", f"down_blocks.{i}.pyramid_down.Conv2d_0"
    yield "resnet", "mid_block.resnets.0"
    yield "attn", "mid_block.attentions.0"
    yield "resnet", "mid_block.resnets.1"
    for k, i in enumerate(reversed(range(levels))):
        for j in range(nrb + 1):
            yield "resnet", f"up_blocks.{k}.resnets.{j}"
        if res // 2**i in o["attn_resolutions"]:
            yield "attn", f"up_blocks.{k}.attentions.0"
        if skip_out:  # the output pyramid's GroupNorm + conv3x3; at level 0 they are conv_norm_out/conv_out
            yield "plain", f"up_blocks.{k}.skip_norm" if i != 0 else "conv_norm_out"
            yield "plain", f"up_blocks.{k}.skip_conv" if i != 0 else "conv_out"
        if i != 0:
            yield "resnet", f"up_blocks.{k}.resnet_up"
    if not skip_out:
        yield "plain", "conv_norm_out"
        yield "plain", "conv_out"


def convert_ncsnpp_state_dict(state: dict[str, torch.Tensor], arch: Arch) -> dict[str, torch.Tensor]:
    """score_sde NCSNpp state dict (no `module.` prefix) -> the state dict of `arch`'s diffusers model.

    Raises KeyError(list of missing original keys) when the checkpoint lacks keys the config needs,
    ValueError(list of keys) when it has keys the config does not know.
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []

    def take(src: str, dst: str, transpose: bool = False) -> None:
        if src not in state:
            missing.append(src)
            return
        t = state[src]
        out[dst] = t.t().contiguous() if transpose else t
        used.add(src)

    for idx, (kind, dst) in enumerate(ncsnpp_modules(arch)):
        src = f"all_modules.{idx}"
        if kind == "fourier":
            take(f"{src}.W", f"{dst}.weight")
        elif kind in ("plain", "combine", "firconv"):
            inner = {"plain": "", "combine": ".Conv_0", "firconv": ".Conv2d_0"}[kind]
            take(f"{src}{inner}.weight", f"{dst}.weight")
            take(f"{src}{inner}.bias", f"{dst}.bias")
        elif kind == "resnet":
            for a, b in _RESNET.items():
                if a == "Conv_2" and f"{src}.Conv_2.weight" not in state:
                    continue  # identity shortcut; the model check below catches a missing one
                take(f"{src}.{a}.weight", f"{dst}.{b}.weight")
                take(f"{src}.{a}.bias", f"{dst}.{b}.bias")
        elif kind == "attn":
            for a, b in _ATTN.items():
                if a.startswith("NIN"):  # NIN computes x @ W: a Linear with weight W^T
                    take(f"{src}.{a}.W", f"{dst}.{b}.weight", transpose=True)
                    take(f"{src}.{a}.b", f"{dst}.{b}.bias")
                else:
                    take(f"{src}.{a}.weight", f"{dst}.{b}.weight")
                    take(f"{src}.{a}.bias", f"{dst}.{b}.bias")
    if missing:
        raise KeyError(missing)
    extra = [k for k in state if k not in used and k != "sigmas"]
    if extra:
        raise ValueError(extra)
    return out


# ---------------------------------------------------------------------------------------------------
# reading a checkpoint
# ---------------------------------------------------------------------------------------------------

def _strip(state: dict, prefix: str = "module.") -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def split_score_sde_checkpoint(obj: Any, *, use_ema: bool = True, source: str = "checkpoint"):
    """(NCSNpp state dict without `module.`, EMA dict or None, info) of a loaded score_sde checkpoint.

    `obj` is {model, ema, optimizer, step} or a bare NCSNpp state dict. Without an `ema` entry the raw
    weights are used, with a warning (score_sde samples with the EMA weights: spec pitfall 9).
    """
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{source} is not a score_sde checkpoint (a dict), but a {type(obj).__name__}")
    if "model" in obj:
        model = obj["model"]
        if not isinstance(model, dict):
            raise ModelLoadError(f"{source}: 'model' is a {type(model).__name__}, not a state dict")
        state, info = _strip(model), {"step": _as_int(obj.get("step"))}
        ema = obj.get("ema") if use_ema else None
    elif any(k.split(".")[0] in ("all_modules", "module") for k in obj):
        state, info, ema = _strip(obj), {"step": None}, None
    else:
        raise ModelLoadError(
            f"{source} has neither a 'model' entry nor NCSN++ keys (all_modules.*); keys: {sorted(obj)[:6]}; "
            "is this a score_sde checkpoint?"
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelLoadError(f"{source}: model entries that are not tensors: {bad[:3]}")
    if use_ema and ema is None:
        warnings.warn(f"{source} holds no EMA weights; using the raw weights (score_sde samples with the EMA)",
                      stacklevel=2)
    info["weights"] = "ema" if ema is not None else "raw"
    return state, ema, info


def apply_ema(state: dict, ema: Any, source: str = "checkpoint") -> tuple[dict, dict]:
    """`state` with the EMA shadows copied in, matched to the trainable parameters in module order:
    every key except the `sigmas` buffer and the Fourier `all_modules.0.W` (not trainable)."""
    shadows = ema.get("shadow_params") if isinstance(ema, dict) else None
    if not isinstance(shadows, (list, tuple)):
        raise ModelLoadError(f"{source}: 'ema' has no shadow_params list")
    trainable = [k for k in state if k not in ("sigmas", "all_modules.0.W")]
    if len(shadows) != len(trainable):
        raise ModelLoadError(
            f"{source}: {len(shadows)} EMA shadow_params for {len(trainable)} trainable parameters; the "
            "EMA does not line up with 'model' (a truncated or foreign checkpoint)"
        )
    state = dict(state)
    for k, s in zip(trainable, shadows):
        if not isinstance(s, torch.Tensor) or s.shape != state[k].shape:
            shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ModelLoadError(
                f"{source}: EMA shadow for {k} has shape {shape}, the parameter {tuple(state[k].shape)}; "
                "the EMA does not line up with 'model'"
            )
        state[k] = s
    return state, {"ema_decay": ema.get("decay"), "ema_num_updates": _as_int(ema.get("num_updates"))}


def _as_int(v):
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return int(v.item())
    return int(v) if isinstance(v, (int, float)) else None


def convert_score_sde_checkpoint(path: str | Path, config: str, *, use_ema: bool = True):
    """Read a score_sde `.pth` and return (diffusers model, Arch, info) for the named config."""

    arch = get_arch(config, "score-sde")
    state, ema, info = split_score_sde_checkpoint(read_checkpoint(path), use_ema=use_ema, source=str(path))

    def convert(sd):
        try:
            return convert_ncsnpp_state_dict(sd, arch)
        except KeyError as e:
            raise ModelLoadError(key_message(path, config, "is missing", e.args[0])) from None
        except ValueError as e:
            raise ModelLoadError(key_message(path, config, "has keys the config does not know:", e.args[0])) from None

    new = convert(state)  # names missing / foreign keys before the EMA is matched
    if ema is not None:
        state, facts = apply_ema(state, ema, str(path))
        info.update(facts)
        new = convert(state)
    unet = build_unet(arch.unet)
    load_converted_state(unet, new, f"{path} (score_sde config {config})")
    return unet, arch, info
