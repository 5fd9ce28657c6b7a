"""DLG vs plain sampling on an exact 64-D Gaussian mixture, for each of the seven integrators, at NFE ~5-100.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dmcmc_gmm.py            # resumable; ~15-30 min on 1 CPU thread
    -> benchmarks/results/dmcmc_gmm.json (rows), dmcmc_gmm_tuning.json (every setting tried), dmcmc_gmm.png

Model: `random_mixture(64, 4, seed=0)` seen through its exact denoiser (sigma in [0.002, 80]); the
truth is known, so the metrics are exact: Frechet distance of the samples' Gaussian fit to the
mixture's exact mean/covariance (`frechet_to_mixture`) and the weight error, the total variation
0.5 sum_k |w_hat_k - w_k| of the component frequencies (samples assigned to their most probable
component). `exact` rows give the floor: true samples of the same size.

Every row is measured: `nfe` is the NFE per sample counted by NFECounter. For DLG it is the paper's
per-output NFE (n_skip + integrator + 1 Tweedie); `nfe_with_burn_in` adds the burn-in amortised over the
outputs (57 NFE per chain; 200 chains, 2000 outputs: +5.7). Plain sampling also gets the Tweedie step.

DLG settings per (integrator, budget): n_skip takes 20/40/60% of the budget, the integrator the most
steps that fit the rest, eta in {0.02, 0.1, 0.4} (unbounded data: used as is), the noise-level classifier
is ddmkit's MLP trained here on exact mixture samples (K = 1000, 20k steps of 256). The chosen settings
are also run with the exact (Bayes) classifier of the mixture, `settings.classifier = "exact"`, to
separate the sampler from the classifier's errors. The setting is chosen on a tuning run
(seed 0, 1000 samples) and the chosen one is scored on fresh samples (seed 1, 2000 samples), so the
DLG rows are not selected on the samples they are scored on. RK45 has no budget knob: its tolerance
(and n_skip) is varied and the NFE measured.

Peers (VP wrapper, NFE = steps, no Tweedie): diffusers' DPMSolverMultistepScheduler (DPM-Solver++ 2M)
and UniPCMultistepScheduler (bh2) on the DDPM linear-beta schedule, with the mixture's epsilon
prediction eps(x_vp, t) = (x_ve - D(x_ve, sigma_t)) / sigma_t, x_ve = x_vp sqrt(1 + sigma_t^2),
sigma_t = sqrt((1 - abar_t) / abar_t).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CACHE = RESULTS / "cache"
OUT = RESULTS / "dmcmc_gmm.json"
TUNING = RESULTS / "dmcmc_gmm_tuning.json"
PLOT = RESULTS / "dmcmc_gmm.png"

DIM, COMPONENTS, MIX_SEED = 64, 4, 0
NUM, CHAINS, SEED = 10_000, 1000, 1
TUNE_NUM, TUNE_CHAINS, TUNE_SEED = 2000, 200, 0
ETAS = (0.02, 0.1, 0.4)
SHARES = (0.2, 0.4, 0.6)
BUDGETS = (5, 7, 10, 15, 20, 30, 50, 100)
PLAIN_STEPS = {
    "kar1": (3, 4, 5, 6, 8, 11, 16, 26, 51), "kar2": (3, 4, 5, 6, 8, 11, 16, 26, 51),
    "rd": (4, 6, 9, 14, 19, 29, 49, 99, 199), "em": (4, 6, 9, 14, 19, 29, 49, 99, 199),
    "pf": (4, 6, 9, 14, 19, 29, 49, 99, 199), "ddim": (4, 6, 9, 14, 19, 29, 49, 99),
}
RK45_TOLS = (1e-1, 1e-2, 1e-3, 1e-5)
RK45_SKIPS = (2, 5, 10)
PEER_STEPS = (5, 7, 10, 15, 20, 30, 50)
INTEGRATORS = ("kar1", "kar2", "rd", "em", "pf", "rk45", "ddim")
CLASSIFIER_STEPS = 20_000  # 5M noisy samples (the paper's CIFAR10 net saw 10M); ~10 min on one thread


def setup():
    torch.set_num_threads(1)
    from ddmkit.mixtures import GMMDenoiser, random_mixture

    mix = random_mixture(DIM, COMPONENTS, seed=MIX_SEED)
    return mix, GMMDenoiser(mix)


def metrics(x: torch.Tensor, mix) -> dict:
    from ddmkit.mixtures import frechet_to_mixture

    x = x.double()
    if not torch.isfinite(x).all():
        return {"frechet": None, "weight_error": None, "non_finite": int((~torch.isfinite(x)).any(1).sum())}
    comp = mix.assign(x)
    w = torch.bincount(comp, minlength=mix.num_components).double() / len(x)
    within = 0.0
    for k in range(mix.num_components):
        xk = x[comp == k]
        if len(xk) < 2:
            return {"frechet": frechet_to_mixture(x.float(), mix), "weight_error": float(0.5 * (w - mix.weights).abs().sum()),
                    "frechet_within": None}
        within += float(mix.weights[k]) * _fd_gauss(xk, mix.means[k], mix.stds[k])
    return {"frechet": frechet_to_mixture(x.float(), mix), "weight_error": float(0.5 * (w - mix.weights).abs().sum()),
            "frechet_within": within}


def _fd_gauss(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> float:
    """Frechet distance between the Gaussian fit of x and N(mean, diag(std^2))."""
    x = x.numpy()
    mu, cov = x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))
    s = std.numpy()
    # sqrt(S cov S) with S = diag(std) has the trace of sqrt(cov diag(std^2))
    ev = np.linalg.eigvalsh(s[:, None] * cov * s[None, :])
    return float(((mu - mean.numpy()) ** 2).sum() + np.trace(cov) + (s**2).sum() - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def get_classifier(mix, den):
    from ddmkit.dmcmc.classifier_training import ClassifierTrainConfig, train_noise_classifier
    from ddmkit.dmcmc.noise_classifier import load_classifier, paths_for
    from ddmkit.dmcmc.classifier_data import mixture_data

    path = CACHE / "dmcmc_gmm_classifier"
    if not paths_for(path)[1].is_file():
        cfg = ClassifierTrainConfig(k=1000, steps=CLASSIFIER_STEPS, batch_size=256, lr=2e-3, checkpoint_every=1000)
        train_noise_classifier(mixture_data(mix, seed=0), (DIM,), None, den.sigma_min, den.sigma_max, path, cfg,
                               meta={"model": f"random_mixture({DIM}, {COMPONENTS}, seed={MIX_SEED})"}, progress=True)
    return load_classifier(path)


class Table:
    """Rows keyed by (method, dlg, settings); rewritten atomically after every new row."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = json.loads(path.read_text()) if path.is_file() else []
        self.keys = {self.key(r) for r in self.rows}

    @staticmethod
    def key(row: dict) -> str:
        return json.dumps([row["method"], row["dlg"], row["settings"]], sort_keys=True)

    def has(self, method, dlg, settings) -> dict | None:
        k = json.dumps([method, dlg, settings], sort_keys=True)
        return next((r for r in self.rows if self.key(r) == k), None) if k in self.keys else None

    def add(self, row: dict) -> dict:
        from ddmkit.io import atomic_write_json

        self.rows.append(row)
        self.keys.add(self.key(row))
        atomic_write_json(self.path, self.rows)
        return row


