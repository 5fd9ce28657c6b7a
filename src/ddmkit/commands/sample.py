"""`ddmkit sample`: draw samples with any integrator; resumable, with a manifest of the measured NFE."""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DdmkitError


def add_model_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="'default' (shipped faces DDPM), 'digits', gmm:PATH.json, or a diffusers folder (default: default)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA if present), 'cpu', 'cuda', 'cuda:1', ...")


def resolve_device(name: str) -> str:
    """'auto' -> cuda if present, else cpu; a CUDA device where there is none is a DdmkitError."""
    from ..distributed import resolve_device as resolve

    return resolve(name)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="draw samples with one of the seven integrators",
        description="Draw samples from a model with an integrator (kar1, kar2, rd, em, pf, rk45, ddim). "
        "Writes OUT/samples.npz, PNGs and a grid for image models, and OUT/manifest.json with the measured "
        "NFE per sample. An interrupted run resumes when the same command is run again.",
        epilog="example: ddmkit sample --model default --integrator kar1 --steps 10 --num 64 --out runs/kar1-10; "
        "on N workers: torchrun --nproc_per_node N -m ddmkit -- sample ... (docs/scale-out.md)",
    )
    add_model_argument(p)
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="network precision: fp32, or bf16/fp16 autocast on CUDA (default: fp32)")
    p.add_argument("--integrator", default="kar1", help="kar1, kar2, rd, em, pf, rk45 or ddim (default: kar1)")
    p.add_argument("--steps", type=int, default=18, help="the integrator's N (grid points; for ddim the NFE)")
    p.add_argument("--num", type=int, default=64, help="number of samples")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="base seed; sample i uses its own seed derived from it")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-tweedie", action="store_true", help="skip the final Tweedie denoising step (1 NFE)")
    p.add_argument("--eta", type=float, default=None,
                   help="with --dmcmc: the DLG Langevin step size (same as --dlg-eta); otherwise ddim's eta")
    p.add_argument("--ddim-eta", type=float, default=None, help="ddim: eta (0 deterministic, 1 DDPM-like)")
    p.add_argument("--s-churn", type=float, default=None, help="kar2: S_churn (default 80)")
    p.add_argument("--s-noise", type=float, default=None, help="kar2: S_noise (default 1.007)")
    p.add_argument("--s-tmin", type=float, default=None,
                   help="kar2: churn only where sigma >= S_tmin (model's sigma units; default 0.05 x data width)")
    p.add_argument("--s-tmax", type=float, default=None,
                   help="kar2: churn only where sigma <= S_tmax (default 1 x data width; e.g. --s-tmin 2 --s-tmax 400 "
                        "churns at high noise only)")
    p.add_argument("--rtol", type=float, default=None, help="rk45: relative tolerance (default 1e-5)")
    p.add_argument("--atol", type=float, default=None, help="rk45: absolute tolerance (default 1e-5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dmcmc_arguments(p)
    p.set_defaults(func=run)


def add_dmcmc_arguments(p: argparse.ArgumentParser) -> None:
    """Denoising MCMC flags (ddmkit.dmcmc): DLG chains hand each sample to --integrator at their own sigma."""
    g = p.add_argument_group(
        "Denoising MCMC (--dmcmc)",
        "DLG chains (Kim & Ye 2023) start every integration at the chain's own noise level; --integrator and "
        "--steps are then the integrator's. NFE per sample = n_skip + integrator + 1 (Tweedie); burn-in is reported "
        "separately. The DLG step size is --eta (or --dlg-eta); DDIM's eta is then --ddim-eta. Example: ddmkit sample --dmcmc "
        "--integrator kar1 --steps 4 --n-skip 4 --num 64 --out runs/dlg-kar1")
    g.add_argument("--dmcmc", action="store_true", help="sample with Denoising Langevin Gibbs chains")
    g.add_argument("--dlg-eta", type=float, default=0.8,
                   help="Langevin step size in [0,1]-data units (scaled by 4 for [-1,1] models; default 0.8)")
    g.add_argument("--n-skip", type=int, default=10, help="Langevin-Gibbs steps per output (default 10)")
    g.add_argument("--chains", type=int, default=0, help="persistent chains (default: min(--num, --batch-size))")
    g.add_argument("--noise-classifier", metavar="PATH", default=None,
                   help="PATH(.safetensors/.json) from `ddmkit noise-classifier train`, or 'oracle' (gmm: models: the "
                   "exact posterior over the sigma grid) (default: the one shipped for default/digits)")
    g.add_argument("--classifier-dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="the noise-level classifier's precision: fp32, or bf16 (CPU/CUDA) / fp16 (CUDA) autocast "
                   "(default: fp32)")
    g.add_argument("--classifier-compile", action="store_true",
                   help="torch.compile the noise-level classifier (CUDA graphs on a GPU; compiles on the first batch)")
    g.add_argument("--sigma-step", choices=("argmax", "sample"), default="argmax",
                   help="sigma <- grid[argmax q(k|x)] (the paper's) or a draw from q")
    g.add_argument("--select", choices=("min_sigma", "last"), default="min_sigma",
                   help="state handed to the integrator: the segment's minimum-sigma one (the paper's) or the last")
    g.add_argument("--burn-in", default="auto",
                   help="auto, cifar10 (KAR2 N=20, +0.5 eps, 10x eta 0.5, 10x eta), celebahq (.. 50x 1.6, 20x eta), "
                   "or KAR2_STEPS:PERTURB:N1@ETA1,N2@eta")
    g.add_argument("--langevin-clip", choices=("model", "on", "off"), default="model",
                   help="clamp D to the data range inside the Langevin score: as the model does (model; DDPMs clip), "
                   "on, or off (the integrator and Tweedie keep the model's setting)")
    g.add_argument("--tweedie-sigma", type=float, default=None,
                   help="sigma of DLG's final Tweedie step (default: the model's sigma_min; the official CelebA-HQ "
                   "runs use 1e-3)")


def resolve_eta_flags(args: argparse.Namespace) -> None:
    """--eta is the DLG step size with --dmcmc (the paper's eta) and DDIM's eta otherwise; --dlg-eta and
    --ddim-eta name each one explicitly."""
    ddim_eta = getattr(args, "ddim_eta", None)
    if getattr(args, "dmcmc", False):
        if args.eta is not None:
            if getattr(args, "dlg_eta", 0.8) != 0.8 and args.dlg_eta != args.eta:
                raise DdmkitError("give the DLG step size once: --eta or --dlg-eta")
            args.dlg_eta = args.eta
        args.eta = ddim_eta
    elif ddim_eta is not None:
        if args.eta is not None and args.eta != ddim_eta:
            raise DdmkitError("give DDIM's eta once: --eta or --ddim-eta")
        args.eta = ddim_eta


def integrator_options_from_args(args: argparse.Namespace) -> dict:
    opts = {}
    for flag, key, integrators in (("eta", "eta", ("ddim",)), ("s_churn", "s_churn", ("kar2",)),
                                   ("s_noise", "s_noise", ("kar2",)),
                                   ("s_tmin", "s_tmin", ("kar2",)), ("s_tmax", "s_tmax", ("kar2",)), ("rtol", "rtol", ("rk45",)),
                                   ("atol", "atol", ("rk45",))):
        value = getattr(args, flag, None)
        if value is not None:
            if args.integrator not in integrators:
                raise DdmkitError(f"--{flag.replace('_', '-')} applies to {'/'.join(integrators)} only, not {args.integrator}")
            opts[key] = value
    return opts


def check_dmcmc_arguments(args: argparse.Namespace) -> None:
    """DLG flags need --dmcmc (a flag left at its default is fine)."""
    if getattr(args, "dmcmc", False):
        return
    defaults = {"dlg_eta": 0.8, "n_skip": 10, "chains": 0, "noise_classifier": None, "sigma_step": "argmax",
                "classifier_dtype": "fp32", "classifier_compile": False,
                "select": "min_sigma", "burn_in": "auto", "tweedie_sigma": None, "langevin_clip": "model"}
    given = [k for k, v in defaults.items() if getattr(args, k, v) != v]
    if given:
        raise DdmkitError(f"--{given[0].replace('_', '-')} applies to --dmcmc sampling only; add --dmcmc")


def run(args: argparse.Namespace) -> int:
    from .. import distributed

    validate_sample_arguments(args)
    with distributed.session(args.device) as dist:
        return run_on(args, dist)


def validate_sample_arguments(args: argparse.Namespace) -> dict:
    """Check the flags before anything is loaded or written; returns the integrator options."""
    from ..integrators import get_integrator

    get_integrator(args.integrator)
    if args.steps < 1:
        raise DdmkitError(f"--steps must be >= 1, got {args.steps}")
    if args.integrator in ("kar1", "kar2") and args.steps < 2:
        raise DdmkitError(f"{args.integrator} needs --steps >= 2 (N grid points including the final 0)")
    if args.num < 1 or args.batch_size < 1:
        raise DdmkitError("--num and --batch-size must be >= 1")
    resolve_eta_flags(args)
    args.options = integrator_options_from_args(args)
    check_dmcmc_arguments(args)
    return args.options


def run_on(args: argparse.Namespace, dist) -> int:
    """The sample command on one worker of `dist` (one process: rank 0 of 1).

    Plain sampling: the indices not yet on disk (read by rank 0 and broadcast, so every worker sees
    the same set) are cut into the run's canonical batches and dealt round-robin to the workers
    (`distributed_batches`); each worker writes its own per-batch parts into OUT/parts (atomic files);
    after a barrier rank 0 merges them and writes the folder and manifest. Sample i depends only on
    (seed, i) and its batch, so the result is the same for any number of workers and a resumed run
    may use another number of workers."""
    from ..denoisers import set_precision
    from ..models.loading import load_model, model_identity
    from ..outputs import PartStore, write_sample_folder
    from ..sampling import sample

    options = args.options
    device = dist.device
    out = Path(args.out)
    if (out / "manifest.json").is_file():
        raise DdmkitError(f"{out} already holds a finished run (manifest.json); choose a new --out")
    denoiser = load_model(args.model, device=device)
    set_precision(denoiser, getattr(args, "dtype", "fp32"))
    settings = {
        "command": "sample", "model": args.model, "model_identity": model_identity(denoiser),
        "integrator": args.integrator, "steps": args.steps, "num": args.num, "seed": args.seed,
        "tweedie": not args.no_tweedie, "options": options, "dtype": getattr(args, "dtype", "fp32"),
    }
    if getattr(args, "dmcmc", False):
        from ..dmcmc.run import run_dmcmc_sample

        return run_dmcmc_sample(args, denoiser, settings, device, dist=dist)
    store = PartStore(out, settings)
    done = dist.broadcast_object(sorted(store.done_indices()) if dist.is_main else None)
    missing = sorted(set(range(args.num)) - set(done))
    batches = distributed_batches(missing, args.batch_size, dist)
    todo = [i for b in batches for i in b]
    store.start()
    dist.barrier()  # nobody writes a part before every worker has its share
    t0 = time.time()

    def save_batch(indices, x):
        store.write(indices, x.numpy())
        fault_injection_after_part()

    result = None
    if todo:
        result = sample(
            denoiser, integrator=args.integrator, steps=args.steps, seed=args.seed, batch_size=args.batch_size,
            batches=batches, use_tweedie=not args.no_tweedie, options=options,
            progress=not args.quiet and dist.is_main, callback=save_batch,
        )
    seconds = time.time() - t0
    nfe_sum = result.nfe_per_sample * len(todo) if result is not None else 0.0
    totals = dist.all_reduce_sum([nfe_sum, len(todo)])
    ranks = dist.all_gather_object({"rank": dist.rank, "device": device, "host": socket.gethostname(),
                                    "samples": len(todo), "seconds": round(seconds, 3)})
    dist.barrier()  # every part is on disk
    if not dist.is_main:
        return 0
    merged = store.gather(range(args.num), shared_hint=dist.enabled)
    if result is None:  # nothing sampled on this worker: measure one sample for the settings (and NFE)
        result = sample(denoiser, integrator=args.integrator, steps=args.steps, seed=args.seed, batch_size=1,
                        indices=[0], use_tweedie=not args.no_tweedie, options=options)
    # the NFE per sample over every worker's samples (rk45's differs between batches)
    nfe_per_sample = float(totals[0] / totals[1]) if totals[1] > 0 else result.nfe_per_sample
    sampler_settings = result.settings
    inner_range = getattr(denoiser, "data_range", None)
    manifest = {
        **settings,
        "ddmkit_version": __version__,
        "domain": getattr(denoiser, "domain", None),
        "data_range": list(inner_range) if inner_range else None,
        "sample_shape": list(denoiser.sample_shape),
        "batch_size": args.batch_size,
        "device": device,
        "nfe_per_sample": nfe_per_sample,
        "sampler_settings": sampler_settings,
        "resumed_with_done": len(done),
        "seconds": round(time.time() - t0, 3),
        "world_size": dist.world_size,
        "ranks": ranks,
    }
    write_sample_folder(out, merged["x"], merged["index"], manifest, inner_range, denoiser.is_image)
    store.remove()
    workers = f" on {dist.world_size} workers" if dist.enabled else ""
    print(f"{args.num} samples, {nfe_per_sample:g} NFE each{workers} -> {out}")
    return 0


def distributed_batches(missing: list[int], batch_size: int, dist) -> list[list[int]]:
    """This worker's batches of the missing indices.

    The batches are the run's canonical ones, [k*B, (k+1)*B) with B = --batch-size, less what is already
    on disk; worker r of n takes batches r, r+n, r+2n, ... So every sample is computed in the same batch,
    with the same neighbours, whatever the number of workers: the output is the 1-worker output bit for
    bit, even for networks whose float results depend on the batch. (A run resumed with another
    --batch-size still completes exactly the missing indices, in partial batches.)"""
    groups: dict[int, list[int]] = {}
    for i in missing:
        groups.setdefault(i // batch_size, []).append(i)
    ordered = [groups[k] for k in sorted(groups)]
    return ordered[dist.rank :: dist.world_size]


FAULT_ENV = "DDMKIT_FAULT_AFTER_PARTS"


def fault_injection_after_part() -> None:
    """Test hook: with $DDMKIT_FAULT_AFTER_PARTS=K (or RANK:K), this worker dies (os._exit, as from
    kill -9: no cleanup) right after writing its K-th part. Used by the resume tests."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    rank, _, k = spec.rpartition(":")
    if rank and int(rank) != int(os.environ.get("RANK", "0")):
        return
    global _PARTS_WRITTEN
    _PARTS_WRITTEN += 1
    if _PARTS_WRITTEN >= int(k):
        sys.stderr.write(f"ddmkit: {FAULT_ENV}={spec}: exiting after {_PARTS_WRITTEN} parts\n")
        sys.stderr.flush()
        os._exit(17)


_PARTS_WRITTEN = 0
