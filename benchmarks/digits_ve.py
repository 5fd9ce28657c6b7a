"""The shipped VE digits model (`--model digits-ve`, EDM objective, data in [0, 1], sigma in [0.01, 50]):
plain samplers by FD-digits against the noise floor, and its per-noise-level denoising error against the data.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/digits_ve.py [--num 1000] [--nfe 10 20 50 100]
    # -> results/digits_ve.json; samples are kept (resumable) under runs/bench-digits-ve/
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/digits_ve.py --probe RUN_DIR_OR_MODEL [--probe-num 500]
    # -> adds a row to results/digits_ve.json "training_length": kar1 at 50 NFE (seed 123) of the EMA weights
    #    of RUN_DIR's last checkpoint (a `ddmkit train` run folder), or of a model folder / spec

Rows: kar1 at 10, 20, 50 and 100 NFE (2N - 3 + 1 Tweedie: N = 6, 11, 26, 51), each `ddmkit sample` then
`ddmkit evaluate` (the CLI path: the folder's manifest states the [0, 1] range); a row of diffusers' own
`EDMEulerScheduler` loop (50 Euler steps, no Tweedie) on the same folder. Target (issue 17): kar1 at 50+ NFE
near the FD-digits noise floor (the VP digits model: 1.36 against 1.22, `default_model.json`).
Denoising error: mean squared error per pixel (in [0, 1] units) of D(x0 + sigma n, sigma) against x0 over
all 1,797 digits at 13 noise levels, beside the ideal denoiser of the data set itself (the posterior mean
over the 1,797 digits), the identity (D = x: sigma^2) and the VP digits model at the same noise in its own
[-1, 1] units (sigma x 2, errors / 4).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common import machine, write_json
from ddmkit.cli import main as ddmkit

RUNS = Path("runs/bench-digits-ve")
SIGMAS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0]


def kar1_row(nfe: int, num: int, batch: int) -> dict:
    steps = (nfe + 2) // 2  # kar1: 2N - 3 NFE, + 1 Tweedie
    out = RUNS / f"kar1-{steps}-{num}"
    if not (out / "manifest.json").is_file():
        code = ddmkit(["sample", "--model", "digits-ve", "--integrator", "kar1", "--steps", str(steps), "--num", str(num),
                       "--batch-size", str(batch), "--seed", "0", "--device", "cpu", "--out", str(out), "--quiet"])
        if code:
            raise SystemExit(code)
    if ddmkit(["evaluate", str(out)]):
        raise SystemExit(2)
    manifest = json.loads((out / "manifest.json").read_text())
    return _row("kar1", steps, manifest["nfe_per_sample"], json.loads((out / "metrics.json").read_text()),
                f"ddmkit sample --model digits-ve --integrator kar1 --steps {steps} --num {num} --seed 0 --out {out} "
                f"&& ddmkit evaluate {out}")


def diffusers_row(steps: int, num: int, batch: int) -> dict:
    """diffusers' own loop: UNet2DModel + EDMEulerScheduler from the shipped folder (Euler, ends at sigma 0)."""
    from diffusers import EDMEulerScheduler, UNet2DModel

    from ddmkit.metrics.evaluate import evaluate_images
    from ddmkit.assets import shipped_model

    folder = shipped_model("digits-ve").model_dir
    unet = UNet2DModel.from_pretrained(folder / "unet").eval()
    sched = EDMEulerScheduler.from_pretrained(folder / "scheduler")
    xs = []
    with torch.no_grad():
        for i in range(0, num, batch):
            sched.set_timesteps(steps)
            g = torch.Generator().manual_seed(10_000 + i)
            x = torch.randn(min(batch, num - i), 1, 32, 32, generator=g) * sched.sigmas[0]
            for t in sched.timesteps:
                x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
            xs.append(x.clamp(0, 1))
    x = torch.cat(xs).numpy() * 2 - 1
    return _row("diffusers EDMEulerScheduler", steps, float(steps), evaluate_images(x, "digits"),
                "benchmarks/digits_ve.py (diffusers loop: scale_model_input, unet, step; seeds 10000 + batch start)")


def _row(method: str, steps: int, nfe: float, m: dict, command: str) -> dict:
    gap = {k: abs(m["class_frequency"][k] - m["data_class_frequency"][k]) for k in m["class_frequency"]}
    keep = ("n", "fd", "fd_noise_floor", "fd_noise_floor_std", "fd_noise_floor_n", "class_frequency", "confident_fraction")
    print(method, steps, f"nfe {nfe:g}", f"FD-digits {m['fd']:.3f} (floor {m['fd_noise_floor']:.3f})", flush=True)
    return {"method": method, "steps": steps, "nfe": nfe, **{k: m[k] for k in keep},
            "max_class_frequency_gap": max(gap.values()), "command": command}


