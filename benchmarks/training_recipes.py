"""Which training recipe learns more per image on the faces? Short runs from scratch at the same images seen.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/training_recipes.py [--images 32000] \
        [--kar1-num 400] [--ddpm-num 40] [--recipes baseline v ...]
    # -> results/training_recipes.json (rewritten after each recipe); runs kept (resumable) under runs/bench-recipes/

Recipes (`RECIPES`; everything else is the shipped faces model's recipe, `scripts/train_default_faces.sh` stage 1:
UNet2DModel 32,64,128 with attention at the lowest resolution, 1 layer per block, batch 32, AdamW lr 3e-4 with 200
warm-up steps, EMA 0.999, 1000 linear betas 1e-4..0.02, seed 0):
- baseline: DDPM epsilon loss (`--objective eps`);
- eps-minsnr, v, v-minsnr: min-SNR-gamma weighting (gamma 5, Hang et al. 2023), v-prediction (Salimans & Ho 2022)
  and both (`--objective ...`);
- wide: the baseline loss on a wider UNet (48,96,192: 2.2x the parameters, about 2x the compute per image);
- lr1e-3: the baseline with lr 1e-3. (The EMA decay is not varied: the trainer's EMA warm-up,
  min(decay, (1 + step) / (10 + step)), keeps the decay below 0.995 for the first 1,790 steps, so at these
  budgets every setting >= 0.995 gives the same weights; the EMA then averages about the last 11% of the run.)
Every recipe stays a diffusers UNet2DModel + DDPMScheduler folder (DDPMPipeline loads it; the scheduler states its
prediction_type). EDM preconditioning is not among them: its folder is not a DDPMPipeline and it has no 1,000-step
DDPM sampler to be judged by (it is measured on the digits: `benchmarks/digits_ve.py`).

Each recipe is judged by FD-faces of kar1 (ddmkit, 18 steps: 33 + 1 Tweedie = 34 NFE; `--kar1-num` samples) and of
the 1,000-step DDPM ancestral sampler (diffusers' DDPMPipeline itself, `--ddpm-num` samples, seeds 0, 1, ... per
batch of 20), each against the noise floor at its own sample count, and by the pixel RMS of the samples against the
data's (`sample_faces`, seed 30,000,000). The training wall time is recorded (the machine is shared: compare it
with care).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import machine, read_json, write_json

RUNS = Path("runs/bench-recipes")
BASE = dict(data="faces", block_out_channels=(32, 64, 128), attention_levels=(False, False, True), layers_per_block=1,
            batch_size=32, lr=3e-4, ema_decay=0.999, seed=0, checkpoint_every=250, threads=1)
RECIPES = {  # in the order they run
    "baseline": {},
    "v": {"objective": "v"},
    "eps-minsnr": {"objective": "eps-minsnr"},
    "lr1e-3": {"lr": 1e-3},
    "wide": {"block_out_channels": (48, 96, 192)},
    "v-minsnr": {"objective": "v-minsnr"},
}
KAR1_STEPS = 18
DDPM_BATCH = 20


def pixel_rms(x: np.ndarray) -> float:
    return float(np.sqrt((np.clip(np.asarray(x, np.float64), -1, 1) ** 2).mean()))


def train_recipe(name: str, images: int) -> tuple[Path, dict]:
    from safetensors.torch import load_file

    from ddmkit.training import TrainConfig, train

    cfg = TrainConfig(**{**BASE, **RECIPES[name]}, steps=images // BASE["batch_size"])
    t0 = time.time()
    model = train(cfg, RUNS / name, progress=False)
    log = (RUNS / name / "train_log.csv").read_text().splitlines()
    seconds = float(log[-1].split(",")[3]) if len(log) > 1 else None
    params = sum(v.numel() for v in load_file(str(model / "unet" / "diffusion_pytorch_model.safetensors")).values())
    return model, {"config": {**BASE, **RECIPES[name]}, "steps": cfg.steps, "images_seen": cfg.steps * cfg.batch_size,
                   "parameters": int(params), "train_seconds_logged": seconds,
                   "final_loss": float(log[-1].split(",")[1]) if len(log) > 1 else None,
                   "seconds_this_call": round(time.time() - t0, 1)}


def kar1_eval(model: Path, name: str, num: int) -> dict:
    from ddmkit.cli import main as ddmkit
    from ddmkit.metrics.evaluate import evaluate_images

    out = RUNS / f"{name}-kar1-{KAR1_STEPS}-{num}"
    if not (out / "manifest.json").is_file():
        code = ddmkit(["sample", "--model", str(model), "--integrator", "kar1", "--steps", str(KAR1_STEPS), "--num", str(num),
                       "--batch-size", "100", "--seed", "0", "--device", "cpu", "--out", str(out), "--quiet"])
        if code:
            raise SystemExit(code)
    x = np.load(out / "samples.npz")["x"]
    nfe = json.loads((out / "manifest.json").read_text())["nfe_per_sample"]
    return _metrics(evaluate_images(x, "faces"), x, nfe=nfe)


def ddpm_eval(model: Path, name: str, num: int) -> dict:
    """diffusers' DDPMPipeline, 1,000 ancestral steps, in batches of 20 (generator seed = batch number)."""
    from diffusers import DDPMPipeline

    from ddmkit.metrics.evaluate import evaluate_images

    path = RUNS / f"{name}-ddpm1000-{num}.npz"
    if not path.is_file():
        pipe = DDPMPipeline.from_pretrained(model)
        pipe.set_progress_bar_config(disable=True)
        xs = []
        for b in range(0, num, DDPM_BATCH):
            img = pipe(batch_size=min(DDPM_BATCH, num - b), generator=torch.Generator().manual_seed(b // DDPM_BATCH),
                       num_inference_steps=1000, output_type="np").images
            xs.append(img.transpose(0, 3, 1, 2) * 2 - 1)
        np.savez(path, x=np.concatenate(xs).astype(np.float32))
    x = np.load(path)["x"]
    return _metrics(evaluate_images(x, "faces"), x, nfe=1000)


def _metrics(m: dict, x: np.ndarray, nfe: float) -> dict:
    gap = max(abs(m["attribute_frequency"][a] - m["data_attribute_frequency"][a]) for a in m["attribute_frequency"])
    return {"n": m["n"], "nfe": nfe, "fd": m["fd"], "fd_noise_floor": m["fd_noise_floor"],
            "fd_noise_floor_std": m["fd_noise_floor_std"], "pixel_rms": pixel_rms(x),
            "max_attribute_frequency_gap": gap}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=32_000, help="images seen per recipe (steps = images / 32)")
    p.add_argument("--kar1-num", type=int, default=400)
    p.add_argument("--ddpm-num", type=int, default=40)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = p.parse_args()
    torch.set_num_threads(1)
    from ddmkit.data.faces import sample_faces, to_tensor_range

    data_rms = pixel_rms(to_tensor_range(sample_faces(2000, seed=30_000_000)[0]))
    prev = read_json("training_recipes.json", {}) or {}
    rows = {r["recipe"]: r for r in prev.get("rows", []) if r.get("images_seen") == args.images}
    for name in args.recipes:
        if name in rows and "ddpm1000" in rows[name]:
            continue
        t0 = time.time()
        model, info = train_recipe(name, args.images)
        row = {"recipe": name, **info, "kar1": kar1_eval(model, name, args.kar1_num)}
        row["ddpm1000"] = ddpm_eval(model, name, args.ddpm_num)
        row["seconds_total"] = round(time.time() - t0, 1)
        rows[name] = row
        print(name, {k: row[k]["fd"] for k in ("kar1", "ddpm1000")}, "rms", row["kar1"]["pixel_rms"],
              row["ddpm1000"]["pixel_rms"], flush=True)
        write_json("training_recipes.json", {
            "command": "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/training_recipes.py " + " ".join(sys.argv[1:]),
            "machine": machine(), "images_per_recipe": args.images, "data_pixel_rms": data_rms,
            "shipped_faces_model": "1.16M images, kar1 at 50 NFE FD-faces 791 (noise floor 7.2 at n=2000), pixel RMS 0.70",
            "rows": [rows[n] for n in RECIPES if n in rows]})


if __name__ == "__main__":
    main()