def run_plain(den, mix, integrator, steps, options, num, seed):
    from ddmkit.sampling import sample

    t = time.time()
    res = sample(den, integrator=integrator, steps=steps, num=num, seed=seed, batch_size=num, options=options)
    return {"nfe": res.nfe_per_sample, "metrics": metrics(res.x, mix), "seconds": round(time.time() - t, 2)}


def run_dlg(den, mix, clf, integrator, steps, eta, n_skip, options, num, seed, chains=None) -> dict:
    from ddmkit.dmcmc.dlg import DLGConfig, dlg_sample

    t = time.time()
    cfg = DLGConfig(integrator=integrator, steps=steps, eta=eta, n_skip=n_skip, options=options)
    res = dlg_sample(den, clf, cfg, num=num, chains=chains or CHAINS, seed=seed, report=lambda m: None)
    return {"nfe": res.nfe["per_output"], "nfe_with_burn_in": res.nfe["per_output_with_burn_in"],
            "metrics": metrics(res.x, mix), "divergences": len(res.events),
            "sigma_star_median": float(np.median(res.sigma_star)), "seconds": round(time.time() - t, 2)}


def vp_eps_model(den):
    """The mixture's epsilon prediction in VP coordinates on the DDPM linear-beta schedule."""
    from diffusers import DDPMScheduler

    acp = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02).alphas_cumprod.double()
    sig = ((1 - acp) / acp).sqrt()

    def eps(x_vp: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t).long().reshape(-1).expand(len(x_vp))
        s = sig[t].to(x_vp.dtype)[:, None]
        x_ve = x_vp * (1 + s**2).sqrt()
        return (x_ve - den(x_ve, s[:, 0])) / s

    return eps


