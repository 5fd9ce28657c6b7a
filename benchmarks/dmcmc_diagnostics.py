"""Diagnostics that separate DLG's error terms (issue 17), on two exact Gaussian mixtures and the digits model.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/dmcmc_diagnostics.py --part gmm2d    # ~10 min
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/dmcmc_diagnostics.py --part gmm16d   # ~15 min
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/dmcmc_diagnostics.py --part digits-tune   # ~15 min
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/dmcmc_diagnostics.py --part digits   # ~2 h (1 thread)
    .venv/bin/python benchmarks/dmcmc_diagnostics.py --part report      # decomposition + plots from the rows
    -> benchmarks/results/dmcmc_diagnostics.json (rows + decomposition), dmcmc_diagnostics.png

Every part is resumable (rows keyed by model and name, the file rewritten after each row). The digits
parts read `benchmarks/results/cache/digits_noise_classifier_6k` for the retrained-classifier rows, made by
    OMP_NUM_THREADS=1 ddmkit noise-classifier train --model digits --steps 6000 --threads 1 \\
        --out benchmarks/results/cache/digits_noise_classifier_6k

Models: `gmm2d`, the three well-separated components of tests/conftest.py (weights 0.5 / 0.3 / 0.2);
`gmm16d`, `random_mixture(16, 4, seed=16)` (weights 0.32 / 0.28 / 0.15 / 0.25); both through the exact
denoiser, sigma in [0.002, 80]; `digits`, the shipped DDPM with its shipped noise classifier.
DLG runs: kar1 with N = 4 (5 NFE) + n_skip 4 + Tweedie = 10 NFE per output unless a row says otherwise;
the burn-in (57 NFE per chain) is reported amortised at the row's outputs per chain T.

What each row group measures (the decomposition of `--part report`):
- `exact`: true samples of the same size (the floor). Digits: the noise floor of FD-digits at that n.
- `plain`: the integrators alone from sigma_max (kar1 at 10/14/20/50 NFE, kar2 N=20 = the burn-in's sampler).
- `truth@sigma*`: the integrator alone from exact states x0 + sigma* eps at the sigma* a DLG run handed
  over (term c); `truth@C(x)`: the same states started at the classifier's estimate C(x) (term a on exact
  states). Digits: x0 is a fixed subset of 1,000 of the 1,797 digits (which are also FD's reference, so
  its floor is the subset's own FD, given as `floor`).
- `dlg`: DLG with the trained (mixtures: CLI defaults) or shipped classifier, and the oracle (mixtures:
  exact p(k|x)), at T = 1, 4, 50, 250 outputs per chain; each row carries ESS per output (coordinates /
  classifier features, and the one-hot mode or class), the lag-1 autocorrelation, the mode-switch rate,
  sigma* quantiles and histogram, sigma* by round, and quality by round (windows of successive rounds of
  the same chains, equal n, against the floor at that n).
- `burn-in`: n_skip = 0, one output per chain: the burn-in's state handed to the integrator (term d).
- `fix:*`: the changes tried (eta, warm-up, perturbation, a burn-in stopped at the chain's level, select,
  sigma step, the Langevin clip, the retrained classifier, chains vs outputs per chain).

Settings chosen by a search are chosen on seed 0 (`tune` rows) and scored on seed 1.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CACHE = RESULTS / "cache"
OUT = RESULTS / "dmcmc_diagnostics.json"
PLOT = RESULTS / "dmcmc_diagnostics.png"
TUNE_SEED, SEED = 0, 1
BASE = {"integrator": "kar1", "steps": 4, "n_skip": 4}
WINDOW_N = {"mixture": 2000, "digits": 1000}


def setup() -> None:
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------- models

class Ctx:
    """One model: its denoiser, classifiers, metric, features for the ESS and labels for mode switches."""

    def __init__(self, name: str):
        from ddmkit.dmcmc.noise_classifier import oracle_classifier

        self.name = name
        self.kind = "digits" if name == "digits" else "mixture"
        if self.kind == "mixture":
            from ddmkit.mixtures import GaussianMixture, GMMDenoiser, random_mixture

            mix = (GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]]),
                                   torch.tensor([[0.5, 0.8], [0.6, 0.4], [0.7, 0.5]])) if name == "gmm2d"
                   else random_mixture(16, 4, seed=16))
            self.mix, self.den = mix, GMMDenoiser(mix)
            self.classifiers = {"trained": lambda: trained_mixture_classifier(self), "oracle": lambda: oracle_classifier(self.den),
                                "trained-raw+logrms": lambda: trained_mixture_classifier(self, input_norm="raw+logrms"),
                                "trained-20k": lambda: trained_mixture_classifier(self, steps=20_000)}
        else:
            from ddmkit.dmcmc.noise_classifier import load_classifier
            from ddmkit.dmcmc.run import shipped_classifier_path
            from ddmkit.metrics.classifiers import load_attribute_classifier
            from ddmkit.models.loading import load_model

            self.den = load_model("digits")
            self.judge = load_attribute_classifier("digits")
            self.classifiers = {"shipped": lambda: load_classifier(shipped_classifier_path("digits")),
                                "retrained-6k": lambda: load_classifier(CACHE / "digits_noise_classifier_6k")}
        self._clf: dict = {}

    def classifier(self, name: str):
        if name not in self._clf:
            self._clf[name] = self.classifiers[name]()
        return self._clf[name]

    def metrics(self, x: torch.Tensor) -> dict:
        if self.kind == "mixture":
            from ddmkit.dmcmc.diagnostics import mixture_errors

            return mixture_errors(x, self.mix)
        from ddmkit.metrics.evaluate import evaluate_images

        m = evaluate_images(x.numpy(), "digits")
        return {"fd": m["fd"], "fd_noise_floor": m["fd_noise_floor"], "n": m["n"],
                "class_frequency_gap": max(abs(m["class_frequency"][c] - m["data_class_frequency"][c]) for c in m["class_frequency"]),
                "confident_fraction": m["confident_fraction"]}

    def features_labels(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Fixed features for the ESS and a label per sample (mixture component / digit class)."""
        if self.kind == "mixture":
            return x.numpy(), self.mix.assign(x).numpy()
        feats, probs = self.judge.extract(x.numpy())
        return feats, probs.argmax(axis=1)

    def truth(self, n: int, seed: int) -> torch.Tensor:
        if self.kind == "mixture":
            return self.mix.sample(n, torch.Generator().manual_seed(1000 + seed))[0]
        from ddmkit.data.folders import load_digits_images

        x = load_digits_images(32)[0]
        return torch.from_numpy(x[np.random.default_rng(seed).permutation(len(x))[:n]])

    def floor(self, n: int, seed: int = 7) -> dict:
        if self.kind == "mixture":
            return self.metrics(self.truth(n, seed))
        return self.metrics(self.truth(min(n, 1797), seed))


