"""The noise-level classifier q(k | x) of Denoising MCMC (DMCMC spec sections 6 and 10).

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

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..assets import shipped_noise_classifier
from ..denoisers import unwrap
from ..errors import DdmkitError
from ..io import atomic_write_bytes, atomic_write_json, recover_dir, replace_dir
from ..schedules import ve_classifier_grid
from ..mixtures import GMMDenoiser

FORMAT = "ddmkit-noise-classifier/1"
TAU_MIN = 1e-3
CHANNELS = (32, 64, 128, 256)
CLASSIFIER_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MLP_HIDDEN = 256
RBF = 32
INPUT_NORMS = ("rms", "raw+logrms", "none")


def default_log_r_range(sigma_min: float, sigma_max: float, data_range=None) -> tuple[float, float]:
    """Where log rms(x) of a noisy sample can lie: from well below the smallest noise (clean data
    decides there) to just above sigma_max (after the range map to [-1, 1])."""
    scale = 2.0 / (data_range[1] - data_range[0]) if data_range else 1.0
    return (math.log(sigma_min * scale) - 1.0, math.log(sigma_max * scale) + 1.0)


# ----------------------------------------------------------------------------------- network

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


# ----------------------------------------------------------------------------------- wrapper

class NoiseLevelClassifier:
    """A trained `NoiseLevelNet` with its sigma grid: C(x) = grid[argmax q(.|x)] (spec section 3).

    `calls` counts batched forward passes (reported separately from the model's NFE)."""

    def __init__(self, net: NoiseLevelNet, sigma_min: float, sigma_max: float, meta: dict | None = None):
        self.net = net.eval()
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.grid = ve_classifier_grid(self.sigma_min, self.sigma_max, net.k, TAU_MIN)  # (K,) descending
        self.meta = dict(meta or {})
        self.calls = 0
        self.dtype = "fp32"
        self.compiled = False
        self._fn: Callable[[torch.Tensor], torch.Tensor] = self.net

    @property
    def k(self) -> int:
        return self.net.k

    def to(self, device) -> "NoiseLevelClassifier":
        self.net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def set_precision(self, dtype: str = "fp32") -> "NoiseLevelClassifier":
        """Run the network's convolutions and linear layers under autocast in `dtype` ("bf16" on CPU or
        CUDA, "fp16" on CUDA; "fp32" turns it off). Weights stay float32, and the input normalisation
        (RMS, log RMS, the bumps) runs in float32 (autocast leaves reductions and pointwise ops alone);
        the logits come back as float32. A speed lever for the per-step cost on GPUs (DMCMC spec
        section 3): its cost and its effect on the predicted levels are measured by `benchmarks/dmcmc_faces.py --costs`."""
        if dtype not in CLASSIFIER_PRECISIONS:
            raise DdmkitError(f"the classifier dtype must be one of {', '.join(CLASSIFIER_PRECISIONS)}, got {dtype!r}")
        if dtype == "fp16" and self.device.type != "cuda":
            raise DdmkitError(f"classifier dtype fp16 needs a CUDA device (the classifier is on {self.device}); "
                              "use bf16 or fp32 on CPU")
        self.dtype = dtype
        return self

    def compile(self) -> "NoiseLevelClassifier":
        """torch.compile the network (on CUDA with mode "reduce-overhead": CUDA graphs, so one call is one
        graph launch instead of ~20 kernel launches). The first call of each batch shape compiles (seconds
        to a minute); results equal the eager network's up to float rounding."""
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        self._fn = torch.compile(self.net, mode=mode, dynamic=False)
        self.compiled = True
        return self

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) float32 logits on the classifier's device (one counted call)."""
        self.calls += 1
        dev = self.device
        x = x.to(dev)
        if self.dtype == "fp32":
            return self._fn(x)
        with torch.autocast(dev.type, dtype=CLASSIFIER_PRECISIONS[self.dtype]):
            return self._fn(x).float()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x).float().cpu()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, mode: str = "argmax", generator=None) -> torch.Tensor:
        """Grid index per sample: argmax of q(k|x), or a draw from it (`mode="sample"`, using the
        per-sample `generator`: inverse-CDF sampling with one normal draw turned uniform)."""
        if mode == "argmax":  # on the classifier's device: only B indices come back, not (B, K) logits
            return self._forward(x).argmax(dim=1).cpu()
        logits = self.logits(x)
        if mode != "sample":
            raise DdmkitError(f"sigma_step must be 'argmax' or 'sample', got {mode!r}")
        from ..integrators import randn_like

        probs = torch.softmax(logits.double(), dim=1)
        z = randn_like(torch.zeros(len(x), 1), generator).double().squeeze(1)
        u = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        idx = (probs.cumsum(dim=1) < u[:, None]).sum(dim=1)
        return idx.clamp(max=self.k - 1)

    def sigma(self, x: torch.Tensor, mode: str = "argmax", generator=None) -> torch.Tensor:
        """C(x): the predicted noise level of each sample, (B,) float32."""
        return self.grid[self.predict(x, mode, generator)]


