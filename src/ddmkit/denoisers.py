"""The sigma-space denoiser contract and the wrappers that adapt models to it (EDM / k-diffusion).

    D(x, sigma) -> estimate of the clean x0, where x = x0 + sigma * noise, sigma of shape (B,)
    score(x, sigma) = (D(x, sigma) - x) / sigma**2

Wrappers: `VPEpsDenoiser` (DDPM UNets predicting epsilon, v or x0: x_vp = x / sqrt(1 + sigma^2), timestep
from sigma through the discrete alphas_cumprod; DMCMC spec section 10), `VEScoreDenoiser` (any
`model(x, sigma) -> score`, D = x + sigma^2 * s), `EDMDenoiser` (EDM preconditioning, Karras et al. 2022
Table 1), and `NFECounter`, which measures NFE: every batched call of the wrapped denoiser counts one.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Literal

import torch

from .errors import DdmkitError
from .objectives import edm_scalings, vp_x0


class Denoiser:
    """Base of every model seen through D(x, sigma); it declares every field callers read.

    Model facts: `sigma_min`, `sigma_max` (the noise levels it was trained on), `sample_shape` (one
    sample, e.g. (3, 32, 32) or (64,)), `data_range` ((lo, hi) of clean data, None for unbounded data),
    `name`, `domain` ("faces" / "digits" for models of a built-in data domain: metrics and judges),
    `bottleneck` (the module path of its h-space, UNet models). Where it came from: `folder` (a
    diffusers folder) and `variant` (its weights variant, e.g. "fp16"), `checkpoint` and `conversion` (a raw
    checkpoint converted in memory). `sampling_sigma_max`: the noise level sampling starts at by default
    (recorded with a model whose high-noise levels are poor; None: `sigma_max`). `to(device)` moves its network (in place, like `nn.Module.to`).
    Call settings: `clip_denoised` (clamp D to the data range) and `autocast_dtype` (CUDA autocast);
    change them through `view(...)`, which copies, never on a shared model.
    """

    sigma_min: float
    sigma_max: float
    sample_shape: tuple[int, ...]
    data_range: tuple[float, float] | None = None
    name: str = "denoiser"
    domain: str | None = None
    bottleneck: str | None = None
    folder: str | None = None
    variant: str | None = None
    checkpoint: str | None = None
    conversion: dict | None = None
    sampling_sigma_max: float | None = None
    clip_denoised: bool = False
    autocast_dtype: torch.dtype | None = None

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = as_sigma(sigma, x)
        if self.autocast_dtype is not None:  # mixed precision (CUDA only, see `with_precision`)
            with torch.autocast("cuda", dtype=self.autocast_dtype):
                out = self.denoise(x, sigma)
            out = out.to(x.dtype)
        else:
            out = self.denoise(x, sigma)
        if self.clip_denoised and self.data_range is not None:
            # E[x0 | x] lies in the convex hull of the data, so projecting onto the data range only
            # removes model error (DDPM's clip_denoised; diffusers' clip_sample)
            out = out.clamp(self.data_range[0], self.data_range[1])
        return out

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2 (Tweedie)."""
        sigma = as_sigma(sigma, x)
        return (self(x, sigma) - x) / append_dims(sigma, x.ndim) ** 2

    @property
    def is_image(self) -> bool:
        return len(self.sample_shape) == 3

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> "Denoiser":
        """Move the network(s) it holds to `device` (in place, shared with its views); returns itself."""
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                value.to(device)
        return self

    def extra_info(self) -> dict:
        """Facts about the model for manifests."""
        return {}

    @classmethod
    def from_callable(cls, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, sigma_min: float,
                      sigma_max: float, sample_shape: tuple[int, ...], data_range: tuple[float, float] | None = None,
                      name: str = "callable") -> "CallableDenoiser":
        """Any `fn(x, sigma) -> D(x, sigma)` (sigma of shape (B,)) as a denoiser (`CallableDenoiser`)."""
        return CallableDenoiser(fn, sigma_min=sigma_min, sigma_max=sigma_max, sample_shape=sample_shape,
                                data_range=data_range, name=name)


