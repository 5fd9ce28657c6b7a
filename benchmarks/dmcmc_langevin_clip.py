"""The clip of the denoiser inside DLG's Langevin score on the DDPM models (`digits`, `default`): clipped
(the model's own setting, DDPMs clip D to the data range) against unclipped, at the best DLG setting of
every `dmcmc_total_nfe` cell of those models, on that cell's score seeds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dmcmc_langevin_clip.py      # ~25 min, resumable
    -> benchmarks/results/dmcmc_langevin_clip.json

Each cell's `settings` (chosen on seed 0 by `tune-dmcmc`, clip as the model) is re-run with
`langevin_clip=False` on seeds 1-3 (500 outputs, 50 per chain) and set beside the clipped scores of the same
settings and seeds (the cell's `validation` rows); the clipped run of seed 1 is repeated here to show the
two are the same computation (`reproduced`). The integrator and Tweedie keep the model's clip either way.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import torch

from common import RESULTS, machine, write_json
from dmcmc_total_nfe import model_and_classifier
from ddmkit.dmcmc.dlg import DLGConfig, dlg_sample
from ddmkit.dmcmc.tune import default_metric

OUT = RESULTS / "dmcmc_langevin_clip.json"
CELLS = RESULTS / "dmcmc_total_nfe"
MODELS = ("digits", "default")
BUDGETS = (5, 10, 20)


def cell_config(cell: dict) -> DLGConfig:
    return DLGConfig(**cell["settings"]["dlg"])


def run(den, clf, fn, cfg: DLGConfig, num: int, opc: int, seed: int) -> dict:
    t0 = time.time()
    res = dlg_sample(den, clf, cfg, num=num, chains=math.ceil(num / opc), seed=seed, report=lambda m: None)
    return {"seed": seed, "metric": float(fn(res.x)), "total_nfe": float(res.nfe["per_output_with_burn_in"]),
            "divergences": len(res.events), "seconds": round(time.time() - t0, 1)}


def main() -> None:
    torch.set_num_threads(1)
    table = json.loads(OUT.read_text()) if OUT.is_file() else {"cells": {}}
    table.update({"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dmcmc_langevin_clip.py", "machine": machine()})
    for model in MODELS:
        den, clf, _ = model_and_classifier(model)
        _, fn = default_metric(den)
        for budget in BUDGETS:
            key = f"{model}_nfe{budget}"
            if key in table["cells"]:
                continue
            cell = json.loads((CELLS / f"{key}.json").read_text())
            cfg, num, opc = cell_config(cell), cell["num"], cell["settings"]["outputs_per_chain"]
            clipped = {v["seed"]: v["metric"] for v in cell["validation"] if v["kind"] == "dlg"}
            check = run(den, clf, fn, cfg, num, opc, 1)
            off = [run(den, clf, fn, replace(cfg, langevin_clip=False), num, opc, s) for s in cell["score_seeds"]]
            on_m, off_m = [clipped[s] for s in cell["score_seeds"]], [r["metric"] for r in off]
            table["cells"][key] = {
                "setting": {k: cell["settings"]["dlg"][k] for k in ("integrator", "steps", "n_skip", "eta", "burn_in")},
                "total_nfe": cell["settings"]["total_nfe"], "num": num, "outputs_per_chain": opc,
                "clipped": {"mean": float(np.mean(on_m)), "std": float(np.std(on_m)), "by_seed": clipped},
                "unclipped": {"mean": float(np.mean(off_m)), "std": float(np.std(off_m)), "runs": off},
                "reproduced": {"seed": 1, "here": check["metric"], "cell": clipped[1]},
                "unclipped_better_on_seeds": int(sum(b < a for a, b in zip(on_m, off_m)))}
            write_json(OUT, table)
            c = table["cells"][key]
            print(f"{key}: clipped {c['clipped']['mean']:.4g} +- {c['clipped']['std']:.2g}, unclipped "
                  f"{c['unclipped']['mean']:.4g} +- {c['unclipped']['std']:.2g} (reproduced {check['metric']:.4g} vs "
                  f"{clipped[1]:.4g})", flush=True)
    write_json(OUT, table)


if __name__ == "__main__":
    main()