def paths_for(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, metadata) paths: PATH.safetensors and PATH.json for PATH with or without a suffix."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_classifier(path: str | os.PathLike, net: NoiseLevelNet, meta: dict) -> tuple[Path, Path]:
    """Write the weights and the metadata atomically (weights first; the JSON marks completion)."""
    from safetensors.torch import save

    wpath, mpath = paths_for(path)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(wpath, save(state))
    atomic_write_json(mpath, {**meta, "format": FORMAT, "architecture": net.architecture()})
    return wpath, mpath


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> NoiseLevelClassifier:
    """Read PATH(.safetensors/.json), or a shipped classifier by name ('faces_noise_classifier', or the model's
    name: 'default', 'digits', 'digits-ve'); raises DdmkitError naming the fix if missing or corrupt."""
    from safetensors.torch import load_file

    wpath, mpath = paths_for(path)
    shipped = shipped_noise_classifier(str(path))
    if not (wpath.is_file() or mpath.is_file()) and shipped is not None:
        wpath, mpath = paths_for(shipped)
    if not wpath.is_file() or not mpath.is_file():
        raise DdmkitError(
            f"noise classifier {wpath.with_suffix('')} not found (need {wpath.name} and {mpath.name}); "
            "train one with `ddmkit noise-classifier train --model M --out PATH`"
        )
    try:
        meta = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DdmkitError(f"{mpath} is not a readable JSON file ({e.__class__.__name__}); retrain the classifier") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DdmkitError(f"{mpath} is not a ddmkit noise-classifier file (format {FORMAT!r} expected)")
    try:
        arch = meta["architecture"]
        net = NoiseLevelNet(arch["sample_shape"], arch["k"], input_norm=arch["input_norm"],
                            data_range=arch["data_range"], channels=arch.get("channels") or CHANNELS,
                            hidden=arch.get("hidden") or MLP_HIDDEN, log_r_range=arch.get("log_r_range", (-7.0, 7.0)),
                            rbf=arch.get("rbf", RBF))
        state = load_file(str(wpath))
        net.load_state_dict(state)
        grid = meta["sigma_grid"]
        clf = NoiseLevelClassifier(net, grid["sigma_min"], grid["sigma_max"], meta)
    except DdmkitError:
        raise
    except Exception as e:  # KeyError, safetensors errors, shape mismatches
        raise DdmkitError(f"noise classifier {wpath} is corrupt or incomplete ({e.__class__.__name__}: {e}); retrain it") from None
    return clf.to(device)


def check_compatible(clf: NoiseLevelClassifier, denoiser, identity: dict | None = None, *, path: str = "") -> None:
    """Raise DdmkitError unless the classifier was made for this model: same sample shape and data
    range, same sigma range (relative 1e-3), and, where both are known, the same model weights
    (sha256) or data domain."""
    from ..denoisers import unwrap

    inner = unwrap(denoiser)
    meta = clf.meta
    where = f" {path}" if path else ""
    fix = "train a matching one with `ddmkit noise-classifier train --model M --out PATH` and pass --noise-classifier PATH"
    shape = tuple(meta["architecture"]["sample_shape"])
    if shape != tuple(inner.sample_shape):
        raise DdmkitError(f"noise classifier{where} is for samples of shape {shape}, the model makes {tuple(inner.sample_shape)}; {fix}")
    rng = meta["architecture"]["data_range"]
    model_rng = list(inner.data_range) if inner.data_range else None
    if (rng is None) != (model_rng is None) or (rng and not np.allclose(rng, model_rng)):
        raise DdmkitError(f"noise classifier{where} is for data range {rng}, the model's is {model_rng}; {fix}")
    for name in ("sigma_min", "sigma_max"):
        a, b = float(getattr(clf, name)), float(getattr(inner, name))
        if abs(a - b) > 1e-3 * b:
            raise DdmkitError(f"noise classifier{where} covers {name} = {a:g}, the model's is {b:g}; {fix}")
    mine = meta.get("model_identity") or {}
    if identity is not None:
        if mine.get("sha256") and identity.get("sha256") and mine["sha256"] != identity["sha256"]:
            raise DdmkitError(
                f"noise classifier{where} was trained for model {mine.get('name')!r} (sha256 {mine['sha256'][:12]}...), "
                f"not for {identity.get('name')!r} (sha256 {identity['sha256'][:12]}...); {fix}"
            )
    domain = inner.domain
    if meta.get("domain") and domain and meta["domain"] != domain:
        raise DdmkitError(f"noise classifier{where} is for {meta['domain']} data, the model makes {domain}; {fix}")


