"""DLG against the best plain sampler at equal *total* NFE, on every shipped model and two exact mixtures,
run through `ddmkit tune-dmcmc`'s library (`ddmkit.dmcmc.tune.tune_dmcmc`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dmcmc_total_nfe.py --models gmm2d,gmm16d --budgets 5,10,20
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dmcmc_total_nfe.py --models digits-ve --budgets 5,10,20 --num 500
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dmcmc_total_nfe.py --models digits-ve,digits --budgets 20 --decompose
    .venv/bin/python benchmarks/dmcmc_total_nfe.py --report          # -> results/dmcmc_total_nfe.json, .png

Total NFE per output = n_skip + integrator + 1 (Tweedie) + the burn-in (measured, 57 NFE per chain with the
cifar10 preset) amortised over 50 outputs per chain (the issue's >= 50), so DLG pays 1.14 NFE of burn-in per
output. For each (model, budget) the search runs on seed 0 over the integrators, n_skip shares and etas
below, every plain integrator is scored at the same total budget (ddmkit's dpmpp_2m and unipc equal
diffusers' DPMSolverMultistepScheduler / UniPCMultistepScheduler: tests/test_dpm_solver.py), and the best
DLG and best plain settings are re-run on seeds 1, 2, 3 (never seen by the search): mean and std there.

Models: `gmm2d` (3 well-separated components, weights 0.5 / 0.3 / 0.2), `gmm16d` (`random_mixture(16, 4,
seed=1)`, unequal weights), both with the exact noise-level posterior (`--noise-classifier oracle`: the
classifier's error removed), scored by the Frechet distance to the exact mixture (+ weight / mean / std
errors of the winners); `digits`, `digits-ve` and `default` (faces) with their shipped noise classifiers,
scored by FD-digits / FD-faces against the noise floor of real data at the same n. The faces model starts
at its recorded start level, sigma 20 (`ddmkit_model.json`), for DLG's burn-in and the plain samplers alike.
Per (model, budget) a table `results/dmcmc_total_nfe/<model>_nfe<B>.json` (resumable) holds every row.
The digits and digits-ve cells were made before `TuneSpace` gained `burn_ins` (their rows carry no `burn_in` key
and their `space` no `burn_ins`; the burn-in was "auto", as the current code uses for image models): rerunning
them recomputes the same settings rather than resuming.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from common import RESULTS, machine, write_json
from ddmkit.dmcmc.diagnostics import mixture_errors, output_mixing
from ddmkit.dmcmc.dlg import DLGConfig, dlg_sample
from ddmkit.dmcmc.noise_classifier import load_classifier, oracle_classifier
from ddmkit.dmcmc.tune import TuneSpace, default_metric, tune_dmcmc
from ddmkit.assets import shipped_model
from ddmkit.metrics.evaluate import noise_floor
from ddmkit.mixtures import GaussianMixture, GMMDenoiser, random_mixture
from ddmkit.models.loading import load_model, model_identity
from ddmkit.sampling import sample

PARTS = RESULTS / "dmcmc_total_nfe"
INTEGRATORS = ("kar1", "kar2", "ddim", "dpmpp_2m", "unipc")
ETAS = {"gmm": (0.001, 0.01, 0.05), "images": (0.2, 0.8)}  # dmcmc_diagnostics.json: mixtures want far smaller steps
SHARES = (0.2, 0.4)
OUTPUTS_PER_CHAIN = 50
SCORE_SEEDS = (1, 2, 3)
# the cifar10 burn-in (perturbation 0.5) and the smaller perturbations that dmcmc_diagnostics.json found better
# on the mixtures (gmm2d 0.1, gmm16d 0.3: 'chosen' there, on its own seed 0 runs)
BURN_INS = {"gmm": ("auto", "20:0.1:10@0.5,10@eta", "20:0.3:10@0.5,10@eta"), "images": ("auto",)}


def mixture(name: str) -> GaussianMixture:
    if name == "gmm2d":
        return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]]),
                               torch.tensor([[0.5, 0.8], [0.6, 0.4], [0.7, 0.5]]))
    return random_mixture(16, 4, seed=1)


def model_and_classifier(name: str):
    if name.startswith("gmm"):
        den = GMMDenoiser(mixture(name), sigma_min=0.002, sigma_max=80.0, name=name)
        return den, oracle_classifier(den, k=1000), "oracle (exact posterior)"
    den = load_model(name)
    path = shipped_model(name).noise_classifier
    return den, load_classifier(path), str(path.name)


def run_cell(name: str, budget: float, num: int, progress: bool, integrators: tuple[str, ...] = INTEGRATORS,
             tag: str = "") -> dict:
    den, clf, clf_name = model_and_classifier(name)
    kind = "gmm" if name.startswith("gmm") else "images"
    space = TuneSpace(integrators=integrators, etas=ETAS[kind], skip_shares=SHARES, outputs_per_chain=(OUTPUTS_PER_CHAIN,),
                      burn_ins=BURN_INS[kind])
    PARTS.mkdir(parents=True, exist_ok=True)
    out = PARTS / f"{name}_nfe{budget:g}{tag}.json"
    header = {"model": name, "model_identity": model_identity(den), "noise_classifier": clf_name, "tag": tag}
    t0 = time.time()
    table = tune_dmcmc(den, clf, budget, space=space, num=num, seed=0, score_seeds=SCORE_SEEDS, out=out,
                       header=header, progress=progress)
    table["cell_seconds"] = round(time.time() - t0, 1)
    out.write_text(json.dumps(table, indent=1))
    return table


def winners_mixture_errors(name: str, table: dict, num: int) -> dict:
    """Weight / mean / std errors of the validated winners (the same settings, score seeds)."""
    den, clf, _ = model_and_classifier(name)
    out = {}
    for kind, row in (("dlg", table.get("best")), ("plain", table.get("best_plain"))):
        if row is None:
            continue
        errs = []
        for s in SCORE_SEEDS:
            if row["dlg"]:
                cfg = DLGConfig(integrator=row["integrator"], steps=row["steps"], eta=row["eta"], n_skip=row["n_skip"],
                                burn_in=row.get("burn_in") or "auto")
                x = dlg_sample(den, clf, cfg, num=num, chains=math.ceil(num / row["outputs_per_chain"]), seed=s,
                               report=lambda m: None).x
            else:
                x = sample(den, integrator=row["integrator"], steps=row["steps"], num=num, seed=s).x
            errs.append(mixture_errors(x, den.mixture))
        out[kind] = {k: float(np.mean([e[k] for e in errs])) for k in ("weight_error", "mean_error", "std_error")}
    return out


def mixture_floor(name: str, num: int) -> dict:
    """The metric of `num` exact samples of the mixture (seeds 1-3): the floor of that Frechet distance at n."""
    mix = mixture(name)
    _, fn = default_metric(GMMDenoiser(mix))
    v = [fn(mix.sample(num, torch.Generator().manual_seed(s))[0]) for s in SCORE_SEEDS]
    return {"fd": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4), "n": num,
            "what": "Frechet distance of exact samples to the mixture, seeds 1-3"}


def decompose(name: str, budget: float, num: int) -> dict:
    """The best DLG setting of a cell re-run (score seed 1) with 1, 4 and 50 outputs per chain: with one output
    per chain the outputs are independent (ESS 1) and the burn-in is paid in full, so FD(50) - FD(1) is what
    the chains' mixing costs, and FD(1) is what the per-output procedure (classifier + Langevin + integrator
    from sigma*) gives at best."""
    table = json.loads((PARTS / f"{name}_nfe{budget:g}.json").read_text())
    best = table["best"]
    den, clf, _ = model_and_classifier(name)
    _, fn = default_metric(den)
    cfg = DLGConfig(integrator=best["integrator"], steps=best["steps"], eta=best["eta"], n_skip=best["n_skip"],
                    burn_in=best.get("burn_in") or "auto")
    rows = []
    for opc in (1, 4, 50):
        res = dlg_sample(den, clf, cfg, num=num, chains=math.ceil(num / opc), seed=1, report=lambda m: None)
        rows.append({"outputs_per_chain": opc, "metric": float(fn(res.x)), "nfe_per_output": res.nfe["per_output"],
                     "total_nfe": res.nfe["per_output_with_burn_in"],
                     "ess_per_output": output_mixing(res.x, res.chain)["ess_per_output"]["median"] if opc > 1 else 1.0})
        print(name, budget, rows[-1], flush=True)
    return {"model": name, "budget": budget, "setting": {k: best.get(k) for k in ("integrator", "steps", "n_skip", "eta",
                                                                                  "burn_in")},
            "num": num, "seed": 1, "rows": rows}


def summarise(table: dict, floor: dict | None) -> dict:
    rows = [r for r in table["rows"] if r.get("metric") is not None and r.get("within_budget")]
    plain = {r["integrator"]: {"steps": r["steps"], "nfe": r["nfe"], "metric": round(r["metric"], 4)}
             for r in rows if not r["dlg"]}
    dlg_by_integrator = {}
    for r in rows:
        if r["dlg"] and (r["integrator"] not in dlg_by_integrator or r["metric"] < dlg_by_integrator[r["integrator"]]["metric"]):
            dlg_by_integrator[r["integrator"]] = {k: r.get(k) for k in ("steps", "n_skip", "eta", "nfe", "nfe_per_output",
                                                                         "ess_per_output", "burn_in")} | {"metric": round(r["metric"], 4)}
    best = table.get("best")
    return {"budget": table["target_nfe"], "num": table["num"], "metric": table["metric"],
            "burn_in_per_chain": table["burn_in_per_chain"], "outputs_per_chain": OUTPUTS_PER_CHAIN,
            "noise_floor": floor, "verdict": table.get("verdict"),
            "best_dlg": None if best is None else {k: best.get(k) for k in ("integrator", "steps", "n_skip", "eta", "nfe",
                                                                            "nfe_per_output", "ess_per_output", "burn_in",
                                                                            "metric")},
            "best_plain": None if table.get("best_plain") is None else
            {k: table["best_plain"][k] for k in ("integrator", "steps", "nfe", "metric")},
            "plain_on_tuning_seed": plain, "dlg_best_per_integrator_on_tuning_seed": dlg_by_integrator,
            "dlg_beats_same_integrator_alone": {i: d["metric"] < plain[i]["metric"] for i, d in dlg_by_integrator.items()
                                                if i in plain},
            "seconds": table.get("cell_seconds")}


def report(args) -> None:
    cells = sorted(PARTS.glob("*_nfe*.json"))
    out = {"command": "python benchmarks/dmcmc_total_nfe.py --report", "machine": machine(),
           "settings": {"integrators": INTEGRATORS, "etas": ETAS, "skip_shares": SHARES,
                        "outputs_per_chain": OUTPUTS_PER_CHAIN, "score_seeds": SCORE_SEEDS, "tuning_seed": 0},
           "models": {}}
    for path in cells:
        table = json.loads(path.read_text())
        if table.get("verdict") is None:
            continue
        name = table["model"] + table.get("tag", "")
        domain = {"digits": "digits", "digits-ve": "digits", "default": "faces"}.get(table["model"])
        floor = None
        if domain is not None:
            f = noise_floor(domain, table["num"])
            floor = {"fd": round(f["mean"], 3), "std": round(f["std"], 3), "n": f["n"]}
        elif table["model"].startswith("gmm"):
            floor = mixture_floor(table["model"], table["num"])
        cell = summarise(table, floor)
        if name.startswith("gmm"):
            cell["mixture_errors_on_score_seeds"] = winners_mixture_errors(table["model"], table, table["num"])
        out["models"].setdefault(name, []).append(cell)
    for cells_ in out["models"].values():
        cells_.sort(key=lambda c: c["budget"])
    out["mixing_decomposition"] = [json.loads(p.read_text()) for p in sorted(PARTS.glob("decompose_*.json"))]
    out["markdown"] = markdown(out)
    write_json("dmcmc_total_nfe.json", out)
    plot(out)
    print(out["markdown"])


def markdown(out: dict) -> str:
    """The README's table: per model and total budget, best DLG and best plain on the score seeds."""
    lines = ["| model (metric, n) | total NFE | best DLG (seeds 1-3) | ESS / output | best plain (seeds 1-3) | DLG better |",
             "|---|---|---|---|---|---|"]
    for name, cells in out["models"].items():
        for c in cells:
            d, p = c["verdict"].get("dlg"), c["verdict"].get("plain")
            bd, bp = c["best_dlg"], c["best_plain"]
            if not (d and p):
                continue
            floor = f", floor {c['noise_floor']['fd']:.3g}" if c["noise_floor"] else ""
            lines.append(f"| {name} ({c['metric']}, {c['num']}{floor}) | {c['budget']:g} | {bd['integrator']} N={bd['steps']} "
                         f"n_skip {bd['n_skip']} eta {bd['eta']:g}: {d['mean']:.3g} +- {d['std']:.2g} | "
                         f"{bd['ess_per_output']:.2f} | {bp['integrator']} N={bp['steps']}: {p['mean']:.3g} +- {p['std']:.2g} | "
                         f"{'**yes**' if c['verdict'].get('dlg_helps') else 'no'} |")
    return "\n".join(lines)


