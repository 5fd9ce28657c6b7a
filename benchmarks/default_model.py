"""The shipped models' quality ceiling: FD, attribute (class) frequencies and classifier confidence of
samples at a high NFE, beside the noise floor (real data scored the same way) and the data's frequencies.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/default_model.py [--num 2000] [--models default digits]
    # -> results/default_model.json; samples are kept (resumable) under runs/bench-default-model/

Targets (issue "Embedded default"): every attribute decided with max probability >= 0.9 on >= 90% of
samples, and attribute frequencies of 2,000 samples within 0.07 of the data's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from common import machine, read_json, write_json
from ddmkit.cli import main as ddmkit

# NFE: kar1 2*26-3 + 1 = 50; ddim 50 + 1; em 99 + 1 (stochastic); kar2 2*51-3 + 1 = 100 with the churn at
# sigma >= 1 only (high-noise stochasticity; the low-noise churn of the default window blurs fine details)
SETTINGS = ["kar1:26", "ddim:50", "em:99", "kar2:51:s_tmin=1,s_tmax=400"]


def parse_setting(text: str) -> tuple[str, int, dict[str, float]]:
    """'INTEGRATOR:STEPS[:key=value,...]' -> (integrator, steps, options), e.g. 'kar2:51:s_tmin=1,s_tmax=400'."""
    parts = text.split(":")
    opts = dict((k, float(v)) for k, v in (kv.split("=") for kv in parts[2].split(","))) if len(parts) > 2 else {}
    return parts[0], int(parts[1]), opts


def run(model: str, num: int, batch: int, settings: list[tuple], device: str = "auto") -> list[dict]:
    from ddmkit.metrics.evaluate import evaluate_images

    domain = "digits" if model == "digits" else "faces"
    rows = []
    for integrator, steps, opts in settings:
        tag = "".join(f"-{k}{v:g}" for k, v in sorted(opts.items()))
        out = Path("runs/bench-default-model") / f"{model}-{integrator}-{steps}{tag}-{num}"
        flags = [a for k, v in sorted(opts.items()) for a in (f"--{k.replace('_', '-')}", f"{v:g}")]
        if not (out / "manifest.json").is_file():
            code = ddmkit(["sample", "--model", model, "--integrator", integrator, "--steps", str(steps), "--num",
                           str(num), "--batch-size", str(batch), "--seed", "0", "--out", str(out), "--device", device, "--quiet"] + flags)
            if code:
                raise SystemExit(code)
        import json

        manifest = json.loads((out / "manifest.json").read_text())
        x = np.load(out / "samples.npz")["x"]
        metrics = evaluate_images(x, domain)
        freq_key = "attribute_frequency" if domain == "faces" else "class_frequency"
        data_key = "data_attribute_frequency" if domain == "faces" else "data_class_frequency"
        gap = {k: abs(metrics[freq_key][k] - metrics[data_key][k]) for k in metrics[freq_key]}
        rows.append({"model": model, "domain": domain, "method": integrator, "steps": steps, "options": opts,
                     "nfe": manifest["nfe_per_sample"], "n": int(len(x)), "metrics": metrics,
                     "max_frequency_gap": max(gap.values()), "frequency_gap": gap})
        print(model, integrator, steps, {k: metrics[k] for k in ("fd", "fd_noise_floor")},
              "max gap", round(max(gap.values()), 4), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--models", nargs="+", default=["default", "digits"])
    p.add_argument("--settings", nargs="+", default=SETTINGS,
                   help="INTEGRATOR:STEPS[:key=value,...] (default: kar1:26 ddim:50 em:99 kar2:51:s_tmin=1,s_tmax=400)")
    p.add_argument("--device", default="auto", help="where the model runs (auto: CUDA if present)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    results = read_json("default_model.json", {}) or {}
    settings = [parse_setting(s) for s in args.settings]
    redone = {(m, i, n, tuple(sorted(o.items()))) for m in args.models for i, n, o in settings}
    # rows of other settings (and their commands) are kept: each row says how it was made
    rows = [r for r in results.get("rows", [])
            if (r["model"], r["method"], r["steps"], tuple(sorted(r.get("options", {}).items()))) not in redone]
    for r in rows:
        r.setdefault("command", results.get("command"))
        r.setdefault("machine", results.get("machine"))
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/default_model.py " + " ".join(sys.argv[1:])
    for model in args.models:
        rows += [dict(r, command=cmd, machine=machine()) for r in run(model, args.num, args.batch_size, settings, args.device)]
    write_json("default_model.json", {"command": cmd, "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
