"""Which model a boundary was fitted for: a name and the SHA-256 of its weights (spec decision 7.5)."""
from __future__ import annotations

import hashlib

from ..denoisers import unwrap
from ..models.loading import model_identity
from .hspace import find_network


def model_fingerprint(denoiser) -> dict:
    """`model_identity` (name + SHA-256 of the weights file); for an in-memory model without a file,
    the SHA-256 of its state dict (sorted names, raw bytes)."""
    ident = dict(model_identity(denoiser))
    if ident.get("sha256") is None:
        net = find_network(denoiser)
        h = hashlib.sha256()
        for name, t in sorted(net.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        ident["sha256"] = h.hexdigest()
        ident["sha256_of"] = "state_dict"
        ident["name"] = ident.get("name") or unwrap(denoiser).name
    return ident
