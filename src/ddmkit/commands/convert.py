"""`ddmkit convert`: a pre-trained checkpoint -> a diffusers folder, written once, loaded fast after."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import __version__
from ..errors import DdmkitError

FORMATS = ("diffusers", "score-sde", "ddpm", "guided")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a score_sde / DDPM / ADM checkpoint (or a diffusers folder) to a diffusers folder",
        description="Convert a pre-trained checkpoint to a diffusers pipeline folder OUT (unet/ with safetensors "
        "weights, scheduler/, model_index.json, ddmkit_conversion.json with the source's SHA-256), written "
        "atomically: on any error nothing is written. --format score-sde: a score_sde .pth {model, ema, optimizer, "
        "step} and its config name (EMA weights by default); ddpm: an SDEdit / DiffusionCLIP / DDIM .ckpt; guided: "
        "an iDDPM/ADM .pt; diffusers: a diffusers folder (e.g. a hub download with .bin weights), re-saved with "
        "safetensors. Files are read with safetensors or torch.load(weights_only=True): nothing is unpickled "
        "that could run code, and nothing is downloaded. Use --list for the config names.",
        epilog="example: ddmkit convert checkpoint_24.pth --format score-sde --config cifar10_ncsnpp_continuous "
        "--out models/ncsnpp-cifar10",
    )
    p.add_argument("src", nargs="?", metavar="SRC", help="checkpoint file, or a diffusers folder for --format diffusers")
    p.add_argument("--format", choices=FORMATS, help="the format of SRC")
    p.add_argument("--config", help="architecture config name (see --list); not needed for --format diffusers")
    p.add_argument("--out", help="output folder (must not exist)")
    p.add_argument("--no-ema", action="store_true", help="score-sde / ddpm training checkpoints: use the raw "
                   "weights instead of the EMA shadows (the papers sample with the EMA)")
    p.add_argument("--list", action="store_true", help="list the config names per format and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models import configs

    if args.list:
        for fmt in FORMATS:
            print(f"{fmt}:")
            for name in configs.arch_names(fmt):
                arch = configs.get_arch(name)
                print(f"  {name:34s} {arch.unet_class:26s} {arch.scheduler['_class_name']:20s} {arch.note}")
        return 0
    missing = [f"--{k}" for k in ("format", "out") if not getattr(args, k)] + ([] if args.src else ["SRC"])
    if missing:
        raise DdmkitError(f"convert needs {', '.join(missing)} (or --list); see ddmkit convert --help")
    if args.format != "diffusers" and not args.config:
        raise DdmkitError(f"--format {args.format} needs --config NAME; names: {', '.join(configs.arch_names(args.format))}")
    from ..output_guard import check_target, refuse_inputs
    from .common import run_lock

    src, out = Path(args.src), check_target(args.out, "folder")
    refuse_inputs([out], [src])
    with run_lock(out):
        if out.exists() and any(out.iterdir()):
            raise DdmkitError(f"{out} already exists; choose a new --out (ddmkit does not overwrite models)")
        return _convert(args, src, out)


def _convert(args: argparse.Namespace, src: Path, out: Path) -> int:
    from ..models.loading import (
        _find_scheduler_config, _find_unet_dir, _load_unet, convert_raw_checkpoint, file_sha256, save_diffusers_folder,
    )

    t0 = time.time()
    if args.format == "diffusers":
        if not src.is_dir():
            raise DdmkitError(f"{src} is not a folder; --format diffusers converts a diffusers model folder")
        unet_dir = _find_unet_dir(src)
        unet = _load_unet(unet_dir, "cpu")
        sched = _find_scheduler_config(src)
        if sched is None:
            raise DdmkitError(f"{src} has no scheduler_config.json; ddmkit needs it to know the parametrisation")
        weights = next(p for p in (unet_dir / "diffusion_pytorch_model.safetensors", unet_dir / "diffusion_pytorch_model.bin")
                       if p.is_file())
        info = {"weights": "as stored"}
        digest = file_sha256(weights)
        identity = digest  # the same weights, re-serialised: keep the source's identity
    else:
        unet, arch, info = convert_raw_checkpoint(args.format, src, args.config, use_ema=not args.no_ema)
        sched = arch.scheduler
        digest = file_sha256(src)
        identity = None if args.no_ema else digest  # raw weights are another model than `score-sde:SRC@CONFIG`
    provenance = {
        "source": str(src), "source_sha256": digest, "format": args.format, "config": args.config, "use_ema": not args.no_ema,
        "identity_sha256": identity, **info,
        "unet_class": type(unet).__name__, "ddmkit_version": __version__,
    }
    save_diffusers_folder(unet, sched, out, provenance=provenance)
    n = sum(p.numel() for p in unet.parameters())
    print(f"{src} -> {out} ({type(unet).__name__}, {n / 1e6:.1f}M parameters, {info.get('weights')} weights, "
          f"{time.time() - t0:.1f} s); use --model {out}")
    return 0
