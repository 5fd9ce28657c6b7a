"""`ddmkit sample`: draw samples with any integrator; resumable, with a manifest of the measured NFE."""
from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

import numpy as np

from ..errors import DdmkitError
from ..provenance import provenance
from .argtypes import MAX_BATCH, MAX_NUM, MAX_STEPS, float_range, int_range, path_text, seed
from .common import add_model_argument, add_overwrite_argument, model_input_paths, model_options, on_main, run_lock


# the defaults of the flags that --dmcmc and --settings check ("given" = not at its default): one place each
SAMPLE_DEFAULTS = {"integrator": "kar1", "steps": 18, "no_tweedie": False, "sigma_max": None}
DMCMC_DEFAULTS = {"settings": None, "dlg_eta": 0.8, "n_skip": 10, "chains": 0, "noise_classifier": None,
                  "classifier_dtype": "fp32", "classifier_compile": False, "sigma_step": "argmax", "select": "min_sigma",
                  "burn_in": "auto", "langevin_clip": "model", "tweedie_sigma": None}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="draw samples with one of the nine integrators",
        description="Draw samples from a model with an integrator (kar1, kar2, rd, em, pf, rk45, ddim, dpmpp_2m, "
        "unipc). Writes OUT/samples.npz, PNGs and a grid for image models, and OUT/manifest.json with the measured "
        "NFE per sample. An interrupted run resumes when the same command is run again.",
        epilog="example: ddmkit sample --model default --integrator kar1 --steps 10 --num 64 --out runs/kar1-10; "
        "on N workers: torchrun --nproc_per_node N -m ddmkit -- sample ... (docs/scale-out.md)",
    )
    add_model_argument(p)
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="network precision: fp32, or bf16/fp16 autocast on CUDA (default: fp32)")
    p.add_argument("--integrator", default=SAMPLE_DEFAULTS["integrator"],
                   help="kar1, kar2, rd, em, pf, rk45, ddim, dpmpp_2m or unipc (default: kar1)")
    p.add_argument("--steps", type=int_range(1, MAX_STEPS), default=SAMPLE_DEFAULTS["steps"],
                   help="the integrator's N (grid points; for ddim, dpmpp_2m and unipc the NFE)")
    p.add_argument("--num", type=int_range(1, MAX_NUM), default=64, help="number of samples")
    p.add_argument("--batch-size", type=int_range(1, MAX_BATCH), default=64,
                   help="samples per network call (a resumed run must use the same: network results depend on it)")
    p.add_argument("--seed", type=seed, default=0, help="base seed in [0, 2^64); sample i uses its own seed derived from it")
    p.add_argument("--out", required=True, type=path_text, help="output folder (new, empty, or an unfinished run to resume)")
    add_overwrite_argument(p)
    p.add_argument("--no-tweedie", action="store_true", help="skip the final Tweedie denoising step (1 NFE)")
    p.add_argument("--sigma-max", type=float_range(0, low_open=True), default=None,
                   help="the noise level sampling starts at, x_T = sigma * noise (with --dmcmc: the burn-in's); default: "
                   "the model's recorded start level (ddmkit_model.json 'sampling_sigma_max'; the shipped faces model: "
                   "20), else its sigma_max")
    p.add_argument("--eta", type=float_range(0, 10), default=None,
                   help="with --dmcmc: the DLG Langevin step size (same as --dlg-eta); otherwise ddim's eta")
    p.add_argument("--ddim-eta", type=float_range(0, 10), default=None, help="ddim: eta (0 deterministic, 1 DDPM-like)")
    p.add_argument("--s-churn", type=float_range(0, 1e6), default=None, help="kar2: S_churn (default 80)")
    p.add_argument("--s-noise", type=float_range(0, 10), default=None, help="kar2: S_noise (default 1.007)")
    p.add_argument("--s-tmin", type=float_range(0), default=None,
                   help="kar2: churn only where sigma >= S_tmin (model's sigma units; default 0.05 x data width)")
    p.add_argument("--s-tmax", type=float_range(0), default=None,
                   help="kar2: churn only where sigma <= S_tmax (default 1 x data width; e.g. --s-tmin 2 --s-tmax 400 "
                        "churns at high noise only)")
    p.add_argument("--rtol", type=float_range(1e-12, 1), default=None,
                   help="rk45: relative tolerance in [1e-12, 1] (default 1e-5)")
    p.add_argument("--atol", type=float_range(0, 10, low_open=True), default=None,
                   help="rk45: absolute tolerance in (0, 10] (default 1e-5)")
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
    g.add_argument("--settings", metavar="FILE", default=None, type=path_text,
                   help="DLG settings chosen by `ddmkit tune-dmcmc` (its --out table): integrator, steps, eta, n_skip "
                   "and outputs per chain (chains = ceil(num / outputs per chain) unless --chains); refused for another model")
    g.add_argument("--dlg-eta", type=float_range(0, 100, low_open=True), default=DMCMC_DEFAULTS["dlg_eta"],
                   help="Langevin step size in [0,1]-data units (scaled by 4 for [-1,1] models; default 0.8)")
    g.add_argument("--n-skip", type=int_range(0, MAX_STEPS), default=DMCMC_DEFAULTS["n_skip"], help="Langevin-Gibbs steps per output (default 10)")
    g.add_argument("--chains", type=int_range(0, MAX_BATCH), default=DMCMC_DEFAULTS["chains"], help="persistent chains (default: min(--num, --batch-size))")
    g.add_argument("--noise-classifier", metavar="PATH", default=None, type=path_text,
                   help="PATH(.safetensors/.json) from `ddmkit noise-classifier train`, or 'oracle' (gmm: models: the "
                   "exact posterior over the sigma grid) (default: the one shipped for default/digits)")
    g.add_argument("--classifier-dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="the noise-level classifier's precision: fp32, or bf16 (CPU/CUDA) / fp16 (CUDA) autocast "
                   "(default: fp32)")
    g.add_argument("--classifier-compile", action="store_true",
                   help="torch.compile the noise-level classifier (CUDA graphs on a GPU; compiles on the first batch)")
    g.add_argument("--sigma-step", choices=("argmax", "sample"), default=DMCMC_DEFAULTS["sigma_step"],
                   help="sigma <- grid[argmax q(k|x)] (the paper's) or a draw from q")
    g.add_argument("--select", choices=("min_sigma", "last"), default=DMCMC_DEFAULTS["select"],
                   help="state handed to the integrator: the segment's minimum-sigma one (the paper's) or the last")
    g.add_argument("--burn-in", default=DMCMC_DEFAULTS["burn_in"],
                   help="auto, cifar10 (KAR2 N=20, +0.5 eps, 10x eta 0.5, 10x eta), celebahq (.. 50x 1.6, 20x eta), "
                   "or KAR2_STEPS:PERTURB:N1@ETA1,N2@eta")
    g.add_argument("--langevin-clip", choices=("model", "on", "off"), default=DMCMC_DEFAULTS["langevin_clip"],
                   help="clamp D to the data range inside the Langevin score: as the model does (model; DDPMs clip), "
                   "on, or off (the integrator and Tweedie keep the model's setting)")
    g.add_argument("--tweedie-sigma", type=float_range(0, low_open=True), default=None,
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
    """The integrator options given as flags (--s-churn for s_churn, ...; ddim's eta is --eta/--ddim-eta),
    refused for an integrator that does not take them (the registry reads each one's signature)."""
    from ..integrators import INTEGRATORS, get_integrator

    spec = get_integrator(args.integrator)
    owners: dict[str, list[str]] = {}
    for name, other in INTEGRATORS.items():
        for opt in other.options:
            owners.setdefault(opt, []).append(name)
    opts = {}
    for opt, names in owners.items():
        value = getattr(args, opt, None)
        if value is None:
            continue
        if opt not in spec.options:
            raise DdmkitError(f"--{opt.replace('_', '-')} applies to {'/'.join(names)} only, not {args.integrator}")
        opts[opt] = value
    return opts


def check_dmcmc_arguments(args: argparse.Namespace) -> None:
    """DLG flags need --dmcmc (a flag left at its default is fine)."""
    if getattr(args, "dmcmc", False):
        return
    given = [k for k, v in DMCMC_DEFAULTS.items() if getattr(args, k, v) != v]
    if given:
        raise DdmkitError(f"--{given[0].replace('_', '-')} applies to --dmcmc sampling only; add --dmcmc")


LANGEVIN_CLIP = {"model": None, "on": True, "off": False}  # --langevin-clip -> DLGConfig.langevin_clip


SETTINGS_FLAGS = {**SAMPLE_DEFAULTS, **{k: DMCMC_DEFAULTS[k] for k in ("dlg_eta", "n_skip", "burn_in", "sigma_step", "select",
                                                                       "langevin_clip", "tweedie_sigma")}}
# what a --settings file sets: these flags must stay at their defaults


def check_settings_flags(args: argparse.Namespace) -> None:
    """--settings FILE is read before anything is loaded; flags the file sets are refused beside it."""
    if not getattr(args, "settings", None):
        return
    from ..dmcmc.settings_file import load_settings

    given = [k for k, v in SETTINGS_FLAGS.items() if getattr(args, k, v) != v] + list(args.options)
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise DdmkitError(f"{flag} is set by --settings {args.settings}; drop {flag}, or drop --settings")
    args.dlg_settings = load_settings(args.settings)


def dmcmc_request(args: argparse.Namespace, identity: dict):
    """The --dmcmc flags (or the --settings file, checked against the model's `identity`) as the library's
    typed settings: (DmcmcRun, DLGConfig)."""
    from ..dmcmc.dlg import DLGConfig
    from ..dmcmc.run import DmcmcRun

    tuned = getattr(args, "dlg_settings", None)
    if tuned is not None:
        tuned.check_model(identity, args.settings)
        run = DmcmcRun(out=Path(args.out), num=args.num, seed=args.seed, chains=args.chains or tuned.chains_for(args.num),
                       model_spec=args.model, noise_classifier=args.noise_classifier or tuned.noise_classifier,
                       classifier_dtype=getattr(args, "classifier_dtype", "fp32"),
                       classifier_compile=getattr(args, "classifier_compile", False), progress=not args.quiet)
        return run, tuned.config
    config = DLGConfig(integrator=args.integrator, steps=args.steps, eta=args.dlg_eta, n_skip=args.n_skip,
                       sigma_step=args.sigma_step, select=args.select, burn_in=args.burn_in,
                       tweedie=not args.no_tweedie, tweedie_sigma=getattr(args, "tweedie_sigma", None), options=args.options,
                       langevin_clip=LANGEVIN_CLIP[getattr(args, "langevin_clip", "model")],
                       sigma_max=getattr(args, "sigma_max", None))
    run = DmcmcRun(out=Path(args.out), num=args.num, seed=args.seed, chains=args.chains or min(args.num, args.batch_size),
                   model_spec=args.model, noise_classifier=args.noise_classifier,
                   classifier_dtype=getattr(args, "classifier_dtype", "fp32"),
                   classifier_compile=getattr(args, "classifier_compile", False),
                   progress=not args.quiet)
    return run, config


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..output_guard import check_target

    validate_sample_arguments(args)
    out = check_target(args.out, "folder")
    with distributed.session(args.device) as dist, run_lock(out, dist):
        return run_on(args, dist)


def validate_sample_arguments(args: argparse.Namespace) -> dict:
    """Check the flags before anything is loaded or written; returns the integrator options."""
    from ..integrators import get_integrator, validate_options

    get_integrator(args.integrator).check_steps(args.steps)
    resolve_eta_flags(args)
    args.options = integrator_options_from_args(args)
    validate_options(args.integrator, args.options)
    check_dmcmc_arguments(args)
    check_settings_flags(args)
    return args.options


def is_sample_folder(folder: Path) -> bool:
    """A folder `ddmkit sample` wrote: an unfinished run (parts/settings.json) or a finished one."""
    from ..output_guard import json_file_says

    return ((folder / "parts" / "settings.json").is_file()  # even corrupt: PartStore then says how to go on
            or json_file_says(folder / "manifest.json", command="sample"))


def claim_output(args: argparse.Namespace, out: Path) -> None:
    """ddmkit writes into OUT only if it is new, empty or its own run (else --overwrite); a finished
    run is kept unless --overwrite, which then clears its outputs first."""
    from ..output_guard import claim_folder
    from ..outputs import clear_sample_outputs

    inputs = model_input_paths(args.model) + ([Path(args.noise_classifier)] if getattr(args, "noise_classifier", None) else [])
    claim_folder(out, is_sample_folder, overwrite=args.overwrite, inputs=inputs)
    if (out / "manifest.json").is_file():
        if not args.overwrite:
            raise DdmkitError(f"{out} already holds a finished run (manifest.json); choose a new --out, or add "
                              "--overwrite to replace it")
        clear_sample_outputs(out)


def check_memory(num: int, sample_shape: tuple[int, ...]) -> None:
    """The merged samples.npz is held in memory: refuse runs that cannot fit (split them instead)."""
    need = int(num) * int(np.prod(sample_shape)) * 4
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need * 2 > total:
        most = max(1, total // (2 * 4 * int(np.prod(sample_shape))))
        raise DdmkitError(f"--num {num} would need {need / 2**30:.1f} GiB for samples.npz ({total / 2**30:.0f} GiB of "
                          f"memory here); split the run into --num of at most {most} each with other seeds")


def run_on(args: argparse.Namespace, dist) -> int:
    """The sample command on one worker of `dist` (one process: rank 0 of 1).

    Plain sampling: the indices not yet on disk (read by rank 0 and broadcast, so every worker sees
    the same set) are cut into the run's canonical batches and dealt round-robin to the workers
    (`distributed_batches`); each worker writes its own per-batch parts into OUT/parts (atomic files);
    after a barrier rank 0 merges them and writes the folder and manifest. Sample i depends only on
    (seed, i) and its batch, so the result is the same for any number of workers and a resumed run
    may use another number of workers (not another --batch-size: the settings record it)."""
    from ..denoisers import with_precision
    from ..models.loading import load_model, model_identity
    from ..sampling import start_sigma

    out = Path(args.out)
    on_main(dist, lambda: claim_output(args, out))
    denoiser = load_model(args.model, device=dist.device, **model_options(args))
    check_memory(args.num, tuple(denoiser.sample_shape))
    denoiser = with_precision(denoiser, args.dtype)
    settings = {
        "command": "sample", "model": args.model, "model_identity": model_identity(denoiser),
        "integrator": args.integrator, "steps": args.steps, "num": args.num, "seed": args.seed,
        "tweedie": not args.no_tweedie, "options": args.options, "dtype": getattr(args, "dtype", "fp32"),
        "sigma_max": start_sigma(denoiser, getattr(args, "sigma_max", None)),
    }
    load = {k: v for k, v in model_options(args).items() if v not in (None, False)}
    if load:  # --variant / --torch-dtype / --revision change the model: a resumed run must use the same
        settings["model_load"] = load
    if getattr(args, "dmcmc", False):
        from ..dmcmc.run import run_dmcmc_sample

        run, config = dmcmc_request(args, settings["model_identity"])
        settings.update(integrator=config.integrator, steps=config.steps, options=config.options)
        return run_dmcmc_sample(run, config, denoiser, settings, dist.device, dist=dist)
    return run_plain(args, denoiser, settings, dist)


def run_plain(args: argparse.Namespace, denoiser, settings: dict, dist) -> int:
    """Plain sampling into OUT (see `run_on`)."""
    from ..outputs import PartStore, manifest_header, write_sample_folder

    out = Path(args.out)
    store = PartStore(out, {**settings, "batch_size": args.batch_size})
    done = dist.broadcast_object(sorted(store.done_indices()) if dist.is_main else None)
    t0 = time.time()
    result, todo = _sample_missing(args, denoiser, store, done, dist)
    nfe_sum = result.nfe_per_sample * len(todo) if result is not None else 0.0
    totals = dist.all_reduce_sum([nfe_sum, len(todo)])
    ranks = dist.all_gather_object({"rank": dist.rank, "device": dist.device, "host": socket.gethostname(),
                                    "samples": len(todo), "seconds": round(time.time() - t0, 3)})
    dist.barrier()  # every part is on disk
    if not dist.is_main:
        return 0
    merged = store.gather(range(args.num), shared_hint=dist.enabled)
    if result is None:  # nothing sampled on this worker: measure one sample for the settings (and NFE)
        result = _sample(args, denoiser, batches=[[0]])
    # the NFE per sample over every worker's samples (rk45's differs between batches)
    nfe_per_sample = float(totals[0] / totals[1]) if totals[1] > 0 else result.nfe_per_sample
    manifest = {
        **manifest_header(settings, denoiser, dist.device, batch_size=args.batch_size),
        "nfe_per_sample": nfe_per_sample,
        "sampler_settings": result.settings,
        "resumed_with_done": len(done),
        "seconds": round(time.time() - t0, 3),
        "world_size": dist.world_size,
        "ranks": ranks,
        "provenance": provenance(args.command_line),
    }
    write_sample_folder(out, merged["x"], merged["index"], manifest, denoiser.data_range, denoiser.is_image)
    store.remove()
    workers = f" on {dist.world_size} workers" if dist.enabled else ""
    print(f"{args.num} samples, {nfe_per_sample:g} NFE each{workers} -> {out}")
    return 0


def _sample(args: argparse.Namespace, denoiser, batches, callback=None, progress: bool = False):
    from ..sampling import sample

    return sample(denoiser, integrator=args.integrator, steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                  batches=batches, use_tweedie=not args.no_tweedie, options=args.options, progress=progress,
                  callback=callback, sigma_start=getattr(args, "sigma_max", None))


def _sample_missing(args: argparse.Namespace, denoiser, store, done: list[int], dist):
    """This worker's share of the samples not on disk yet, each batch written as a part as it is done."""
    missing = np.setdiff1d(np.arange(args.num, dtype=np.int64), np.asarray(done, dtype=np.int64)).tolist()
    batches = distributed_batches(missing, args.batch_size, dist)
    todo = [i for b in batches for i in b]
    store.start()
    dist.barrier()  # nobody writes a part before every worker has its share
    if not todo:
        return None, todo
    result = _sample(args, denoiser, batches, callback=lambda indices, x: store.write(indices, x.numpy()),
                     progress=not args.quiet and dist.is_main)
    return result, todo


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
