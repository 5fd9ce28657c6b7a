"""The FID Inception-v3 weights: found, checked and loaded by ddmkit itself, never unpickled.

The published file is torch-fidelity's conversion of the TensorFlow FID graph (Heusel et al. 2017),
`weights-inception-2015-12-05-6726825d.pth` (about 92 MB, PUBLISHED_URL), a plain state dict. ddmkit
reads it with `torch.load(weights_only=True)` (a `.safetensors` file with safetensors), checks its
sha256 where the file carries the published name, then hands torch-fidelity's extractor tensors only:
torch-fidelity's own loader (`torch.load(weights_only=False)`) never sees a user's file.

Nothing is downloaded. The file is given by path (CLI: --inception-weights, else
$DDMKIT_INCEPTION_WEIGHTS, both resolved by the command), else it is looked up in the torch hub cache
(`torch.hub.get_dir()/checkpoints/`, where torch-fidelity itself would have downloaded it).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DdmkitError
from ..io import file_sha256
from . import fidelity

PUBLISHED_FILE = "weights-inception-2015-12-05-6726825d.pth"
PUBLISHED_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + PUBLISHED_FILE
# torch hub's naming convention, NAME-<first hex digits of the sha256>.EXT. torch-fidelity publishes no
# digest and its loader does not check this one (pytorch-fid's differently hosted file has the same
# suffix), so it is unverified here: a mismatch is recorded and reported, not refused.
PUBLISHED_SHA256_PREFIX = "6726825d"
MAX_BYTES = 512 * 2**20
EXTRACTOR_NAME = "inception-v3-compat"
HOW = f"download {PUBLISHED_FILE} from {PUBLISHED_URL} and pass --inception-weights PATH"


@dataclass(frozen=True)
class InceptionWeights:
    """A weights file that passed the checks: its path and sha256."""

    path: Path
    sha256: str

    @property
    def matches_published_prefix(self) -> bool:
        return self.sha256.startswith(PUBLISHED_SHA256_PREFIX)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "published_file": self.path.name == PUBLISHED_FILE,
                "sha256_starts_with_" + PUBLISHED_SHA256_PREFIX: self.matches_published_prefix}


def hub_cache_path() -> Path:
    """Where torch-fidelity's download would sit: torch.hub.get_dir()/checkpoints/PUBLISHED_FILE."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / PUBLISHED_FILE


def check_weights_file(path: str | os.PathLike | None, label: str = "Inception weights") -> InceptionWeights:
    """The weights file `path` (None: the torch hub cache), checked: a regular file of sane size; its
    sha256 is recorded (compare `matches_published_prefix`). Raises the one-line DdmkitError otherwise."""
    if path is None:
        p = hub_cache_path()
        if not p.is_file():
            raise DdmkitError(f"standard FID needs the Inception-v3 FID weights (none in the torch hub cache "
                              f"{p.parent}); {HOW} (or set DDMKIT_INCEPTION_WEIGHTS=PATH)")
    else:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DdmkitError(f"{label}: {p} not found; {HOW}")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise DdmkitError(f"Inception weights {p} are {size / 2**20:.0f} MB, far larger than the 92 MB FID Inception; {HOW}")
    return InceptionWeights(p, file_sha256(p))


def load_state_dict(weights: InceptionWeights) -> dict[str, Any]:
    """The tensors of a checked weights file: safetensors, or torch.load(weights_only=True)."""
    import torch

    p = weights.path
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p), device="cpu")
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DdmkitError(f"cannot load Inception weights {p} as tensors only ({_why(e)}); ddmkit never unpickles "
                          f"code: give torch-fidelity's {PUBLISHED_FILE} (a plain state dict) or a .safetensors "
                          "file") from None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DdmkitError(f"Inception weights {p} are not a state dict of tensors; {HOW}")
    return dict(state)


def build_extractor(state: dict[str, Any], source: str = "the weights", device: str = "cpu"):
    """torch-fidelity's Inception extractor (pool3, 2048 features) with the tensors `state`.

    The extractor's constructor reads its weights from a file object; it is given an in-memory copy
    of `state` re-serialised by ddmkit (tensors only), never the user's file."""
    import torch

    cls = fidelity.inception_class()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    try:
        model = cls(EXTRACTOR_NAME, ["2048"], feature_extractor_weights_path=buf)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:200]
        raise DdmkitError(f"{source} do not fit torch-fidelity's Inception-v3 ({detail}); {HOW}") from None
    return model.to(device).eval()


def load_extractor(path: str | os.PathLike | None = None, device: str = "cpu", label: str = "Inception weights"):
    """(extractor, InceptionWeights): check, safely load and build in one call."""
    weights = check_weights_file(path, label)
    return build_extractor(load_state_dict(weights), f"Inception weights {weights.path}", device), weights


def _why(e: BaseException) -> str:
    """The telling part of a loader's error: torch's weights-only refusal names the global it refused."""
    text = str(e)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
        text = text.split(". ", 1)[0]
    text = " ".join(text.split())
    return text[:160] if text else e.__class__.__name__
