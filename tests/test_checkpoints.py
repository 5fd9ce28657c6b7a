"""Real pre-trained checkpoint formats: each is saved in its ORIGINAL layout from a random-weight
model with the real architecture config, loaded/converted by ddmkit, and must give the same outputs.

The original modules: for diffusers folders, diffusers' own UNet2DModel. For the raw formats there is
no installable package, so this file carries compact reference implementations of the original
forward passes, written from the original architectures (key names and module order included):

- `RefDDPM`: the DDPM `Model` of the DDIM / SDEdit / DiffusionCLIP code (temb.dense, down/mid/up,
  [sin, cos] timestep features with log(1e4)/(half-1), GroupNorm(32, eps 1e-6), q/k/v 1x1 convs).
- `RefNCSNpp`: score_sde's NCSNpp (`all_modules` in construction order, BigGAN resnets with FIR
  up/down-sampling, NIN attention, Fourier features of log sigma, progressive output_skip/input_skip
  and none/residual, 2x - 1 centring, division by sigma); saved as {model, ema, optimizer, step}.
- `RefADM`: guided-diffusion's UNetModel (input_blocks/middle_block/output_blocks, scale-shift
  norm, resblock up/down, legacy QKV attention, [cos, sin] features with log(1e4)/half).

The 256 px configs are used at their real depth and block layout with fewer channels and a smaller
image so the tests stay fast on a CPU; the 32 px configs are used as they are.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddmkit.cli import main as cli_main
from ddmkit.errors import ModelLoadError
from ddmkit.models import configs as C
from ddmkit.models.checkpoints import read_checkpoint
from ddmkit.models.loading import load_model, model_identity

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


# ===================================================================================================
# reference implementations of the original networks
# ===================================================================================================

def _sinusoid(t: torch.Tensor, dim: int, *, ddpm: bool) -> torch.Tensor:
    half = dim // 2
    denom = (half - 1) if ddpm else half
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / denom)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()] if ddpm else [args.cos(), args.sin()], dim=1)


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, norms included (zero-initialised layers would hide mapping errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            if p.ndim == 1 and ("norm" in name.lower() or "GroupNorm" in name) and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return model.eval()


# ---- DDPM (ddim / SDEdit models/diffusion.py) ---------------------------------------------------

def _gn32(c):
    return nn.GroupNorm(32, c, eps=1e-6)


class _DResBlock(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.norm1, self.conv1 = _gn32(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2, self.conv2 = _gn32(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x))) + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class _DAttn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = _gn32(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(b, c, hh * ww) for m in (self.q, self.k, self.v))
        w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * c**-0.5, dim=2)  # i: query, j: key
        out = torch.einsum("bij,bcj->bci", w, v).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class RefDDPM(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, image_size):
        super().__init__()
        self.ch, self.levels, self.nrb = ch, len(ch_mult), num_res_blocks
        temb = 4 * ch
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb), nn.Linear(temb, temb)])
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        res, cin, skips = image_size, ch, [ch]
        self.down = nn.ModuleList()
        for i, m in enumerate(ch_mult):
            lvl = nn.Module()
            lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                lvl.block.append(_DResBlock(cin, ch * m, temb))
                cin = ch * m
                if res in attn_resolutions:
                    lvl.attn.append(_DAttn(cin))
                skips.append(cin)
            if i != self.levels - 1:
                lvl.downsample = nn.Module()
                lvl.downsample.conv = nn.Conv2d(cin, cin, 3, stride=2)
                res //= 2
                skips.append(cin)
            self.down.append(lvl)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = _DResBlock(cin, cin, temb), _DAttn(cin), _DResBlock(cin, cin, temb)
        ups = []
        for i in reversed(range(self.levels)):
            lvl = nn.Module()
            lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                lvl.block.append(_DResBlock(cin + skips.pop(), ch * ch_mult[i], temb))
                cin = ch * ch_mult[i]
                if res in attn_resolutions:
                    lvl.attn.append(_DAttn(cin))
            if i != 0:
                lvl.upsample = nn.Module()
                lvl.upsample.conv = nn.Conv2d(cin, cin, 3, padding=1)
                res *= 2
            ups.insert(0, lvl)
        self.up = nn.ModuleList(ups)
        self.norm_out, self.conv_out = _gn32(cin), nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, x, t):
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](_sinusoid(t, self.ch, ddpm=True))))
        hs = [self.conv_in(x)]
        for i, lvl in enumerate(self.down):
            for j in range(self.nrb):
                h = lvl.block[j](hs[-1], temb)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
                hs.append(h)
            if hasattr(lvl, "downsample"):
                hs.append(lvl.downsample.conv(F.pad(hs[-1], (0, 1, 0, 1))))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for i in reversed(range(self.levels)):
            lvl = self.up[i]
            for j in range(self.nrb + 1):
                h = lvl.block[j](torch.cat([h, hs.pop()], dim=1), temb)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


# ---- score_sde NCSN++ (models/ncsnpp.py, layerspp.py, up_or_down_sampling.py) --------------------

def _fir(x, *, up=1, down=1, pad=(0, 0), gain=1.0):
    """upfirdn2d with the [1, 3, 3, 1] kernel: zero-insert up-sampling, pad, filter, keep every down-th."""
    k1 = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k1, k1)
    k = (k / k.sum() * gain).to(x)
    b, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(b, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    x = F.conv2d(x, k.flip(0, 1).expand(c, 1, 4, 4), groups=c)
    return x[:, :, ::down, ::down]


def _fir_up(x):
    return _fir(x, up=2, pad=(2, 1), gain=4.0)


def _fir_down(x):
    return _fir(x, down=2, pad=(1, 1))


def _gn4(c):
    return nn.GroupNorm(min(c // 4, 32), c, eps=1e-6)


class _Fourier(nn.Module):
    def __init__(self, n, scale):
        super().__init__()
        self.W = nn.Parameter(torch.randn(n) * scale, requires_grad=False)

    def forward(self, x):
        p = x[:, None] * self.W[None] * 2 * math.pi
        return torch.cat([p.sin(), p.cos()], dim=-1)


class _BigGAN(nn.Module):
    def __init__(self, cin, cout, temb, up=False, down=False):
        super().__init__()
        self.up, self.down = up, down
        self.GroupNorm_0 = _gn4(cin)
        self.Conv_0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.Dense_0 = nn.Linear(temb, cout)
        self.GroupNorm_1 = _gn4(cout)
        self.Conv_1 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout or up or down:
            self.Conv_2 = nn.Conv2d(cin, cout, 1)

    def forward(self, x, temb):
        h = F.silu(self.GroupNorm_0(x))
        if self.up:
            h, x = _fir_up(h), _fir_up(x)
        elif self.down:
            h, x = _fir_down(h), _fir_down(x)
        h = self.Conv_0(h) + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(F.silu(self.GroupNorm_1(h)))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0)


class _NIN(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.W = nn.Parameter(torch.randn(cin, cout) / math.sqrt(cin))
        self.b = nn.Parameter(torch.zeros(cout))

    def forward(self, x):  # x @ W over the channel axis
        return (torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[None, :, None, None])


class _Attnpp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.GroupNorm_0 = _gn4(c)
        self.NIN_0, self.NIN_1, self.NIN_2, self.NIN_3 = (_NIN(c, c) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(h), self.NIN_1(h), self.NIN_2(h)
        w = torch.einsum("bchw,bcij->bhwij", q, k).reshape(b, hh, ww, hh * ww) * c**-0.5
        w = torch.softmax(w, dim=-1).reshape(b, hh, ww, hh, ww)
        h = self.NIN_3(torch.einsum("bhwij,bcij->bchw", w, v))
        return (x + h) / math.sqrt(2.0)


class _Combine(nn.Module):
    def __init__(self, c1, c2):
        super().__init__()
        self.Conv_0 = nn.Conv2d(c1, c2, 1)

    def forward(self, x, y):
        return self.Conv_0(x) + y


class _FirConvDown(nn.Module):  # layerspp.Downsample(with_conv=True, fir=True): Conv2d_0 = fused conv + FIR down
    def __init__(self, cin, cout):
        super().__init__()
        self.Conv2d_0 = nn.Module()
        self.Conv2d_0.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.Conv2d_0.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        x = _fir(x, pad=(2, 2))
        return F.conv2d(x, self.Conv2d_0.weight, stride=2) + self.Conv2d_0.bias.reshape(1, -1, 1, 1)


class RefNCSNpp(nn.Module):
    def __init__(self, o: dict):
        super().__init__()
        self.o = o
        self.register_buffer("sigmas", torch.exp(torch.linspace(math.log(o["sigma_max"]), math.log(o["sigma_min"]), 8)))
        nf, mult, nrb, res = o["nf"], o["ch_mult"], o["num_res_blocks"], o["image_size"]
        self.levels = len(mult)
        temb = 4 * nf
        m = [_Fourier(nf, o["fourier_scale"]), nn.Linear(2 * nf, temb), nn.Linear(temb, temb), nn.Conv2d(3, nf, 3, padding=1)]
        skips, cin, pyr = [nf], nf, 3
        for i in range(self.levels):
            for _ in range(nrb):
                m.append(_BigGAN(cin, nf * mult[i], temb))
                cin = nf * mult[i]
                if res // 2**i in o["attn_resolutions"]:
                    m.append(_Attnpp(cin))
                skips.append(cin)
            if i != self.levels - 1:
                m.append(_BigGAN(cin, cin, temb, down=True))
                if o["progressive_input"] == "input_skip":
                    m.append(_Combine(pyr, cin))
                else:
                    m.append(_FirConvDown(pyr, cin))
                    pyr = cin
                skips.append(cin)
        m += [_BigGAN(cin, cin, temb), _Attnpp(cin), _BigGAN(cin, cin, temb)]
        for i in reversed(range(self.levels)):
            for _ in range(nrb + 1):
                m.append(_BigGAN(cin + skips.pop(), nf * mult[i], temb))
                cin = nf * mult[i]
            if res // 2**i in o["attn_resolutions"]:
                m.append(_Attnpp(cin))
            if o["progressive"] == "output_skip":
                m += [_gn4(cin), nn.Conv2d(cin, 3, 3, padding=1)]
            if i != 0:
                m.append(_BigGAN(cin, cin, temb, up=True))
        if o["progressive"] != "output_skip":
            m += [_gn4(cin), nn.Conv2d(cin, 3, 3, padding=1)]
        self.all_modules = nn.ModuleList(m)

    def forward(self, x, sigma):
        o, m = self.o, iter(self.all_modules)
        temb = next(m)(torch.log(sigma))
        temb = next(m)(temb)
        temb = next(m)(F.silu(temb))
        x = 2 * x - 1.0
        pyr = x
        hs = [next(m)(x)]
        for i in range(self.levels):
            for _ in range(o["num_res_blocks"]):
                h = next(m)(hs[-1], temb)
                if h.shape[-1] in o["attn_resolutions"]:
                    h = next(m)(h)
                hs.append(h)
            if i != self.levels - 1:
                h = next(m)(hs[-1], temb)
                if o["progressive_input"] == "input_skip":
                    pyr = _fir_down(pyr)
                    h = next(m)(pyr, h)
                else:
                    pyr = (next(m)(pyr) + h) / math.sqrt(2.0)
                    h = pyr
                hs.append(h)
        h = hs[-1]
        h = next(m)(h, temb)
        h = next(m)(h)
        h = next(m)(h, temb)
        pyramid = None
        for i in reversed(range(self.levels)):
            for _ in range(o["num_res_blocks"] + 1):
                h = next(m)(torch.cat([h, hs.pop()], dim=1), temb)
            if h.shape[-1] in o["attn_resolutions"]:
                h = next(m)(h)
            if o["progressive"] == "output_skip":
                norm, conv = next(m), next(m)
                p = conv(F.silu(norm(h)))
                pyramid = p if pyramid is None else _fir_up(pyramid) + p
            if i != 0:
                h = next(m)(h, temb)
        if o["progressive"] == "output_skip":
            h = pyramid
        else:
            norm, conv = next(m), next(m)
            h = conv(F.silu(norm(h)))
        return h / sigma.reshape(-1, 1, 1, 1)


# ---- iDDPM / ADM (guided-diffusion unet.py) -------------------------------------------------------

def _gn32e5(c):
    return nn.GroupNorm(32, c, eps=1e-5)


class _AResBlock(nn.Module):
    def __init__(self, cin, cout, emb, up=False, down=False):
        super().__init__()
        self.up, self.down = up, down
        self.in_layers = nn.Sequential(_gn32e5(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * cout))
        self.out_layers = nn.Sequential(_gn32e5(cout), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def _upd(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2, 2) if self.down else x

    def forward(self, x, emb):
        h = self._upd(self.in_layers[:-1](x))
        x = self._upd(x)
        h = self.in_layers[-1](h)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        return self.skip_connection(x) + h


class _AAttn(nn.Module):
    def __init__(self, c, head_channels, legacy=True):
        super().__init__()
        self.heads, self.legacy = c // head_channels, legacy
        self.norm = _gn32e5(c)
        self.qkv = nn.Conv1d(c, 3 * c, 1)
        self.proj_out = nn.Conv1d(c, c, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        qkv = self.qkv(self.norm(x.reshape(b, c, -1)))
        d = c // self.heads
        if self.legacy:
            q, k, v = qkv.reshape(b * self.heads, 3 * d, -1).split(d, dim=1)
        else:
            q, k, v = (t.reshape(b * self.heads, d, -1) for t in qkv.chunk(3, dim=1))
        w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
        return (x.reshape(b, c, -1) + self.proj_out(a)).reshape(b, c, hh, ww)


class RefADM(nn.Module):
    def __init__(self, o: dict):
        super().__init__()
        ch, mult, nrb, res = o["num_channels"], o["channel_mult"], o["num_res_blocks"], o["image_size"]
        hc, legacy = o["num_head_channels"], not o.get("use_new_attention_order", False)
        attn = [int(r) for r in str(o["attention_resolutions"]).split(",")]
        emb = 4 * ch
        self.ch = ch
        self.time_embed = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.input_blocks = nn.ModuleList([nn.ModuleList([nn.Conv2d(3, ch, 3, padding=1)])])
        skips, cin = [ch], ch
        for i, m in enumerate(mult):
            for _ in range(nrb):
                layers = [_AResBlock(cin, ch * m, emb)]
                cin = ch * m
                if res // 2**i in attn:
                    layers.append(_AAttn(cin, hc, legacy))
                self.input_blocks.append(nn.ModuleList(layers))
                skips.append(cin)
            if i != len(mult) - 1:
                self.input_blocks.append(nn.ModuleList([_AResBlock(cin, cin, emb, down=True)]))
                skips.append(cin)
        self.middle_block = nn.ModuleList([_AResBlock(cin, cin, emb), _AAttn(cin, hc, legacy), _AResBlock(cin, cin, emb)])
        self.output_blocks = nn.ModuleList()
        for i in reversed(range(len(mult))):
            for j in range(nrb + 1):
                layers = [_AResBlock(cin + skips.pop(), ch * mult[i], emb)]
                cin = ch * mult[i]
                if res // 2**i in attn:
                    layers.append(_AAttn(cin, hc, legacy))
                if i and j == nrb:
                    layers.append(_AResBlock(cin, cin, emb, up=True))
                self.output_blocks.append(nn.ModuleList(layers))
        self.out = nn.Sequential(_gn32e5(cin), nn.SiLU(), nn.Conv2d(cin, 6 if o["learn_sigma"] else 3, 3, padding=1))

    @staticmethod
    def _run(block, h, emb):
        for layer in block:
            h = layer(h, emb) if isinstance(layer, _AResBlock) else layer(h)
        return h

    def forward(self, x, t):
        emb = self.time_embed(_sinusoid(t, self.ch, ddpm=False))
        hs, h = [], x
        for block in self.input_blocks:
            h = self._run(block, h, emb)
            hs.append(h)
        h = self._run(self.middle_block, h, emb)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


# ===================================================================================================
# helpers
# ===================================================================================================

def _small(orig: dict, **over) -> dict:
    o = dict(orig)
    o.update(over)
    return o


def _register(name: str, arch: C.Arch) -> None:
    """Make a reduced-width variant of a real config loadable by name (until the test ends)."""
    C.ARCHS[name] = arch


@pytest.fixture(autouse=True)
def _restore_registry():
    saved = dict(C.ARCHS)
    yield
    C.ARCHS.clear()
    C.ARCHS.update(saved)


def _ddpm_arch(name, orig):
    arch = C.Arch(name, "ddpm", "ddpm", C.ddpm_unet_config(orig), C.ddpm_scheduler_config(), (-1.0, 1.0), 1, orig)
    _register(name, arch)
    return arch


def _ncsnpp_arch(name, orig):
    fam = "ncsnpp" if orig["progressive"] == "output_skip" else "ncsnpp-residual"
    sched = C.ve_scheduler_config(orig["sigma_min"], orig["sigma_max"], orig["num_scales"], orig["snr"])
    arch = C.Arch(name, "score-sde", fam, C.ncsnpp_unet_config(orig), sched, (0.0, 1.0), 1, orig)
    _register(name, arch)
    return arch


def _adm_arch(name, orig):
    arch = C.Arch(name, "guided", "adm", C.adm_unet_config(orig), C.ddpm_scheduler_config("learned_range"),
                  (-1.0, 1.0), 1, orig)
    _register(name, arch)
    return arch


def _score_sde_checkpoint(ref: RefNCSNpp, path: Path, *, ema_shift: float = 0.05, seed: int = 1) -> dict:
    """Save `ref` as score_sde does: DataParallel `module.` keys, EMA shadows of the trainable
    parameters in module order (here: the weights plus a shift, so EMA and raw differ), a real Adam
    state, the step. Returns the state dict of the EMA model (W from `model`), to build the expected net."""
    g = torch.Generator().manual_seed(seed)
    trainable = [p for p in ref.parameters() if p.requires_grad]
    shadows = [p.detach() + ema_shift * torch.randn(p.shape, generator=g) for p in trainable]
    opt = torch.optim.Adam(trainable, lr=2e-4)
    x = torch.rand(1, 3, ref.o["image_size"], ref.o["image_size"])
    ref(x, torch.tensor([1.0])).square().mean().backward()
    raw = {k: v.clone() for k, v in ref.state_dict().items()}
    opt.step()  # a real optimizer state (step, exp_avg, exp_avg_sq) to check weights_only accepts it
    ref.load_state_dict(raw)
    torch.save({"model": {f"module.{k}": v for k, v in raw.items()},
                "ema": {"decay": 0.999, "num_updates": 1234, "shadow_params": shadows},
                "optimizer": opt.state_dict(), "step": 1234}, path)
    expected = dict(raw)
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    for n, s in zip(names, shadows):
        expected[n] = s
    return expected


def _close(a, b, tol=2e-4):
    scale = b.abs().max().item() + 1e-12
    err = (a - b).abs().max().item() / scale
    assert err < tol, f"max relative difference {err:.2e}"


# ===================================================================================================
# configs
# ===================================================================================================

HUB_DDPM_CIFAR10 = {  # google/ddpm-cifar10-32 unet config.json (published)
    "act_fn": "silu", "attention_head_dim": None, "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False, "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional", "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
HUB_DDPM_CELEBAHQ = {  # google/ddpm-celebahq-256 (published)
    **HUB_DDPM_CIFAR10, "block_out_channels": [128, 128, 256, 256, 512, 512], "sample_size": 256,
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
}
HUB_NCSNPP_CELEBAHQ_BLOCKS = {  # google/ncsnpp-celebahq-256 (published)
    "block_out_channels": [128, 128, 256, 256, 256, 256, 256], "layers_per_block": 2, "time_embedding_type": "fourier",
    "down_block_types": ["SkipDownBlock2D"] * 4 + ["AttnSkipDownBlock2D"] + ["SkipDownBlock2D"] * 2,
    "up_block_types": ["SkipUpBlock2D"] * 2 + ["AttnSkipUpBlock2D"] + ["SkipUpBlock2D"] * 4,
    "mid_block_scale_factor": 1.41421356237, "norm_eps": 1e-06, "norm_num_groups": None, "downsample_padding": 1,
}


def test_configs_reproduce_the_published_diffusers_configs():
    for name, hub in (("google/ddpm-cifar10-32", HUB_DDPM_CIFAR10), ("google/ddpm-celebahq-256", HUB_DDPM_CELEBAHQ),
                      ("google/ddpm-ema-church-256", HUB_DDPM_CELEBAHQ), ("celeba_hq", HUB_DDPM_CELEBAHQ)):
        cfg = C.get_arch(name).unet
        assert {k: cfg[k] for k in hub} == hub, name
    cfg = C.get_arch("celebahq_256_ncsnpp_continuous").unet
    for k, v in HUB_NCSNPP_CELEBAHQ_BLOCKS.items():
        assert cfg[k] == pytest.approx(v) if isinstance(v, float) else cfg[k] == v, k
    assert C.get_arch("cifar10_ncsnpp_continuous").unet_class == "NCSNppResidualUNet2DModel"
    sched = C.get_arch("celebahq_256_ncsnpp_continuous").scheduler
    assert (sched["_class_name"], sched["sigma_min"], sched["sigma_max"]) == ("ScoreSdeVeScheduler", 0.01, 348.0)
    assert C.get_arch("cifar10_ncsnpp_continuous").scheduler["sigma_max"] == 50.0


def test_every_named_architecture_builds_with_its_published_size():
    from ddmkit.models.checkpoints import build_unet

    expected_millions = {"google/ddpm-cifar10-32": 35.7, "google/ddpm-celebahq-256": 113.7}  # Ho et al. 2020
    for name in C.arch_names():
        arch = C.get_arch(name)
        with torch.device("meta"):
            net = build_unet(arch.unet)
        n = sum(p.numel() for p in net.parameters()) / 1e6
        if name in expected_millions:
            assert n == pytest.approx(expected_millions[name], abs=0.1), name
        assert C.bottleneck_module_name(net) == "mid_block"
        assert isinstance(net.get_submodule("mid_block"), nn.Module)


def test_h_space_registry_and_classifier_strides():
    assert set(C.BOTTLENECK_MODULE.values()) == {"mid_block"}
    assert C.DLG_CLASSIFIER_POOL_STRIDES[256] == (4, 4, 4, 2) and C.DLG_CLASSIFIER_POOL_STRIDES[32] == (2, 2, 2, 2)


# ===================================================================================================
# raw DDPM (SDEdit / DiffusionCLIP / DDIM)
# ===================================================================================================

@pytest.mark.parametrize("name,orig", [
    ("cifar10", None),  # the real config, full size
    ("celeba_hq-narrow", _small(C.get_arch("celeba_hq").original, ch=32, image_size=32)),  # real depth/layout
])
def test_ddpm_checkpoint_converts_to_the_same_network(tmp_path, name, orig):
    arch = C.get_arch(name) if orig is None else _ddpm_arch(name, orig)
    o = arch.original
    ref = _randomise(RefDDPM(o["ch"], o["ch_mult"], o["num_res_blocks"], o["attn_resolutions"], o["image_size"]), 3)
    path = tmp_path / "model.ckpt"
    torch.save(ref.state_dict(), path)
    den = load_model(f"ddpm:{path}@{name}")
    x = torch.randn(2, 3, o["image_size"], o["image_size"])
    t = torch.tensor([10, 700])
    with torch.no_grad():
        _close(den.unet(x, t).sample, ref(x, t))
        sigma = den.t_to_sigma(t)  # the denoiser on the same input: D = x - sigma * eps(x / sqrt(1 + sigma^2), t)
        xs = x * (1 + sigma[:, None, None, None] ** 2).sqrt()
        assert den.clip_denoised  # DDPM models clip D to [-1, 1] by default; compare the raw network path
        den.clip_denoised = False
        _close(den(xs, sigma), xs - sigma[:, None, None, None] * ref(x, t))
    assert den.bottleneck == "mid_block" and den.data_range == (-1.0, 1.0)


def test_ddpm_training_checkpoint_list_with_ema_and_module_prefix(tmp_path):
    arch = _ddpm_arch("tiny-ddpm", _small(C.get_arch("celeba_hq").original, ch=32, ch_mult=[1, 2], image_size=16))
    o = arch.original
    ref = _randomise(RefDDPM(o["ch"], o["ch_mult"], o["num_res_blocks"], o["attn_resolutions"], o["image_size"]), 4)
    ema = _randomise(RefDDPM(o["ch"], o["ch_mult"], o["num_res_blocks"], o["attn_resolutions"], o["image_size"]), 5)
    pre = lambda sd: {f"module.{k}": v for k, v in sd.items()}  # noqa: E731
    path = tmp_path / "ckpt.pth"
    torch.save([pre(ref.state_dict()), {"state": {}, "param_groups": []}, 7, 1000, pre(ema.state_dict())], path)
    den = load_model(f"ddpm:{path}@tiny-ddpm")
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([50])
    with torch.no_grad():
        _close(den.unet(x, t).sample, ema(x, t))
    assert "ema" in den.conversion["weights"]


# ===================================================================================================
# raw score_sde NCSN++
# ===================================================================================================

@pytest.mark.parametrize("name,orig", [
    ("cifar10_ncsnpp_continuous", None),  # the DMCMC CIFAR-10 model's config, full size (none/residual)
    # real depth and block layout; nf 64 keeps the attention level at 128 channels (GroupNorm 32 as in the real net)
    ("celebahq256-narrow", _small(C.get_arch("celebahq_256_ncsnpp_continuous").original, nf=64, image_size=64)),
])
def test_score_sde_checkpoint_converts_to_the_same_network(tmp_path, name, orig):
    arch = C.get_arch(name) if orig is None else _ncsnpp_arch(name, orig)
    o = arch.original
    torch.manual_seed(0)
    ref = _randomise(RefNCSNpp(o), 6)
    path = tmp_path / "checkpoint_24.pth"
    expected = _score_sde_checkpoint(ref, path)
    ref.load_state_dict(expected)  # the EMA model: what score_sde samples with
    den = load_model(f"score-sde:{path}@{name}")
    assert type(den.model).__name__ == arch.unet_class
    x = torch.rand(2, 3, o["image_size"], o["image_size"])  # data in [0, 1]
    sigma = torch.tensor([0.02, 30.0])
    with torch.no_grad():
        xn = x + sigma[:, None, None, None] * torch.randn_like(x)
        _close(den.model(xn, sigma).sample, ref(xn, sigma))
        _close(den(xn, sigma), xn + sigma[:, None, None, None] ** 2 * ref(xn, sigma))
    assert den.data_range == (0.0, 1.0) and den.sigma_max == o["sigma_max"] and den.sigma_min == 0.01
    assert den.conversion["weights"] == "ema" and den.conversion["step"] == 1234
    assert den.bottleneck == "mid_block"


def test_score_sde_raw_weights_and_fourier_w_from_model(tmp_path):
    name = "ncsnpp-residual-tiny"
    o = _small(C.get_arch("cifar10_ncsnpp_continuous").original, nf=32, ch_mult=[1, 2], num_res_blocks=1, image_size=16)
    _ncsnpp_arch(name, o)
    ref = _randomise(RefNCSNpp(o), 7)
    path = tmp_path / "ck.pth"
    _score_sde_checkpoint(ref, path, ema_shift=0.5)
    from ddmkit.models.convert_score_sde import convert_score_sde_checkpoint

    raw, _, info = convert_score_sde_checkpoint(path, name, use_ema=False)
    ema, _, _ = convert_score_sde_checkpoint(path, name)
    assert info["weights"] == "raw"
    assert torch.equal(raw.time_proj.weight, ref.all_modules[0].W) and torch.equal(ema.time_proj.weight, ref.all_modules[0].W)
    x, s = torch.rand(1, 3, 16, 16), torch.tensor([0.5])
    with torch.no_grad():
        _close(raw(x, s).sample, ref(x, s))
        assert not torch.allclose(ema(x, s).sample, raw(x, s).sample)


def test_score_sde_bare_state_dict_is_accepted(tmp_path):
    name = "ncsnpp-skip-tiny"
    o = _small(C.get_arch("celebahq_256_ncsnpp_continuous").original, nf=64, ch_mult=[1, 2, 2], num_res_blocks=1,
               image_size=32)
    _ncsnpp_arch(name, o)
    ref = _randomise(RefNCSNpp(o), 8)
    path = tmp_path / "bare.pth"
    torch.save(ref.state_dict(), path)
    with pytest.warns(UserWarning, match="no EMA weights"):
        den = load_model(f"score-sde:{path}@{name}")
    x, s = torch.rand(1, 3, 32, 32), torch.tensor([3.0])
    with torch.no_grad():
        _close(den.model(x, s).sample, ref(x, s))


# ===================================================================================================
# raw iDDPM / ADM
# ===================================================================================================

@pytest.mark.parametrize("legacy", [True, False])
def test_guided_checkpoint_converts_to_the_same_network(tmp_path, legacy):
    name = f"afhq-narrow-{legacy}"
    o = _small(C.get_arch("afhqdog_p2").original, num_channels=32, image_size=32, use_new_attention_order=not legacy,
               num_head_channels=32)
    _adm_arch(name, o)
    ref = _randomise(RefADM(o), 9)
    path = tmp_path / "afhqdog_p2.pt"
    torch.save(ref.state_dict(), path)
    den = load_model(f"guided:{path}@{name}")
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 900])
    with torch.no_grad():
        out = ref(x, t)
        _close(den.unet(x, t).sample, out)
        sigma = den.t_to_sigma(t)
        xs = x * (1 + sigma[:, None, None, None] ** 2).sqrt()
        den.clip_denoised = False  # compare the raw network path (D is clipped to [-1, 1] by default)
        _close(den(xs, sigma), xs - sigma[:, None, None, None] * out[:, :3])  # learned sigma: first 3 channels


# ===================================================================================================
# diffusers folders (the original module is diffusers' own UNet2DModel)
# ===================================================================================================

def _save_unet(unet, folder: Path, sched: dict, layout: str, bin_legacy: bool = False):
    if layout == "pipeline":
        unet.save_pretrained(folder / "unet", safe_serialization=True)
        (folder / "scheduler").mkdir(parents=True)
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    else:  # the flat hub layout of google/ddpm-cifar10-32: config.json, scheduler_config.json, .bin
        folder.mkdir(parents=True)
        cfg = dict(unet.config)
        cfg["_class_name"] = "UNet2DModel"
        (folder / "config.json").write_text(json.dumps(cfg, default=list))
        (folder / "scheduler_config.json").write_text(json.dumps(sched))
        sd = unet.state_dict()
        if bin_legacy:  # early diffusers attention names (and Fourier W twice), as in the original hub .bin files
            ren = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
            sd = {next((k.replace(f".{a}.", f".{b}.") for a, b in ren.items() if f".{a}." in k), k): v for k, v in sd.items()}
            if "time_proj.weight" in sd:
                sd["time_proj.W"] = sd["time_proj.weight"]
        torch.save(sd, folder / "diffusion_pytorch_model.bin")


@pytest.fixture(scope="module")
def cifar10_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    cfg = {k: v for k, v in C.get_arch("google/ddpm-cifar10-32").unet.items() if k != "_class_name"}
    return _randomise(UNet2DModel(**cfg), 11)


@pytest.mark.parametrize("layout", ["pipeline", "flat-bin-legacy"])
def test_diffusers_vp_folder(tmp_path, cifar10_unet, layout):
    from diffusers import DDPMScheduler

    folder = tmp_path / "ddpm-cifar10-32"
    sched = C.get_arch("google/ddpm-cifar10-32").scheduler
    _save_unet(cifar10_unet, folder, sched, "pipeline" if layout == "pipeline" else "flat", bin_legacy=True)
    den = load_model(str(folder))
    x, sigma = torch.randn(2, 3, 32, 32) * 3, torch.tensor([0.05, 10.0])
    acp = DDPMScheduler.from_config(sched).alphas_cumprod
    t = torch.tensor([int((((1 - acp) / acp).sqrt().log() - s.log()).abs().argmin()) for s in sigma])  # nearest in log sigma
    with torch.no_grad():
        eps = cifar10_unet(x / (1 + sigma[:, None, None, None] ** 2).sqrt(), t).sample
        expected = x - sigma[:, None, None, None] * eps
        _close(den(x, sigma), expected.clamp(-1, 1))  # D is projected onto the data range by default
        den.clip_denoised = False
        _close(den(x, sigma), expected)
    assert den.bottleneck == "mid_block"


def test_diffusers_ve_folder_and_ddim_scheduler(tmp_path):
    from diffusers import UNet2DModel

    o = _small(C.get_arch("celebahq_256_ncsnpp_continuous").original, nf=64, image_size=64)
    cfg = {k: v for k, v in C.ncsnpp_unet_config(o).items() if k != "_class_name"}
    torch.manual_seed(1)
    unet = _randomise(UNet2DModel(**cfg), 12)
    sched = C.get_arch("google/ncsnpp-celebahq-256").scheduler
    _save_unet(unet, tmp_path / "ve", sched, "pipeline")
    _save_unet(unet, tmp_path / "ve-hub", sched, "flat", bin_legacy=True)  # the google/ncsnpp-* upload layout
    x, sigma = torch.rand(2, 3, 64, 64), torch.tensor([0.01, 300.0])
    for folder in ("ve", "ve-hub"):
        den = load_model(str(tmp_path / folder))
        with torch.no_grad():
            _close(den(x, sigma), x + sigma[:, None, None, None] ** 2 * unet(x, sigma).sample)
        assert (den.sigma_min, den.sigma_max, den.data_range) == (0.01, 348.0, (0.0, 1.0))
    # a DDIMScheduler folder is a VP epsilon model too
    unet2 = _randomise(UNet2DModel(sample_size=16, block_out_channels=(32, 32), layers_per_block=1,
                                   down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D")), 13)
    ddim = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear"}
    _save_unet(unet2, tmp_path / "ddim", ddim, "pipeline")
    assert type(load_model(str(tmp_path / "ddim"))).__name__ == "VPEpsDenoiser"


# ===================================================================================================
# ddmkit convert: the folder loads in ddmkit and in diffusers, and gives the same outputs
# ===================================================================================================

def test_convert_writes_a_diffusers_folder_that_matches(tmp_path, capsys):
    name = "ncsnpp-residual-tiny2"
    o = _small(C.get_arch("cifar10_ncsnpp_continuous").original, nf=32, ch_mult=[1, 2, 2], num_res_blocks=2, image_size=16)
    _ncsnpp_arch(name, o)
    ref = _randomise(RefNCSNpp(o), 14)
    src = tmp_path / "checkpoint.pth"
    expected = _score_sde_checkpoint(ref, src)
    ref.load_state_dict(expected)
    out = tmp_path / "converted"
    assert cli_main(["convert", str(src), "--format", "score-sde", "--config", name, "--out", str(out)]) == 0
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    prov = json.loads((out / "ddmkit_conversion.json").read_text())
    assert prov["source_sha256"] and prov["config"] == name and prov["weights"] == "ema"
    den = load_model(str(out))
    from ddmkit.models.ncsnpp import NCSNppResidualUNet2DModel

    again = NCSNppResidualUNet2DModel.from_pretrained(out / "unet").eval()  # diffusers' own loader, local path
    x, s = torch.rand(2, 3, 16, 16), torch.tensor([0.1, 20.0])
    with torch.no_grad():
        _close(den.model(x, s).sample, ref(x, s))
        _close(again(x, s).sample, ref(x, s))
    # the same weights have the same identity by both routes (boundaries / classifiers carry over)
    assert model_identity(den)["sha256"] == model_identity(load_model(f"score-sde:{src}@{name}"))["sha256"]
    # a DDPM checkpoint converts to a plain diffusers UNet2DModel folder that diffusers loads
    arch = _ddpm_arch("ddpm-tiny2", _small(C.get_arch("celeba_hq").original, ch=32, ch_mult=[1, 2], image_size=16))
    o = arch.original
    dref = _randomise(RefDDPM(o["ch"], o["ch_mult"], o["num_res_blocks"], o["attn_resolutions"], 16), 15)
    torch.save(dref.state_dict(), tmp_path / "d.ckpt")
    assert cli_main(["convert", str(tmp_path / "d.ckpt"), "--format", "ddpm", "--config", "ddpm-tiny2",
                     "--out", str(tmp_path / "d")]) == 0
    from diffusers import DDPMScheduler, UNet2DModel

    u = UNet2DModel.from_pretrained(tmp_path / "d" / "unet").eval()
    DDPMScheduler.from_pretrained(tmp_path / "d" / "scheduler")
    xx, tt = torch.randn(1, 3, 16, 16), torch.tensor([123])
    with torch.no_grad():
        _close(u(xx, tt).sample, dref(xx, tt))


def test_convert_a_hub_folder_to_safetensors(tmp_path, cifar10_unet):
    src = tmp_path / "ddpm-cifar10-32"  # the flat hub layout with a legacy-named .bin
    _save_unet(cifar10_unet, src, C.get_arch("google/ddpm-cifar10-32").scheduler, "flat", bin_legacy=True)
    out = tmp_path / "st"
    assert cli_main(["convert", str(src), "--format", "diffusers", "--out", str(out)]) == 0
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    a, b = load_model(str(src)), load_model(str(out))
    x, s = torch.randn(1, 3, 32, 32), torch.tensor([2.0])
    with torch.no_grad():
        assert torch.equal(a(x, s), b(x, s))
    assert model_identity(a)["sha256"] == model_identity(b)["sha256"]


def test_convert_list_names_the_configs(capsys):
    assert cli_main(["convert", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("cifar10_ncsnpp_continuous", "celebahq_256_ncsnpp_continuous", "celeba_hq", "afhqdog_p2"):
        assert name in out


# ===================================================================================================
# bad input: a clear error naming the problem, exit status 2, nothing written
# ===================================================================================================

class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


@pytest.fixture()
def tiny_score_sde(tmp_path_factory):
    name = "ncsnpp-residual-bad"
    o = _small(C.get_arch("cifar10_ncsnpp_continuous").original, nf=32, ch_mult=[1, 2], num_res_blocks=1, image_size=16)
    _ncsnpp_arch(name, o)
    path = tmp_path_factory.mktemp("bad") / "good.pth"
    _score_sde_checkpoint(_randomise(RefNCSNpp(o), 16), path)
    return name, path


def _convert_fails(tmp_path, capsys, args, *needles):
    out = tmp_path / "out"
    assert cli_main(["convert", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ddmkit convert: error:"), err
    for n in needles:
        assert n in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    return err


def test_truncated_checkpoint(tmp_path, capsys, tiny_score_sde):
    name, good = tiny_score_sde
    bad = tmp_path / "trunc.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _convert_fails(tmp_path, capsys, [str(bad), "--format", "score-sde", "--config", name], "truncated")
    with pytest.raises(ModelLoadError, match="truncated"):
        load_model(f"score-sde:{bad}@{name}")
    st = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1000)}, str(st))
    st.write_bytes(st.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="truncated"):
        read_checkpoint(st)


def test_wrong_config_name(tmp_path, capsys, tiny_score_sde):
    _, good = tiny_score_sde
    err = _convert_fails(tmp_path, capsys, [str(good), "--format", "score-sde", "--config", "cifar100_ncsnpp"],
                         "unknown score-sde config 'cifar100_ncsnpp'", "cifar10_ncsnpp_continuous")
    assert "celeba_hq" not in err  # only the configs of that format are listed
    with pytest.raises(ModelLoadError, match="unknown ddpm config"):
        load_model(f"ddpm:{good}@nope")
    with pytest.raises(ModelLoadError, match=r"score-sde:PATH@CONFIG|ddpm:.*@"):
        load_model(f"ddpm:{good}")
    # a real config of the wrong architecture: the keys say so
    with pytest.raises(ModelLoadError, match="celebahq_256_ncsnpp_continuous"):
        load_model(f"score-sde:{good}@celebahq_256_ncsnpp_continuous")


@pytest.mark.filterwarnings("ignore:.*holds no EMA weights")
def test_missing_keys_are_named(tmp_path, capsys):
    arch = _ddpm_arch("ddpm-missing", _small(C.get_arch("celeba_hq").original, ch=32, ch_mult=[1, 2], image_size=16))
    o = arch.original
    sd = RefDDPM(o["ch"], o["ch_mult"], o["num_res_blocks"], o["attn_resolutions"], 16).state_dict()
    del sd["mid.attn_1.q.weight"], sd["up.1.block.0.temb_proj.bias"]
    torch.save(sd, tmp_path / "m.ckpt")
    _convert_fails(tmp_path, capsys, [str(tmp_path / "m.ckpt"), "--format", "ddpm", "--config", "ddpm-missing"],
                   "mid.attn_1.q.weight", "up.1.block.0.temb_proj.bias", "missing")
    name = "ncsnpp-missing"
    o = _small(C.get_arch("cifar10_ncsnpp_continuous").original, nf=32, ch_mult=[1, 2], num_res_blocks=1, image_size=16)
    _ncsnpp_arch(name, o)
    ck = {"model": {f"module.{k}": v for k, v in RefNCSNpp(o).state_dict().items() if k != "all_modules.5.NIN_2.W"},
          "step": 3}
    torch.save(ck, tmp_path / "s.pth")
    with pytest.raises(ModelLoadError, match="all_modules.5.NIN_2.W"):
        load_model(f"score-sde:{tmp_path / 's.pth'}@{name}")


def test_pickle_needing_arbitrary_code_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"all_modules.0.W": torch.zeros(2)}, "payload": _Evil()}, path)
    err = _convert_fails(tmp_path, capsys, [str(path), "--format", "score-sde", "--config", "cifar10_ncsnpp_continuous"],
                         "arbitrary code")
    assert "posix.system" in err or "os.system" in err  # names what the file asked for
    with pytest.raises(ModelLoadError, match="arbitrary code"):
        load_model(f"ddpm:{path}@celeba_hq")
    # a diffusers folder whose .bin is such a pickle is refused the same way
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(C.get_arch("google/ddpm-cifar10-32").unet))
    torch.save(_Evil(), folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="arbitrary code"):
        load_model(str(folder))
    assert not (tmp_path / "EVIL_RAN").exists()


def test_hub_id_offline(tmp_path, monkeypatch, cifar10_unet):
    def no_network(*a, **k):
        raise AssertionError("ddmkit tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # what a fresh process reads; huggingface_hub
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))  # read it at import
    with pytest.raises(ModelLoadError, match=r"never downloads unless asked: pass --allow-download.*hf download google/ddpm-cifar10-32 --local-dir models/ddpm-cifar10-32"):
        load_model("google/ddpm-cifar10-32")
    assert cli_main(["sample", "--model", "google/ddpm-cifar10-32", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert not (tmp_path / "o").exists()
    # a copy in the local HF cache is used, without any network
    snap = tmp_path / "hub" / "models--google--ddpm-cifar10-32" / "snapshots" / "abc123"
    _save_unet(cifar10_unet, snap, C.get_arch("google/ddpm-cifar10-32").scheduler, "flat", bin_legacy=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc123")
    den = load_model("google/ddpm-cifar10-32")
    assert den.name == "google/ddpm-cifar10-32" and den.sample_shape == (3, 32, 32)


# ===================================================================================================
# end to end on the CLI: a random-weight google/ddpm-cifar10-32-shaped folder (the real config)
# ===================================================================================================

@pytest.fixture(scope="module")
def cifar10_folder(tmp_path_factory, cifar10_unet):
    folder = tmp_path_factory.mktemp("e2e") / "ddpm-cifar10-32"
    _save_unet(cifar10_unet, folder, C.get_arch("google/ddpm-cifar10-32").scheduler, "pipeline")
    return folder


def test_sample_cli_on_a_real_config_folder(tmp_path, cifar10_folder):
    out = tmp_path / "s"
    rc = cli_main(["sample", "--model", str(cifar10_folder), "--steps", "2", "--num", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["sample_shape"] == [3, 32, 32] and man["model_identity"]["sha256"]
    with np.load(out / "samples.npz") as z:
        assert z["x"].shape == (2, 3, 32, 32) and np.isfinite(z["x"]).all()


def test_sample_cli_on_a_raw_checkpoint(tmp_path):
    arch = _ddpm_arch("ddpm-e2e", _small(C.get_arch("celeba_hq").original, ch=32, ch_mult=[1, 2], image_size=16))
    o = arch.original
    torch.save(_randomise(RefDDPM(o["ch"], o["ch_mult"], 2, [16], 16), 17).state_dict(), tmp_path / "c.ckpt")
    out = tmp_path / "s"
    assert cli_main(["sample", "--model", f"ddpm:{tmp_path / 'c.ckpt'}@ddpm-e2e", "--steps", "2", "--num", "2",
                     "--out", str(out), "--quiet"]) == 0
    ident = json.loads((out / "manifest.json").read_text())["model_identity"]
    assert ident["conversion"]["config"] == "ddpm-e2e" and len(ident["sha256"]) == 64


def test_convert_help_runs_in_a_fresh_process():
    r = subprocess.run([sys.executable, "-m", "ddmkit", "convert", "--help"], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "score-sde" in r.stdout and "example" in r.stdout


@pytest.mark.filterwarnings("ignore:.*holds no EMA weights")
def test_h_space_is_mid_block_for_every_loaded_family(tmp_path):
    """The editing code's hook (ddmkit.editing.hspace) reads and replaces h on every converted family."""
    from ddmkit.editing.hspace import HSpace

    built = []
    o = _small(C.get_arch("celeba_hq").original, ch=32, ch_mult=[1, 2], image_size=16)
    _ddpm_arch("hs-ddpm", o)
    torch.save(RefDDPM(32, [1, 2], 2, [16], 16).state_dict(), tmp_path / "d.ckpt")
    built.append((load_model(f"ddpm:{tmp_path / 'd.ckpt'}@hs-ddpm"), torch.tensor([1.0])))
    for name, base, nf in (("hs-res", "cifar10_ncsnpp_continuous", 32),
                           ("hs-skip", "celebahq_256_ncsnpp_continuous", 128)):  # attention at >= 128 channels
        o = _small(C.get_arch(base).original, nf=nf, ch_mult=[1, 1, 1], num_res_blocks=1, image_size=16)
        _ncsnpp_arch(name, o)
        torch.save(RefNCSNpp(o).state_dict(), tmp_path / f"{name}.pth")
        built.append((load_model(f"score-sde:{tmp_path / name}.pth@{name}"), torch.tensor([1.0])))
    o = _small(C.get_arch("afhqdog_p2").original, num_channels=32, image_size=16, channel_mult=[1, 2], num_head_channels=32)
    _adm_arch("hs-adm", o)
    torch.save(RefADM(o).state_dict(), tmp_path / "a.pt")
    built.append((load_model(f"guided:{tmp_path / 'a.pt'}@hs-adm"), torch.tensor([1.0])))
    for den, sigma in built:
        assert den.bottleneck == "mid_block"
        x = torch.randn(1, 3, 16, 16)
        with torch.no_grad(), HSpace(den, den.bottleneck) as hs:
            out = den(x, sigma)
            h = hs.h
            hs.replace(torch.zeros_like(h))
            edited = den(x, sigma)
            again = den(x, sigma)
        assert h is not None and h.ndim == 4 and hs.calls == 3
        assert not torch.allclose(out, edited) and torch.allclose(out, again)


