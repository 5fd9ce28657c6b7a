"""Helpers shared by several commands: the --model/--device flags, output locking under torchrun."""
from __future__ import annotations

import argparse
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from ..distributed import Dist
from ..distributed import resolve_device as _resolve_device
from ..errors import DdmkitError
from ..models.loading import parse_raw_spec
from ..output_guard import output_lock
from .argtypes import path_text


def add_model_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", type=path_text,
                   help="'default' (shipped faces DDPM), 'digits', gmm:PATH.json, a diffusers folder, a hub id (from "
                   "the local Hugging Face cache) or a raw checkpoint FORMAT:PATH@CONFIG (default: default)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA if present), 'cpu', 'cuda', 'cuda:1', ...")
    g = p.add_argument_group("loading a diffusers folder or hub id")
    g.add_argument("--revision", default=None, help="hub ids: the branch, tag or commit (default: main)")
    g.add_argument("--variant", default=None, help="the weights variant, e.g. fp16 (diffusion_pytorch_model.fp16.safetensors)")
    g.add_argument("--torch-dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="the network's weights dtype in memory (default: as stored); --dtype is the autocast precision")
    g.add_argument("--allow-download", action="store_true",
                   help="hub ids: let huggingface_hub download what the local cache lacks (default: never download)")


def model_options(args: argparse.Namespace) -> dict:
    """The load_model keywords of the model flags (`add_model_argument`)."""
    return {"revision": getattr(args, "revision", None), "variant": getattr(args, "variant", None),
            "torch_dtype": getattr(args, "torch_dtype", None), "allow_download": getattr(args, "allow_download", False)}


def add_overwrite_argument(p: argparse.ArgumentParser, what: str = "--out") -> None:
    p.add_argument("--overwrite", action="store_true",
                   help=f"write into {what} even where it holds files ddmkit did not write (never onto an input)")


def resolve_device(name: str) -> str:
    """'auto' -> cuda if present, else cpu; a CUDA device where there is none is a DdmkitError."""
    return _resolve_device(name)


def model_input_paths(spec: str | None) -> list[Path]:
    """The files or folders a --model spec reads (none for shipped names and hub ids)."""
    spec = spec or "default"
    if spec.startswith("gmm:"):
        return [Path(spec[4:])]
    try:
        raw = parse_raw_spec(spec)
    except DdmkitError:
        return []
    if raw is not None:
        return [raw[1]]
    p = Path(spec).expanduser()
    return [p] if p.exists() else []


def on_main(dist: Dist | None, check) -> None:
    """Run `check()` on the main worker only; a DdmkitError it raises is raised on every worker (so no
    worker waits at a barrier for one that has stopped)."""
    problem = None
    if dist is None or dist.is_main:
        try:
            check()
        except DdmkitError as e:
            problem = str(e)
    if dist is not None and dist.enabled:
        problem = dist.broadcast_object(problem)
    if problem:
        raise DdmkitError(problem)


@contextmanager
def run_lock(out: str | Path, dist: Dist | None = None) -> Iterator[None]:
    """One run per output path: the main worker takes the lock and tells the others whether it got it,
    so a second run (of any number of workers) on the same path exits 2 at once."""
    with ExitStack() as stack:
        on_main(dist, lambda: stack.enter_context(output_lock(out)))
        yield
