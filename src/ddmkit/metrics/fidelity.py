"""torch-fidelity's FID Inception extractor, imported without its package `__init__`.

torch-fidelity's `__init__` imports every extractor, and with them torchvision; the Inception-v3 FID
extractor itself (`feature_extractor_inceptionv3` and the four small modules it imports) is plain torch.
ddmkit loads exactly those modules from the installed package, pinned to one release, each executed
in its own module object whose `torch_fidelity.*` imports resolve to the others: nothing is added to
or removed from `sys.modules`, torchvision is never needed, and any other release or a changed
layout fails loudly with a one-line `DdmkitError` naming the install command.

Install: pip install --no-deps torch-fidelity==TORCH_FIDELITY_VERSION (the `ddmkit[fid]` extra).
"""
from __future__ import annotations

import builtins
import importlib.metadata
import importlib.util
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import DdmkitError

TORCH_FIDELITY_VERSION = "0.4.0"
INSTALL = f"pip install --no-deps torch-fidelity=={TORCH_FIDELITY_VERSION}"
# the modules behind FeatureExtractorInceptionV3, in import order (0.4.0)
INCEPTION_MODULES = ("defaults", "deprecations", "helpers", "feature_extractor_base",
                     "interpolate_compat_tensorflow", "feature_extractor_inceptionv3")


def package_dir() -> Path:
    """The installed torch_fidelity folder, after checking that it is the pinned release."""
    try:
        version = importlib.metadata.version("torch-fidelity")
    except importlib.metadata.PackageNotFoundError:
        raise DdmkitError(f"standard FID needs torch-fidelity {TORCH_FIDELITY_VERSION}: {INSTALL} "
                          "(or pip install 'ddmkit[fid]')") from None
    if version != TORCH_FIDELITY_VERSION:
        raise DdmkitError(f"torch-fidelity {version} is installed, but ddmkit's FID is pinned to "
                          f"{TORCH_FIDELITY_VERSION}: {INSTALL}")
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        raise DdmkitError(f"torch-fidelity's metadata is installed but its package is missing: {INSTALL}")
    return Path(list(spec.submodule_search_locations)[0])


def load_modules(names: tuple[str, ...], provided: dict[str, types.ModuleType] | None = None
                 ) -> dict[str, types.ModuleType]:
    """Execute torch_fidelity/<name>.py for each name, in order, as private module objects.

    Inside them `from torch_fidelity.X import ...` resolves to the module X loaded here (or given in
    `provided`); any other `torch_fidelity` import raises, so a changed layout fails loudly."""
    root = package_dir()
    loaded: dict[str, types.ModuleType] = {f"torch_fidelity.{k}": v for k, v in (provided or {}).items()}

    def _import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and (name == "torch_fidelity" or name.startswith("torch_fidelity.")):
            if name not in loaded or not fromlist:
                raise ImportError(f"{name} (imported as {'from ... import' if fromlist else 'import'}) "
                                  "is outside the modules ddmkit loads")
            return loaded[name]
        return builtins.__import__(name, globals, locals, fromlist, level)

    scope = dict(vars(builtins), __import__=_import)
    for short in names:
        path = root / f"{short}.py"
        try:
            code = compile(path.read_bytes(), str(path), "exec")
            module = types.ModuleType(f"torch_fidelity.{short}")
            module.__file__ = str(path)
            module.__builtins__ = scope
            exec(code, module.__dict__)
        except Exception as e:
            raise DdmkitError(f"cannot load torch-fidelity's {short}.py ({e.__class__.__name__}: "
                              f"{_first_line(e)}); reinstall it: {INSTALL}") from None
        loaded[module.__name__] = module
    return loaded


@lru_cache(maxsize=1)
def inception_class() -> Any:
    """torch-fidelity's `FeatureExtractorInceptionV3` (TF-FID-compatible Inception-v3, uint8 input)."""
    import torch

    module = load_modules(INCEPTION_MODULES)["torch_fidelity.feature_extractor_inceptionv3"]
    cls = getattr(module, "FeatureExtractorInceptionV3", None)
    if (not isinstance(cls, type) or not issubclass(cls, torch.nn.Module)
            or getattr(cls, "INPUT_IMAGE_SIZE", None) != 299 or "2048" not in cls.get_provided_features_list()):
        raise DdmkitError(f"torch-fidelity's feature_extractor_inceptionv3 is not the expected one; {INSTALL}")
    return cls


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""
