"""Which sigma-space wrapper a scheduler config calls for, read through diffusers' own scheduler classes.

    family("DDPMScheduler") == "vp"         # any scheduler with a beta schedule: DDPM, DDIM, PNDM, Euler, DPM, ...
    family("ScoreSdeVeScheduler") == "ve"   # VE score models (sigma_min, sigma_max)
    family("EDMEulerScheduler") == "edm"    # EDM preconditioning (sigma_data, prediction_type)
    abar, ptype = vp_schedule(config, "folder")   # alphas_cumprod as the scheduler itself computes them

A VP model is the network plus its training betas; how a scheduler steps through them (PNDM's
multistep, DDIM's grid) is a sampler choice and does not change D(x, sigma), so every beta-schedule
scheduler gives the same wrapper. Prediction types: epsilon, v_prediction, sample.
"""
from __future__ import annotations

import inspect

import torch

from ..errors import ModelLoadError
from .native import quiet_diffusers

VE_SCHEDULERS = ("ScoreSdeVeScheduler",)
EDM_SCHEDULERS = ("EDMEulerScheduler", "EDMDPMSolverMultistepScheduler")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def scheduler_class(name: str, source: str) -> type:
    """The diffusers scheduler class of a config's `_class_name` (a ModelLoadError for anything else)."""
    import diffusers
    from diffusers import SchedulerMixin

    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ModelLoadError(f"{source}: scheduler {name} is not a diffusers scheduler; ddmkit reads scheduler configs "
                             "with a beta schedule (DDPM, DDIM, PNDM, ...), ScoreSdeVeScheduler and EDMEulerScheduler")
    return cls


def family(config: dict | None, source: str = "model") -> str:
    """"vp", "ve" or "edm" for a scheduler config (no config: a DDPM, diffusers' DDPMScheduler defaults)."""
    name = (config or {}).get("_class_name", "DDPMScheduler")
    if name in VE_SCHEDULERS:
        return "ve"
    if name in EDM_SCHEDULERS:
        return "edm"
    cls = scheduler_class(name, source)
    if "beta_schedule" not in _init_names(cls):
        raise ModelLoadError(
            f"{source}: scheduler {name} defines no beta schedule; ddmkit reads VP schedulers (DDPM, DDIM, PNDM, "
            f"Euler, DPM-Solver, ... : any with beta_schedule), {', '.join(VE_SCHEDULERS + EDM_SCHEDULERS)} (edit "
            "scheduler_config.json if the network is a DDPM, a VE score or an EDM-preconditioned model)"
        )
    return "vp"


def _init_names(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters)


def prediction_type(config: dict | None, source: str) -> str:
    ptype = (config or {}).get("prediction_type", "epsilon")
    if ptype not in PREDICTION_TYPES:
        raise ModelLoadError(f"{source}: prediction_type {ptype!r} is not supported ({', '.join(PREDICTION_TYPES)})")
    return ptype


def vp_schedule(config: dict | None, source: str) -> tuple[torch.Tensor, str]:
    """(alphas_cumprod, prediction_type) of a VP scheduler config, computed by its own diffusers class."""
    config = dict(config or {})
    ptype = prediction_type(config, source)
    cls = scheduler_class(config.get("_class_name", "DDPMScheduler"), source)
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        with quiet_diffusers():
            sched = cls.from_config(cfg)
    except Exception as e:  # diffusers raises NotImplementedError / ValueError / TypeError on a bad config
        raise ModelLoadError(f"{source}: bad scheduler config ({e.__class__.__name__}: {e})") from None
    abar = getattr(sched, "alphas_cumprod", None)
    if not isinstance(abar, torch.Tensor) or abar.ndim != 1 or len(abar) < 2:
        raise ModelLoadError(f"{source}: {cls.__name__} has no alphas_cumprod; ddmkit cannot read its noise levels")
    return abar, ptype
