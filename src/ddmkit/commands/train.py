"""`ddmkit train`: train a DDPM UNet2DModel on the synthetic faces, the digits, or an image folder."""
from __future__ import annotations

import argparse

from pathlib import Path

from ..objectives import OBJECTIVES
from ..training import TrainConfig, is_run_folder, train
from .argtypes import MAX_BATCH, float_range, int_list, int_range, path_text, seed
from .common import add_overwrite_argument, resolve_device, run_lock


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a DDPM or EDM UNet2DModel on faces, digits or an image folder (resumable)",
        description="Train a diffusers UNet2DModel with EMA. --objective eps (default): DDPM epsilon-prediction, "
        "1000 linear-beta steps; v: v-prediction (Salimans & Ho 2022); eps-minsnr / v-minsnr: min-SNR-gamma "
        "weighting (Hang et al. 2023); edm: EDM preconditioning (Karras et al. 2022), variance exploding, data in "
        "[0, 1], sigma in [--sigma-min, --sigma-max] (default the DMCMC paper's 0.01, 50). The exported folder's "
        "scheduler config records the parametrisation. Run the same command again after an interruption to "
        "resume from the last checkpoint.",
        epilog="example: ddmkit train --data faces --steps 8000 --out runs/faces; "
        "ddmkit train --data digits --objective edm --out runs/digits-ve",
    )
    d = TrainConfig()
    p.add_argument("--data", default=d.data, type=path_text, help="'faces', 'digits', or a folder of images (default: faces)")
    p.add_argument("--out", required=True, type=path_text,
                   help="run folder: checkpoints, log, and the final model in OUT/model (new, empty, or a run to resume)")
    add_overwrite_argument(p)
    p.add_argument("--resolution", type=int_range(8, 1024), default=d.resolution)
    p.add_argument("--channels", type=int_list(1, 4096), default=d.block_out_channels,
                   help="block_out_channels, e.g. 32,64,128 (each a multiple of 16, the GroupNorm groups)")
    p.add_argument("--attention", type=int_list(0, 1), default=tuple(int(a) for a in d.attention_levels),
                   help="attention per level as 0/1, e.g. 0,0,1")
    p.add_argument("--layers-per-block", type=int_range(1, 16), default=d.layers_per_block)
    p.add_argument("--steps", type=int_range(1, 100_000_000), default=d.steps)
    p.add_argument("--batch-size", type=int_range(1, MAX_BATCH), default=d.batch_size)
    p.add_argument("--lr", type=float_range(0, 1, low_open=True), default=d.lr)
    p.add_argument("--ema-decay", type=float_range(0, 1, high_open=True), default=d.ema_decay)
    p.add_argument("--checkpoint-every", type=int_range(1, 100_000_000), default=d.checkpoint_every)
    p.add_argument("--seed", type=seed, default=d.seed)
    p.add_argument("--threads", type=int_range(0, 1024), default=0, help="torch CPU threads (0: default)")
    p.add_argument("--init-from", default="", help="warm start: a diffusers folder with the same architecture")
    p.add_argument("--device", default="auto", help="'auto' (CUDA if present), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--workers", type=int_range(0, 256), default=0,
                   help="processes rendering synthetic-face batches ahead of the GPU (default 0: none)")
    p.add_argument("--max-seconds", type=float_range(0, low_open=True), default=None,
                   help="stop (checkpoint + export) after this wall time; the same command resumes")
    p.add_argument("--objective", choices=OBJECTIVES, default=d.objective, help="training objective (default: eps)")
    p.add_argument("--min-snr-gamma", type=float_range(0, 1e6, low_open=True), default=d.min_snr_gamma,
                   help="gamma of the *-minsnr objectives (default 5)")
    p.add_argument("--sigma-min", type=float_range(0, low_open=True), default=d.edm_sigma_min,
                   help="edm: smallest sigma of the model (default 0.01)")
    p.add_argument("--sigma-max", type=float_range(0, low_open=True), default=d.edm_sigma_max,
                   help="edm: largest sigma of the model (default 50)")
    p.add_argument("--sigma-data", type=float_range(0, low_open=True), default=d.sigma_data,
                   help="edm: sigma_data (default 0.5)")
    p.add_argument("--p-mean", type=float_range(-20, 20), default=d.p_mean, help="edm: mean of ln sigma in training (default -1.2)")
    p.add_argument("--p-std", type=float_range(0, 20, low_open=True), default=d.p_std,
                   help="edm: std of ln sigma in training (default 1.2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..output_guard import claim_folder

    cfg = TrainConfig(
        data=args.data, resolution=args.resolution, block_out_channels=args.channels,
        attention_levels=tuple(bool(a) for a in args.attention), layers_per_block=args.layers_per_block,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay,
        checkpoint_every=args.checkpoint_every, seed=args.seed, threads=args.threads, init_from=args.init_from,
        device=resolve_device(args.device), workers=args.workers, objective=args.objective,
        min_snr_gamma=args.min_snr_gamma, edm_sigma_min=args.sigma_min, edm_sigma_max=args.sigma_max,
        sigma_data=args.sigma_data, p_mean=args.p_mean, p_std=args.p_std,
    )
    cfg.validate()  # before anything is written
    inputs = [Path(p) for p in (args.data, args.init_from) if p and Path(p).exists()]
    out = claim_folder(args.out, is_run_folder, overwrite=args.overwrite, inputs=inputs)
    with run_lock(out):
        claim_folder(args.out, is_run_folder, overwrite=args.overwrite, inputs=inputs)  # again under the lock
        model_dir = train(cfg, out, progress=not args.quiet, max_seconds=args.max_seconds)
    print(f"model written to {model_dir}")
    return 0
