"""Training the noise-level classifier (DMCMC spec section 6): x = x0 + sigma_k eps with k uniform over the
grid, cross-entropy, Adam; resumable from OUT.ckpt/; held-out accuracy and |delta log sigma| in the file."""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..errors import DdmkitError
from ..io import recover_dir, replace_dir
from ..schedules import ve_classifier_grid
from .classifier_data import ClassifierData
from .noise_classifier import TAU_MIN, paths_for, save_classifier
from .noise_net import CHANNELS, NoiseLevelNet, default_log_r_range


# Default training length by kind of data. Vectors (mixtures): 20,000 steps (~80 s on one CPU thread); at
# 3,000 DLG's outputs were far worse (benchmarks/results/dmcmc_diagnostics.json, rows
# fix:classifier=trained-20k against dlg/trained, 2,000 chains x 50: Frechet 0.14 vs 0.62 on gmm2d, 0.50 vs
# 0.63 on gmm16d; the exact posterior: 0.05 / 0.35). Images: 3,000 steps.
DEFAULT_STEPS = {"vectors": 20_000, "images": 3_000}


def default_steps(sample_shape: Sequence[int]) -> int:
    """The default number of optimizer steps for data of this shape (`DEFAULT_STEPS`)."""
    return DEFAULT_STEPS["vectors" if len(sample_shape) == 1 else "images"]


