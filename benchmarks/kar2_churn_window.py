"""Where kar2 (Karras Alg. 2) should add noise on the default faces model: attribute frequencies and
FD-faces of 500 samples (seed 7, apart from default_model.py's seed 0) for churn windows [S_tmin, S_tmax].

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kar2_churn_window.py 26 500 \
        '{"s_tmin":2.0,"s_tmax":400.0}' '{"s_tmin":0.5,"s_tmax":400.0}' '{"s_tmin":0.1,"s_tmax":400.0}'
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kar2_churn_window.py 51 500 \
        '{"s_tmin":2.0,"s_tmax":400.0}' '{"s_tmin":1.0,"s_tmax":400.0}'
    # -> one row per window appended to results/kar2_churn_window.jsonl

Arguments: N (kar2 grid points; NFE = 2N - 3 + 1 Tweedie), the number of samples, then one JSON object
of kar2 options per window (sigmas in the model's units; the default window is [0.1, 2] for [-1, 1] data).
The window chosen here (S_tmin 1, S_tmax 400: churn at high noise only) is the default_model.py row.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    torch.set_num_threads(1)
    from ddmkit.metrics.evaluate import evaluate_images
    from ddmkit.models.loading import load_model
    from ddmkit.sampling import sample

    den = load_model("default", device="cpu")
    steps, num = int(sys.argv[1]), int(sys.argv[2])
    for text in sys.argv[3:]:
        opts = json.loads(text)
        t0 = time.time()
        r = sample(den, integrator="kar2", steps=steps, num=num, seed=7, batch_size=100, options=opts)
        m = evaluate_images(r.x.numpy(), "faces")
        gap = {k: round(m["attribute_frequency"][k] - m["data_attribute_frequency"][k], 3) for k in m["attribute_frequency"]}
        rec = {"integrator": "kar2", "steps": steps, "options": opts, "nfe": r.nfe_per_sample, "n": num, "seed": 7,
               "fd": m["fd"], "gap": gap, "max_gap": max(abs(v) for v in gap.values()),
               "conf_min": min(m["confident_fraction"].values()), "sec": time.time() - t0}
        print(json.dumps(rec), flush=True)
        with open(RESULTS / "kar2_churn_window.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
