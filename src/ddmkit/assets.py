"""The shipped assets, in one place: each shipped model's folder, its noise-level classifier, its
boundaries and the judge (attribute / class classifier) of its data domain.

    asset = shipped_model("default")      # ShippedModel(name="faces", domain="faces", ...)
    asset.model_dir, asset.noise_classifier, asset.boundaries_dir, judge_paths(asset.domain)

Everything lives under `WEIGHTS_DIR` (the package's models/weights/); the commands that made each
file are in `train_script` (and the files' own metadata).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "models" / "weights"
DOMAINS = ("faces", "digits")


@dataclass(frozen=True)
class ShippedModel:
    """A model shipped with ddmkit and the assets made for it."""

    name: str  # folder name under WEIGHTS_DIR
    domain: str  # the data domain: metrics (FD-faces / FD-digits) and the judge classifier
    train_script: str
    has_boundaries: bool = False

    @property
    def model_dir(self) -> Path:
        return WEIGHTS_DIR / self.name

    @property
    def noise_classifier(self) -> Path:
        """The stem of the noise-level classifier (PATH.safetensors + PATH.json) made for this model."""
        return WEIGHTS_DIR / f"{self.name}_noise_classifier"

    @property
    def boundaries_dir(self) -> Path | None:
        return WEIGHTS_DIR / "boundaries" if self.has_boundaries else None


_MODELS = {
    "faces": ShippedModel("faces", "faces", "scripts/train_default_faces.sh", has_boundaries=True),
    "digits": ShippedModel("digits", "digits", "scripts/train_default_digits.sh"),
    "digits_ve": ShippedModel("digits_ve", "digits", "scripts/train_digits_ve.sh"),
}
# the names `--model` accepts for them ("default" is the faces model)
MODEL_NAMES = {"default": "faces", "faces": "faces", "digits": "digits", "digits-ve": "digits_ve"}


def is_shipped(spec: str | None) -> bool:
    return (spec or "default") in MODEL_NAMES


def shipped_model(spec: str | None) -> ShippedModel | None:
    """The shipped model a `--model` name stands for (None for anything else)."""
    key = MODEL_NAMES.get(spec or "default")
    return _MODELS[key] if key else None


def judge_paths(domain: str) -> tuple[Path, Path]:
    """(weights, metadata) of the judge classifier of a data domain (FD features, attribute scores)."""
    return WEIGHTS_DIR / f"{domain}_classifier.safetensors", WEIGHTS_DIR / f"{domain}_classifier.json"


def shipped_noise_classifier(name: str) -> Path | None:
    """The stem of the shipped noise-level classifier `name` stands for: a shipped model's name ('default',
    'digits', 'digits-ve') or a shipped classifier's own name ('faces_noise_classifier'); None otherwise."""
    if name in MODEL_NAMES:
        return _MODELS[MODEL_NAMES[name]].noise_classifier
    return next((a.noise_classifier for a in _MODELS.values() if name == a.noise_classifier.name), None)
