"""The sigma-space denoiser contract and the wrappers that adapt models to it (EDM / k-diffusion).

    D(x, sigma) -> estimate of the clean x0, where x = x0 + sigma * noise, sigma of shape (B,)
    score(x, sigma) = (D(x, sigma) - x) / sigma**2

Wrappers: `VPEpsDenoiser` (DDPM epsilon-prediction UNets: x_vp = x / sqrt(1 + sigma^2), timestep from
sigma through the discrete alphas_cumprod; DMCMC spec section 10), `VEScoreDenoiser` (any
`model(x, sigma) -> score`, D = x + sigma^2 * s), and `NFECounter`, which measures NFE: every batched
call of the wrapped denoiser counts one.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch

from .errors import DdmkitError


class Denoiser:
    """Base of every model seen through D(x, sigma).

    Attributes: `sigma_min`, `sigma_max` (the noise levels the model was trained on),
    `sample_shape` (the shape of one sample, e.g. (3, 32, 32) or (64,)), `data_range`
    ((lo, hi) of clean data, or None for unbounded data) and `name`.
    """

    sigma_min: float
    sigma_max: float
    sample_shape: tuple[int, ...]
    data_range: tuple[float, float] | None = None
    clip_denoised: bool = False
    name: str = "denoiser"
    autocast_dtype: torch.dtype | None = None

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = as_sigma(sigma, x)
        if self.autocast_dtype is not None:  # mixed precision (CUDA only, see `set_precision`)
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

    def extra_info(self) -> dict:
        """Facts about the model for manifests."""
        return {}


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def set_precision(denoiser: "Denoiser", dtype: str = "fp32") -> "Denoiser":
    """Run the network under CUDA autocast in `dtype` ('bf16' or 'fp16'; 'fp32' turns it off).

    Weights, the sampler state and the integrators' arithmetic stay float32; only the network's matmuls
    and convolutions run in reduced precision. CPU runs refuse bf16/fp16 (no speed-up there, and the
    quality effect is the thing to measure on a GPU)."""
    if dtype not in PRECISIONS:
        raise DdmkitError(f"--dtype must be one of {', '.join(PRECISIONS)}, got {dtype!r}")
    inner = unwrap(denoiser)
    if PRECISIONS[dtype] is not None and torch.device(inner.device).type != "cuda":
        raise DdmkitError(f"--dtype {dtype} needs a CUDA device (the model is on {inner.device}); "
                          "use --dtype fp32 on CPU")
    inner.autocast_dtype = PRECISIONS[dtype]
    return denoiser


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

    # attributes with a class-level default on `Denoiser` are forwarded explicitly
    @property
    def data_range(self):
        return self.inner.data_range

    @property
    def name(self):
        return self.inner.name

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def extra_info(self) -> dict:
        return self.inner.extra_info()

    def __getattr__(self, name: str):  # sigma_min, sample_shape, unet, ... of the wrapped model
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def unwrap(denoiser: Denoiser) -> Denoiser:
    """The model under any NFE counters."""
    while isinstance(denoiser, NFECounter):
        denoiser = denoiser.inner
    return denoiser


class ClipView(Denoiser):
    """The model `inner` with its own `clip_denoised` (a view: the shared model is left as it is), e.g.
    the unclipped D inside DLG's Langevin score on a DDPM that clips by default."""

    def __init__(self, inner: Denoiser, clip: bool):
        self.inner = unwrap(inner)
        self.clip_denoised = bool(clip)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.inner.denoise(x, sigma)

    @property
    def autocast_dtype(self):
        return self.inner.autocast_dtype

    @property
    def data_range(self):
        return self.inner.data_range

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def __getattr__(self, name: str):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def vp_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t): the VE noise level of each discrete DDPM step."""
    a = alphas_cumprod.double()
    return ((1 - a) / a).sqrt()


class VPEpsDenoiser(Denoiser):
    """A DDPM epsilon-prediction network seen in sigma space (DMCMC spec section 10).

    D(x, sigma) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma)), with t the discrete timestep nearest
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
    ):
        if timestep_mode not in ("nearest", "interpolate"):
            raise DdmkitError(f"timestep_mode must be 'nearest' or 'interpolate', got {timestep_mode!r}")
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

    @property
    def unet(self):
        return self.model

    @property
    def device(self) -> torch.device:
        if isinstance(self.model, torch.nn.Module):
            for p in self.model.parameters():
                return p.device
        return torch.device("cpu")

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

    def eps(self, x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.model(x_vp, t)
        out = getattr(out, "sample", out)
        if out.shape[1] == 2 * x_vp.shape[1]:  # learned variance: [eps, variance values]
            out = out[:, : x_vp.shape[1]]
        return out

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = append_dims(sigma, x.ndim)
        eps = self.eps(x / (1 + s**2).sqrt(), self.sigma_to_t(sigma))
        return x - s * eps.to(x.dtype)

    def extra_info(self) -> dict:
        return {"parametrisation": "vp-eps", "timestep_mode": self.timestep_mode, "num_timesteps": len(self.sigmas),
                "clip_denoised": self.clip_denoised}


class VEScoreDenoiser(Denoiser):
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

    @property
    def device(self) -> torch.device:
        if isinstance(self.model, torch.nn.Module):
            for p in self.model.parameters():
                return p.device
        return torch.device("cpu")

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = self.model(x, sigma)
        out = getattr(out, "sample", out)
        return x + append_dims(sigma, x.ndim) ** 2 * out.to(x.dtype)

    def extra_info(self) -> dict:
        return {"parametrisation": "ve-score", "clip_denoised": self.clip_denoised}
