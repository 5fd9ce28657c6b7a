"""Are the default faces model's samples distributed like its data? Pixel statistics and latent radii.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/default_model_statistics.py [--num 64] [--ddpm-num 32]
    # -> results/default_model_statistics.json   (about 10 minutes on one CPU thread)

1. Per-channel mean and standard deviation, and the RMS, of the pixels (range [-1, 1]) of samples from
   several samplers -- ddmkit's kar1 (18 steps, 35 NFE) and kar2 with churn on sigma in [1, 400]
   (25 steps, 49 NFE), diffusers' DDIMScheduler (100 steps, the model's clip_sample) and DDPMScheduler
   (1,000 ancestral steps, the sampler the model was trained for) -- against the training distribution
   (`sample_faces`, held-out seed).
2. The radius |x_{t_m}| at the shipped boundaries' mixing step of DDIM-inverted real faces (what the
   boundaries were fitted on) and of generated latents drawn as `ddmkit control` draws them
   (DDIM eta 1, 50 NFE) and with the kar2 prefix (`--prefix-integrator kar2`).

Edits of generated faces are judged by a classifier trained on the data and move latents along
boundaries fitted on inverted data: where the samples are not distributed like the data, both see
inputs unlike their own.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine, write_json  # noqa: E402


def pixel_stats(x: np.ndarray) -> dict:
    x = np.clip(np.asarray(x, np.float64), -1, 1)
    return {"n": int(len(x)), "rms": float(np.sqrt((x**2).mean())), "channel_mean": x.mean((0, 2, 3)).round(4).tolist(),
            "channel_std": x.std((0, 2, 3)).round(4).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=64, help="samples per sampler (and latents per source)")
    ap.add_argument("--ddpm-num", type=int, default=32, help="samples of the 1,000-step DDPM sampler")
    ap.add_argument("--real-num", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="default_model_statistics.json", help="file name under results/")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from diffusers import DDIMScheduler, DDPMScheduler

    from ddmkit.data.faces import sample_faces, to_tensor_range
    from ddmkit.denoisers import unwrap
    from ddmkit.editing import MixingStep, invert_batched, resolve_boundary, sample_to_tm, sample_to_tm_karras
    from ddmkit.editing.seeds import prefix_noise_seeds
    from ddmkit.editing.labelled import EVAL_FACES_SEED
    from ddmkit.integrators import PerSampleGenerator
    from ddmkit.assets import shipped_model
    from ddmkit.models.loading import load_model
    from ddmkit.sampling import sample, sample_seed

    t0 = time.time()
    den = load_model("default")
    inner = unwrap(den)
    n = args.num
    real = to_tensor_range(sample_faces(args.real_num, seed=EVAL_FACES_SEED)[0])
    out: dict = {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/default_model_statistics.py " + " ".join(sys.argv[1:]),
                 "machine": machine(), "settings": vars(args), "pixels": {"data (sample_faces)": pixel_stats(real)}}

    def log(msg):
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    for name, integ, steps, opts in (("kar1, 18 steps", "kar1", 18, {}),
                                     ("kar2 churn s_tmin 1 s_tmax 400, 25 steps", "kar2", 25, {"s_tmin": 1.0, "s_tmax": 400.0})):
        res = sample(den, integrator=integ, steps=steps, num=n, seed=args.seed, batch_size=n, options=opts)
        out["pixels"][name] = {**pixel_stats(res.x.numpy()), "nfe": res.nfe_per_sample}
        log(f"{name}: {out['pixels'][name]}")

    unet = inner.unet
    folder = shipped_model("faces").model_dir / "scheduler"
    for name, sched, count in (("diffusers DDIMScheduler, 100 steps", DDIMScheduler.from_pretrained(folder), n),
                               ("diffusers DDPMScheduler, 1000 ancestral steps", DDPMScheduler.from_pretrained(folder), args.ddpm_num)):
        sched.set_timesteps(100 if isinstance(sched, DDIMScheduler) else 1000)
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn((count, 3, 32, 32), generator=g)
        with torch.no_grad():
            for t in sched.timesteps:
                x = sched.step(unet(x, t).sample, t, x, generator=g).prev_sample
        out["pixels"][name] = {**pixel_stats(x.numpy()), "nfe": len(sched.timesteps),
                               "clip_sample": bool(sched.config.clip_sample)}
        log(f"{name}: {out['pixels'][name]}")

    t_m = resolve_boundary("smiling", den).t_m
    radius = lambda z: float(z.reshape(len(z), -1).norm(dim=1).mean())  # noqa: E731
    z_inv, _ = invert_batched(den, real[:n], MixingStep(t_m, 40), batch_size=n)
    x_T = PerSampleGenerator([sample_seed(args.seed, i) for i in range(n)]).randn((n, 3, 32, 32))
    seeds = prefix_noise_seeds(args.seed, range(n))
    z_ddim = sample_to_tm(den, x_T, MixingStep(t_m), 50, eta=1.0, generator=PerSampleGenerator(seeds)).z
    z_kar2 = sample_to_tm_karras(den, x_T, MixingStep(t_m), 50, integrator="kar2", generator=PerSampleGenerator(seeds),
                                 options={"s_tmin": 1.0, "s_tmax": 400.0}).z
    d = int(np.prod(inner.sample_shape))
    out["latent_radius_at_t_m"] = {"t_m": int(t_m), "sqrt_d": float(np.sqrt(d)),
                                   "inverted data (DDIM, N_inv 40)": radius(z_inv),
                                   "generated, DDIM eta 1 prefix (ddmkit control's default)": radius(z_ddim),
                                   "generated, kar2 prefix": radius(z_kar2)}
    log(f"radii: {out['latent_radius_at_t_m']}")
    out["seconds"] = round(time.time() - t0, 1)
    print(write_json(args.out, out))


if __name__ == "__main__":
    main()