def test_dmcmc_and_editing_cli_on_a_real_config_folder(tmp_path, cifar10_folder, monkeypatch):
    """`sample --dmcmc` (with a noise classifier trained for the folder) and `boundary fit` + `edit`."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    rows = ["file,smiling"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
        rows.append(f"{i}.png,{i % 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    m = str(cifar10_folder)
    assert cli_main(["noise-classifier", "train", "--model", m, "--data", "imgs", "--steps", "2", "--batch-size", "4",
                     "--out", "clf", "--quiet"]) == 0
    assert cli_main(["sample", "--dmcmc", "--model", m, "--noise-classifier", "clf", "--integrator", "kar1", "--steps", "2",
                     "--n-skip", "1", "--num", "2", "--chains", "2", "--burn-in", "2:0.5:1@0.5", "--out", "dlg", "--quiet"]) == 0
    man = json.loads((tmp_path / "dlg" / "manifest.json").read_text())
    assert man["nfe_per_sample"] == 3  # n_skip 1 + KAR1 N=2 (1) + Tweedie 1, measured
    assert cli_main(["boundary", "fit", "--model", m, "--images", "imgs", "--labels", "labels.csv", "--attribute", "smiling",
                     "--t-m", "500", "--n-inv", "3", "--test", "2", "--out", "b.safetensors", "--quiet"]) == 0
    assert cli_main(["edit", "imgs/0.png", "--model", m, "--boundary", "b.safetensors", "--distance", "1x", "--steps", "3",
                     "--out", "ed", "--quiet"]) == 0
    assert (tmp_path / "ed" / "edit.json").is_file() and (tmp_path / "ed" / "strip.png").is_file()


def test_dmcmc_cli_on_a_converted_score_sde_model(tmp_path, monkeypatch):
    """DLG on a VE NCSN++ (the DMCMC official family) converted from a score_sde checkpoint."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    name = "ncsnpp-e2e"
    o = _small(C.get_arch("cifar10_ncsnpp_continuous").original, nf=32, ch_mult=[1, 2], num_res_blocks=1, image_size=16)
    _ncsnpp_arch(name, o)
    _score_sde_checkpoint(_randomise(RefNCSNpp(o), 18), tmp_path / "ck.pth")
    assert cli_main(["convert", "ck.pth", "--format", "score-sde", "--config", name, "--out", "ve"]) == 0
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    assert cli_main(["noise-classifier", "train", "--model", "ve", "--data", "imgs", "--steps", "2", "--batch-size", "4",
                     "--out", "clf", "--quiet"]) == 0
    assert cli_main(["sample", "--dmcmc", "--model", "ve", "--noise-classifier", "clf", "--integrator", "kar2", "--steps", "3",
                     "--n-skip", "2", "--num", "2", "--chains", "2", "--burn-in", "2:0.5:1@0.5", "--out", "dlg", "--quiet"]) == 0
    man = json.loads((tmp_path / "dlg" / "manifest.json").read_text())
    assert man["nfe_per_sample"] == 2 + 3 + 1 and man["data_range"] == [0.0, 1.0]
    with np.load(tmp_path / "dlg" / "samples.npz") as z:
        assert z["x"].min() >= 0 and z["x"].max() <= 1
