"""The sixth of the paper's integrators, RK45, with and without DLG on `digits-ve` (the paper's VE setting).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dmcmc_rk45.py          # ~20 min, resumable
    -> benchmarks/results/dmcmc_rk45.json

`ddmkit tune-dmcmc` cannot budget RK45 (its NFE is measured, not set: scipy's adaptive step chooses it), so
this script sweeps its tolerance instead: for rtol = atol in TOLERANCES, plain RK45 from sigma_max and
DLG + RK45 (burn-in amortised over 50 outputs per chain, as in dmcmc_total_nfe.json) are each run on seeds
1-3 (500 samples); DLG's n_skip and eta are chosen on seed 0 from the grid below, per tolerance. Every NFE
is measured (`nfe_per_sample` of plain sampling; DLG's `per_output_with_burn_in`). The question it answers:
does DLG + RK45 beat RK45 alone at <= 20 total NFE (the issue's target for each of the paper's six)?
The rows state the smallest NFE RK45 takes on this model, with and without DLG.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import torch

from common import RESULTS, machine, write_json
from dmcmc_total_nfe import model_and_classifier
from ddmkit.dmcmc.diagnostics import output_mixing
from ddmkit.dmcmc.dlg import DLGConfig, dlg_sample
from ddmkit.dmcmc.tune import default_metric
from ddmkit.sampling import sample

OUT = RESULTS / "dmcmc_rk45.json"
MODEL = "digits-ve"
NUM, OUTPUTS_PER_CHAIN = 500, 50
TOLERANCES = (0.1, 0.01, 0.001)
GRID = [{"n_skip": k, "eta": e} for k in (2, 8) for e in (0.2, 0.8)]
TUNE_SEED, SCORE_SEEDS = 0, (1, 2, 3)


def plain_run(den, fn, tol: float, seed: int) -> dict:
    t0 = time.time()
    res = sample(den, integrator="rk45", steps=2, num=NUM, seed=seed, batch_size=NUM, options={"rtol": tol, "atol": tol})
    return {"seed": seed, "metric": float(fn(res.x)), "total_nfe": float(res.nfe_per_sample), "seconds": round(time.time() - t0, 1)}


def dlg_run(den, clf, fn, tol: float, setting: dict, seed: int) -> dict:
    cfg = DLGConfig(integrator="rk45", steps=2, options={"rtol": tol, "atol": tol}, **setting)
    t0 = time.time()
    res = dlg_sample(den, clf, cfg, num=NUM, chains=math.ceil(NUM / OUTPUTS_PER_CHAIN), seed=seed, report=lambda m: None)
    return {"seed": seed, **setting, "metric": float(fn(res.x)), "nfe_per_output": float(res.nfe["per_output"]),
            "total_nfe": float(res.nfe["per_output_with_burn_in"]), "seconds": round(time.time() - t0, 1),
            "ess_per_output": float(output_mixing(res.x, res.chain)["ess_per_output"]["median"])}


def summary(runs: list[dict]) -> dict:
    m = [r["metric"] for r in runs]
    return {"metric_mean": float(np.mean(m)), "metric_std": float(np.std(m)),
            "total_nfe_mean": float(np.mean([r["total_nfe"] for r in runs]))}


def main() -> None:
    torch.set_num_threads(1)
    den, clf, _ = model_and_classifier(MODEL)
    metric, fn = default_metric(den)
    table = json.loads(OUT.read_text()) if OUT.is_file() else {"rows": {}}
    table.update({"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dmcmc_rk45.py", "machine": machine(),
                  "model": MODEL, "metric": metric, "num": NUM, "outputs_per_chain": OUTPUTS_PER_CHAIN,
                  "tuning_seed": TUNE_SEED, "score_seeds": list(SCORE_SEEDS), "grid": GRID})
    for tol in TOLERANCES:
        key = f"tol={tol:g}"
        if key in table["rows"]:
            continue
        plain = [plain_run(den, fn, tol, s) for s in SCORE_SEEDS]
        tune = [dlg_run(den, clf, fn, tol, g, TUNE_SEED) for g in GRID]
        chosen = min(tune, key=lambda r: r["metric"])
        setting = {"n_skip": chosen["n_skip"], "eta": chosen["eta"]}
        scored = [dlg_run(den, clf, fn, tol, setting, s) for s in SCORE_SEEDS]
        row = {"rtol_atol": tol, "plain": {**summary(plain), "runs": plain},
               "dlg": {**summary(scored), "setting": setting, "runs": scored,
                       "ess_per_output_mean": float(np.mean([r["ess_per_output"] for r in scored]))},
               "tuning": tune}
        row["dlg_better"] = row["dlg"]["metric_mean"] < row["plain"]["metric_mean"]
        table["rows"][key] = row
        write_json(OUT, table)
        print(f"{key}: plain {row['plain']['metric_mean']:.3g} at {row['plain']['total_nfe_mean']:.3g} NFE; "
              f"DLG {row['dlg']['metric_mean']:.3g} at {row['dlg']['total_nfe_mean']:.3g} ({setting})", flush=True)
    table["smallest_nfe"] = {k: min(r[k]["total_nfe_mean"] for r in table["rows"].values()) for k in ("plain", "dlg")}
    write_json(OUT, table)


if __name__ == "__main__":
    main()