DECLARED_FIELDS = ("data_range", "name", "domain", "bottleneck", "folder", "variant", "checkpoint", "conversion",
                   "sampling_sigma_max")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def view(denoiser: Denoiser, *, clip_denoised: bool | None = None, precision: str | None = None) -> Denoiser:
    """The model (under any NFE counters) with other call settings: x0 clipping and/or the CUDA autocast
    precision ('fp32', 'bf16', 'fp16'). A shallow copy: the network, the sigmas and every other field are
    the model's own objects, shared; only the changed flags are the copy's. Count NFE around the result."""
    inner = unwrap(denoiser)
    out = copy.copy(inner)
    if clip_denoised is not None:
        out.clip_denoised = bool(clip_denoised)
    if precision is not None:
        out.autocast_dtype = _autocast_dtype(inner, precision)
    return out


def with_precision(denoiser: Denoiser, dtype: str = "fp32") -> Denoiser:
    """The model run under CUDA autocast in `dtype` ('bf16' or 'fp16'; 'fp32': none), as a view.

    Weights, the sampler state and the integrators' arithmetic stay float32; only the network's matmuls
    and convolutions run in reduced precision. CPU runs refuse bf16/fp16 (no speed-up there, and the
    quality effect is the thing to measure on a GPU)."""
    return view(denoiser, precision=dtype)


def _autocast_dtype(inner: Denoiser, dtype: str) -> torch.dtype | None:
    if dtype not in PRECISIONS:
        raise DdmkitError(f"--dtype must be one of {', '.join(PRECISIONS)}, got {dtype!r}")
    if PRECISIONS[dtype] is not None and torch.device(inner.device).type != "cuda":
        raise DdmkitError(f"--dtype {dtype} needs a CUDA device (the model is on {inner.device}); "
                          "use --dtype fp32 on CPU")
    return PRECISIONS[dtype]


def net_input(x: torch.Tensor, model) -> torch.Tensor:
    """x in the dtype of the network's weights (a model loaded with torch_dtype=float16 takes half inputs)."""
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return x if p.dtype == x.dtype or not p.dtype.is_floating_point else x.to(p.dtype)
    return x


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) with `ndim` dimensions in all."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def as_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A per-sample sigma of shape (B,) on x's device and dtype; a scalar is broadcast."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise DdmkitError(f"sigma must have shape ({x.shape[0]},) for a batch of {x.shape[0]}, got {tuple(sigma.shape)}")
    return sigma


class NFECounter(Denoiser):
    """Wraps a denoiser and counts its batched calls (the NFE), never by formula."""

    clip_denoised = False  # the wrapped model clips (or not) itself

    def __init__(self, inner: Denoiser):
        self.inner = inner
        self.nfe = 0

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.inner(x, sigma)

    def reset(self) -> int:
        n, self.nfe = self.nfe, 0
        return n

    def to(self, device: str | torch.device) -> "NFECounter":
        self.inner.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def extra_info(self) -> dict:
        return self.inner.extra_info()

    def __getattr__(self, name: str):  # sigma_min, sample_shape, unet, ... of the wrapped model
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


for _field in DECLARED_FIELDS:  # the declared fields have class defaults on `Denoiser`: forward them
    setattr(NFECounter, _field, property(lambda self, _f=_field: getattr(self.inner, _f)))


def unwrap(denoiser: Denoiser) -> Denoiser:
    """The model under any NFE counters."""
    while isinstance(denoiser, NFECounter):
        denoiser = denoiser.inner
    return denoiser


def vp_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t): the VE noise level of each discrete DDPM step."""
    a = alphas_cumprod.double()
    return ((1 - a) / a).sqrt()


class NetworkDenoiser(Denoiser):
    """A denoiser around one network, `model` (the UNet): its device is the network's."""

    model: Any

    @property
    def unet(self):
        return self.model

    @property
    def device(self) -> torch.device:
        if isinstance(self.model, torch.nn.Module):
            for p in self.model.parameters():
                return p.device
        return torch.device("cpu")


