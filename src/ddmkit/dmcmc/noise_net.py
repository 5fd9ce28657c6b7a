"""The noise-level classifier's networks (DMCMC spec sections 6 and 10): the trained `NoiseLevelNet` and the
exact posterior of a Gaussian mixture (`ExactMixtureNet`, the oracle).

The noise-level classifier q(k | x) of Denoising MCMC:

The classifier looks at a chain state x = x0 + sigma * eps in the model's sigma (VE) space and
predicts which of K geometric noise levels produced it:

    sigma_k = sigma_min (sigma_max / sigma_min)^tau_k,  tau = linspace(1, 1e-3, K),  k = 0..K-1

(`ddmkit.schedules.ve_classifier_grid`: index 0 is sigma_max; sigma_min itself is not on the grid),
over the model's own [sigma_min, sigma_max] (for the DDPM models, [0.0100, 157.4]).

Network (`NoiseLevelNet`):

- images: the paper's plain CNN, 4 x [conv3x3 (pad 1) -> ReLU -> AvgPool], channels C->32->64->128->256,
  flatten 256 x 2 x 2 = 1024 -> Linear(1024 (+ 33, see below), K). The pool strides adapt to the resolution so that
  the last feature map is 2x2: 32 px -> stride 2,2,2,2 (CIFAR10 net); 256 px -> 4,4,4,2 (the
  CelebA-HQ net, kernel 2 with stride 4); 64 px -> 4,2,2,2; 16 px -> 2,2,2,-; other sizes end with an
  adaptive average pool to 2x2.
- vectors (e.g. Gaussian mixtures): a small MLP, (D (+1)) -> 256 -> SiLU -> 256 -> SiLU -> (256 (+33)) -> K.

Input normalisation (identical in training and sampling, stored in the metadata and applied by
`NoiseLevelNet.forward` itself, so no caller can get it wrong):

1. the data range is mapped affinely to [-1, 1] (the official [0, 1] networks do x -> 2x - 1);
   identity for [-1, 1] data (the DDPM models) and for unbounded data (mixtures);
2. `input_norm="rms"` (ddmkit's default): each sample is divided by its root-mean-square r, and the
   network also gets log r and 32 Gaussian bumps of log r (centres evenly spread over
   [log sigma_min - 1, log sigma_max + 1], width = their spacing): to the MLP's first layer (log r)
   and to the linear head (log r and the bumps). The inputs are then well-scaled across the four
   decades of sigma, and the coarse level (log r ~ log sigma once noise dominates) is one lookup away.
   `"raw+logrms"`: the same extra inputs, but the state is not divided by r. `"none"`: the raw state
   only, as the official code (1.41M parameters for 32 px, K = 1000).

Files: `PATH.safetensors` (weights) + `PATH.json` (metadata: format, architecture, the sigma grid,
K, sample shape, data range, input normalisation, model identity, training settings, held-out top-1
accuracy and mean |delta log sigma|).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import DdmkitError
CHANNELS = (32, 64, 128, 256)
MLP_HIDDEN = 256
RBF = 32
INPUT_NORMS = ("rms", "raw+logrms", "none")


def default_log_r_range(sigma_min: float, sigma_max: float, data_range=None) -> tuple[float, float]:
    """Where log rms(x) of a noisy sample can lie: from well below the smallest noise (clean data
    decides there) to just above sigma_max (after the range map to [-1, 1])."""
    scale = 2.0 / (data_range[1] - data_range[0]) if data_range else 1.0
    return (math.log(sigma_min * scale) - 1.0, math.log(sigma_max * scale) + 1.0)


def pool_strides(size: int) -> list[int]:
    """Strides of the four pools that take a power-of-two `size` to 2 (front-loaded, as the paper's
    256-px net 4,4,4,2); 1 means no pool. Empty list when `size` is not a power of two >= 2."""
    if size < 2 or size & (size - 1):
        return []
    n = int(round(math.log2(size // 2)))
    if n <= 4:
        return [2] * n + [1] * (4 - n)
    base, extra = divmod(n, 4)
    return [2 ** (base + 1)] * extra + [2**base] * (4 - extra)


class NoiseLevelNet(nn.Module):
    """K-way noise-level classifier; `forward(x)` returns logits (B, K) for raw chain states x."""

    def __init__(self, sample_shape: Sequence[int], k: int = 1000, *, input_norm: str = "rms",
                 data_range: Sequence[float] | None = (-1.0, 1.0), channels: Sequence[int] = CHANNELS,
                 hidden: int = MLP_HIDDEN, log_r_range: Sequence[float] = (-7.0, 7.0), rbf: int = RBF):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise DdmkitError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")
        if k < 2:
            raise DdmkitError(f"a noise-level classifier needs K >= 2 levels, got {k}")
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.k = int(k)
        self.input_norm = input_norm
        self.data_range = tuple(float(v) for v in data_range) if data_range else None
        self.log_r_range = (float(log_r_range[0]), float(log_r_range[1]))
        self.rbf = int(rbf) if input_norm != "none" else 0
        extra = 1 + self.rbf if input_norm != "none" else 0
        if len(self.sample_shape) == 3:
            c, h, w = self.sample_shape
            layers: list[nn.Module] = []
            strides = pool_strides(h) if h == w else []
            prev = c
            for i, ch in enumerate(channels):
                layers += [nn.Conv2d(prev, ch, 3, padding=1), nn.ReLU()]
                s = strides[i] if strides else (2 if min(h, w) >= 2 ** (i + 2) else 1)
                if s > 1:
                    layers.append(nn.AvgPool2d(2 if s <= 4 else s, stride=s))
                prev = ch
            if not strides:
                layers.append(nn.AdaptiveAvgPool2d((2, 2)))
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(prev * 4 + extra, self.k)
            self.kind = "cnn"
        elif len(self.sample_shape) == 1:
            d = self.sample_shape[0]
            self.features = nn.Sequential(nn.Linear(d + (1 if extra else 0), hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
            self.head = nn.Linear(hidden + extra, self.k)
            self.kind = "mlp"
        else:
            raise DdmkitError(f"noise-level classifiers support images (C, H, W) and vectors (D,), got {self.sample_shape}")

    def normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The documented input normalisation (module docstring): range map, then RMS + log RMS."""
        x = x.float()
        if self.data_range is not None:
            lo, hi = self.data_range
            if (lo, hi) != (-1.0, 1.0):
                x = (x - 0.5 * (lo + hi)) * (2.0 / (hi - lo))
        if self.input_norm == "none":
            return x, None
        r = x.flatten(1).pow(2).mean(1).add(1e-12).sqrt()
        if self.input_norm == "raw+logrms":
            return x, r.log()[:, None]
        return x / r.reshape((-1,) + (1,) * (x.ndim - 1)), r.log()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, logr = self.normalise(x)
        if self.kind == "mlp" and logr is not None:
            x = torch.cat([x, logr], dim=1)
        h = self.features(x).flatten(1)
        if logr is not None:
            h = torch.cat([h, logr, self.encode_log_r(logr)], dim=1)
        return self.head(h)

    def encode_log_r(self, logr: torch.Tensor) -> torch.Tensor:
        """Gaussian bumps of log r at `rbf` centres evenly spread over log_r_range (width = spacing)."""
        lo, hi = self.log_r_range
        centres = torch.linspace(lo, hi, self.rbf, device=logr.device)
        width = (hi - lo) / max(self.rbf - 1, 1)
        return torch.exp(-0.5 * ((logr - centres[None]) / width) ** 2)

    def architecture(self) -> dict:
        return {"kind": self.kind, "sample_shape": list(self.sample_shape), "k": self.k,
                "input_norm": self.input_norm, "data_range": list(self.data_range) if self.data_range else None,
                "channels": [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)] if self.kind == "cnn" else None,
                "pool_strides": [m.stride for m in self.features if isinstance(m, nn.AvgPool2d)] if self.kind == "cnn" else None,
                "hidden": self.head.in_features - (1 + self.rbf if self.input_norm != "none" else 0) if self.kind == "mlp" else None,
                "log_r_range": list(self.log_r_range), "rbf": self.rbf,
                "parameters": int(sum(p.numel() for p in self.parameters()))}


