"""Small CNN attribute classifiers for the two built-in domains, and their training.

- faces: 6 binary attributes (`ddmkit.data.faces.ATTRIBUTES`), 6 logits with a sigmoid, RGB input.
- digits: 10-way softmax over the scikit-learn digits (upsampled to 32x32), 1-channel input.

Both take float32 (N, C, 32, 32) in [-1, 1] and expose the penultimate layer (128 dims, after ReLU)
through `features(x)`: the feature space of FD-faces / FD-digits. The trained weights ship in
`ddmkit/models/weights/{faces,digits}_classifier.{safetensors,json}`;
`scripts/train_classifiers.py` reproduces them.

    clf = load_attribute_classifier("faces")
    probs = clf.predict_proba(x)            # (N, 6) P(attribute = 1)
    feats = clf.features(x)                 # (N, 128)
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..data.faces import ATTRIBUTES, sample_faces, to_tensor_range
from ..data.folders import load_digits_images
from ..assets import judge_paths
from ..errors import DdmkitError, ModelLoadError
from ..io import atomic_write_bytes, atomic_write_json

DOMAINS = ("faces", "digits")
DIGIT_CLASSES = tuple(str(i) for i in range(10))

# Seeds of ddmkit.data.faces.sample_faces. The diffusion model's own training draws seeds
# seed * 1_000_003 + step (small numbers); these ranges are far from it and from each other.
FACES_TRAIN_SEED_BASE = 10_000_000  # classifier training batch k uses seed FACES_TRAIN_SEED_BASE + k
FACES_TEST_SEED = 20_000_000  # held-out faces for the accuracies in faces_classifier.json
DIGITS_SPLIT_SEED = 0  # permutation of the 1,797 digits; the last 20% are held out
DIGITS_HELD_OUT_FRACTION = 0.2


@dataclass
class ClassifierConfig:
    in_channels: int = 3
    num_outputs: int = 6
    output: str = "sigmoid"  # "sigmoid" (independent binary attributes) or "softmax" (one class)
    widths: tuple[int, ...] = (16, 32, 64)
    feature_dim: int = 128
    resolution: int = 32
    labels: tuple[str, ...] = ()


class AttributeClassifier(nn.Module):
    """Conv blocks (2x [conv3x3-BN-ReLU] + maxpool) -> flatten -> Linear -> ReLU (features) -> Linear (logits)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c = config.in_channels
        for w in config.widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = w
        self.trunk = nn.Sequential(*layers)
        side = config.resolution // 2 ** len(config.widths)
        self.embed = nn.Linear(c * side * side, config.feature_dim)
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(config.feature_dim, config.num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feature_dim), the input of the final linear layer."""
        return F.relu(self.embed(self.trunk(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) in one pass (eval mode: dropout is the identity)."""
        f = self.features(x)
        return f, self.head(self.dropout(f))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.config.output == "sigmoid" else torch.softmax(logits, dim=1)

    @torch.no_grad()
    def predict_proba(self, x, batch_size: int = 500) -> np.ndarray:
        """P(attribute = 1) (N, num_outputs) for sigmoid heads; class probabilities for softmax."""
        return self.extract(x, batch_size)[1]

    @torch.no_grad()
    def extract(self, x, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """Features (N, feature_dim) and probabilities (N, num_outputs) as float32 NumPy arrays."""
        self.eval()
        x = torch.as_tensor(np.asarray(x, np.float32)) if not isinstance(x, torch.Tensor) else x.float()
        feats, probs = [], []
        for i in range(0, x.shape[0], batch_size):
            f, logits = self.forward_both(x[i : i + batch_size])
            feats.append(f.numpy())
            probs.append(self.probabilities(logits).numpy())
        if not feats:
            return np.zeros((0, self.config.feature_dim), np.float32), np.zeros((0, self.config.num_outputs), np.float32)
        return np.concatenate(feats), np.concatenate(probs)


def faces_config() -> ClassifierConfig:

    return ClassifierConfig(in_channels=3, num_outputs=len(ATTRIBUTES), output="sigmoid", labels=tuple(ATTRIBUTES))


def digits_config() -> ClassifierConfig:
    return ClassifierConfig(in_channels=1, num_outputs=10, output="softmax", labels=DIGIT_CLASSES)


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise DdmkitError(f"unknown domain {domain!r}; choose 'faces' or 'digits'")


def weights_paths(domain: str, weights_dir: str | Path | None = None) -> tuple[Path, Path]:
    """The judge classifier's files: the shipped ones (`ddmkit.assets`), or those under `weights_dir`."""
    _check_domain(domain)
    shipped = judge_paths(domain)
    if weights_dir is None:
        return shipped
    return Path(weights_dir) / shipped[0].name, Path(weights_dir) / shipped[1].name


def weights_digest(domain: str, weights_dir: str | Path | None = None) -> str:
    """sha256 of the weights file (a cache key for reference statistics)."""
    path, _ = weights_paths(domain, weights_dir)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_attribute_classifier(domain: str, weights_dir: str | Path | None = None) -> AttributeClassifier:
    """The shipped classifier for "faces" or "digits", in eval mode (cached per process)."""
    _check_domain(domain)
    return _load(domain, str(weights_dir) if weights_dir is not None else None)


@lru_cache(maxsize=4)
def _load(domain: str, weights_dir: str | None) -> AttributeClassifier:
    from safetensors.torch import load_file

    wpath, jpath = weights_paths(domain, weights_dir)
    if not wpath.is_file() or not jpath.is_file():
        raise ModelLoadError(f"classifier weights {wpath} are missing; reinstall ddmkit or run "
                             "scripts/train_classifiers.py to recreate them")
    try:
        meta = json.loads(jpath.read_text())
        arch = dict(meta["architecture"])
        arch["widths"], arch["labels"] = tuple(arch["widths"]), tuple(arch["labels"])
        model = AttributeClassifier(ClassifierConfig(**arch))
        model.load_state_dict(load_file(str(wpath)))
    except (KeyError, TypeError, ValueError, RuntimeError, OSError) as e:
        raise ModelLoadError(f"cannot load classifier {wpath}: {e.__class__.__name__}: {str(e).splitlines()[0]}; "
                             "run scripts/train_classifiers.py to recreate it") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_classifier_metadata(domain: str, weights_dir: str | Path | None = None) -> dict:
    return json.loads(weights_paths(domain, weights_dir)[1].read_text())


# ----------------------------------------------------------------------------------------- training

def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


def augment_faces(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Light corruption so the classifier tolerates imperfect samples: blur on ~30% of the batch
    (sigma 0.3-0.8 px), Gaussian noise (std 0-0.08 in [-1, 1] units) on ~50% of it."""
    n = x.shape[0]
    blur_sigma = 0.3 + 0.5 * float(torch.rand((), generator=gen))
    blur_mask = (torch.rand(n, generator=gen) < 0.3).view(n, 1, 1, 1)
    x = torch.where(blur_mask, _gaussian_blur(x, blur_sigma), x)
    std = 0.08 * torch.rand(n, 1, 1, 1, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) < 0.5)
    return (x + std * torch.randn(x.shape, generator=gen)).clamp(-1.5, 1.5)


def augment_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to `max_shift` pixels (background -1 fills the border)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return out.gather(3, cols)


@dataclass
class TrainResult:
    model: AttributeClassifier
    held_out_accuracy: dict[str, float]
    info: dict = field(default_factory=dict)


def _cosine_lr(opt: torch.optim.Optimizer, lr: float, step: int, steps: int, warmup: int = 50) -> None:
    f = min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * step / steps))
    for g in opt.param_groups:
        g["lr"] = lr * f


def faces_held_out_accuracy(model: AttributeClassifier, num: int = 10_000, seed: int = FACES_TEST_SEED) -> dict[str, float]:

    images, labels = sample_faces(num, seed=seed)
    probs = model.predict_proba(to_tensor_range(images))
    acc = ((probs >= 0.5) == labels.astype(bool)).mean(axis=0)
    return {a: float(v) for a, v in zip(ATTRIBUTES, acc)}


def train_faces_classifier(steps: int = 1500, batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
                           test_num: int = 10_000, log: Callable[[str], None] | None = print) -> TrainResult:
    """Train the faces classifier on fresh faces (batch k: seed FACES_TRAIN_SEED_BASE + k), light
    blur/noise augmentation, AdamW + cosine schedule; report accuracy on `test_num` faces of seed
    FACES_TEST_SEED."""

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = AttributeClassifier(faces_config())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    t0 = time.time()
    model.train()
    for step in range(steps):
        images, labels = sample_faces(batch_size, seed=FACES_TRAIN_SEED_BASE + step)
        x = augment_faces(torch.from_numpy(to_tensor_range(images)), gen)
        _cosine_lr(opt, lr, step, steps)
        loss = F.binary_cross_entropy_with_logits(model(x), torch.from_numpy(labels).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log and (step % 100 == 0 or step == steps - 1):
            log(f"faces step {step:5d}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    acc = faces_held_out_accuracy(model, test_num)
    info = {"steps": steps, "batch_size": batch_size, "lr": lr, "torch_seed": seed,
            "train_face_seeds": f"{FACES_TRAIN_SEED_BASE}..{FACES_TRAIN_SEED_BASE + steps - 1} (one per batch)",
            "held_out_face_seed": FACES_TEST_SEED, "held_out_num": test_num,
            "augmentation": "blur sigma 0.3-0.8 px on ~30% of each batch; Gaussian noise std 0-0.08 on ~50%",
            "train_seconds": round(time.time() - t0, 1)}
    if log:
        log(f"faces held-out accuracy: {acc}")
    return TrainResult(model, acc, info)


def digits_split(num: int = 1797) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (train, held-out) index split of the digits: a seed-0 permutation, the last 20% held out."""
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(num)
    n_test = int(round(num * DIGITS_HELD_OUT_FRACTION))
    return np.sort(perm[: num - n_test]), np.sort(perm[num - n_test :])


def train_digits_classifier(epochs: int = 60, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                            log: Callable[[str], None] | None = print) -> TrainResult:
    """Train the digits classifier on the fixed train split with random shifts of up to 2 pixels."""

    x_all, y_all = load_digits_images(32)
    tr, te = digits_split(len(y_all))
    x_tr, y_tr = torch.from_numpy(x_all[tr]), torch.from_numpy(y_all[tr])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = AttributeClassifier(digits_config())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = (len(tr) + batch_size - 1) // batch_size
    steps, step, t0 = epochs * steps_per_epoch, 0, time.time()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(tr), generator=gen)
        for i in range(0, len(tr), batch_size):
            idx = order[i : i + batch_size]
            x = augment_shift(x_tr[idx], gen)
            _cosine_lr(opt, lr, step, steps)
            loss = F.cross_entropy(model(x), y_tr[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if log and (epoch % 10 == 0 or epoch == epochs - 1):
            log(f"digits epoch {epoch:3d}/{epochs} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    probs = model.predict_proba(x_all[te])
    acc = float((probs.argmax(1) == y_all[te]).mean())
    train_acc = float((model.predict_proba(x_all[tr]).argmax(1) == y_all[tr]).mean())
    info = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "torch_seed": seed,
            "split": f"numpy default_rng({DIGITS_SPLIT_SEED}).permutation(1797): first {len(tr)} train, "
                     f"last {len(te)} held out", "augmentation": "random shifts of up to 2 px",
            "train_accuracy": train_acc, "held_out_num": int(len(te)),
            "train_seconds": round(time.time() - t0, 1)}
    if log:
        log(f"digits held-out accuracy: {acc:.4f} (train {train_acc:.4f})")
    return TrainResult(model, {"digit": acc}, info)


def save_classifier(result: TrainResult, domain: str, command: str, weights_dir: str | Path | None = None) -> Path:
    """Write {domain}_classifier.safetensors and .json (architecture, training, accuracies), atomically."""
    from safetensors.torch import save


    wpath, jpath = weights_paths(domain, weights_dir)
    state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    blob = save(state, metadata={"domain": domain})
    atomic_write_bytes(wpath, blob)
    cfg = asdict(result.model.config)
    meta = {"domain": domain, "architecture": cfg,
            "input": "float32 (N, C, 32, 32) in [-1, 1]",
            "features": f"penultimate layer: ReLU(Linear(flatten(trunk(x)))), {cfg['feature_dim']} dims",
            "training": {"command": command, **result.info},
            "held_out_accuracy": result.held_out_accuracy,
            "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_json(jpath, meta)
    _load.cache_clear()
    return wpath