def trained_mixture_classifier(ctx: Ctx, **train):
    """The classifier `ddmkit noise-classifier train --model gmm:... --steps 3000` makes (its defaults when
    these rows were made, or `train`'s changes of them: input_norm, steps), cached. The CLI's default for
    vector data is now 20,000 steps, chosen by the `fix:classifier=trained-20k` rows."""
    from ddmkit.dmcmc.classifier_training import ClassifierTrainConfig, train_noise_classifier
    from ddmkit.dmcmc.noise_classifier import load_classifier, paths_for
    from ddmkit.dmcmc.classifier_data import mixture_data

    tag = "".join(f"_{k}={v}" for k, v in sorted(train.items()))
    path = CACHE / f"dmcmc_diagnostics_{ctx.name}_classifier{tag}"
    if not paths_for(path)[1].is_file():
        train_noise_classifier(mixture_data(ctx.mix, seed=0), (ctx.mix.dim,), None, ctx.den.sigma_min, ctx.den.sigma_max,
                               path, ClassifierTrainConfig(**{"steps": 3000, **train}), meta={"model": ctx.name}, progress=False)
    return load_classifier(path)


# ----------------------------------------------------------------------------------------- rows

class Table:
    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {"rows": []}
        self.index = {(r["model"], r["name"]): r for r in self.data["rows"]}

    def get(self, model: str, name: str) -> dict | None:
        return self.index.get((model, name))

    def add(self, row: dict) -> dict:
        self.save(row)
        print(f"[{time.strftime('%H:%M:%S')}] {row['model']} {row['name']}: {short(row)}", flush=True)
        return row

    def save(self, row: dict | None = None) -> None:
        """Write the file (adding or replacing `row`): under a lock, merged with what other parts running at
        the same time have written since this one read it, so parts may run side by side."""
        import fcntl

        from ddmkit.io import atomic_write_json

        with open(CACHE / f"{self.path.stem}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.is_file():
                disk = json.loads(self.path.read_text())
                for r in disk["rows"]:
                    self.index.setdefault((r["model"], r["name"]), r)
                for k, v in disk.items():
                    if k != "rows" and isinstance(v, dict):
                        self.data[k] = {**v, **self.data.get(k, {})}
            if row is not None:
                self.index[(row["model"], row["name"])] = row
            self.data["rows"] = list(self.index.values())
            atomic_write_json(self.path, self.data)


def short(row: dict) -> str:
    m = row.get("metrics", {})
    keys = ("fd", "fd_noise_floor", "frechet", "frechet_within", "weight_error", "mean_error", "std_error")
    parts = [f"{k} {m[k]:.4g}" for k in keys if isinstance(m.get(k), (int, float))]
    d = row.get("diagnostics", {})
    if d.get("ess_per_output"):
        parts.append(f"ess {d['ess_per_output']['features']['median']:.3g}/{d['ess_per_output']['labels']['median']:.3g}")
    if "nfe_with_burn_in" in row:
        parts.append(f"nfe {row['nfe']:g}+{row['nfe_with_burn_in'] - row['nfe']:.3g}")
    return ", ".join(parts)


def sigma_path(ctx: Ctx, name: str) -> Path:
    return CACHE / f"dmcmc_diagnostics_{ctx.name}_{name.replace(':', '_').replace('/', '_')}_sigma.npy"


def dlg_row(ctx: Ctx, table: Table, name: str, *, clf: str, chains: int, outputs: int, seed: int = SEED,
            group: str = "dlg", **cfg) -> dict:
    """One DLG run (chains x outputs), its metrics and diagnostics."""
    from ddmkit.dmcmc.dlg import DLGConfig, dlg_sample

    row = table.get(ctx.name, name)
    if row is not None and sigma_path(ctx, name).is_file():
        return row
    # the clip inside the Langevin score stated explicitly (the model's own unless a row says otherwise)
    settings = {**BASE, "langevin_clip": bool(getattr(ctx.den, "clip_denoised", False)), **cfg}
    config = DLGConfig(**settings)
    t0 = time.time()
    res = dlg_sample(ctx.den, ctx.classifier(clf), config, num=chains * outputs, chains=chains, seed=seed,
                     report=lambda m: None)
    seconds = time.time() - t0
    np.save(sigma_path(ctx, name), res.sigma_star)
    row = {"model": ctx.name, "name": name, "group": group, "classifier": clf, "seed": seed, "chains": chains,
           "outputs_per_chain": outputs, "settings": config.to_json(ctx.den), "nfe": res.nfe["per_output"],
           "nfe_with_burn_in": res.nfe["per_output_with_burn_in"], "burn_in_per_chain": res.nfe["burn_in_per_chain"],
           "divergences": len(res.events), "seconds": round(seconds, 1), "metrics": ctx.metrics(res.x),
           "floor": floor_row(ctx, table, len(res.x)), "diagnostics": diagnose(ctx, res, outputs)}
    return table.add(row)


def diagnose(ctx: Ctx, res, outputs: int) -> dict:
    """ESS per output, autocorrelation, mode switches, sigma* (overall and by round), quality by round."""
    from ddmkit.dmcmc import diagnostics as dg

    feats, labels = ctx.features_labels(res.x)
    ft, lab = dg.chain_trace(res.chain, feats), dg.chain_trace(res.chain, labels)
    st, xt = dg.chain_trace(res.chain, res.sigma_star), dg.chain_trace(res.chain, res.x)
    onehot = np.eye(int(labels.max()) + 1)[lab]
    t = ft.shape[1]
    rounds = sorted({r for r in (0, 1, 3, 9, 49, 99, 249) if r < t} | {t - 1})
    ess = {"features": dg.summarise(dg.ess_per_output(ft)), "labels": dg.summarise(dg.ess_per_output(onehot))}
    if ctx.kind == "mixture":  # within a mode: coordinates in units of the assigned component
        z = (res.x.double() - ctx.mix.means[labels]) / ctx.mix.stds[labels]
        ess["within_mode"] = dg.summarise(dg.ess_per_output(dg.chain_trace(res.chain, z.numpy())))
    out = {"ess_per_output": ess,
           "lag1_autocorrelation": dg.summarise(dg.autocorrelation(ft, [1])[0]),
           "mode_switch": dg.switch_rate(lab), "sigma_star": dg.sigma_star_summary(res.sigma_star),
           "sigma_star_median_by_round": {str(r): float(np.median(st[:, r])) for r in rounds}, "by_round": []}
    m = st.shape[0]
    w = max(1, math.ceil(WINDOW_N[ctx.kind] / m))
    if t > w:
        for start in sorted({0} | {s for s in (3, 50) if s + w <= t} | {t - w}):
            xw = torch.from_numpy(xt[:, start : start + w].reshape((-1,) + xt.shape[2:]))
            out["by_round"].append({"rounds": [start, start + w], "n": len(xw), "metrics": ctx.metrics(xw)})
    return out


def floor_row(ctx: Ctx, table: Table, n: int) -> dict:
    """The floor at sample size n (cached as an `exact` row)."""
    if ctx.kind == "digits":
        return {"note": "the FD noise floor at this n is in the row's metrics (fd_noise_floor)"}
    row = table.get(ctx.name, f"exact/n={n}")
    if row is None:
        row = table.add({"model": ctx.name, "name": f"exact/n={n}", "group": "exact", "n": n, "nfe": 0,
                         "metrics": ctx.floor(n)})
    return row["metrics"]


def plain_row(ctx: Ctx, table: Table, integrator: str, steps: int, n: int) -> dict:
    from ddmkit.sampling import sample

    name = f"plain/{integrator}/N={steps}/n={n}"
    row = table.get(ctx.name, name)
    if row is not None:
        return row
    t0 = time.time()
    res = sample(ctx.den, integrator=integrator, steps=steps, num=n, seed=SEED, batch_size=min(n, 500 if ctx.kind == "digits" else n))
    return table.add({"model": ctx.name, "name": name, "group": "plain", "integrator": integrator, "steps": steps,
                      "n": n, "nfe": res.nfe_per_sample, "seconds": round(time.time() - t0, 1),
                      "metrics": ctx.metrics(res.x), "floor": floor_row(ctx, table, n)})


def truth_row(ctx: Ctx, table: Table, source: str, n: int, clf: str | None = None, steps: int = 4) -> dict:
    """The integrator alone from exact states at the sigma* of DLG row `source` (or at C(x))."""
    from ddmkit.dmcmc import diagnostics as dg

    name = f"truth@{'sigma*' if clf is None else 'C(x)/' + clf}/N={steps}/from={source}"
    row = table.get(ctx.name, name)
    if row is not None:
        return row
    sig = np.resize(np.random.default_rng(5).permutation(np.load(sigma_path(ctx, source))), n)
    x0 = ctx.truth(n, seed=3)
    start = ctx.classifier(clf).sigma if clf else None
    x, nfe, used = dg.integrate_from_truth(ctx.den, x0, sig, "kar1", steps, seed=11, start_sigma=start, batch_size=500)
    err = np.log(used / sig)
    return table.add({"model": ctx.name, "name": name, "group": "truth", "n": n, "nfe": nfe, "source": source,
                      "classifier": clf, "steps": steps, "metrics": ctx.metrics(x), "floor": ctx.metrics(x0),
                      "start_vs_true_log_sigma": {"mean_abs": float(np.abs(err).mean()), "mean": float(err.mean())},
                      "sigma_star": dg.sigma_star_summary(sig)})


# ----------------------------------------------------------------------------------------- parts

MIX_CHAINS, MIX_T = 2000, (1, 4, 50, 250)
MIX_ETAS = (0.02, 0.05, 0.1, 0.2, 0.4)


def best(rows: list[dict], key: str) -> dict:
    return min(rows, key=lambda r: r["metrics"][key])


def part_mixture(name: str, table: Table) -> None:
    """Floors, plain integrators, eta chosen on seed 0, DLG (trained / oracle) at T = 1..250, the
    integrator from exact states, the burn-in alone, then the fixes."""
    ctx = Ctx(name)
    m = MIX_CHAINS
    for steps in (6, 8, 11, 26):
        plain_row(ctx, table, "kar1", steps, m)
    plain_row(ctx, table, "kar2", 20, m)
    tune = [dlg_row(ctx, table, f"tune/eta={e}", clf="trained", chains=500, outputs=50, seed=TUNE_SEED, group="tune", eta=e)
            for e in MIX_ETAS]
    eta = best(tune, "frechet_within")["settings"]["eta"]
    table.data.setdefault("chosen", {})[name] = {"eta": eta, "on": f"frechet_within, seed {TUNE_SEED}, 500 chains x 50"}
    for clf in ("trained", "oracle"):
        for t in MIX_T:
            dlg_row(ctx, table, f"dlg/{clf}/T={t}", clf=clf, chains=m, outputs=t, eta=eta)
        dlg_row(ctx, table, f"burn-in/{clf}", clf=clf, chains=m, outputs=1, group="burn-in", eta=eta, n_skip=0)
    for src in ("dlg/oracle/T=50", "dlg/trained/T=50"):
        truth_row(ctx, table, src, m)
    for clf in ("trained", "oracle"):
        truth_row(ctx, table, "dlg/oracle/T=50", m, clf=clf)
    mixture_fixes(ctx, table, eta)


def mixture_fixes(ctx: Ctx, table: Table, eta: float) -> None:
    m = MIX_CHAINS
    fix = lambda n, t=50, **kw: dlg_row(ctx, table, f"fix:{n}/T={t}", clf="trained", chains=m, outputs=t,  # noqa: E731
                                        group="fix", **{"eta": eta, **kw})
    for clf in ("trained-raw+logrms", "trained-20k"):  # the classifier's input normalisation, its training length
        dlg_row(ctx, table, f"fix:classifier={clf}/T=50", clf=clf, chains=m, outputs=50, group="fix", eta=eta)
        truth_row(ctx, table, "dlg/oracle/T=50", m, clf=clf)
    fix("select=last", select="last")
    fix("sigma_step=sample", sigma_step="sample")
    fix("split=N5+skip2", steps=5, n_skip=2)
    fix("warmup@eta", burn_in="20:0.5:20@eta")
    # a smaller burn-in perturbation (a lower chain sigma*), eta scaled with it: chosen on seed 0
    tune = [dlg_row(ctx, table, f"tune/perturb={p}", clf="trained", chains=500, outputs=50, seed=TUNE_SEED, group="tune",
                    eta=eta * (p / 0.5) ** 2, burn_in=f"20:{p}:20@eta") for p in (0.1, 0.2, 0.3)]
    p = float(best(tune, "frechet_within")["settings"]["burn_in"].split(":")[1])
    table.data.setdefault("chosen", {})[f"{ctx.name}/perturb"] = {"perturb": p, "eta": eta * (p / 0.5) ** 2}
    for t in (4, 50):
        fix(f"perturb={p}", t, eta=eta * (p / 0.5) ** 2, burn_in=f"20:{p}:20@eta")
    # a cheap burn-in: KAR2 stopped at the level the oracle-driven chain settles at (no perturbation)
    stop = float(np.median(np.load(sigma_path(ctx, "dlg/oracle/T=4"))))
    for t in (1, 2, 4):
        fix(f"cheap-burn-in=10:0:2@eta:{stop:.2g}", t, burn_in=f"10:0:2@eta:{stop:.2g}")


DIGIT_T = {1: 1000, 4: 250, 50: 100, 250: 40}
DIGIT_TUNE = ((0.4, "auto"), (0.05, "auto"), (0.2, "20:0.5:20@eta"), (0.05, "20:0.5:20@eta"), (0.0125, "20:0.25:20@eta"))


def part_digits_tune(table: Table) -> None:
    ctx = Ctx("digits")
    for e, burn in DIGIT_TUNE:
        dlg_row(ctx, table, f"tune/eta={e}/burn={burn}", clf="shipped", chains=100, outputs=10, seed=TUNE_SEED,
                group="tune", eta=e, burn_in=burn)


def digits_choice(table: Table) -> dict:
    rows = [table.get("digits", f"tune/eta={e}/burn={b}") for e, b in DIGIT_TUNE]
    r = best([r for r in rows if r is not None], "fd")
    choice = {"eta": r["settings"]["eta"], "burn_in": next(b for e, b in DIGIT_TUNE if r["name"].endswith(f"burn={b}") and e == r["settings"]["eta"]),
              "on": f"FD-digits, seed {TUNE_SEED}, 100 chains x 10"}
    table.data.setdefault("chosen", {})["digits"] = choice
    return choice


def part_digits(table: Table) -> None:
    ctx = Ctx("digits")
    for steps in (6, 8, 11, 26):
        plain_row(ctx, table, "kar1", steps, 1000)
    plain_row(ctx, table, "kar2", 20, 1000)
    ch = {k: v for k, v in digits_choice(table).items() if k in ("eta", "burn_in")}
    issue = {"eta": 0.4, "burn_in": "auto"}
    for t in (4, 50):
        dlg_row(ctx, table, f"dlg/issue/T={t}", clf="shipped", chains=DIGIT_T[t], outputs=t, **issue)
    for t in (4, 50, 250):
        dlg_row(ctx, table, f"dlg/chosen/T={t}", clf="shipped", chains=DIGIT_T[t], outputs=t, **ch)
    for src in ("dlg/chosen/T=50", "dlg/issue/T=50"):
        truth_row(ctx, table, src, 1000)
        truth_row(ctx, table, src, 1000, clf="shipped")
    for name, cfg in (("issue", issue), ("chosen", ch)):
        dlg_row(ctx, table, f"fix:langevin_clip=off/{name}/T=50", clf="shipped", chains=100, outputs=50, group="fix",
                langevin_clip=False, **cfg)
    dlg_row(ctx, table, "fix:select=last/chosen/T=50", clf="shipped", chains=100, outputs=50, group="fix", select="last", **ch)
    if (CACHE / "digits_noise_classifier_6k.json").is_file():
        for name, cfg in (("issue", issue), ("chosen", ch)):
            dlg_row(ctx, table, f"fix:classifier=retrained-6k/{name}/T=50", clf="retrained-6k", chains=100, outputs=50,
                    group="fix", **cfg)
        truth_row(ctx, table, "dlg/issue/T=50", 1000, clf="retrained-6k")
    stop = float(np.median(np.load(sigma_path(ctx, "dlg/chosen/T=4")))) / 2  # [0, 1]-data units
    for t, chains in ((1, 1000), (2, 500)):
        dlg_row(ctx, table, f"fix:cheap-burn-in=6:0:2@eta:{stop:.2g}/T={t}", clf="shipped", chains=chains, outputs=t,
                group="fix", eta=ch["eta"], burn_in=f"6:0:2@eta:{stop:.2g}")
    dlg_row(ctx, table, "dlg/chosen/T=1", clf="shipped", chains=1000, outputs=1, **ch)
    dlg_row(ctx, table, "burn-in/chosen", clf="shipped", chains=1000, outputs=1, group="burn-in", **{**ch, "n_skip": 0})


def main() -> None:
    setup()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", required=True, choices=("gmm2d", "gmm16d", "digits-tune", "digits", "report"))
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    table = Table(OUT)
    if args.part in ("gmm2d", "gmm16d"):
        part_mixture(args.part, table)
    elif args.part == "digits-tune":
        part_digits_tune(table)
    elif args.part == "digits":
        part_digits(table)
    else:
        from dmcmc_diagnostics_report import report

        report(table)
    table.save()


if __name__ == "__main__":
    main()
