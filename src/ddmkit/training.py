"""Train a diffusion `UNet2DModel` (DDPM epsilon-prediction by default, 1000 linear-beta steps, EMA): `ddmkit train`.

The objective (`TrainConfig.objective`, `ddmkit.objectives`): `eps` (the default), `v`, their min-SNR-gamma
weighted forms, or `edm` (EDM-preconditioned variance exploding, data in [0, 1]). The exported folder's
scheduler config records the parametrisation (DDPMScheduler `prediction_type`, or EDMEulerScheduler), so
loading it needs no flags.

Resumable: every `checkpoint_every` steps the run directory gets an atomically replaced
`checkpoint/` (raw and EMA weights in safetensors, optimizer state, step). The batch and noise of
step k are functions of (seed, k) only (with `fast.device_batches`, on one kind of device: see
`fast_training`), so an interrupted run that resumes reproduces the run that was not interrupted.
The final model is a diffusers pipeline folder (`model_index.json`, `unet/`, `scheduler/`) holding
the EMA weights, plus `training_config.json` and `train_log.csv`.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .errors import DdmkitError
from .fast_training import (
    DeviceBank, DeviceFaces, FastOptions, check_fast_options, fast_option_problems, prepare_network, step_generator,
)
from .io import atomic_write_json, recover_dir, replace_dir
from .models.loading import MODEL_INFO_FILE
from .objectives import (
    MIN_SNR_GAMMA, VP_PREDICTION_TYPES, EDMSettings, check_objective, data_range_of, edm_loss, edm_sigmas, vp_loss,
)
from .data.faces import sample_faces, to_tensor_range
from .data.folders import ImageFolder, folder_channels, list_images, load_training_images


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as `training_config.json`."""

    data: str = "faces"  # "faces", "digits", or a folder of images
    resolution: int = 32
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    attention_levels: tuple[bool, ...] = (False, False, True)
    layers_per_block: int = 1
    norm_num_groups: int = 16
    steps: int = 8000
    batch_size: int = 48
    lr: float = 3e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    threads: int = 0  # 0: torch's default
    init_from: str = ""  # a diffusers folder whose UNet weights start the run (warm start)
    device: str = "cpu"  # where the UNet trains; batches and noise are drawn on the CPU unless fast.device_batches
    workers: int = 0  # processes that render the next batches ahead (0: in the training process)
    objective: str = "eps"  # ddmkit.objectives.OBJECTIVES
    min_snr_gamma: float = MIN_SNR_GAMMA  # the *-minsnr objectives' gamma
    edm_sigma_min: float = EDMSettings.sigma_min  # the edm objective's constants (EDMSettings)
    edm_sigma_max: float = EDMSettings.sigma_max
    sigma_data: float = EDMSettings.sigma_data
    p_mean: float = EDMSettings.p_mean
    p_std: float = EDMSettings.p_std
    fast: FastOptions = field(default_factory=FastOptions)  # device batches, bf16, channels-last, compile
    notes: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Refuse settings that would fail (or train nothing) before any file is written."""
        problems = []
        if not self.block_out_channels or any(c < 1 or c % self.norm_num_groups for c in self.block_out_channels):
            problems.append(f"every --channels width must be a positive multiple of {self.norm_num_groups} "
                            f"(GroupNorm groups), got {','.join(map(str, self.block_out_channels))}")
        if len(self.attention_levels) != len(self.block_out_channels):
            problems.append("--attention needs one 0/1 entry per --channels entry")
        levels = len(self.block_out_channels)
        if self.resolution < 2 ** levels or self.resolution % 2 ** (levels - 1):
            problems.append(f"--resolution must be a multiple of {2 ** (levels - 1)} and >= {2 ** levels} for "
                            f"{levels} levels, got {self.resolution}")
        finite = all(math.isfinite(v) for v in (self.lr, self.ema_decay, self.beta_start, self.beta_end))
        if not finite or not 0 < self.lr <= 1 or not 0 <= self.ema_decay < 1:
            problems.append(f"need 0 < lr <= 1 and 0 <= ema_decay < 1, got lr {self.lr}, ema_decay {self.ema_decay}")
        if min(self.steps, self.batch_size, self.checkpoint_every, self.layers_per_block) < 1:
            problems.append("--steps, --batch-size, --checkpoint-every and --layers-per-block must be >= 1")
        if self.workers < 0 or self.threads < 0:
            problems.append("--workers and --threads must be >= 0")
        if not 0 < self.edm_sigma_min < self.edm_sigma_max or self.sigma_data <= 0 or self.p_std <= 0 \
                or self.min_snr_gamma <= 0:
            problems.append("need 0 < --sigma-min < --sigma-max, and --sigma-data, --p-std, --min-snr-gamma > 0")
        problems += fast_option_problems(self.fast, self.device, self.workers)
        if problems:
            raise DdmkitError("; ".join(problems))
        if self.init_from:
            _warm_start(build_unet(self, 1 if self.data == "digits" else 3), self.init_from)  # readable and fitting


def is_run_folder(folder: Path) -> bool:
    """A folder `ddmkit train` wrote (its config or checkpoint is there)."""
    return (folder / "training_config.json").is_file() or (folder / "checkpoint" / "state.json").is_file()


def edm_settings(cfg: TrainConfig) -> EDMSettings:
    return EDMSettings(cfg.edm_sigma_min, cfg.edm_sigma_max, cfg.sigma_data, cfg.p_mean, cfg.p_std)


def build_unet(cfg: TrainConfig, in_channels: int = 3):
    from diffusers import UNet2DModel

    if len(cfg.attention_levels) != len(cfg.block_out_channels):
        raise DdmkitError("attention_levels needs one entry per block_out_channels entry")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    return UNet2DModel(
        sample_size=cfg.resolution,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg.norm_num_groups,
    )


def build_scheduler(cfg: TrainConfig):
    """The scheduler the model is exported with: it states the parametrisation (module docstring)."""
    if check_objective(cfg.objective) == "edm":
        from diffusers import EDMEulerScheduler

        return EDMEulerScheduler(sigma_min=cfg.edm_sigma_min, sigma_max=cfg.edm_sigma_max, sigma_data=cfg.sigma_data,
                                 prediction_type="epsilon")
    from diffusers import DDPMScheduler

    extra = {} if cfg.objective == "eps" else {"prediction_type": VP_PREDICTION_TYPES[cfg.objective]}
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule="linear",
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        clip_sample=True,
        **extra,
    )


class _FacesBatches:
    """step -> a batch of synthetic faces in [-1, 1]; a picklable callable for worker processes."""

    def __init__(self, batch_size: int, seed: int):
        self.batch_size, self.seed = batch_size, seed

    def seed_of(self, step: int) -> int:
        return (self.seed * 1_000_003 + step) % 2**63

    def __call__(self, step: int) -> np.ndarray:

        images, _ = sample_faces(self.batch_size, seed=self.seed_of(step))
        return to_tensor_range(images)  # numpy: plain pickling between processes (no shared-memory fds)


def make_batch_source(cfg: TrainConfig) -> tuple[Callable[[int], torch.Tensor], int]:
    """A function step -> batch in [-1, 1] (deterministic in (seed, step)), and the channel count."""
    if cfg.data == "faces":
        if cfg.resolution != 32:
            raise DdmkitError("the synthetic faces are 32x32; use --resolution 32")
        faces = _FacesBatches(cfg.batch_size, cfg.seed)
        return (DeviceFaces(faces, cfg.device) if cfg.fast.device_batches else faces), 3

    if cfg.data == "digits" or cfg.fast.device_batches:  # held whole: a small set, or the GPU path's device bank
        data = load_training_images(cfg.data, cfg.resolution, channels=_folder_channels(cfg))
        if cfg.fast.device_batches:
            return DeviceBank(data, cfg.batch_size, cfg.seed, cfg.data != "digits", cfg.device), int(data.shape[1])
        return _ArrayBatches(data, cfg.batch_size, cfg.seed, flip=False), int(data.shape[1])
    folder = ImageFolder(cfg.data, cfg.resolution)  # streamed: only a batch's images are read, per step
    return _FolderBatches(folder, cfg.batch_size, cfg.seed), folder.channels


def _folder_channels(cfg: TrainConfig) -> int:
    return 1 if cfg.data == "digits" else folder_channels(list_images(cfg.data))


def _draw(n: int, batch_size: int, seed: int, step: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """The indices and horizontal flips of one training batch, deterministic in (seed, step)."""
    rng = np.random.default_rng([seed, step])
    idx = rng.integers(0, n, size=batch_size)
    flips = rng.random(batch_size) < 0.5 if flip else np.zeros(batch_size, bool)
    return idx, flips


def _flipped(batch: np.ndarray, flips: np.ndarray) -> torch.Tensor:
    batch[flips] = batch[flips][..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(batch))


class _ArrayBatches:
    """step -> a batch of a set held in memory (the digits)."""

    def __init__(self, data: np.ndarray, batch_size: int, seed: int, flip: bool):
        self.data, self.batch_size, self.seed, self.flip = data, batch_size, seed, flip

    def __call__(self, step: int) -> torch.Tensor:
        idx, flips = _draw(len(self.data), self.batch_size, self.seed, step, self.flip)
        return _flipped(self.data[idx], flips)


class _FolderBatches:
    """step -> a batch of an image folder, read from disk (the same draws as a set held in memory)."""

    def __init__(self, folder: ImageFolder, batch_size: int, seed: int):
        self.folder, self.batch_size, self.seed = folder, batch_size, seed

    def __call__(self, step: int) -> torch.Tensor:
        idx, flips = _draw(len(self.folder), self.batch_size, self.seed, step, True)
        return _flipped(self.folder.batch(idx), flips)


def _warm_start(model: torch.nn.Module, folder: str) -> None:
    """Start from the UNet weights of a diffusers folder (e.g. the shipped EMA model, to train it longer)."""
    path = Path(folder)
    unet_dir = path / "unet" if (path / "unet").is_dir() else path
    weights = unet_dir / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise DdmkitError(f"--init-from {folder}: no {weights.name} in {unet_dir}")
    try:
        state = load_file(str(weights))
    except Exception as e:  # truncated or not safetensors
        raise DdmkitError(f"--init-from {folder}: {weights} is unreadable ({e.__class__.__name__}); re-copy it") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError:  # a size mismatch
        raise DdmkitError(f"--init-from {folder}: weights do not fit this architecture (other widths or channels)") from None
    if missing or unexpected:
        raise DdmkitError(f"--init-from {folder}: weights do not fit this architecture (missing {missing[:2]}, unexpected {unexpected[:2]})")


def _ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights, as one fused (foreach) update."""
    with torch.no_grad():
        state = model.state_dict()
        names = [n for n, p in state.items() if p.dtype.is_floating_point]
        torch._foreach_lerp_([ema[n] for n in names], [state[n] for n in names], 1.0 - decay)
        for name, p in state.items():
            if not p.dtype.is_floating_point:
                ema[name].copy_(p)


