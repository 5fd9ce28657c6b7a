"""An exact Gaussian-mixture "pre-trained model": closed-form D(x, sigma) and exact samples.

For p(x0) = sum_k w_k N(mu_k, diag(s_k^2)), the noisy marginal is p_sigma(x) = sum_k w_k
N(mu_k, diag(s_k^2 + sigma^2)) and Tweedie's denoiser is

    D(x, sigma) = sum_k r_k(x) [mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)],

with r_k the posterior responsibilities under p_sigma. It is usable wherever a model is
(`--model gmm:PATH.json`), and gives samplers a known truth to be measured against.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .denoisers import Denoiser, append_dims
from .errors import ModelLoadError


@dataclass
class GaussianMixture:
    """K diagonal Gaussians in D dimensions: weights (K,), means (K, D), stds (K, D)."""

    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor

    def __post_init__(self):
        self.weights = torch.as_tensor(self.weights, dtype=torch.float64)
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        self.stds = torch.as_tensor(self.stds, dtype=torch.float64)
        self.validate()
        self.weights = self.weights / self.weights.sum()

    def validate(self) -> None:
        w, m, s = self.weights, self.means, self.stds
        if w.ndim != 1 or len(w) < 1:
            raise ModelLoadError("mixture 'weights' must be a non-empty list of numbers")
        if m.ndim != 2 or m.shape[0] != len(w):
            raise ModelLoadError(f"mixture 'means' must be a list of {len(w)} vectors (one per weight)")
        if s.shape != m.shape:
            raise ModelLoadError(f"mixture 'stds' must have the shape of 'means' {tuple(m.shape)}, got {tuple(s.shape)}")
        if not (torch.isfinite(w).all() and torch.isfinite(m).all() and torch.isfinite(s).all()):
            raise ModelLoadError("mixture weights, means and stds must be finite numbers")
        if (w <= 0).any():
            raise ModelLoadError("mixture weights must be > 0")
        if (s <= 0).any():
            raise ModelLoadError("mixture stds must be > 0")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return len(self.weights)

    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Exact covariance: sum_k w_k (diag(s_k^2) + mu_k mu_k^T) - mu mu^T."""
        mu = self.mean()
        second = torch.diag(self.weights @ self.stds**2) + (self.means.T * self.weights) @ self.means
        return second - torch.outer(mu, mu)

    def sample(self, n: int, generator: torch.Generator | None = None, sigma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """n exact samples of p_sigma (clean for sigma = 0) and their component indices."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        std = (self.stds[comp] ** 2 + sigma**2).sqrt()
        return (self.means[comp] + std * z).float(), comp

    def log_component_densities(self, x: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
        """(B, K): log w_k + log N(x; mu_k, diag(s_k^2 + sigma^2)), in float64."""
        x = x.double()
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1)
        var = self.stds[None] ** 2 + sigma**2  # (B or 1, K, D)
        diff = x[:, None, :] - self.means[None]
        logn = -0.5 * ((diff**2 / var) + var.log() + math.log(2 * math.pi)).sum(-1)
        return self.weights.log()[None] + logn

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
        return torch.logsumexp(self.log_component_densities(x, sigma), dim=1)

    def responsibilities(self, x: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
        return torch.softmax(self.log_component_densities(x, sigma), dim=1)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable component of each clean sample."""
        return self.log_component_densities(x).argmax(dim=1)

    def to_json(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "stds": self.stds.tolist()}

    @classmethod
    def from_json(cls, obj: dict) -> "GaussianMixture":
        if not isinstance(obj, dict) or not all(k in obj for k in ("weights", "means", "stds")):
            raise ModelLoadError('a mixture JSON needs {"weights": [...], "means": [[...], ...], "stds": [[...], ...]}')
        try:
            w = torch.tensor(obj["weights"], dtype=torch.float64)
            m = torch.tensor(obj["means"], dtype=torch.float64)
            s = torch.tensor(obj["stds"], dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ModelLoadError("mixture 'weights', 'means' and 'stds' must be (nested) lists of numbers of equal lengths") from None
        return cls(w, m, s)


class GMMDenoiser(Denoiser):
    """The exact denoiser of a `GaussianMixture` (see the module docstring)."""

    def __init__(self, mixture: GaussianMixture, sigma_min: float = 0.002, sigma_max: float = 80.0, name: str = "gmm"):
        if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0 < sigma_min < sigma_max):
            raise ModelLoadError(f"mixture needs 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.mixture = mixture
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.sample_shape = (mixture.dim,)
        self.data_range = None
        self.name = name

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        m = self.mixture
        r = m.responsibilities(x, sigma)  # (B, K)
        var = m.stds[None] ** 2  # (1, K, D)
        s2 = append_dims(sigma.double(), 3) ** 2
        post = m.means[None] + var / (var + s2) * (x.double()[:, None, :] - m.means[None])  # (B, K, D)
        return (r[..., None] * post).sum(1).to(x.dtype)

    def extra_info(self) -> dict:
        return {"parametrisation": "exact-gmm", "components": self.mixture.num_components, "dim": self.mixture.dim}


def load_mixture(path: str | os.PathLike) -> tuple[GaussianMixture, dict]:
    """Read a mixture JSON; returns the mixture and the optional extra keys (sigma_min, sigma_max)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"mixture file {path} does not exist; give gmm:PATH.json with weights, means and stds")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"mixture file {path} is not valid JSON ({e.__class__.__name__} at {getattr(e, 'pos', '?')})") from None
    mixture = GaussianMixture.from_json(obj)
    try:
        extra = {k: float(obj[k]) for k in ("sigma_min", "sigma_max") if k in obj}
    except (TypeError, ValueError):
        raise ModelLoadError(f"mixture file {path}: sigma_min and sigma_max must be numbers") from None
    return mixture, extra


def load_gmm_denoiser(path: str | os.PathLike) -> GMMDenoiser:
    mixture, extra = load_mixture(path)
    return GMMDenoiser(mixture, name=f"gmm:{Path(path).name}", **extra)


def random_mixture(dim: int, k: int, seed: int = 0, spread: float = 3.0) -> GaussianMixture:
    """A test mixture: unequal weights, separated means, stds in [0.3, 0.8]."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(1.0, 4.0, size=k)
    means = rng.normal(0.0, spread, size=(k, dim))
    stds = rng.uniform(0.3, 0.8, size=(k, dim))
    return GaussianMixture(torch.tensor(w), torch.tensor(means), torch.tensor(stds))


def frechet_to_mixture(x: torch.Tensor, mixture: GaussianMixture) -> float:
    """Frechet distance between the Gaussian fit of samples x and the mixture's exact moments."""
    from scipy import linalg

    x = x.double().numpy()
    mu1, c1 = x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))
    mu2, c2 = mixture.mean().numpy(), mixture.covariance().numpy()
    covmean = np.real(linalg.sqrtm(c1 @ c2))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))
