"""Quality against NFE on a 64-D exact Gaussian mixture, for every integrator and two diffusers peers.

The mixture (`random_mixture(64, 4, seed=64)`: unequal weights, separated means) is seen through the
same sigma range as a 1000-step linear-beta DDPM, [0.01, 157.4], so that diffusers'
`DPMSolverMultistepScheduler` (DPM-Solver++ 2M) and `UniPCMultistepScheduler` can drive it as an
epsilon-prediction model: eps(x_vp, t) = (x_ve - D(x_ve, sigma_t)) / sigma_t with x_ve = x_vp sqrt(1 + sigma_t^2).
Metrics against the known truth: the Frechet distance between the samples' Gaussian fit and the
mixture's exact mean/covariance, and the largest error of the component weights; the noise floor is
the same metrics for exact samples of the same size.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gmm_quality.py    # -> results/gmm_quality.{json,csv,png} (+ _meta.json)
"""
from __future__ import annotations

import csv
import time

import torch

from common import RESULTS, machine, write_json
from ddmkit.denoisers import vp_sigmas
from ddmkit.mixtures import GMMDenoiser, frechet_to_mixture, random_mixture
from ddmkit.sampling import sample

N_SAMPLES = 2000
STEPS = {
    "kar1": [3, 4, 6, 11, 26, 51, 101],
    "kar2": [3, 4, 6, 11, 26, 51, 101],
    "rd": [4, 9, 19, 49, 99, 199],
    "em": [4, 9, 19, 49, 99, 199],
    "pf": [4, 9, 19, 49, 99, 199],
    "ddim": [4, 9, 19, 49, 99, 199],
}
RK45_TOLS = [3e-1, 1e-1, 3e-2, 1e-2, 1e-3, 1e-4]
PEER_STEPS = [4, 9, 19, 49, 99, 199]


def metrics(x: torch.Tensor, mixture) -> dict:
    w = torch.bincount(mixture.assign(x), minlength=mixture.num_components).double() / len(x)
    return {"frechet": frechet_to_mixture(x, mixture), "weight_error": (w - mixture.weights).abs().max().item()}


@torch.no_grad()
def diffusers_peer(name: str, steps: int, den: GMMDenoiser, alphas_cumprod: torch.Tensor, seed: int):
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    cfg = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    sched = (DPMSolverMultistepScheduler(**cfg, algorithm_type="dpmsolver++", solver_order=2)
             if name == "dpmpp_2m" else UniPCMultistepScheduler(**cfg))
    sched.set_timesteps(steps)
    sig_table = vp_sigmas(alphas_cumprod)
    x = torch.randn(N_SAMPLES, den.sample_shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    nfe = 0
    for t in sched.timesteps:
        s = sig_table[int(t)]
        x_ve = x * (1 + s**2).sqrt()
        eps = (x_ve - den(x_ve, torch.full((N_SAMPLES,), float(s), dtype=torch.float64))) / s
        nfe += 1
        x = sched.step(eps, t, x).prev_sample
    return x.float(), nfe  # final alphas_cumprod is 1 at t = 0 -> x is in data space


def main() -> None:
    torch.set_num_threads(1)
    from diffusers import DDPMScheduler

    mixture = random_mixture(64, 4, seed=64)
    alphas = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod
    table = vp_sigmas(alphas)
    den = GMMDenoiser(mixture, sigma_min=float(table[0]), sigma_max=float(table[-1]))
    exact, _ = mixture.sample(N_SAMPLES, torch.Generator().manual_seed(123))
    rows = [{"method": "exact samples (noise floor)", "dlg": False, "nfe": 0, "settings": {"n": N_SAMPLES},
             "metrics": metrics(exact, mixture)}]
    print(rows[0], flush=True)
    runs = [(name, steps, {}) for name, grid in STEPS.items() for steps in grid]
    runs += [("rk45", 1, {"rtol": tol, "atol": tol}) for tol in RK45_TOLS]
    for name, steps, opts in runs:
        t0 = time.time()
        res = sample(den, integrator=name, steps=steps, num=N_SAMPLES, batch_size=N_SAMPLES, seed=0, options=opts)
        row = {"method": name, "dlg": False, "nfe": res.nfe_per_sample, "settings": {"steps": steps, **opts, "tweedie": True},
               "metrics": metrics(res.x, mixture), "seconds": round(time.time() - t0, 2)}
        rows.append(row)
        print(row, flush=True)
    for peer in ("dpmpp_2m", "unipc"):
        for steps in PEER_STEPS:
            x, nfe = diffusers_peer(peer, steps, den, alphas, seed=0)
            row = {"method": peer, "dlg": False, "nfe": nfe, "settings": {"steps": steps, "library": "diffusers"},
                   "metrics": metrics(x, mixture)}
            rows.append(row)
            print(row, flush=True)
    write_json("gmm_quality.json", rows)  # a list of rows {method, dlg, nfe, settings, metrics}
    write_json("gmm_quality_meta.json", {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gmm_quality.py",
                                         "mixture": "random_mixture(64, 4, seed=64)", "n_samples": N_SAMPLES,
                                         "machine": machine()})
    with open(RESULTS / "gmm_quality.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "nfe", "steps", "frechet", "weight_error"])
        for r in rows:
            w.writerow([r["method"], r["nfe"], r["settings"].get("steps", r["settings"].get("rtol", "")),
                        f"{r['metrics']['frechet']:.6g}", f"{r['metrics']['weight_error']:.4g}"])
    plot(rows)


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    floor = rows[0]["metrics"]
    methods = sorted({r["method"] for r in rows[1:]}, key=lambda m: [r["method"] for r in rows].index(m))
    for key, ax in zip(("frechet", "weight_error"), axes):
        for m in methods:
            pts = sorted((r["nfe"], r["metrics"][key]) for r in rows if r["method"] == m)
            style = "--" if m in ("dpmpp_2m", "unipc") else "-"
            ax.plot([p[0] for p in pts], [max(p[1], 1e-6) for p in pts], style, marker="o", ms=3, label=m)
        ax.axhline(max(floor[key], 1e-6), color="k", lw=0.8, ls=":", label="exact samples")
        ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel("NFE per sample (measured)")
        ax.set_ylabel({"frechet": "Frechet distance to the true mixture", "weight_error": "max component-weight error"}[key])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"64-D exact Gaussian mixture, {N_SAMPLES} samples per point")
    fig.tight_layout()
    fig.savefig(RESULTS / "gmm_quality.png", dpi=90)


if __name__ == "__main__":
    main()
