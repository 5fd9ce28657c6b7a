"""h-space: read and replace a UNet's bottleneck through a forward hook (no forked model code).

For diffusers `UNet2DModel`, h is the output of `unet.mid_block` (resnet -> attention -> resnet),
taken before the decoder's first skip concatenation (BoundaryDiffusion spec section 3). A forward
hook on that module records its output on every call and, when asked, returns a replacement, so
the decoder sees the new h together with the encoder skips of the *current* input. Other
architectures plug in by naming their bottleneck module as a dotted path (`module="middle_block"`
for an iDDPM/ADM UNet, for instance).

    with HSpace(unet) as hs:
        eps = unet(x, t).sample          # hs.h is the bottleneck of this call
        hs.replace(h_new)                # the next call's bottleneck is h_new (once)
        eps_edit = unet(x, t).sample
"""
from __future__ import annotations

from typing import Any

import torch

from ..denoisers import unwrap
from ..errors import DdmkitError

DEFAULT_MODULE = "mid_block"


def find_network(model: Any) -> torch.nn.Module:
    """The torch network behind a model: a denoiser (`.unet` / `.model`, under NFE counters) or a module."""
    inner = unwrap(model) if not isinstance(model, torch.nn.Module) else model
    for attr in ("unet", "model"):
        if not isinstance(inner, torch.nn.Module) and isinstance(getattr(inner, attr, None), torch.nn.Module):
            inner = getattr(inner, attr)
    if not isinstance(inner, torch.nn.Module):
        raise DdmkitError(
            f"{type(inner).__name__} has no neural network to hook; h-space editing needs a UNet model "
            "(a diffusers folder or the shipped default), not an exact mixture"
        )
    return inner


def resolve_module(network: torch.nn.Module, path: str) -> torch.nn.Module:
    """The submodule at a dotted path (e.g. 'mid_block', 'middle_block', 'mid.block_2')."""
    try:
        return network.get_submodule(path)
    except AttributeError:
        names = ", ".join(n for n, _ in network.named_children())
        raise DdmkitError(
            f"the network has no module {path!r} to read h from; give the dotted path of its bottleneck "
            f"(top-level modules: {names})"
        ) from None


class HSpace:
    """A context manager holding a forward hook on the bottleneck module.

    Attributes after each forward call: `h` (the bottleneck the module computed on that call's
    input, a detached copy, also when it was replaced), `calls` (number of hooked calls).
    `replace(h, once=True)` makes the next call (or every call until `clear()`) use `h` instead.
    """

    def __init__(self, model: Any, module: str = DEFAULT_MODULE):
        self.network = find_network(model)
        self.module_path = module
        self.module = resolve_module(self.network, module)
        self.h: torch.Tensor | None = None
        self.calls = 0
        self._replacement: torch.Tensor | None = None
        self._once = True
        self._handle = None

    def __enter__(self) -> "HSpace":
        if self._handle is not None:
            raise DdmkitError("this HSpace hook is already active")
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._replacement = None

    def replace(self, h: torch.Tensor | None, *, once: bool = True) -> None:
        """Use `h` as the bottleneck of the next call (`once`) or of every call until `clear()`."""
        self._replacement = None if h is None else h.detach()
        self._once = once

    def clear(self) -> None:
        self._replacement = None

    @property
    def pending(self) -> bool:
        """Whether a replacement waits for the next call."""
        return self._replacement is not None

    def _hook(self, module: torch.nn.Module, inputs: tuple, output: Any) -> Any:
        is_tuple = isinstance(output, tuple)
        out = output[0] if is_tuple else output
        if not isinstance(out, torch.Tensor):
            raise DdmkitError(f"module {self.module_path!r} returns {type(out).__name__}, not a tensor; name another bottleneck module")
        self.h = out.detach().clone()
        self.calls += 1
        if self._replacement is None:
            return None
        rep = self._replacement
        if self._once:
            self._replacement = None
        if rep.shape != out.shape:
            raise DdmkitError(f"replacement h has shape {tuple(rep.shape)} but the bottleneck has {tuple(out.shape)}")
        rep = rep.to(device=out.device, dtype=out.dtype)
        return (rep, *output[1:]) if is_tuple else rep


@torch.no_grad()
def hspace_shape(model: Any, module: str = DEFAULT_MODULE) -> tuple[int, ...]:
    """The shape of one sample's h, measured with one forward call on zeros (batch 1)."""
    den = unwrap(model)
    shape = getattr(den, "sample_shape", None)
    if shape is None:
        raise DdmkitError("the model has no sample_shape; cannot probe its h-space")
    net = find_network(model)
    device = next(net.parameters()).device
    with HSpace(net, module) as hs:
        net(torch.zeros((1, *shape), device=device), torch.full((1,), 0, device=device, dtype=torch.long))
    return tuple(hs.h.shape[1:])