def plot(out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out["models"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        cells = out["models"][name]
        b = [c["budget"] for c in cells]
        for kind, colour in (("dlg", "C3"), ("plain", "C0")):
            m = [c["verdict"][kind]["mean"] if c["verdict"].get(kind) else np.nan for c in cells]
            s = [c["verdict"][kind]["std"] if c["verdict"].get(kind) else np.nan for c in cells]
            ax.errorbar(b, m, yerr=s, marker="o", color=colour, capsize=3,
                        label="best DLG (3 seeds)" if kind == "dlg" else "best plain (3 seeds)")
        for integ in sorted({i for c in cells for i in c["plain_on_tuning_seed"]}):
            ys = [c["plain_on_tuning_seed"].get(integ, {}).get("metric", np.nan) for c in cells]
            ax.plot(b, ys, lw=0.8, alpha=0.5, ls="--", label=f"{integ} (seed 0)")
        if cells[0]["noise_floor"]:
            ax.axhline(cells[0]["noise_floor"]["fd"], color="k", lw=0.8, ls=":", label="noise floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("total NFE per output (burn-in amortised over 50)")
        ax.set_title(f"{name}: {cells[0]['metric']}")
        ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(RESULTS / "dmcmc_total_nfe.png", dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gmm2d,gmm16d,digits-ve,digits,default")
    p.add_argument("--budgets", default="5,10,20")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--report", action="store_true")
    p.add_argument("--decompose", action="store_true",
                   help="re-run each --models cell's best DLG setting at 1, 4 and 50 outputs per chain")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--integrators", default=",".join(INTEGRATORS))
    p.add_argument("--tag", default="", help="suffix of the cell files (another integrator set: e.g. _paper)")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.report:
        report(args)
        return
    if args.decompose:
        for name in args.models.split(","):
            for b in [float(v) for v in args.budgets.split(",")]:
                (PARTS / f"decompose_{name}_nfe{b:g}.json").write_text(json.dumps(decompose(name, b, args.num), indent=1))
        return
    for name in args.models.split(","):
        for b in [float(v) for v in args.budgets.split(",")]:
            t = run_cell(name, b, args.num, not args.quiet, tuple(args.integrators.split(",")), args.tag)
            print(f"{name} @ {b:g}: {t['verdict']['text']}", flush=True)


if __name__ == "__main__":
    main()
