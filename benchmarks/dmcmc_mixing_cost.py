"""What mixing costs: how many Langevin steps per output a DLG chain needs before its successive outputs are
close to independent (effective samples per output >= 0.5, the issue's bar), on `digits-ve` and `digits`.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dmcmc_mixing_cost.py        # ~20 min, resumable
    -> benchmarks/results/dmcmc_mixing_cost.json, dmcmc_mixing_cost.png

A sweep, not a search (nothing is chosen from it): for n_skip in N_SKIPS and the Langevin step eta in ETAS
(the paper's [0, 1]-data units), 20 chains x 50 outputs (seed 1) with the shipped noise classifier and
dpmpp_2m N=4 as the integrator; each row has the ESS per output (16 fixed projections, as `sample --dmcmc`
reports it), the lag-1 autocorrelation, FD at n = 1,000, the measured NFE per output (burn-in amortised
over the 50 outputs) and the NFE per *effective* sample (that NFE / ESS). The question: at what NFE per
output do the chains mix, against the budgets (<= 20 total NFE) where DLG would have to win?
"""
from __future__ import annotations

import json
import time

import torch

from common import RESULTS, machine, write_json
from dmcmc_total_nfe import model_and_classifier
from ddmkit.dmcmc.diagnostics import output_mixing
from ddmkit.dmcmc.dlg import DLGConfig, dlg_sample
from ddmkit.dmcmc.tune import default_metric

OUT = RESULTS / "dmcmc_mixing_cost.json"
PLOT = RESULTS / "dmcmc_mixing_cost.png"
MODELS = ("digits-ve", "digits")
N_SKIPS = (4, 16, 64, 256)
ETAS = (0.8, 3.2)
CHAINS, OUTPUTS_PER_CHAIN, SEED = 20, 50, 1
INTEGRATOR, STEPS = "dpmpp_2m", 4


def run(model: str, n_skip: int, eta: float) -> dict:
    den, clf, _ = model_and_classifier(model)
    _, fn = default_metric(den)
    cfg = DLGConfig(integrator=INTEGRATOR, steps=STEPS, eta=eta, n_skip=n_skip)
    t0 = time.time()
    res = dlg_sample(den, clf, cfg, num=CHAINS * OUTPUTS_PER_CHAIN, chains=CHAINS, seed=SEED, report=lambda m: None)
    mix = output_mixing(res.x, res.chain, res.sigma_star)
    ess = float(mix["ess_per_output"]["median"])
    total = float(res.nfe["per_output_with_burn_in"])
    return {"model": model, "n_skip": n_skip, "eta": eta, "metric": float(fn(res.x)), "ess_per_output": ess,
            "lag1_autocorrelation": float(mix["lag1_autocorrelation"]["median"]),
            "sigma_star_median": float(mix["sigma_star"]["median"]), "nfe_per_output": float(res.nfe["per_output"]),
            "total_nfe": total, "nfe_per_effective_sample": total / ess, "divergences": len(res.events),
            "seconds": round(time.time() - t0, 1)}


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model in MODELS:
        for eta in ETAS:
            r = sorted((x for x in rows if x["model"] == model and x["eta"] == eta), key=lambda x: x["n_skip"])
            if not r:
                continue
            axes[0].plot([x["total_nfe"] for x in r], [x["ess_per_output"] for x in r], "o-", label=f"{model}, eta {eta}")
            axes[1].plot([x["total_nfe"] for x in r], [x["metric"] for x in r], "o-", label=f"{model}, eta {eta}")
    axes[0].axhline(0.5, color="r", lw=0.8, label="0.5 (the issue's bar)")
    axes[0].axvline(20, color="k", ls=":", lw=0.8, label="20 total NFE")
    for ax, y in zip(axes, ("effective samples per output", "FD-digits (n = 1,000)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("total NFE per output (burn-in amortised over 50)")
        ax.set_ylabel(y)
        ax.legend(fontsize=7)
    fig.suptitle(f"DLG mixing cost: n_skip {', '.join(map(str, N_SKIPS))}; {INTEGRATOR} N={STEPS}; {CHAINS} chains x {OUTPUTS_PER_CHAIN}")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)


def main() -> None:
    torch.set_num_threads(1)
    table = json.loads(OUT.read_text()) if OUT.is_file() else {"rows": []}
    done = {(r["model"], r["n_skip"], r["eta"]) for r in table["rows"]}
    table.update({"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dmcmc_mixing_cost.py", "machine": machine(),
                  "integrator": f"{INTEGRATOR} N={STEPS}", "chains": CHAINS, "outputs_per_chain": OUTPUTS_PER_CHAIN,
                  "seed": SEED, "noise_classifier": "shipped"})
    for model in MODELS:
        for eta in ETAS:
            for n_skip in N_SKIPS:
                if (model, n_skip, eta) in done:
                    continue
                table["rows"].append(run(model, n_skip, eta))
                write_json(OUT, table)
                print(json.dumps(table["rows"][-1]), flush=True)
    table["smallest_total_nfe_with_ess_0.5"] = {
        m: min((r["total_nfe"] for r in table["rows"] if r["model"] == m and r["ess_per_output"] >= 0.5), default=None)
        for m in MODELS}
    write_json(OUT, table)
    plot(table["rows"])


if __name__ == "__main__":
    main()