class ExactMixtureNet(nn.Module):
    """Bayes-optimal q(k|x) for a Gaussian mixture: logits_k = log p_{sigma_k}(x) (uniform prior)."""

    def __init__(self, mixture, grid: torch.Tensor):
        super().__init__()
        self.mixture, self.k = mixture, len(grid)
        self.register_buffer("grid", grid.double())
        var = mixture.stds[None] ** 2 + self.grid[:, None, None] ** 2  # (K, C, D)
        self.inv_var, self.log_det = 1.0 / var, var.log().sum(-1)  # (K, C, D), (K, C)
        self.sample_shape = (mixture.dim,)
        self.input_norm, self.data_range, self.kind = "none", None, "exact-mixture"
        self._dummy = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mixture
        diff2 = (x.double()[:, None, :] - m.means[None]) ** 2  # (B, C, D)
        quad = torch.einsum("bcd,kcd->bkc", diff2, self.inv_var)  # (B, K, C)
        logn = -0.5 * (quad + self.log_det[None]) + m.weights.log()[None, None]
        return torch.logsumexp(logn, dim=2)  # float64: neighbouring levels' logits differ by less than float32 resolves

    def architecture(self) -> dict:
        return {"kind": self.kind, "sample_shape": list(self.sample_shape), "k": self.k, "input_norm": "none",
                "data_range": None}