def run_peer(den, mix, name, steps, num, seed):
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    from ddmkit.integrators import PerSampleGenerator
    from ddmkit.sampling import sample_seed

    cls = {"dpmsolver++2m": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler}[name]
    sched = cls(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    sched.set_timesteps(steps)
    eps = vp_eps_model(den)
    t0 = time.time()
    x = PerSampleGenerator([sample_seed(seed, i) for i in range(num)]).randn((num, DIM)).double()
    calls = 0
    for t in sched.timesteps:
        e = eps(x, t)
        calls += 1
        x = sched.step(e, t, x).prev_sample
    return {"nfe": calls, "metrics": metrics(x.float(), mix), "seconds": round(time.time() - t0, 2),
            "settings_extra": {"scheduler": cls.__name__, "timestep_spacing": sched.config.timestep_spacing}}


def fit(integrator, budget):
    from ddmkit.dmcmc.tune import max_steps

    out = set()
    for share in SHARES:
        n_skip = max(1, int(round(share * budget)))
        steps = max_steps(integrator, budget - n_skip - 1)
        if steps is not None:
            out.add((n_skip, steps))
    return sorted(out)


def main() -> None:
    mix, den = setup()

    RESULTS.mkdir(exist_ok=True)
    table, tuning = Table(OUT), Table(TUNING)
    clf = get_classifier(mix, den)
    from ddmkit.dmcmc.noise_classifier import exact_mixture_classifier

    exact = exact_mixture_classifier(mix, den.sigma_min, den.sigma_max, 1000)  # reference: the Bayes classifier
    t_start = time.time()

    def log(msg):
        print(f"[{time.time() - t_start:7.1f}s] {msg}", flush=True)

    # floor: exact samples of the same size
    for seed in (SEED, SEED + 1):
        s = {"num": NUM, "seed": seed}
        if not table.has("exact", False, s):
            x = mix.sample(NUM, torch.Generator().manual_seed(seed))[0]
            table.add({"method": "exact", "dlg": False, "nfe": 0, "settings": s, "metrics": metrics(x, mix)})
    # peers
    for name in ("dpmsolver++2m", "unipc"):
        for steps in PEER_STEPS:
            s = {"steps": steps, "num": NUM, "seed": SEED}
            if not table.has(name, False, s):
                r = run_peer(den, mix, name, steps, NUM, SEED)
                table.add({"method": name, "dlg": False, "nfe": r["nfe"], "settings": s, "details": r.pop("settings_extra"),
                           "metrics": r["metrics"], "seconds": r["seconds"]})
                log(f"{name} {steps}: {r['metrics']}")
    # plain integrators
    for integ in INTEGRATORS:
        grid = [({"steps": n, "options": {}}) for n in PLAIN_STEPS.get(integ, ())]
        if integ == "rk45":
            grid = [{"steps": 1, "options": {"rtol": tol, "atol": tol}} for tol in RK45_TOLS]
        for g in grid:
            s = {**g, "num": NUM, "seed": SEED}
            if not table.has(integ, False, s):
                r = run_plain(den, mix, integ, g["steps"], g["options"], NUM, SEED)
                table.add({"method": integ, "dlg": False, **r, "settings": s})
                log(f"plain {integ} {g}: nfe {r['nfe']:.1f} {r['metrics']}")
    # DLG: tune on seed 0, score the chosen setting on seed 1
    for integ in INTEGRATORS:
        if integ == "rk45":
            cands = {f"tol{tol:g}": [(n_skip, 1, {"rtol": tol, "atol": tol}) for n_skip in RK45_SKIPS] for tol in RK45_TOLS}
        else:
            cands = {b: [(n_skip, steps, {}) for n_skip, steps in fit(integ, b)] for b in BUDGETS}
        for budget, splits in cands.items():
            tried = []
            for n_skip, steps, opts in splits:
                for eta in ETAS:
                    s = {"budget": budget, "n_skip": n_skip, "steps": steps, "eta": eta, "options": opts,
                         "num": TUNE_NUM, "seed": TUNE_SEED, "chains": TUNE_CHAINS}
                    row = tuning.has(integ, True, s)
                    if row is None:
                        r = run_dlg(den, mix, clf, integ, steps, eta, n_skip, opts, TUNE_NUM, TUNE_SEED, TUNE_CHAINS)
                        row = tuning.add({"method": integ, "dlg": True, **r, "settings": s})
                    tried.append(row)
            ok = [r for r in tried if r["metrics"].get("frechet_within") is not None]
            if not ok:
                continue
            best = min(ok, key=lambda r: r["metrics"]["frechet_within"])
            bs = best["settings"]
            s = {"budget": budget, "n_skip": bs["n_skip"], "steps": bs["steps"], "eta": bs["eta"], "options": bs["options"],
                 "num": NUM, "seed": SEED, "chains": CHAINS,
                 "selected_on": f"frechet_within, seed {TUNE_SEED}, {TUNE_NUM} samples from {TUNE_CHAINS} chains"}
            for name, c in (("trained", clf), ("exact", exact)):
                sc = {**s, "classifier": name}
                if not table.has(integ, True, sc):
                    r = run_dlg(den, mix, c, integ, bs["steps"], bs["eta"], bs["n_skip"], bs["options"], NUM, SEED)
                    table.add({"method": integ, "dlg": True, **r, "settings": sc})
                    log(f"dlg ({name} classifier) {integ} budget {budget}: nfe {r['nfe']:.1f} {r['metrics']} "
                        f"(n_skip {bs['n_skip']}, steps {bs['steps']}, eta {bs['eta']})")
    plot(table.rows)
    plot(table.rows, "frechet_within", RESULTS / "dmcmc_gmm_within.png", "within-component Frechet (weighted)",
         ": per-component quality, weight errors excluded")
    summary(table.rows)


def plot(rows: list[dict], metric: str = "frechet", path: Path = PLOT, ylabel: str = "Frechet distance to the mixture",
         note: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(18, 8.5), sharey=True)
    floor = [r["metrics"][metric] for r in rows if r["method"] == "exact"]
    peers = {n: sorted((r["nfe"], r["metrics"][metric]) for r in rows if r["method"] == n and r["metrics"].get(metric) is not None)
             for n in ("dpmsolver++2m", "unipc")}
    for ax, integ in zip(axes.flat, INTEGRATORS):
        for dlg, clf_name, style, label in ((False, None, "o-", "plain"), (True, "trained", "s-", "DLG (per-output NFE)"),
                                            (True, "exact", "^-", "DLG, exact classifier")):
            pts = sorted((r["nfe"], r["metrics"][metric], r.get("nfe_with_burn_in")) for r in rows
                         if r["method"] == integ and r["dlg"] == dlg and r["metrics"].get(metric) is not None
                         and r["settings"].get("classifier") == clf_name)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, ms=4, alpha=0.6 if clf_name == "exact" else 1)
                if clf_name == "trained":
                    ax.plot([p[2] for p in pts], [p[1] for p in pts], "s:", color=ax.lines[-1].get_color(), alpha=0.5,
                            ms=3, label="DLG incl. amortised burn-in")
        for (name, pts), c in zip(peers.items(), ("grey", "black")):
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "x--", color=c, lw=1, ms=4, label=name)
        if floor:
            ax.axhline(float(np.mean(floor)), color="green", lw=0.8, label=f"exact samples (n={NUM})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(3, 450)
        ax.set_ylim(0.03, 1e3)  # points above are off the scale (e.g. plain em/pf at the smallest NFE)
        ax.set_title(integ)
        ax.set_xlabel("NFE per sample")
        ax.grid(alpha=0.3, which="both")
    axes.flat[0].set_ylabel(ylabel)
    axes.flat[4].set_ylabel(ylabel)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    axes.flat[-1].axis("off")
    axes.flat[-1].legend(handles, labels, loc="center")
    fig.suptitle(f"DLG vs plain, exact {DIM}-D {COMPONENTS}-component mixture ({NUM} samples, {CHAINS} chains){note}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(rows: list[dict]) -> None:
    """For each integrator: best plain and best DLG Frechet at NFE <= 10, 20, 50."""
    for integ in INTEGRATORS:
        parts = []
        for cap in (10, 20, 50):
            best = {}
            for dlg in (False, True):
                vals = [r["metrics"]["frechet"] for r in rows if r["method"] == integ and r["dlg"] == dlg
                        and r["settings"].get("classifier", "trained") == "trained"
                        and r["nfe"] <= cap and r["metrics"]["frechet"] is not None]
                best[dlg] = min(vals) if vals else None
            fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
            parts.append(f"NFE<={cap}: plain {fmt(best[False])} dlg {fmt(best[True])}")
        print(f"{integ:5s} " + " | ".join(parts))


if __name__ == "__main__":
    main()
