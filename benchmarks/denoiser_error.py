"""Where the shipped models' denoisers are wrong, per noise level, against what a perfect denoiser reaches.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/denoiser_error.py
    # -> results/denoiser_error.json, results/denoiser_error.png  (about an hour on one loaded CPU thread)

For the faces model (`load_model("default")`) and the digits model, at 20 noise levels log-spaced over
[sigma_min, sigma_max] (snapped to the model's own discrete DDPM levels, so D is asked only what it was
trained on):

(a) the denoising error E|D(x0 + sigma eps, sigma) - x0|^2 / d (per pixel) on real data, beside estimators
    whose error bounds what is reachable: for the faces (a continuous distribution; the queries are held-out
    faces, seed 80,000,000, apart from every training seed 0..3,999, 1,000,003.. and 2,000,006..) every
    estimator's error is >= the Bayes error (MMSE), so each reference is an UPPER bound on the MMSE and
    `excess` (model - best reference) is a LOWER bound on how far the model is from optimal:
      - the data mean (error = the total data variance, what the optimum tends to at high sigma);
      - the Wiener filter mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu) (the best affine estimator), clamped;
      - the posterior mean of the empirical distribution of M reference faces (a mixture of Diracs,
        seed 81,000,000; softmax weights over |x - y_j|^2 / 2 sigma^2; M = 2,000, 8,000, 32,000 shows
        its convergence to the MMSE where it has converged).
    For the digits (trained on all 1,797 scans, no held-out set) the queries are 1,000 of the training
    scans and the empirical posterior mean over all 1,797 is the exact minimiser of the training loss:
    its error is a LOWER bound for any denoiser on that loss (reached only by memorising).
    `eps_mse` is the same error in the units of DDPM's training loss, |eps_hat - eps|^2 / d = |D - x0|^2 /
    (d sigma^2): it shows how little the loss sees of an error of D at high sigma.
(b) the statistics of D over those draws -- per-channel mean and std, pixel RMS, spread over draws, the
    share of saturated pixels of the unclamped D -- against the empirical posterior mean's (the exact
    answer up to M) and the data's; and D on pure noise sigma_max * eps (what a sampler's first call sees).
(c) the ODE's colour drift: kar1 (18 steps, 34 NFE with Tweedie, 200 samples, seed 0) from sigma_max and
    from sigma 20: the statistics of D(x_sigma, sigma) (the predicted x0) at every call, beside the
    empirical posterior mean's statistics on data + noise at the same sigma (where an exact ODE's x_sigma
    is distributed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import RecordingDenoiser, log, machine, pixel_stats, write_json, RESULTS
from ddmkit.data.faces import sample_faces, to_tensor_range
from ddmkit.data.folders import load_digits_images
from ddmkit.denoisers import unwrap
from ddmkit.io import atomic_write_json
from ddmkit.models.loading import load_model
from ddmkit.sampling import sample

QUERY_SEED = 80_000_000  # held-out faces (training used seeds < 2,001,000)
REFERENCE_SEED = 81_000_000
EPS_SEED = 0
REF_SIZES = (2_000, 8_000, 32_000)
CACHE = Path(__file__).resolve().parent.parent / "runs" / "bench-denoiser-error"


class EmpiricalPosterior:
    """E[x0 | x0 + sigma eps] for the empirical distribution of `refs` (a mixture of Diracs), for fixed
    queries x0 and noise eps at any sigma: |x - y_j|^2 = A_ij + 2 sigma B_ij + sigma^2 |eps_i|^2 with
    A = |x0 - y|^2 and B = eps . (x0 - y) computed once in float64 (the last term cancels in the softmax)."""

    def __init__(self, x0: torch.Tensor, eps: torch.Tensor, refs: torch.Tensor, chunk: int = 4000):
        x0d, epsd = x0.double(), eps.double()
        self.refs = refs.float()
        a, b = [], []
        for y in refs.split(chunk):
            y = y.double()
            a.append((x0d**2).sum(1, keepdim=True) - 2 * x0d @ y.T + (y**2).sum(1)[None])
            b.append((epsd * x0d).sum(1, keepdim=True) - epsd @ y.T)
        self.a, self.b = torch.cat(a, 1).clamp(min=0), torch.cat(b, 1)

    def mean(self, sigma: float, m: int | None = None) -> torch.Tensor:
        m = m or self.refs.shape[0]
        w = torch.softmax(-(self.a[:, :m] + 2 * sigma * self.b[:, :m]) / (2 * sigma**2), dim=1)
        return w.float() @ self.refs[:m]


class Wiener:
    """The best affine denoiser for data of mean mu and covariance Sigma = U diag(lam) U^T:
    D(x) = mu + U diag(lam / (lam + sigma^2)) U^T (x - mu); its population error is sum lam sigma^2/(lam+sigma^2)."""

    def __init__(self, refs: torch.Tensor):
        y = refs.double()
        self.mu = y.mean(0)
        yc = y - self.mu
        lam, self.u = torch.linalg.eigh(yc.T @ yc / (len(y) - 1))
        self.lam = lam.clamp(min=0)

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        u = self.u.float()
        gain = (self.lam / (self.lam + sigma**2)).float()
        return self.mu.float() + (((x - self.mu.float()) @ u) * gain) @ u.T

    def population_mse(self, sigma: float) -> float:
        return float((self.lam * sigma**2 / (self.lam + sigma**2)).mean())


def load_data(model: str, num: int, ref_num: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(queries x0, reference points), flattened float32 in [-1, 1], and how they were drawn."""
    if model == "default":
        q = to_tensor_range(sample_faces(num, seed=QUERY_SEED)[0])
        r = to_tensor_range(sample_faces(ref_num, seed=REFERENCE_SEED)[0])
        desc = (f"queries: sample_faces({num}, seed={QUERY_SEED}) (held out); references: "
                f"sample_faces({ref_num}, seed={REFERENCE_SEED})")
    else:
        r = load_digits_images(32)[0]
        q = r[np.random.default_rng(0).permutation(len(r))[:num]]
        desc = f"queries: {num} of the 1,797 training digits (permutation seed 0); references: all 1,797"
    return torch.from_numpy(q).flatten(1), torch.from_numpy(r).flatten(1), desc