# ----------------------------------------------------------------------------------- data

@dataclass
class ClassifierData:
    """Clean training data x0 for a classifier: `batch(step)` (deterministic in the step) and a
    fixed held-out set, both float32 in the model's data range."""

    batch: Callable[[int, int], torch.Tensor]  # (step, batch_size) -> (B, *sample_shape)
    held_out: torch.Tensor
    description: str
    domain: str | None = None


def mixture_data(mixture, seed: int = 0, held_out: int = 2000) -> ClassifierData:
    """Exact samples of a Gaussian mixture (fresh every step)."""
    def batch(step: int, size: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + 17 + step)
        return mixture.sample(size, gen)[0]

    test = mixture.sample(held_out, torch.Generator().manual_seed(int(seed) * 1_000_003 + 5))[0]
    return ClassifierData(batch, test, f"exact samples of the {mixture.num_components}-component mixture")


def array_data(x: np.ndarray, seed: int = 0, held_out_fraction: float = 0.1, description: str = "",
               flip: bool = False, domain: str | None = None) -> ClassifierData:
    """A fixed set of clean samples (float32 (N, ...)); a random held-out share is never trained on."""
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    rng = np.random.default_rng(int(seed))
    order = rng.permutation(len(x))
    n_test = max(1, int(round(held_out_fraction * len(x)))) if len(x) > 1 else 0
    test, train = x[order[:n_test]], x[order[n_test:]]
    if len(train) == 0:
        raise DdmkitError("need at least 2 clean samples to train a noise classifier")

    def batch(step: int, size: int) -> torch.Tensor:
        r = np.random.default_rng([int(seed), step])
        b = train[torch.from_numpy(r.integers(0, len(train), size=size))]
        if flip:
            f = torch.from_numpy(r.random(size) < 0.5)
            b[f] = b[f].flip(-1)
        return b

    return ClassifierData(batch, test if len(test) else train[:1], description or f"{len(x)} samples", domain)


def faces_data(seed: int = 0, pool: int = 20_000, held_out: int = 2000) -> ClassifierData:
    """The synthetic faces of the default model, in [-1, 1] (a rendered pool + a disjoint held-out set)."""
    from ..data.faces import sample_faces, to_tensor_range

    train = to_tensor_range(sample_faces(pool, seed=50_000_000 + int(seed))[0])
    test = to_tensor_range(sample_faces(held_out, seed=60_000_000 + int(seed))[0])
    data = array_data(train, seed, held_out_fraction=0.0, description=f"{pool} synthetic faces (seed {50_000_000 + seed})", domain="faces")
    data.held_out = torch.from_numpy(test)
    return data


def data_for_model(denoiser, data: str | None, seed: int = 0) -> ClassifierData:
    """Clean data for `denoiser` (spec section 10): mixtures -> exact samples; `data` "faces",
    "digits" or a folder of images; None -> the model's own domain (faces / digits). Images are mapped
    from [-1, 1] to the model's data range (e.g. [0, 1] for VE models), and checked to lie in it."""
    from ..denoisers import Denoiser, unwrap

    inner = unwrap(denoiser) if isinstance(denoiser, Denoiser) else denoiser  # a model or its ModelFacts
    mixture = inner.mixture if isinstance(inner, (GMMDenoiser, ModelFacts)) else None
    if mixture is not None:
        if data not in (None, "mixture"):
            raise DdmkitError("a gmm: model trains its classifier on exact mixture samples; leave out --data")
        return mixture_data(mixture, seed)
    data = data or inner.domain
    if data is None:
        raise DdmkitError("give --data: 'faces', 'digits' or a folder of clean training images for this model")
    shape = tuple(inner.sample_shape)
    rng = tuple(inner.data_range) if inner.data_range else (-1.0, 1.0)
    if data == "faces":
        d = faces_data(seed)
    elif data == "digits":
        from ..data.folders import load_digits_images

        d = array_data(load_digits_images(shape[-1])[0], seed, description="scikit-learn digits (1,797)", domain="digits")
    else:
        from ..data.folders import load_training_images

        d = array_data(load_training_images(data, shape[-1], channels=shape[0]), seed, description=f"images in {data}",
                       flip=True)
    if tuple(d.held_out.shape[1:]) != shape:
        raise DdmkitError(f"--data {data} gives samples of shape {tuple(d.held_out.shape[1:])}, the model needs {shape}")
    return to_data_range(d, rng)


