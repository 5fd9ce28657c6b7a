"""DLG settings as a file: what `ddmkit tune-dmcmc` chose, read back by `ddmkit sample --dmcmc --settings FILE`.

The file is the tune-dmcmc table itself (its "settings" entry) or a bare settings object:

    {"format": "ddmkit-dlg-settings", "version": 1,
     "dlg": DLGConfig.to_json(),                    # integrator, steps, eta, n_skip, burn-in, options, ...
     "outputs_per_chain": 50,                       # chains = ceil(num / outputs_per_chain)
     "model_identity": {"name", "sha256"},          # refused for any other model
     "noise_classifier": PATH, "noise_classifier_sha256": HEX,
     "total_nfe": 20.1, "tuned_on": {...}}          # per output + amortised burn-in; the search it came from
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..denoisers import Denoiser
from ..errors import DdmkitError
from .dlg import DLGConfig

FORMAT = "ddmkit-dlg-settings"
VERSION = 1


@dataclass(frozen=True)
class DLGSettings:
    """A tuned DLG configuration and the model, classifier and chain length it was tuned for."""

    config: DLGConfig
    outputs_per_chain: int
    model_identity: dict
    noise_classifier: str | None = None
    noise_classifier_sha256: str | None = None
    total_nfe: float | None = None
    tuned_on: dict = field(default_factory=dict)

    def chains_for(self, num: int) -> int:
        """Chains that give `num` outputs at (at most) the tuned outputs per chain."""
        return max(1, math.ceil(num / self.outputs_per_chain))

    def to_json(self, denoiser: Denoiser | None = None) -> dict:
        return {"format": FORMAT, "version": VERSION, "dlg": self.config.to_json(denoiser),
                "outputs_per_chain": self.outputs_per_chain, "model_identity": self.model_identity,
                "noise_classifier": self.noise_classifier, "noise_classifier_sha256": self.noise_classifier_sha256,
                "total_nfe": self.total_nfe, "tuned_on": self.tuned_on}

    def check_model(self, identity: dict, path: str | os.PathLike = "the settings") -> None:
        """Refuse settings tuned for another model (weights digest, else name, differ)."""
        mine = self.model_identity or {}
        same = (mine.get("sha256") == identity.get("sha256") if mine.get("sha256") or identity.get("sha256")
                else mine.get("name") == identity.get("name"))
        if not same:
            raise DdmkitError(f"{path} holds DLG settings tuned for model {mine.get('name')!r} (sha256 "
                              f"{str(mine.get('sha256'))[:12]}), not this one ({identity.get('name')!r}, "
                              f"{str(identity.get('sha256'))[:12]}); tune for this model with `ddmkit tune-dmcmc`")


def config_from_json(d: dict) -> DLGConfig:
    """The inverse of `DLGConfig.to_json` (unknown keys refused)."""
    names = {f.name for f in fields(DLGConfig)}
    extra = sorted(set(d) - names)
    if extra:
        raise DdmkitError(f"unknown DLG setting(s) {', '.join(extra)}")
    cfg = DLGConfig(**{k: v for k, v in d.items()})
    cfg.validate()
    return cfg


def load_settings(path: str | os.PathLike) -> DLGSettings:
    """Read a settings file or a tune-dmcmc table; a DdmkitError naming the problem otherwise."""
    p = Path(path)
    if not p.is_file():
        raise DdmkitError(f"--settings {p} does not exist; write one with `ddmkit tune-dmcmc ... --out {p}`")
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DdmkitError(f"--settings {p} is not a readable JSON file ({e.__class__.__name__})") from None
    if isinstance(d, dict) and "rows" in d and "target_nfe" in d:  # a tune-dmcmc table
        if d.get("settings") is None:
            raise DdmkitError(f"{p} is a tune-dmcmc table without chosen settings (no DLG setting fitted its budget, "
                              "or the search has not finished); rerun tune-dmcmc to finish it")
        d = d["settings"]
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise DdmkitError(f"{p} is not a DLG settings file (format {FORMAT!r}); write one with `ddmkit tune-dmcmc`")
    try:
        opc = int(d["outputs_per_chain"])
        if opc < 1:
            raise ValueError(opc)
        return DLGSettings(config_from_json(dict(d["dlg"])), opc, dict(d.get("model_identity") or {}),
                           d.get("noise_classifier"), d.get("noise_classifier_sha256"), d.get("total_nfe"),
                           dict(d.get("tuned_on") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise DdmkitError(f"{p} holds malformed DLG settings ({e.__class__.__name__}: {e}); rewrite it with "
                          "`ddmkit tune-dmcmc`") from None