def model_levels(den, k: int = 20) -> list[tuple[int, float]]:
    """(timestep, sigma) of the model's discrete levels nearest (in log sigma) to k log-spaced targets."""
    inner = unwrap(den)
    targets = np.geomspace(inner.sigma_min, inner.sigma_max, k)
    ts = sorted({int((inner.log_sigmas - np.log(v)).abs().argmin()) for v in targets})
    return [(t, float(inner.sigmas[t])) for t in ts]


@torch.no_grad()
def model_d(den, x: torch.Tensor, sigma: float, shape: tuple, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(D clamped as the model clamps it, D unclamped), flattened, for flattened inputs x."""
    inner = unwrap(den)
    raws = [inner.denoise(xb.reshape((-1,) + shape), torch.full((len(xb),), sigma)).flatten(1) for xb in x.split(batch)]
    raw = torch.cat(raws)
    lo, hi = inner.data_range
    return (raw.clamp(lo, hi) if inner.clip_denoised else raw), raw


def stats_of(x: torch.Tensor, shape: tuple) -> dict:
    return pixel_stats(x.reshape((-1,) + shape))


def mse(d: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Per-query squared error per pixel."""
    return ((d - x0) ** 2).mean(1).double()


def references(x: torch.Tensor, x0: torch.Tensor, sigma: float, emp: EmpiricalPosterior, wiener: Wiener,
               sizes: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-query errors of the reference estimators at sigma, and the largest-M empirical posterior mean."""
    errs = {"data_mean": mse(wiener.mu.float().expand_as(x0), x0),
            "wiener_clamped": mse(wiener(x, sigma).clamp(-1, 1), x0)}
    for m in sizes:
        d_emp = emp.mean(sigma, m)
        errs[f"empirical_posterior_M{m}"] = mse(d_emp, x0)
    return errs, d_emp


def level_row(den, t: int, sigma: float, x0: torch.Tensor, eps: torch.Tensor, emp: EmpiricalPosterior, wiener: Wiener,
              sizes: tuple[int, ...], held_out: bool, batch: int) -> dict:
    """(a) and (b) at one level: errors per pixel, the excess over the best reference, D's statistics."""
    shape = unwrap(den).sample_shape
    x = x0 + sigma * eps
    d, raw = model_d(den, x, sigma, shape, batch)
    e_model, e_raw = mse(d, x0), mse(raw, x0)
    errs, d_emp = references(x, x0, sigma, emp, wiener, sizes)
    means = {k: float(v.mean()) for k, v in errs.items()}
    if held_out:  # every reference is an upper bound on the MMSE: take the tightest
        best = min(means, key=means.get)
        kind = "upper bound on the MMSE (tightest reference)"
    else:  # the empirical posterior mean over the whole training set is the exact optimum of the training loss
        best = f"empirical_posterior_M{sizes[-1]}"
        kind = "exact minimum of the training loss (empirical posterior mean over the training set)"
    diff = e_model - errs[best]
    n = len(x0)
    bias = lambda dd: float(((dd.mean(0) - x0.mean(0)) ** 2).mean().sqrt())  # noqa: E731
    return {
        "t": t, "sigma": sigma,
        "mse_per_pixel": {"model": float(e_model.mean()), "model_unclamped": float(e_raw.mean()), **means},
        "model_mse_se": float(e_model.std() / n**0.5),
        "wiener_population_mse": wiener.population_mse(sigma),
        "best_reference": best, "reference_kind": kind,
        "excess": float(diff.mean()), "excess_se": float(diff.std() / n**0.5),
        "excess_ratio": float(e_model.mean() / errs[best].mean()) if float(errs[best].mean()) > 1e-9 else None,
        "eps_mse": {"model_unclamped": float(e_raw.mean()) / sigma**2, "reference": means[best] / sigma**2,
                    "excess": float((e_raw - errs[best]).mean()) / sigma**2},
        "d_stats": {"model": stats_of(d, shape), f"empirical_posterior_M{sizes[-1]}": stats_of(d_emp, shape)},
        "bias_rms": {"model": bias(d), f"empirical_posterior_M{sizes[-1]}": bias(d_emp)},
        "saturated_share": float(((raw < -1) | (raw > 1)).double().mean()),
    }


def ode_drift(den, emp: EmpiricalPosterior, x0: torch.Tensor, eps: torch.Tensor, starts: list[float], num: int,
              ref_m: int) -> list[dict]:
    """(c) kar1 (18 steps) from each start: D's statistics at every call beside the empirical posterior
    mean's on data + noise at the same sigma."""
    shape = unwrap(den).sample_shape
    out, ref_cache = [], {}
    for s0 in starts:
        rec = RecordingDenoiser(den)
        res = sample(rec, integrator="kar1", steps=18, num=num, seed=0, batch_size=num, sigma_start=s0,
                     callback=rec.next_batch)
        calls = rec.to_json()
        for c in calls:
            s = round(c["sigma"], 6)
            if s not in ref_cache:
                ref_cache[s] = stats_of(emp.mean(s, ref_m), shape)
            c["empirical_posterior_on_data_plus_noise"] = ref_cache[s]
            c["data_plus_noise_rms"] = float(((x0 + s * eps) ** 2).mean().sqrt())
        out.append({"integrator": "kar1", "steps": 18, "sigma_start": s0, "nfe": res.nfe_per_sample, "n": num,
                    "seed": 0, "calls": calls, "samples": pixel_stats(res.x)})
        log(f"  drift from {s0:g}: samples {out[-1]['samples']}")
    return out


def run_model(model: str, args) -> dict:
    den = load_model(model)
    inner = unwrap(den)
    held_out = model == "default"
    x0, refs, desc = load_data(model, args.num, args.ref_num if held_out else 0)
    sizes = tuple(m for m in REF_SIZES if m <= len(refs)) if held_out else (len(refs),)
    eps = torch.from_numpy(np.random.default_rng(EPS_SEED).standard_normal(x0.shape, dtype=np.float32))
    log(f"{model}: {len(x0)} queries, {len(refs)} references; {desc}")
    emp, wiener = EmpiricalPosterior(x0, eps, refs), Wiener(refs)
    shape = inner.sample_shape
    data = stats_of(x0, shape)
    data["total_variance_per_pixel"] = float(x0.var(0).mean())
    rows = []
    for t, sigma in model_levels(den, args.levels):
        rows.append(level_row(den, t, sigma, x0, eps, emp, wiener, sizes, held_out, args.batch_size))
        r = rows[-1]
        log(f"  sigma {sigma:8.4f}: model {r['mse_per_pixel']['model']:.5f} ref {r['best_reference']} "
            f"{r['mse_per_pixel'][r['best_reference']]:.5f} ratio {r['excess_ratio'] or float('nan'):.2f} "
            f"D rms {r['d_stats']['model']['rms']:.3f} vs {list(r['d_stats'].values())[1]['rms']:.3f}")
    g = torch.Generator().manual_seed(1)
    noise = torch.randn((args.batch_size,) + tuple(shape), generator=g) * inner.sigma_max
    d_noise, raw_noise = model_d(den, noise.flatten(1), inner.sigma_max, shape, args.batch_size)
    pure = {"sigma": inner.sigma_max, "n": len(noise), "d": stats_of(d_noise, shape),
            "saturated_share": float(((raw_noise < -1) | (raw_noise > 1)).double().mean()),
            "data_mean_image": stats_of(wiener.mu.float()[None], shape)}
    drift = ode_drift(den, emp, x0, eps, [inner.sigma_max, 20.0], args.drift_num, min(sizes[-1], 8_000))
    return {"model": model, "data": desc, "n_queries": len(x0), "n_references": len(refs), "reference_sizes": sizes,
            "data_stats": data, "levels": rows, "pure_noise_at_sigma_max": pure, "ode_drift": drift}


def plot(results: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 4, figsize=(21, 4.6 * len(results)), squeeze=False)
    for ax, res in zip(axes, results):
        lv = res["levels"]
        s = [r["sigma"] for r in lv]
        for key in lv[0]["mse_per_pixel"]:
            ax[0].plot(s, [r["mse_per_pixel"][key] for r in lv], "-o" if key == "model" else "--", ms=3, label=key)
        floor = 0.3 * min(r["mse_per_pixel"]["model"] for r in lv)
        ax[0].set(xscale="log", yscale="log", ylim=(floor, None), xlabel="sigma", ylabel="E|D - x0|^2 / d",
                  title=f"{res['model']}: denoising error on data + noise")
        ax[0].legend(fontsize=7)
        ax[1].plot(s, [np.nan if r["excess_ratio"] is None else r["excess_ratio"] for r in lv], "-o", ms=3,
                   label="model / best reference")
        ax[1].axhline(1, color="k", lw=0.5)
        ref_kind = "vs an upper bound on the MMSE" if "upper" in lv[0]["reference_kind"] else "vs the training-loss optimum"
        ax[1].set(xscale="log", yscale="log", ylim=(0.1, 20), xlabel="sigma", ylabel="model error / reference error",
                  title=f"excess error {ref_kind}")
        tw = ax[1].twinx()
        tw.plot(s, [r["eps_mse"]["excess"] if r["eps_mse"]["excess"] > 0 else np.nan for r in lv], "-s", color="C3",
                ms=3, label="excess in eps-loss units (where > 0)")
        tw.set(yscale="log", ylabel="eps-loss excess (training-loss units)")
        ax[1].legend(loc="upper left", fontsize=7)
        tw.legend(loc="upper right", fontsize=7)
        ref_key = [k for k in lv[0]["d_stats"] if k != "model"][0]
        ax[2].plot(s, [r["d_stats"]["model"]["rms"] for r in lv], "-o", ms=3, label="D rms, data + noise (model)")
        ax[2].plot(s, [r["d_stats"][ref_key]["rms"] for r in lv], "--", label=f"D rms, data + noise ({ref_key})")
        for d in res["ode_drift"]:
            calls = [c for c in d["calls"] if c["sigma"] > 0]
            ax[2].plot([c["sigma"] for c in calls], [c["d"]["rms"] for c in calls], "-^", ms=3,
                       label=f"D rms along kar1 from {d['sigma_start']:.0f}")
        ax[2].axhline(res["data_stats"]["rms"], color="k", lw=0.8, ls=":", label="data rms")
        ax[2].set(xscale="log", xlabel="sigma", ylabel="pixel RMS of D", title="predicted x0: colour saturation")
        ax[2].legend(fontsize=7)
        channels = len(res["data_stats"]["channel_mean"])
        for c in range(channels):
            col = ("C3", "C2", "C0")[c] if channels == 3 else "C0"
            ax[3].plot(s, [r["d_stats"][ref_key]["channel_mean"][c] for r in lv], "--", color=col,
                       label=f"channel {c}: exact (data + noise)")
            for d, style in zip(res["ode_drift"], ("-^", ":v")):
                calls = [k for k in d["calls"] if k["sigma"] > 0]
                ax[3].plot([k["sigma"] for k in calls], [k["d"]["channel_mean"][c] for k in calls], style, ms=3,
                           color=col, label=f"channel {c}: kar1 from {d['sigma_start']:.0f}")
            ax[3].axhline(res["data_stats"]["channel_mean"][c], color=col, lw=0.6, ls=":")
        ax[3].set(xscale="log", xlabel="sigma", ylabel="channel mean of D", title="predicted x0: colour drift")
        ax[3].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["default", "digits"])
    ap.add_argument("--num", type=int, default=1000, help="query images (data + noise) per level")
    ap.add_argument("--ref-num", type=int, default=REF_SIZES[-1], help="reference faces of the empirical posterior")
    ap.add_argument("--levels", type=int, default=20)
    ap.add_argument("--drift-num", type=int, default=200, help="kar1 samples of the colour-drift runs")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--out", default="denoiser_error")
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the results JSON")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads((RESULTS / f"{args.out}.json").read_text())["models"], RESULTS / f"{args.out}.png")
        return
    torch.set_num_threads(1)
    t0 = time.time()
    results = []
    CACHE.mkdir(parents=True, exist_ok=True)
    for m in args.models:  # each model's result is kept, so that a rerun with the same settings resumes
        part = CACHE / f"{Path(args.out).name}-{m}-{args.num}-{args.ref_num}-{args.levels}-{args.drift_num}-{args.batch_size}.json"
        if not part.is_file():
            atomic_write_json(part, run_model(m, args))
        results.append(json.loads(part.read_text()))
    out = {"command": "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/denoiser_error.py " + " ".join(sys.argv[1:]),
           "machine": machine(), "settings": vars(args), "seconds": round(time.time() - t0), "models": results}
    print(write_json(f"{args.out}.json", out))
    plot(results, RESULTS / f"{args.out}.png")


if __name__ == "__main__":
    main()