def _batches(batch_of: Callable[[int], torch.Tensor], steps: range, workers: int):
    """Yield batch_of(step) for each step in order; with workers > 0, rendered ahead in other processes."""
    if workers <= 0 or len(steps) == 0:
        for step in steps:
            yield torch.as_tensor(batch_of(step))
        return
    import multiprocessing as mp

    pool = mp.get_context("fork").Pool(workers)
    try:
        for batch in pool.imap(batch_of, steps, chunksize=1):
            yield torch.as_tensor(batch)
    finally:
        pool.terminate()


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _save_checkpoint(run: Path, model, ema, opt, step: int, cfg: TrainConfig) -> None:
    tmp = run / "checkpoint.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(_cpu(model.state_dict()), str(tmp / "model.safetensors"))
    save_file(_cpu(ema), str(tmp / "ema.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "config": _config_json(cfg)}))
    replace_dir(tmp, run / "checkpoint")


def _config_json(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["block_out_channels"] = list(cfg.block_out_channels)
    d["attention_levels"] = list(cfg.attention_levels)
    return d


def _read_state(ckpt: Path) -> dict:
    try:
        state = json.loads((ckpt / "state.json").read_text())
        int(state["step"]), dict(state["config"])
        return state
    except (OSError, ValueError, KeyError, TypeError):
        raise DdmkitError(f"the checkpoint {ckpt} is unreadable (state.json missing or corrupt); delete {ckpt} to "
                          "start over, or choose another --out") from None


def _comparable(d: dict) -> dict:
    ignored = ("steps", "checkpoint_every", "threads", "notes", "init_from", "device", "workers")
    d = {**_config_json(TrainConfig()), **d}  # a checkpoint from before an option existed had its default
    return {k: v for k, v in d.items() if k not in ignored}


def _step_loss(cfg: TrainConfig, model, x0: torch.Tensor, gen: torch.Generator, device,
               alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The loss of one batch (x0 in [-1, 1]); its timesteps or sigmas and its noise are drawn from `gen` on its
    device (the CPU unless `fast.device_batches`)."""
    if cfg.objective == "edm":
        settings = edm_settings(cfg)
        sigma = edm_sigmas(x0.shape[0], settings, gen)
        noise = torch.randn(x0.shape, generator=gen, device=gen.device)
        lo, hi = data_range_of(cfg.objective)
        x0 = lo + (x0.to(device, non_blocking=True) + 1) * (0.5 * (hi - lo))
        return edm_loss(model, x0, sigma.to(device), noise.to(device, non_blocking=True), settings)
    t = torch.randint(0, cfg.num_train_timesteps, (x0.shape[0],), generator=gen, device=gen.device)
    noise = torch.randn(x0.shape, generator=gen, device=gen.device)
    x0, t, noise = x0.to(device, non_blocking=True), t.to(device), noise.to(device, non_blocking=True)
    return vp_loss(model, x0, t, noise, alphas_cumprod, cfg.objective, cfg.min_snr_gamma)


def train(cfg: TrainConfig, out: str | os.PathLike, *, progress: bool = True,
          max_seconds: float | None = None, callback: Callable[[dict], None] | None = None) -> Path:
    """Train (or resume) into the run folder `out`; returns the folder of the final pipeline.

    With `max_seconds`, training stops after the first step that ends past that wall time, saves a
    checkpoint there and exports the model (its `training_config.json` records `completed_steps`);
    running the same command again continues towards `cfg.steps`. `callback({"step", "loss"})` is called
    after every optimizer step (the loss a device tensor: reading it waits for the step).
    """
    run = Path(out)
    device = _prepare_device(cfg)
    torch.manual_seed(cfg.seed)
    check_objective(cfg.objective)
    check_fast_options(cfg.fast, cfg.device, cfg.workers)
    batch_of, channels = make_batch_source(cfg)  # validates the data before anything is written
    run.mkdir(parents=True, exist_ok=True)
    model = build_unet(cfg, channels)
    scheduler = build_scheduler(cfg)
    if cfg.init_from:
        _warm_start(model, cfg.init_from)
    model.to(device)
    net = prepare_network(model, cfg.fast, device)  # the model itself unless --dtype bf16, --channels-last, --compile
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ema, start = _resume(run, cfg, model, opt, ema, device)
    alphas_cumprod = scheduler.alphas_cumprod.float().to(device) if cfg.objective != "edm" else None
    log_path = _open_log(run, start)
    (run / "training_config.json").write_text(json.dumps(_config_json(cfg), indent=2))
    model.train()
    loop = _Loop(cfg, run, model, net, opt, ema, device, alphas_cumprod, log_path, max_seconds, callback)
    step = loop.run(batch_of, start, progress)
    return export_pipeline(run, cfg, ema, channels, completed_steps=step)


def _prepare_device(cfg: TrainConfig) -> torch.device:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DdmkitError(f"--device {cfg.device} asked for, but CUDA is not available here; use --device cpu")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return device


def _resume(run: Path, cfg: TrainConfig, model, opt, ema: dict, device) -> tuple[dict, int]:
    """(EMA weights, the step to start from): the checkpoint's where `run` holds one of this config."""
    ckpt = run / "checkpoint"
    recover_dir(ckpt)
    if not ckpt.exists():
        return ema, 0
    state = _read_state(ckpt)
    if _comparable(state["config"]) != _comparable(_config_json(cfg)):
        raise DdmkitError(f"{run} holds a checkpoint of a different training config; use a new --out or the same settings")
    try:
        model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
        ema = {k: v.to(device) for k, v in load_file(str(ckpt / "ema.safetensors")).items()}
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True, map_location=device))
    except Exception as e:  # truncated files (safetensors / torch raise their own types)
        raise DdmkitError(f"the checkpoint {ckpt} is unreadable ({e.__class__.__name__}); delete it to start over, "
                          "or choose another --out") from None
    return ema, int(state["step"])


def _open_log(run: Path, start: int) -> Path:
    """train_log.csv, new, or cut back to the rows up to the checkpoint a run resumes from."""
    log_path = run / "train_log.csv"
    if start == 0 or not log_path.exists():
        log_path.write_text("step,loss,lr,seconds\n")
    else:
        rows = log_path.read_text().splitlines()
        kept = [rows[0]] + [r for r in rows[1:] if int(r.split(",")[0]) <= start]
        log_path.write_text("\n".join(kept) + "\n")
    return log_path


class _Loop:
    """The optimizer steps of a run: warm-up, loss, clipped step, EMA, log, checkpoints, time limit."""

    def __init__(self, cfg, run, model, net, opt, ema, device, alphas_cumprod, log_path, max_seconds, callback):
        self.cfg, self.run_dir, self.model, self.net, self.opt, self.ema = cfg, run, model, net, opt, ema
        self.device, self.alphas_cumprod, self.log_path = device, alphas_cumprod, log_path
        self.max_seconds, self.callback = max_seconds, callback

    def run(self, batch_of, start: int, progress: bool) -> int:
        """Steps from `start` towards cfg.steps; returns the number of steps completed."""
        cfg = self.cfg
        self.t0, self.running = time.time(), None
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress, desc="train")
        batches = _batches(batch_of, range(start, cfg.steps), cfg.workers if cfg.data == "faces" else 0)
        step = start
        for step, x0 in zip(bar, batches):
            lr = self.step(step, x0)
            out_of_time = self.max_seconds is not None and time.time() - self.t0 >= self.max_seconds
            self.log(step, lr, bar)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps or out_of_time:
                _save_checkpoint(self.run_dir, self.model, self.ema, self.opt, step + 1, cfg)
            if out_of_time:
                step += 1
                break
        else:
            step = cfg.steps
        bar.close()
        batches.close()
        return step

    def step(self, step: int, x0: torch.Tensor) -> float:
        cfg = self.cfg
        gen = step_generator(cfg.fast, cfg.seed * 7_919 + step, self.device)  # the CPU's (same on every device) by default
        lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        for g in self.opt.param_groups:
            g["lr"] = lr
        loss = _step_loss(cfg, self.net, x0, gen, self.device, self.alphas_cumprod)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        _ema_update(self.ema, self.model, min(cfg.ema_decay, (1 + step) / (10 + step)))
        loss = loss.detach()  # a running mean kept on the device: no host sync per step
        self.running = loss if self.running is None else 0.98 * self.running + 0.02 * loss
        if self.callback is not None:
            self.callback({"step": step + 1, "loss": loss})
        return lr

    def log(self, step: int, lr: float, bar) -> None:
        if (step + 1) % 25 == 0:
            value = float(self.running)
            bar.set_postfix(loss=f"{value:.4f}")
            with open(self.log_path, "a") as f:
                f.write(f"{step + 1},{value:.6f},{lr:.3g},{time.time() - self.t0:.1f}\n")


def export_pipeline(run: Path, cfg: TrainConfig, ema: dict[str, torch.Tensor], channels: int,
                    completed_steps: int | None = None) -> Path:
    """Write the EMA weights as a diffusers folder `run/model` (atomically): a DDPM pipeline (`unet/`,
    `scheduler/`, `model_index.json`) for the VP objectives; for `edm`, `unet/` + an EDMEulerScheduler
    `scheduler/` (diffusers has no unconditional EDM pipeline: load the two and run the scheduler's loop)
    and `ddmkit_model.json` with the data range, [0, 1]."""
    model = build_unet(cfg, channels)
    model.load_state_dict(_cpu(ema))
    tmp = run / "model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp / "unet", safe_serialization=True)
    build_scheduler(cfg).save_pretrained(tmp / "scheduler")
    if cfg.objective == "edm":
        atomic_write_json(tmp / MODEL_INFO_FILE, {"objective": cfg.objective,
                                                  "data_range": list(data_range_of(cfg.objective))})
    else:
        atomic_write_json(
            tmp / "model_index.json",
            {
                "_class_name": "DDPMPipeline",
                "_diffusers_version": _diffusers_version(),
                "scheduler": ["diffusers", "DDPMScheduler"],
                "unet": ["diffusers", "UNet2DModel"],
            },
        )
    config = json.loads((run / "training_config.json").read_text())
    config["completed_steps"] = cfg.steps if completed_steps is None else int(completed_steps)
    atomic_write_json(tmp / "training_config.json", config)
    replace_dir(tmp, run / "model")
    return run / "model"


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