def to_data_range(d: ClassifierData, data_range: tuple[float, float]) -> ClassifierData:
    """Images in [-1, 1] (what the image sources give) mapped affinely onto the model's data range; the
    held-out set is checked to lie in that range (the classifier must see what the chains see)."""
    lo, hi = float(data_range[0]), float(data_range[1])
    if (lo, hi) != (-1.0, 1.0):
        inner, scale = d.batch, 0.5 * (hi - lo)
        d = ClassifierData(lambda step, size: lo + (inner(step, size) + 1) * scale, lo + (d.held_out + 1) * scale,
                           d.description + f", mapped to [{lo:g}, {hi:g}]", d.domain)
    x = d.held_out
    if float(x.min()) < lo - 1e-6 or float(x.max()) > hi + 1e-6:
        raise DdmkitError(f"the classifier's training images span [{float(x.min()):.3g}, {float(x.max()):.3g}], "
                          f"outside the model's data range [{lo:g}, {hi:g}]")
    return d


# ----------------------------------------------------------------------------------- training

@dataclass
class ClassifierTrainConfig:
    """What defines a training run (saved with the checkpoint and in the metadata)."""

    k: int = 1000
    steps: int = 3000
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # or "constant" (the official code's)
    seed: int = 0
    input_norm: str = "rms"
    checkpoint_every: int = 200
    threads: int = 0
    max_minutes: float = 0.0  # stop (and finish the file) after this much training time; 0: no limit
    channels: tuple[int, ...] = CHANNELS  # CNN widths (images only); narrower = cheaper per DLG step
    notes: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Refuse settings that would fail or train nothing, before any file is written."""
        if self.steps < 1 or self.batch_size < 1 or not 2 <= self.k <= 100_000 or self.checkpoint_every < 1:
            raise DdmkitError("--steps, --batch-size and --checkpoint-every must be >= 1 and --k in 2..100000")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise DdmkitError(f"--lr must be a finite number in (0, 1], got {self.lr}")
        if not (math.isfinite(self.max_minutes) and self.max_minutes >= 0) or self.threads < 0:
            raise DdmkitError("--max-minutes and --threads must be >= 0")
        if self.lr_schedule not in ("cosine", "constant"):
            raise DdmkitError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise DdmkitError(f"--channels needs four positive widths, got {self.channels}")


def _comparable(cfg: dict) -> dict:
    out = {k: v for k, v in cfg.items() if k not in ("steps", "checkpoint_every", "threads", "max_minutes", "notes")}
    out["channels"] = list(out.get("channels") or CHANNELS)  # checkpoints from before the option: the default
    return out


def _noisy_batch(x0: torch.Tensor, grid: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x = x0 + sigma_k eps with k ~ U{0..K-1} (spec section 6); returns x and the labels k."""
    k = torch.randint(0, len(grid), (x0.shape[0],), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    sig = grid[k].reshape((-1,) + (1,) * (x0.ndim - 1))
    return x0 + sig * eps, k


@torch.no_grad()
def evaluate_classifier(net: NoiseLevelNet, grid: torch.Tensor, x0: torch.Tensor, seed: int = 12345,
                        batch: int = 500) -> dict:
    """Held-out metrics on x0 + sigma_k eps with k uniform: top-1 accuracy, mean / median |delta log
    sigma| of the argmax, top-1 within +-1 level, and the mean |delta log sigma| per decade of sigma."""
    net.eval()
    gen = torch.Generator().manual_seed(seed)
    log_grid = grid.double().log()
    errs, hits, near, true_k = [], [], [], []
    for i in range(0, len(x0), batch):
        x, k = _noisy_batch(x0[i : i + batch], grid, gen)
        pred = net(x).argmax(dim=1)
        errs.append((log_grid[pred] - log_grid[k]).abs())
        hits.append(pred == k)
        near.append((pred - k).abs() <= 1)
        true_k.append(k)
    err, k = torch.cat(errs), torch.cat(true_k)
    sig = grid[k].double()
    decades = {}
    lo, hi = math.floor(math.log10(float(grid.min()))), math.ceil(math.log10(float(grid.max())))
    for d in range(lo, hi):
        m = (sig >= 10.0**d) & (sig < 10.0 ** (d + 1))
        if m.any():
            decades[f"1e{d}..1e{d + 1}"] = round(float(err[m].mean()), 4)
    return {"n": int(len(err)), "top1_accuracy": float(torch.cat(hits).float().mean()),
            "within_one_level": float(torch.cat(near).float().mean()),
            "mean_abs_dlog_sigma": float(err.mean()), "median_abs_dlog_sigma": float(err.median()),
            "mean_abs_dlog_sigma_by_decade": decades,
            "grid_log_spacing": float((log_grid[0] - log_grid[1]).abs())}


def train_noise_classifier(
    data: ClassifierData,
    sample_shape: Sequence[int],
    data_range: Sequence[float] | None,
    sigma_min: float,
    sigma_max: float,
    out: str | os.PathLike,
    cfg: ClassifierTrainConfig | None = None,
    *,
    meta: dict | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train (or resume) a classifier and write OUT.safetensors + OUT.json; returns the metadata.

    Checkpoints go to OUT.ckpt/ every `checkpoint_every` steps (weights, optimizer, step; atomically
    replaced); running the same call again resumes from there. Batch and noise of step s depend on
    (seed, s) only. `stop_after` (tests) stops after that many steps without writing the final file."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    cfg = cfg or ClassifierTrainConfig()
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    wpath, mpath = paths_for(out)
    ckpt = wpath.with_name(wpath.name.replace(".safetensors", ".ckpt"))
    torch.manual_seed(cfg.seed)
    net = NoiseLevelNet(sample_shape, cfg.k, input_norm=cfg.input_norm, data_range=data_range,
                        channels=cfg.channels, log_r_range=default_log_r_range(sigma_min, sigma_max, data_range))
    grid = ve_classifier_grid(sigma_min, sigma_max, cfg.k, TAU_MIN)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    cfg_json = asdict(cfg)
    start, trained_seconds, loss_log = 0, 0.0, []
    recover_dir(ckpt)
    if (ckpt / "state.json").is_file():
        try:
            state = json.loads((ckpt / "state.json").read_text())
            same = _comparable(state["config"]) == _comparable(cfg_json) and state.get("sigma") == [sigma_min, sigma_max]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DdmkitError(f"the checkpoint {ckpt} is corrupt (state.json); delete it to start over") from None
        if not same:
            raise DdmkitError(f"{ckpt} holds a checkpoint of other settings; delete it or use the same settings (or another --out)")
        try:
            net.load_state_dict(load_file(str(ckpt / "net.safetensors")))
            opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
            start, trained_seconds, loss_log = int(state["step"]), float(state["seconds"]), state.get("loss_log", [])
        except Exception as e:  # truncated weights or optimizer state
            raise DdmkitError(f"the checkpoint {ckpt} is unreadable ({e.__class__.__name__}); delete it to start over") from None

    def save_ckpt(step: int, seconds: float) -> None:
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / "net.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "seconds": seconds, "config": cfg_json,
                                                    "sigma": [sigma_min, sigma_max], "loss_log": loss_log}))
        replace_dir(tmp, ckpt)

    net.train()
    t0 = time.time()
    running = None
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not progress, desc="noise classifier")
    step = start
    stopped_early = False
    for step in bar:
        x0 = data.batch(step, cfg.batch_size)
        gen = torch.Generator().manual_seed(cfg.seed * 7_919 + 1_000_003 + step)
        x, k = _noisy_batch(x0, grid, gen)
        lr = cfg.lr if cfg.lr_schedule == "constant" else cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = nn.functional.cross_entropy(net(x), k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
        if (step + 1) % 50 == 0:
            loss_log.append([step + 1, round(running, 4)])
        elapsed = trained_seconds + time.time() - t0
        if (step + 1) % cfg.checkpoint_every == 0:
            save_ckpt(step + 1, elapsed)
        if cfg.max_minutes and elapsed >= 60 * cfg.max_minutes and step + 1 < cfg.steps:
            stopped_early = True
            break
    done = (step + 1) if end > start else start
    seconds = trained_seconds + time.time() - t0
    save_ckpt(done, seconds)
    if stop_after is not None and done < cfg.steps:
        return {"step": done}
    metrics = evaluate_classifier(net, grid, data.held_out)
    full = {
        **(meta or {}),
        "sigma_grid": {"sigma_min": float(sigma_min), "sigma_max": float(sigma_max), "k": cfg.k, "tau_min": TAU_MIN,
                       "formula": "sigma_k = sigma_min (sigma_max/sigma_min)^tau_k, tau = linspace(1, tau_min, K); index 0 = sigma_max",
                       "first": float(grid[0]), "last": float(grid[-1])},
        "input_normalisation": _NORM_DOC[cfg.input_norm],
        "training": {**cfg_json, "steps_done": done, "stopped_at_time_limit": stopped_early, "seconds": round(seconds, 1),
                     "data": data.description, "noise": "x = x0 + sigma_k eps, k ~ U{0..K-1}, cross-entropy, Adam",
                     "loss_log": loss_log[-40:]},
        "held_out": metrics,
        "ddmkit_version": _version(),
    }
    if data.domain and "domain" not in full:
        full["domain"] = data.domain
    save_classifier(out, net, full)
    shutil.rmtree(ckpt, ignore_errors=True)
    return json.loads(mpath.read_text())


_NORM_DOC = {
    "rms": "data range mapped to [-1, 1]; x / rms(x) per sample, log rms(x) as an extra input (ddmkit.dmcmc.classifier)",
    "none": "data range mapped to [-1, 1]; the raw chain state otherwise (the official code's)",
    "raw+logrms": "data range mapped to [-1, 1]; the raw state, and log rms(x) (+ Gaussian bumps of it) as extra head inputs",
}


def _version() -> str:
    from .. import __version__

    return __version__


# ----------------------------------------------------------------------------------- model facts

@dataclass
class ModelFacts:
    """What a classifier needs to know about a model (available without its weights for shipped ones)."""

    sigma_min: float
    sigma_max: float
    sample_shape: tuple[int, ...]
    data_range: tuple[float, float] | None
    identity: dict
    domain: str | None
    mixture: object | None = None


SHIPPED_SHAPES = {"faces": (3, 32, 32), "digits": (1, 32, 32)}


def model_facts(spec: str, device: str = "cpu") -> ModelFacts:
    """Load `--model spec`; for the shipped faces/digits models whose weights are not there yet,
    fall back to their known facts (1000 linear betas 1e-4..0.02 -> sigma in [0.0100, 157.4])."""
    from ..assets import shipped_model
    from ..models.loading import load_model, model_identity

    spec = spec or "default"
    asset = shipped_model(spec)
    if asset is not None and asset.name in SHIPPED_SHAPES and not (asset.model_dir / "unet" / "config.json").is_file():
        from diffusers import DDPMScheduler

        from ..denoisers import vp_sigmas

        s = vp_sigmas(DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02).alphas_cumprod)
        domain = asset.name
        return ModelFacts(float(s[0]), float(s[-1]), SHIPPED_SHAPES[domain], (-1.0, 1.0),
                          {"name": "default" if domain == "faces" else domain, "sha256": None}, domain)
    den = load_model(spec, device=device)
    return ModelFacts(float(den.sigma_min), float(den.sigma_max), tuple(den.sample_shape),
                      tuple(den.data_range) if den.data_range else None, model_identity(den),
                      den.domain, unwrap(den).mixture if isinstance(unwrap(den), GMMDenoiser) else None)


# ----------------------------------------------------------------------------------- exact (mixtures)

class _ExactMixtureNet(nn.Module):
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
        return torch.logsumexp(logn, dim=2).float()

    def architecture(self) -> dict:
        return {"kind": self.kind, "sample_shape": list(self.sample_shape), "k": self.k, "input_norm": "none",
                "data_range": None}


def exact_mixture_classifier(mixture, sigma_min: float, sigma_max: float, k: int = 1000) -> NoiseLevelClassifier:
    """The exact posterior over the K grid levels for a Gaussian mixture (a reference classifier for
    tests and benchmarks; not a file)."""
    grid = ve_classifier_grid(sigma_min, sigma_max, k, TAU_MIN)
    net = _ExactMixtureNet(mixture, grid)
    return NoiseLevelClassifier(net, sigma_min, sigma_max, {"kind": "exact-mixture", "architecture": net.architecture()})