class VPEpsDenoiser(NetworkDenoiser):
    """A DDPM network seen in sigma space (DMCMC spec section 10).

    D(x, sigma) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma)) for epsilon-prediction (`prediction_type`
    "epsilon", the default); "v_prediction" and "sample" networks give D through `ddmkit.objectives.vp_x0`
    at the same sigma (Salimans & Ho 2022). t is the discrete timestep nearest
    in log sigma (`timestep_mode="nearest"`, k-diffusion's quantize mode) or a fractional timestep
    interpolated in log sigma (`"interpolate"`, as diffusers' Karras-sigma schedulers do). For
    learned-variance networks (2C output channels) the first C channels are epsilon.
    `clip_denoised` (default True, as in the original DDPM code and diffusers' `clip_sample`) clamps D
    to the data range.
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | torch.nn.Module,
        alphas_cumprod: torch.Tensor,
        sample_shape: tuple[int, ...],
        *,
        timestep_mode: Literal["nearest", "interpolate"] = "nearest",
        data_range: tuple[float, float] | None = (-1.0, 1.0),
        name: str = "vp-eps",
        clip_denoised: bool = True,
        prediction_type: str = "epsilon",
    ):
        if timestep_mode not in ("nearest", "interpolate"):
            raise DdmkitError(f"timestep_mode must be 'nearest' or 'interpolate', got {timestep_mode!r}")
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise DdmkitError(f"prediction_type must be epsilon, v_prediction or sample, got {prediction_type!r}")
        self.prediction_type = prediction_type
        self.model = model
        self.sigmas = vp_sigmas(torch.as_tensor(alphas_cumprod))  # ascending in t
        self.log_sigmas = self.sigmas.log()
        self.sigma_min = float(self.sigmas[0])
        self.sigma_max = float(self.sigmas[-1])
        self.sample_shape = tuple(sample_shape)
        self.timestep_mode = timestep_mode
        self.data_range = data_range
        self.name = name
        self.clip_denoised = clip_denoised

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Timestep for each sigma: nearest in log sigma, or fractional (log-sigma interpolation)."""
        log_sigma = sigma.double().clamp(min=1e-20).log().to(self.log_sigmas.device)
        dists = (log_sigma[:, None] - self.log_sigmas[None, :]).abs()
        if self.timestep_mode == "nearest":
            return dists.argmin(dim=1).to(sigma.device)
        ls = self.log_sigmas
        low = (log_sigma[:, None] >= ls[None, :]).sum(dim=1).sub(1).clamp(0, len(ls) - 2)
        w = ((log_sigma - ls[low]) / (ls[low + 1] - ls[low])).clamp(0, 1)
        return (low.double() + w).to(device=sigma.device, dtype=torch.float32)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigmas.to(t.device)[t.long()].float()

    def output(self, x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's prediction (epsilon, v or x0, per `prediction_type`) at VP state x_vp, timestep t."""
        out = self.model(net_input(x_vp, self.model), t)
        out = getattr(out, "sample", out)
        if out.shape[1] == 2 * x_vp.shape[1]:  # learned variance: [prediction, variance values]
            out = out[:, : x_vp.shape[1]]
        return out

    def eps(self, x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """epsilon at VP state x_vp and (integer) timestep t, whatever the network predicts."""
        out = self.output(x_vp, t)
        if self.prediction_type == "epsilon":
            return out
        s = append_dims(self.sigmas.to(x_vp.device)[t.long()].to(x_vp.dtype), x_vp.ndim)
        alpha, s_vp = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
        if self.prediction_type == "v_prediction":
            return alpha * out.to(x_vp.dtype) + s_vp * x_vp
        return (x_vp - alpha * out.to(x_vp.dtype)) / s_vp

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = append_dims(sigma, x.ndim)
        out = self.output(x / (1 + s**2).sqrt(), self.sigma_to_t(sigma))
        return vp_x0(out.to(x.dtype), x, s, self.prediction_type)

    def extra_info(self) -> dict:
        return {"parametrisation": "vp-eps" if self.prediction_type == "epsilon" else f"vp-{self.prediction_type}",
                "timestep_mode": self.timestep_mode, "num_timesteps": len(self.sigmas),
                "clip_denoised": self.clip_denoised}


class VEScoreDenoiser(NetworkDenoiser):
    """A variance-exploding score model `model(x, sigma) -> grad log p_sigma(x)`: D = x + sigma^2 * s."""

    def __init__(
        self,
        model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | torch.nn.Module,
        sigma_min: float,
        sigma_max: float,
        sample_shape: tuple[int, ...],
        *,
        data_range: tuple[float, float] | None = (0.0, 1.0),
        name: str = "ve-score",
        clip_denoised: bool = False,
    ):
        if not 0 < sigma_min < sigma_max:
            raise DdmkitError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.model = model
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.sample_shape = tuple(sample_shape)
        self.data_range = data_range
        self.name = name
        self.clip_denoised = clip_denoised  # off by default, as in score_sde

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = self.model(net_input(x, self.model), sigma)
        out = getattr(out, "sample", out)
        return x + append_dims(sigma, x.ndim) ** 2 * out.to(x.dtype)

    def extra_info(self) -> dict:
        return {"parametrisation": "ve-score", "clip_denoised": self.clip_denoised}


class EDMDenoiser(NetworkDenoiser):
    """An EDM-preconditioned network F (Karras et al. 2022, Table 1; diffusers' EDMEulerScheduler):

        D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

    with the scalings of `ddmkit.objectives.edm_scalings` (c_noise = ln(sigma) / 4 is F's timestep)."""

    def __init__(
        self,
        model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | torch.nn.Module,
        sigma_min: float,
        sigma_max: float,
        sigma_data: float,
        sample_shape: tuple[int, ...],
        *,
        prediction_type: str = "epsilon",
        data_range: tuple[float, float] | None = (-1.0, 1.0),
        name: str = "edm",
        clip_denoised: bool = False,
    ):
        if not 0 < sigma_min < sigma_max or not sigma_data > 0:
            raise DdmkitError(f"need 0 < sigma_min < sigma_max and sigma_data > 0, got {sigma_min}, {sigma_max}, {sigma_data}")
        edm_scalings(torch.ones(1), sigma_data, prediction_type)  # validates prediction_type
        self.model = model
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)
        self.prediction_type = prediction_type
        self.sample_shape = tuple(sample_shape)
        self.data_range = data_range
        self.name = name
        self.clip_denoised = clip_denoised  # off by default, as in EDM

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = append_dims(sigma, x.ndim)
        c_skip, c_out, c_in, c_noise = edm_scalings(s, self.sigma_data, self.prediction_type)
        out = self.model(net_input(c_in * x, self.model), c_noise.flatten())
        out = getattr(out, "sample", out)
        return c_skip * x + c_out * out.to(x.dtype)

    def extra_info(self) -> dict:
        return {"parametrisation": "edm", "sigma_data": self.sigma_data, "prediction_type": self.prediction_type,
                "clip_denoised": self.clip_denoised}


class CallableDenoiser(Denoiser):
    """A callable `fn(x, sigma) -> x0 estimate` (a function or an `nn.Module`; sigma of shape (B,)) with the
    facts every caller needs: its sigma range, one sample's shape and the data range (None: unbounded)."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, sigma_min: float,
                 sigma_max: float, sample_shape: tuple[int, ...], data_range: tuple[float, float] | None = None,
                 name: str = "callable"):
        if not callable(fn):
            raise DdmkitError(f"a denoiser wraps a callable D(x, sigma), got a {type(fn).__name__}")
        if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0 < sigma_min < sigma_max):
            raise DdmkitError(f"need finite 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        shape = tuple(int(n) for n in sample_shape)
        if not shape or any(n < 1 for n in shape):
            raise DdmkitError(f"sample_shape must be positive sizes, e.g. (3, 32, 32) or (2,), got {sample_shape!r}")
        if data_range is not None and not (len(data_range) == 2 and float(data_range[0]) < float(data_range[1])):
            raise DdmkitError(f"data_range must be (lo, hi) with lo < hi, or None, got {data_range!r}")
        self.fn = fn
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.sample_shape = shape
        self.data_range = None if data_range is None else (float(data_range[0]), float(data_range[1]))
        self.name = name
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        if isinstance(self.fn, torch.nn.Module):
            for p in self.fn.parameters():
                return p.device
        return self._device

    def to(self, device: str | torch.device) -> "CallableDenoiser":
        super().to(device)
        self._device = torch.device(device)
        return self

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = self.fn(x, sigma)
        out = getattr(out, "sample", out)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise DdmkitError(f"{self.name}: D(x, sigma) must return a tensor of x's shape {tuple(x.shape)}, got {got}")
        return out.to(x.dtype)
