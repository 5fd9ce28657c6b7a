"""The noise-level classifier q(k|x) of DLG as an object (`NoiseLevelClassifier`: the sigma step), its files
(PATH.safetensors + PATH.json: format, architecture, the sigma grid, K, sample shape, data range, input
normalisation, model identity, training settings, held-out accuracy), the checks that a file fits a model,
and the oracle of exact mixtures (DMCMC spec sections 6 and 10)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..assets import shipped_noise_classifier
from ..denoisers import unwrap
from ..errors import DdmkitError
from ..integrators import randn_like
from ..io import atomic_write_bytes, atomic_write_json
from ..schedules import ve_classifier_grid
from .noise_net import CHANNELS, MLP_HIDDEN, RBF, ExactMixtureNet, NoiseLevelNet

FORMAT = "ddmkit-noise-classifier/1"
TAU_MIN = 1e-3
CLASSIFIER_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def exact_mixture_classifier(mixture, sigma_min: float, sigma_max: float, k: int = 1000) -> NoiseLevelClassifier:
    """The exact posterior over the K grid levels for a Gaussian mixture: p(k | x) under the training
    prior of every classifier (k uniform on the grid, x = x0 + sigma_k eps), i.e. softmax_k log p_{sigma_k}(x)
    with p_sigma = sum_c w_c N(mu_c, diag(s_c^2 + sigma^2)). A reference classifier, not a file."""
    grid = ve_classifier_grid(sigma_min, sigma_max, k, TAU_MIN)
    net = ExactMixtureNet(mixture, grid)
    return NoiseLevelClassifier(net, sigma_min, sigma_max, {"kind": "exact-mixture", "architecture": net.architecture()})


ORACLE = "oracle"


def oracle_classifier(denoiser, k: int = 1000) -> NoiseLevelClassifier:
    """`--noise-classifier oracle`: the exact posterior over the model's own grid (gmm: models only), so that
    the classifier's error and the chain's can be measured apart."""

    inner = unwrap(denoiser)
    mixture = getattr(inner, "mixture", None)
    if mixture is None:
        raise DdmkitError(f"--noise-classifier oracle needs an exact mixture (a gmm: model), not {inner.name!r}; "
                          "pass --noise-classifier PATH of a trained classifier")
    return exact_mixture_classifier(mixture, float(inner.sigma_min), float(inner.sigma_max), k)