@dataclass
class ClassifierTrainConfig:
    """What defines a training run (saved with the checkpoint and in the metadata). `steps` None: the
    default for the data's kind (`default_steps`)."""

    k: int = 1000
    steps: int | None = None
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # or "constant" (the official code's)
    seed: int = 0
    input_norm: str = "rms"
    checkpoint_every: int = 200
    threads: int = 0
    max_minutes: float = 0.0  # stop (and finish the file) after this much training time; 0: no limit
    channels: tuple[int, ...] = CHANNELS  # CNN widths (images only); narrower = cheaper per DLG step
    notes: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Refuse settings that would fail or train nothing, before any file is written."""
        if self.steps is not None and self.steps < 1 or self.batch_size < 1 or not 2 <= self.k <= 100_000 or self.checkpoint_every < 1:
            raise DdmkitError("--steps, --batch-size and --checkpoint-every must be >= 1 and --k in 2..100000")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise DdmkitError(f"--lr must be a finite number in (0, 1], got {self.lr}")
        if not (math.isfinite(self.max_minutes) and self.max_minutes >= 0) or self.threads < 0:
            raise DdmkitError("--max-minutes and --threads must be >= 0")
        if self.lr_schedule not in ("cosine", "constant"):
            raise DdmkitError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise DdmkitError(f"--channels needs four positive widths, got {self.channels}")


def _comparable(cfg: dict) -> dict:
    out = {k: v for k, v in cfg.items() if k not in ("steps", "checkpoint_every", "threads", "max_minutes", "notes")}
    out["channels"] = list(out.get("channels") or CHANNELS)  # checkpoints from before the option: the default
    return out


def _noisy_batch(x0: torch.Tensor, grid: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x = x0 + sigma_k eps with k ~ U{0..K-1} (spec section 6); returns x and the labels k."""
    k = torch.randint(0, len(grid), (x0.shape[0],), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    sig = grid[k].reshape((-1,) + (1,) * (x0.ndim - 1))
    return x0 + sig * eps, k


@torch.no_grad()
def evaluate_classifier(net: NoiseLevelNet, grid: torch.Tensor, x0: torch.Tensor, seed: int = 12345,
                        batch: int = 500) -> dict:
    """Held-out metrics on x0 + sigma_k eps with k uniform: top-1 accuracy, mean / median |delta log
    sigma| of the argmax, top-1 within +-1 level, and the mean |delta log sigma| per decade of sigma."""
    net.eval()
    gen = torch.Generator().manual_seed(seed)
    log_grid = grid.double().log()
    errs, hits, near, true_k = [], [], [], []
    for i in range(0, len(x0), batch):
        x, k = _noisy_batch(x0[i : i + batch], grid, gen)
        pred = net(x).argmax(dim=1)
        errs.append((log_grid[pred] - log_grid[k]).abs())
        hits.append(pred == k)
        near.append((pred - k).abs() <= 1)
        true_k.append(k)
    err, k = torch.cat(errs), torch.cat(true_k)
    sig = grid[k].double()
    decades = {}
    lo, hi = math.floor(math.log10(float(grid.min()))), math.ceil(math.log10(float(grid.max())))
    for d in range(lo, hi):
        m = (sig >= 10.0**d) & (sig < 10.0 ** (d + 1))
        if m.any():
            decades[f"1e{d}..1e{d + 1}"] = round(float(err[m].mean()), 4)
    return {"n": int(len(err)), "top1_accuracy": float(torch.cat(hits).float().mean()),
            "within_one_level": float(torch.cat(near).float().mean()),
            "mean_abs_dlog_sigma": float(err.mean()), "median_abs_dlog_sigma": float(err.median()),
            "mean_abs_dlog_sigma_by_decade": decades,
            "grid_log_spacing": float((log_grid[0] - log_grid[1]).abs())}


def train_noise_classifier(
    data: ClassifierData,
    sample_shape: Sequence[int],
    data_range: Sequence[float] | None,
    sigma_min: float,
    sigma_max: float,
    out: str | os.PathLike,
    cfg: ClassifierTrainConfig | None = None,
    *,
    meta: dict | None = None,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
) -> dict:
    """Train (or resume) a classifier and write OUT.safetensors + OUT.json; returns the metadata.

    Checkpoints go to OUT.ckpt/ every `checkpoint_every` steps (weights, optimizer, step; atomically
    replaced); running the same call again resumes from there. Batch and noise of step s depend on
    (seed, s) only. `callback({"step", "loss"})` is called after every step (an exception it raises
    stops the run there, as an interruption would)."""
    cfg = cfg or ClassifierTrainConfig()
    cfg.validate()
    if cfg.steps is None:
        cfg = replace(cfg, steps=default_steps(sample_shape))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    wpath, mpath = paths_for(out)
    torch.manual_seed(cfg.seed)
    net = NoiseLevelNet(sample_shape, cfg.k, input_norm=cfg.input_norm, data_range=data_range,
                        channels=cfg.channels, log_r_range=default_log_r_range(sigma_min, sigma_max, data_range))
    grid = ve_classifier_grid(sigma_min, sigma_max, cfg.k, TAU_MIN)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    run = _ClassifierRun(cfg, net, opt, wpath.with_name(wpath.name.replace(".safetensors", ".ckpt")), (sigma_min, sigma_max))
    run.resume()
    done, seconds, stopped_early = run.train(data, grid, progress, callback)
    metrics = evaluate_classifier(net, grid, data.held_out)
    full = {
        **(meta or {}),
        "sigma_grid": {"sigma_min": float(sigma_min), "sigma_max": float(sigma_max), "k": cfg.k, "tau_min": TAU_MIN,
                       "formula": "sigma_k = sigma_min (sigma_max/sigma_min)^tau_k, tau = linspace(1, tau_min, K); index 0 = sigma_max",
                       "first": float(grid[0]), "last": float(grid[-1])},
        "input_normalisation": _NORM_DOC[cfg.input_norm],
        "training": {**run.cfg_json, "steps_done": done, "stopped_at_time_limit": stopped_early, "seconds": round(seconds, 1),
                     "data": data.description, "noise": "x = x0 + sigma_k eps, k ~ U{0..K-1}, cross-entropy, Adam",
                     "loss_log": run.loss_log[-40:]},
        "held_out": metrics,
        "ddmkit_version": __version__,
    }
    if data.domain and "domain" not in full:
        full["domain"] = data.domain
    save_classifier(out, net, full)
    shutil.rmtree(run.ckpt, ignore_errors=True)
    return json.loads(mpath.read_text())


class _ClassifierRun:
    """The resumable optimisation of one classifier: its checkpoint folder, the steps, the loss log."""

    def __init__(self, cfg: ClassifierTrainConfig, net: NoiseLevelNet, opt, ckpt, sigma: tuple[float, float]):
        self.cfg, self.net, self.opt, self.ckpt, self.sigma = cfg, net, opt, ckpt, list(sigma)
        self.cfg_json = asdict(cfg)
        self.start, self.trained_seconds, self.loss_log = 0, 0.0, []

    def resume(self) -> None:
        """Load OUT.ckpt/ when it holds a checkpoint of these settings (a corrupt one says how to go on)."""
        ckpt = self.ckpt
        recover_dir(ckpt)
        if not (ckpt / "state.json").is_file():
            return
        try:
            state = json.loads((ckpt / "state.json").read_text())
            same = _comparable(state["config"]) == _comparable(self.cfg_json) and state.get("sigma") == self.sigma
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DdmkitError(f"the checkpoint {ckpt} is corrupt (state.json); delete it to start over") from None
        if not same:
            raise DdmkitError(f"{ckpt} holds a checkpoint of other settings; delete it or use the same settings (or another --out)")
        try:
            self.net.load_state_dict(load_file(str(ckpt / "net.safetensors")))
            self.opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
            self.start, self.trained_seconds = int(state["step"]), float(state["seconds"])
            self.loss_log = state.get("loss_log", [])
        except Exception as e:  # truncated weights or optimizer state
            raise DdmkitError(f"the checkpoint {ckpt} is unreadable ({e.__class__.__name__}); delete it to start over") from None

    def save(self, step: int, seconds: float) -> None:
        tmp = self.ckpt.with_name(self.ckpt.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(tmp / "net.safetensors"))
        torch.save(self.opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "seconds": seconds, "config": self.cfg_json,
                                                    "sigma": self.sigma, "loss_log": self.loss_log}))
        replace_dir(tmp, self.ckpt)

    def train(self, data: ClassifierData, grid: torch.Tensor, progress: bool, callback) -> tuple[int, float, bool]:
        """Steps from the resumed one to cfg.steps (or the time limit); returns (steps done, seconds, stopped early)."""
        cfg, net, opt = self.cfg, self.net, self.opt
        net.train()
        t0, running, step, stopped_early = time.time(), None, self.start, False
        bar = tqdm(range(self.start, cfg.steps), initial=self.start, total=cfg.steps, disable=not progress,
                   desc="noise classifier")
        for step in bar:
            x, k = _noisy_batch(data.batch(step, cfg.batch_size), grid,
                                torch.Generator().manual_seed(cfg.seed * 7_919 + 1_000_003 + step))
            lr = cfg.lr if cfg.lr_schedule == "constant" else cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = nn.functional.cross_entropy(net(x), k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
            if (step + 1) % 50 == 0:
                self.loss_log.append([step + 1, round(running, 4)])
            elapsed = self.trained_seconds + time.time() - t0
            if (step + 1) % cfg.checkpoint_every == 0:
                self.save(step + 1, elapsed)
            if callback is not None:
                callback({"step": step + 1, "loss": running})
            if cfg.max_minutes and elapsed >= 60 * cfg.max_minutes and step + 1 < cfg.steps:
                stopped_early = True
                break
        done = (step + 1) if cfg.steps > self.start else self.start
        seconds = self.trained_seconds + time.time() - t0
        self.save(done, seconds)
        return done, seconds, stopped_early


_NORM_DOC = {
    "rms": "data range mapped to [-1, 1]; x / rms(x) per sample, log rms(x) as an extra input (ddmkit.dmcmc.noise_net)",
    "none": "data range mapped to [-1, 1]; the raw chain state otherwise (the official code's)",
    "raw+logrms": "data range mapped to [-1, 1]; the raw state, and log rms(x) (+ Gaussian bumps of it) as extra head inputs",
}


def _version() -> str:

    return __version__