@torch.no_grad()
def denoising_error(seed: int = 0) -> list[dict]:
    """MSE per pixel of D against x0 at each sigma (module docstring), all in [0, 1] units."""
    from ddmkit.data.folders import load_digits_images
    from ddmkit.models.loading import load_model

    x0 = torch.from_numpy((load_digits_images(32)[0] + 1) / 2)
    flat = x0.flatten(1).double()
    ve, vp = load_model("digits-ve"), load_model("digits")
    rows = []
    for s in SIGMAS:
        g = torch.Generator().manual_seed(seed * 1000 + int(s * 1000))
        x = x0 + s * torch.randn(x0.shape, generator=g)
        model = torch.cat([ve(x[i : i + 300], s) for i in range(0, len(x), 300)])
        vp_d = torch.cat([vp(2 * x[i : i + 300] - 1, 2 * s) for i in range(0, len(x), 300)])
        logits = -torch.cdist(x.flatten(1).double(), flat) ** 2 / (2 * s**2)  # posterior over the data set
        ideal = (torch.softmax(logits, dim=1) @ flat).view_as(x0).float()
        mse = lambda d: float((d - x0).pow(2).mean())  # noqa: E731
        row = {"sigma": s, "model": mse(model), "vp_digits_model": mse((vp_d + 1) / 2), "ideal_data_posterior": mse(ideal),
               "identity": s**2, "data_mean": float(x0.var(dim=0, unbiased=False).mean())}
        rows.append(row)
        print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    return rows


@torch.no_grad()
def probe(source: str, num: int) -> dict:
    """kar1 at 50 NFE (26 steps, seed 123) of a training run's last checkpoint (EMA weights) or of a model."""
    from safetensors.torch import load_file

    from ddmkit.denoisers import EDMDenoiser
    from ddmkit.metrics.evaluate import evaluate_images
    from ddmkit.models.loading import load_model
    from ddmkit.sampling import sample
    from ddmkit.training import TrainConfig, build_unet

    ckpt = Path(source) / "checkpoint"
    if (ckpt / "state.json").is_file():
        state = json.loads((ckpt / "state.json").read_text())
        cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
        unet = build_unet(cfg, 1)
        unet.load_state_dict(load_file(str(ckpt / "ema.safetensors")))
        den = EDMDenoiser(unet.eval(), cfg.edm_sigma_min, cfg.edm_sigma_max, cfg.sigma_data, (1, 32, 32),
                          data_range=(0.0, 1.0))
        step, batch = int(state["step"]), cfg.batch_size
    else:
        den = load_model(source)
        folder = Path(getattr(den, "folder", source))
        cfg_json = json.loads((folder / "training_config.json").read_text())
        step, batch = int(cfg_json["completed_steps"]), int(cfg_json["batch_size"])
    res = sample(den, integrator="kar1", steps=26, num=num, seed=123, batch_size=100)
    m = evaluate_images(res.x.numpy() * 2 - 1, "digits")
    row = {"source": source, "step": step, "images_seen": step * batch, "n": num, "nfe": res.nfe_per_sample,
           "fd": m["fd"], "fd_noise_floor": m["fd_noise_floor"], "pixel_rms": float(res.x.pow(2).mean().sqrt())}
    print(row, flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--probe", default=None, help="a `ddmkit train` run folder (its last checkpoint) or a model")
    p.add_argument("--probe-num", type=int, default=500)
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--diffusers-steps", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.probe:
        from benchmarks.common import read_json

        result = read_json("digits_ve.json", {}) or {}
        rows = result.get("training_length", [])
        row = probe(args.probe, args.probe_num)
        rows = [r for r in rows if (r["source"], r["step"], r["n"]) != (row["source"], row["step"], row["n"])] + [row]
        result["training_length"] = sorted(rows, key=lambda r: r["images_seen"])
        result["training_length_command"] = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/digits_ve.py --probe SOURCE --probe-num N"
        print("wrote", write_json("digits_ve.json", result))
        return
    t0 = time.time()
    from ddmkit.assets import shipped_model

    folder = shipped_model("digits-ve").model_dir
    rows = [kar1_row(n, args.num, args.batch_size) for n in args.nfe]
    rows.append(diffusers_row(args.diffusers_steps, args.num, args.batch_size))
    result = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/digits_ve.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "model": {"spec": "digits-ve", "training_config": json.loads((folder / "training_config.json").read_text()),
                  "scheduler": json.loads((folder / "scheduler" / "scheduler_config.json").read_text()),
                  "final_train_loss": (folder / "train_log.csv").read_text().splitlines()[-1]},
        "target": "kar1 at 50+ NFE near the FD-digits noise floor (VP digits model: 1.36 vs 1.22 at 2,000 samples)",
        "rows": rows,
        "denoising_mse_per_pixel": denoising_error(),
        "seconds": round(time.time() - t0, 1),
    }
    from benchmarks.common import read_json

    for key in ("training_length", "training_length_command"):  # probe rows are kept
        if key in (read_json("digits_ve.json", {}) or {}):
            result[key] = read_json("digits_ve.json")[key]
    print("wrote", write_json("digits_ve.json", result))


if __name__ == "__main__":
    main()
