"""The real architectures ddmkit loads, by name: diffusers configs built from the original configs.

    get_arch("google/ddpm-cifar10-32")            # a diffusers hub layout
    get_arch("cifar10_ncsnpp_continuous")         # a score_sde config name (VE NCSN++)
    get_arch("celeba_hq", fmt="ddpm")             # an SDEdit / DiffusionCLIP / DDIM DDPM checkpoint
    get_arch("afhqdog_p2", fmt="guided")          # an iDDPM/ADM (guided-diffusion) checkpoint

Each `Arch` holds the original repository's model config (`original`), the diffusers model config
that reproduces it (`unet`, for `unet_class`), the scheduler config that fixes the parametrisation
(`scheduler`: DDPMScheduler = VP epsilon, ScoreSdeVeScheduler = VE score), the data range and the
batch size of the paper runs (for the timing table). The diffusers configs are derived from the
original ones by the functions below, and the tests check that they reproduce the published
google/* configs exactly.

`BOTTLENECK_MODULE` names the h-space module per model family (BoundaryDiffusion spec section 3);
every converted model is a diffusers-style UNet whose bottleneck is `mid_block`.
`DLG_CLASSIFIER_POOL_STRIDES` records the noise-level classifier variant per resolution (DMCMC spec
section 6): stride-2 pools at 32 px, the first three pools with stride 4 at 256 px.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ModelLoadError

# ---------------------------------------------------------------------------------------------------
# h-space and the DLG classifier, per family / resolution
# ---------------------------------------------------------------------------------------------------

#: dotted path of the bottleneck module (h-space) for each model family ddmkit loads
BOTTLENECK_MODULE: dict[str, str] = {
    "diffusers-unet2d": "mid_block",  # any UNet2DModel folder (DDPM, NCSN++ skip, ADM converted)
    "ddpm": "mid_block",  # SDEdit/DiffusionCLIP/DDIM checkpoints, converted to UNet2DModel (orig. `mid`)
    "ncsnpp": "mid_block",  # score_sde NCSN++ output_skip/input_skip, converted to UNet2DModel
    "ncsnpp-residual": "mid_block",  # score_sde NCSN++ none/residual (CIFAR-10), NCSNppResidualUNet2DModel
    "adm": "mid_block",  # iDDPM/ADM (guided-diffusion), converted to UNet2DModel (orig. `middle_block`)
}

#: the DMCMC noise-level classifier's pool strides per image resolution (paper / official code)
DLG_CLASSIFIER_POOL_STRIDES: dict[int, tuple[int, int, int, int]] = {
    32: (2, 2, 2, 2),  # CIFAR-10: 32 -> 16 -> 8 -> 4 -> 2, 256*2*2 = 1024 features
    256: (4, 4, 4, 2),  # CelebA-HQ-256: 256 -> 64 -> 16 -> 4 -> 2, 1024 features (spec pitfall 10)
}


def bottleneck_module_name(network) -> str:
    """The h-space module path of a loaded network (every family ddmkit converts uses `mid_block`)."""
    family = {"NCSNppResidualUNet2DModel": "ncsnpp-residual"}.get(type(network).__name__, "diffusers-unet2d")
    return BOTTLENECK_MODULE[family]


# ---------------------------------------------------------------------------------------------------
# scheduler configs
# ---------------------------------------------------------------------------------------------------

def ddpm_scheduler_config(variance_type: str = "fixed_small", num_train_timesteps: int = 1000) -> dict:
    """Linear beta 1e-4 .. 0.02 over 1000 steps (DDPM, DDIM, SDEdit, iDDPM 'linear')."""
    return {
        "_class_name": "DDPMScheduler", "num_train_timesteps": num_train_timesteps, "beta_start": 0.0001,
        "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": None, "variance_type": variance_type,
        "clip_sample": True, "prediction_type": "epsilon",
    }


def ve_scheduler_config(sigma_min: float, sigma_max: float, num_scales: int, snr: float) -> dict:
    return {
        "_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": num_scales, "snr": snr,
        "sigma_min": sigma_min, "sigma_max": sigma_max, "sampling_eps": 1e-5, "correct_steps": 1,
    }


# ---------------------------------------------------------------------------------------------------
# original configs -> diffusers model configs
# ---------------------------------------------------------------------------------------------------

def ddpm_unet_config(orig: dict) -> dict:
    """UNet2DModel config of a DDPM `Model` (ddim / SDEdit `models/diffusion.py`; Ho et al.'s TF UNet).

    `orig` keys as in the yml files: ch, ch_mult, num_res_blocks, attn_resolutions, image_size,
    in_channels, out_ch (dropout is irrelevant at inference). Downsampling pads (0, 1, 0, 1) before a stride-2 conv:
    downsample_padding 0. Timestep embedding [sin, cos] with log(1e4)/(half - 1): freq_shift 1,
    flip_sin_to_cos False.
    """
    ch, mult, res = orig["ch"], list(orig["ch_mult"]), orig["image_size"]
    _first_mult_is_one(mult, "DDPM")
    down, up = [], []
    for i in range(len(mult)):
        at = res // 2**i in orig["attn_resolutions"]
        down.append("AttnDownBlock2D" if at else "DownBlock2D")
        up.insert(0, "AttnUpBlock2D" if at else "UpBlock2D")
    return {
        "_class_name": "UNet2DModel", "sample_size": res, "in_channels": orig.get("in_channels", 3),
        "out_channels": orig.get("out_ch", 3), "center_input_sample": False,
        "time_embedding_type": "positional", "freq_shift": 1, "flip_sin_to_cos": False,
        "down_block_types": down, "up_block_types": up, "block_out_channels": [ch * m for m in mult],
        "layers_per_block": orig["num_res_blocks"], "mid_block_scale_factor": 1, "downsample_padding": 0,
        "act_fn": "silu", "attention_head_dim": None, "norm_num_groups": 32, "norm_eps": 1e-6
    }


def ncsnpp_unet_config(orig: dict) -> dict:
    """Diffusers model config of a score_sde NCSN++ config (`model` + `data` fields, flattened).

    progressive output_skip / input_skip -> UNet2DModel with Skip blocks (the google/ncsnpp-* layout);
    progressive none / residual (the CIFAR-10 configs) -> NCSNppResidualUNet2DModel, which UNet2DModel
    cannot express (its Skip blocks only do input_skip / output_skip). Both centre the input
    (2x - 1, score_sde data.centered = False) and divide the output by sigma (scale_by_sigma).
    """
    _check_ncsnpp_supported(orig)
    nf, mult, res = orig["nf"], list(orig["ch_mult"]), orig["image_size"]
    _first_mult_is_one(mult, "NCSN++")
    channels = [nf * m for m in mult]
    center = not orig.get("centered", False)
    if orig["progressive"] == "output_skip":
        narrow = [c for i, c in enumerate(channels) if res // 2**i in orig["attn_resolutions"] and c // 4 < 32]
        if narrow:  # diffusers' AttnSkip blocks fix GroupNorm(32) in attention; NCSN++ uses min(C // 4, 32)
            raise ModelLoadError(f"NCSN++ attention at {narrow} channels (< 128) cannot be expressed by UNet2DModel")
        down, up = [], []
        for i in range(len(mult)):
            at = res // 2**i in orig["attn_resolutions"]
            down.append("AttnSkipDownBlock2D" if at else "SkipDownBlock2D")
            up.insert(0, "AttnSkipUpBlock2D" if at else "SkipUpBlock2D")
        return {
            "_class_name": "UNet2DModel", "sample_size": res, "in_channels": orig.get("num_channels", 3),
            "out_channels": orig.get("num_channels", 3), "center_input_sample": center,
            "time_embedding_type": "fourier", "flip_sin_to_cos": True, "freq_shift": 0,
            "down_block_types": down, "up_block_types": up, "block_out_channels": channels,
            "layers_per_block": orig["num_res_blocks"], "mid_block_scale_factor": math.sqrt(2.0),
            "downsample_padding": 1, "act_fn": "silu", "attention_head_dim": None, "norm_num_groups": None,
            "norm_eps": 1e-6,
        }
    return {
        "_class_name": "NCSNppResidualUNet2DModel", "sample_size": res, "in_channels": orig.get("num_channels", 3),
        "out_channels": orig.get("num_channels", 3), "block_out_channels": channels,
        "layers_per_block": orig["num_res_blocks"], "attention_resolutions": list(orig["attn_resolutions"]),
        "fourier_scale": float(orig["fourier_scale"]), "center_input_sample": center, "norm_eps": 1e-6
    }


def _first_mult_is_one(mult: list, what: str) -> None:
    # diffusers' conv_in and time embedding are sized by block_out_channels[0]; the originals by ch / nf
    if mult[0] != 1:
        raise ModelLoadError(f"{what} configs with ch_mult[0] = {mult[0]} (not 1) cannot be expressed by UNet2DModel")


def _check_ncsnpp_supported(orig: dict) -> None:
    wanted = {
        "resblock_type": "biggan", "fir": True, "fir_kernel": [1, 3, 3, 1], "skip_rescale": True,
        "progressive_combine": "sum", "embedding_type": "fourier", "attention_type": "ddpm",
        "scale_by_sigma": True, "resamp_with_conv": True, "conditional": True, "nonlinearity": "swish",
        "normalization": "GroupNorm", "init_scale": 0.0, "conv_size": 3,
    }
    bad = [f"{k}={orig.get(k)!r}" for k, v in wanted.items() if k in orig and _norm(orig[k]) != _norm(v)]
    pair = (orig.get("progressive"), orig.get("progressive_input"))
    if pair not in (("output_skip", "input_skip"), ("none", "residual")):
        bad.append(f"progressive/progressive_input={pair}")
    if bad:
        raise ModelLoadError(
            "this NCSN++ variant is not supported by ddmkit's converter: " + ", ".join(bad)
            + "; supported are the score_sde VE continuous configs (see `ddmkit convert --list`)"
        )


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def adm_unet_config(orig: dict) -> dict:
    """UNet2DModel config of an iDDPM/ADM `UNetModel` (guided-diffusion `script_util.create_model`).

    Supported: resblock_updown True (resnet down/up blocks), use_scale_shift_norm True, fixed
    num_head_channels, unconditional. Timestep embedding [cos, sin] with log(1e4)/half:
    flip_sin_to_cos True, freq_shift 0. GroupNorm eps 1e-5; the mid-block attention has its own norm.
    """
    if not orig.get("resblock_updown") or not orig.get("use_scale_shift_norm") or orig.get("class_cond"):
        raise ModelLoadError(
            "only unconditional ADM models with resblock_updown and use_scale_shift_norm are supported "
            "(the guided-diffusion 256 px unconditional / P2 / ILVR family)"
        )
    if orig.get("num_head_channels", -1) in (-1, None):
        raise ModelLoadError("ADM conversion needs num_head_channels (a fixed head width), not num_heads only")
    ch, res = orig["num_channels"], orig["image_size"]
    mult = list(orig["channel_mult"])
    _first_mult_is_one(mult, "ADM")
    attn_res = [int(r) for r in str(orig["attention_resolutions"]).split(",")]
    down, up = [], []
    for i in range(len(mult)):
        at = res // 2**i in attn_res
        down.append("AttnDownBlock2D" if at else "ResnetDownsampleBlock2D")
        up.insert(0, "AttnUpBlock2D" if at else "ResnetUpsampleBlock2D")
    return {
        "_class_name": "UNet2DModel", "sample_size": res, "in_channels": 3,
        "out_channels": 6 if orig.get("learn_sigma") else 3, "center_input_sample": False,
        "time_embedding_type": "positional", "flip_sin_to_cos": True, "freq_shift": 0,
        "down_block_types": down, "up_block_types": up, "block_out_channels": [ch * m for m in mult],
        "layers_per_block": orig["num_res_blocks"], "mid_block_scale_factor": 1, "downsample_padding": 1,
        "downsample_type": "resnet", "upsample_type": "resnet", "act_fn": "silu",
        "attention_head_dim": orig["num_head_channels"], "norm_num_groups": 32, "attn_norm_num_groups": 32,
        "norm_eps": 1e-5, "resnet_time_scale_shift": "scale_shift",
    }


# ---------------------------------------------------------------------------------------------------
# the named architectures
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arch:
    name: str
    fmt: str  # the source format: "diffusers", "score-sde", "ddpm" or "guided"
    family: str  # a key of BOTTLENECK_MODULE
    unet: dict  # the diffusers model config, with "_class_name"
    scheduler: dict  # the diffusers scheduler config, with "_class_name"
    data_range: tuple[float, float]
    paper_batch: int  # batch of the paper runs (DMCMC chains; 1 for per-image editing)
    original: dict = field(default_factory=dict)  # the original repository's config
    note: str = ""

    @property
    def unet_class(self) -> str:
        return self.unet["_class_name"]

    @property
    def resolution(self) -> int:
        return int(self.unet["sample_size"])

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (int(self.unet["in_channels"]), self.resolution, self.resolution)


def _ddpm_orig(ch_mult, image_size, dropout=0.0, num_res_blocks=2) -> dict:
    return {"ch": 128, "ch_mult": list(ch_mult), "num_res_blocks": num_res_blocks, "attn_resolutions": [16],
            "image_size": image_size, "in_channels": 3, "out_ch": 3, "dropout": dropout, "resamp_with_conv": True}


def _score_sde_orig(image_size, sigma_max, ch_mult, num_res_blocks, progressive, progressive_input,
                    num_scales, snr, nf=128, dropout=0.0) -> dict:
    # configs/ve/*_continuous.py over configs/default_{cifar10,lsun,celeba}_configs.py (score_sde_pytorch)
    return {
        "image_size": image_size, "num_channels": 3, "centered": False, "sigma_min": 0.01, "sigma_max": sigma_max,
        "num_scales": num_scales, "snr": snr, "nf": nf, "ch_mult": list(ch_mult), "num_res_blocks": num_res_blocks,
        "attn_resolutions": [16], "dropout": dropout, "resamp_with_conv": True, "conditional": True, "fir": True,
        "fir_kernel": [1, 3, 3, 1], "skip_rescale": True, "resblock_type": "biggan", "progressive": progressive,
        "progressive_input": progressive_input, "progressive_combine": "sum", "attention_type": "ddpm",
        "init_scale": 0.0, "fourier_scale": 16, "conv_size": 3, "embedding_type": "fourier", "scale_by_sigma": True,
        "nonlinearity": "swish", "normalization": "GroupNorm", "ema_rate": 0.999,
    }


VP_RANGE = (-1.0, 1.0)
Entry = tuple  # (Arch, *aliases)


def _ddpm_archs() -> list[Entry]:
    """DDPM (Ho et al. 2020): the diffusers hub layouts and the SDEdit / DiffusionCLIP / DDIM raw checkpoints."""
    vp = VP_RANGE
    cifar = _ddpm_orig((1, 2, 2, 2), 32, dropout=0.1)
    hq = _ddpm_orig((1, 1, 2, 2, 4, 4), 256)
    out: list[Entry] = [(Arch("google/ddpm-cifar10-32", "diffusers", "ddpm", ddpm_unet_config(cifar),
                              ddpm_scheduler_config("fixed_large"), vp, 200, cifar,
                              "DDPM CIFAR-10 (35.7M params); 200 chains as in the DMCMC CIFAR-10 runs"),)]
    for repo, note in (("google/ddpm-celebahq-256", "DDPM CelebA-HQ 256 (113.7M params)"),
                       ("google/ddpm-ema-celebahq-256", "DDPM CelebA-HQ 256, EMA weights"),
                       ("google/ddpm-ema-church-256", "DDPM LSUN church 256, EMA weights"),
                       ("google/ddpm-ema-bedroom-256", "DDPM LSUN bedroom 256, EMA weights")):
        out.append((Arch(repo, "diffusers", "ddpm", ddpm_unet_config(hq), ddpm_scheduler_config("fixed_small"), vp, 1,
                         hq, note + "; batch 1 as in BoundaryDiffusion editing"),))
    for name, aliases, note in (
        ("celeba_hq", ("celeba-hq", "celebahq"), "SDEdit/DiffusionCLIP celeba_hq.ckpt (BoundaryDiffusion CelebA-HQ)"),
        ("church", ("church_outdoor",), "SDEdit church_outdoor.ckpt (BoundaryDiffusion LSUN church)"),
        ("bedroom", (), "SDEdit bedroom.ckpt (BoundaryDiffusion LSUN bedroom)"),
    ):
        out.append((Arch(name, "ddpm", "ddpm", ddpm_unet_config(hq), ddpm_scheduler_config("fixed_small"), vp, 1, hq,
                         note), *aliases))
    out.append((Arch("cifar10", "ddpm", "ddpm", ddpm_unet_config(cifar), ddpm_scheduler_config("fixed_large"), vp, 200,
                     cifar, "DDIM-repo CIFAR-10 DDPM (model-790000.ckpt), the network of google/ddpm-cifar10-32"),))
    celeba64 = _ddpm_orig((1, 2, 2, 2, 4), 64, dropout=0.1)
    out.append((Arch("celeba", "ddpm", "ddpm", ddpm_unet_config(celeba64), ddpm_scheduler_config("fixed_large"), vp, 1,
                     celeba64, "DDIM-repo CelebA 64 DDPM (ckpt.pth)"),))
    return out


def _score_sde_archs() -> list[Entry]:
    """score_sde VE NCSN++ continuous (the DMCMC official models), and the hub's converted CelebA-HQ one."""
    out: list[Entry] = []
    for name, orig, batch, note in (
        ("cifar10_ncsnpp_continuous", _score_sde_orig(32, 50.0, (1, 2, 2, 2), 4, "none", "residual", 1000, 0.16,
                                                      dropout=0.1),
         200, "VE NCSN++ CIFAR-10 (checkpoint_24.pth, DMCMC); 200 chains"),
        ("cifar10_ncsnpp_deep_continuous", _score_sde_orig(32, 50.0, (1, 2, 2, 2), 8, "none", "residual", 1000, 0.16,
                                                           dropout=0.1),
         200, "VE NCSN++ deep CIFAR-10"),
        ("celebahq_256_ncsnpp_continuous", _score_sde_orig(256, 348.0, (1, 1, 2, 2, 2, 2, 2), 2, "output_skip",
                                                           "input_skip", 2000, 0.075),
         20, "VE NCSN++ CelebA-HQ 256 (checkpoint_48.pth, DMCMC; = google/ncsnpp-celebahq-256); 20 chains"),
        ("ffhq_256_ncsnpp_continuous", _score_sde_orig(256, 348.0, (1, 1, 2, 2, 2, 2, 2), 2, "output_skip",
                                                       "input_skip", 2000, 0.075), 20, "VE NCSN++ FFHQ 256"),
        ("church_ncsnpp_continuous", _score_sde_orig(256, 380.0, (1, 1, 2, 2, 2, 2, 2), 2, "output_skip",
                                                     "input_skip", 2000, 0.075), 20, "VE NCSN++ LSUN church 256"),
        ("bedroom_ncsnpp_continuous", _score_sde_orig(256, 378.0, (1, 1, 2, 2, 2, 2, 2), 2, "output_skip",
                                                      "input_skip", 2000, 0.075), 20, "VE NCSN++ LSUN bedroom 256"),
    ):
        sched = ve_scheduler_config(orig["sigma_min"], orig["sigma_max"], orig["num_scales"], orig["snr"])
        family = "ncsnpp" if orig["progressive"] == "output_skip" else "ncsnpp-residual"
        out.append((Arch(name, "score-sde", family, ncsnpp_unet_config(orig), sched, (0.0, 1.0), batch, orig, note),))
    hub = out[2][0]
    out.append((Arch("google/ncsnpp-celebahq-256", "diffusers", "ncsnpp", hub.unet, hub.scheduler, (0.0, 1.0), 20,
                     hub.original, "score_sde CelebA-HQ 256 VE NCSN++ as converted by diffusers"),))
    return out


def _adm_archs() -> list[Entry]:
    """iDDPM / ADM (the guided-diffusion family)."""
    afhq = {  # BoundaryDiffusion / DiffusionCLIP models/improved_ddpm/script_util.py AFHQ_DICT
        "image_size": 256, "num_channels": 128, "num_res_blocks": 1, "channel_mult": [1, 1, 2, 2, 4, 4],
        "attention_resolutions": "16", "num_heads": 4, "num_head_channels": 64, "num_heads_upsample": -1,
        "learn_sigma": True, "class_cond": False, "dropout": 0.0, "resblock_updown": True,
        "use_scale_shift_norm": True, "use_new_attention_order": False, "use_fp16": False,
        "diffusion_steps": 1000, "noise_schedule": "linear",
    }
    return [(Arch("afhqdog_p2", "guided", "adm", adm_unet_config(afhq), ddpm_scheduler_config("learned_range"),
                  VP_RANGE, 1, afhq, "iDDPM/ADM AFHQ-Dog 256 (afhqdog_p2.pt, P2 weighting; BoundaryDiffusion AFHQ)"),
             "afhq", "afhq_dog")]


def _build() -> dict[str, Arch]:
    """Every known architecture by name and alias."""
    table: dict[str, Arch] = {}
    for arch, *aliases in _ddpm_archs() + _score_sde_archs() + _adm_archs():
        for n in (arch.name, *aliases):
            table[n] = arch
    return table


ARCHS: dict[str, Arch] = _build()


def arch_names(fmt: str | None = None) -> list[str]:
    """Names (without aliases) of the architectures of one source format, or of all."""
    return sorted({a.name for a in ARCHS.values() if fmt is None or a.fmt == fmt})


def get_arch(name: str, fmt: str | None = None) -> Arch:
    """The architecture called `name` (for `fmt`, a source format, if given), or a clear error."""
    arch = ARCHS.get(name)
    if arch is None or (fmt is not None and arch.fmt != fmt):
        names = ", ".join(arch_names(fmt))
        raise ModelLoadError(f"unknown {fmt + ' ' if fmt else ''}config {name!r}; known: {names}")
    return arch
