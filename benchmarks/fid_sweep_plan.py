"""Plan (on paper) of a 50,000-sample FID sweep of the DMCMC paper's CIFAR-10 grid (Fig. 3) on 8 GPUs.

For every grid point (the seven-integrator x with/without-DLG points of Fig. 3, spec section 8) it
writes the `ddmkit sample` command, the NFE per sample (DLG: n_skip + integrator + 1 Tweedie, plus the
amortised burn-in of 57 NFE x 200 chains / 50,000 = 0.228), the total sample-NFE, and the estimated
time from a seconds-per-sample-NFE figure:

- measured: `benchmarks/results/checkpoint_timing.json`, VE NCSN++ CIFAR-10 (62.8M params, 32 px),
  CPU seconds per sample-NFE on one thread of this machine's CPU;
- GPU: an ASSUMPTION (default 1,000 sample-NFE/s per GPU, fp32, batch >= 200; see docs/scale-out.md),
  not a measurement: `--measure --device cuda` times the architecture (random weights) on the GPU at
  hand and uses that instead.

Jobs are assigned to the 8 GPUs longest-first (each job on the least-loaded GPU); the makespan is the
busiest GPU's total. `--write-jobs DIR` writes one shell script per GPU with its commands.

    python benchmarks/fid_sweep_plan.py                         # -> benchmarks/results/fid_sweep_plan.json
    python benchmarks/fid_sweep_plan.py --measure --device cuda --out /tmp/plan.json --write-jobs runs/cifar10-sweep
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import RESULTS, read_json

NUM = 50_000
CHAINS = 200
BURN_IN_NFE = 57  # the cifar10 burn-in: KAR2 N=20 (37) + 10 + 10 Langevin, measured by ddmkit (tests)
GPUS = 8
ASSUMED_GPU_SAMPLE_NFE_PER_S = 1000.0
MODEL = "models/ncsnpp-cifar10"  # `ddmkit convert checkpoint_24.pth --format score-sde --config cifar10_ncsnpp_continuous`
CLF = "runs/clf-cifar10"  # docs/reproduce.md 3.1
OUT = "runs/cifar10-sweep"


def integrator_nfe(integrator: str, steps: int) -> int:
    return 2 * steps - 3 if integrator in ("kar1", "kar2") else steps


def grid() -> list[dict]:
    """Fig. 3's points: (integrator, target NFE, dlg). ddmkit's split of a DLG budget: n_skip takes what the
    integrator's grid leaves (about half); RK45 is adaptive, its NFE an estimate from the figure."""
    rows = []
    # with DLG: (integrator, steps N, n_skip) -> NFE = n_skip + integrator + 1
    dlg = [("kar1", 4, 4), ("kar1", 7, 8), ("kar1", 15, 22),
           ("kar2", 4, 4), ("kar2", 7, 8), ("kar2", 15, 22), ("kar2", 30, 42),
           ("pf", 50, 49), ("pf", 100, 99),
           ("rd", 50, 49), ("rd", 100, 99), ("rd", 300, 299),
           ("em", 50, 49), ("em", 100, 99), ("em", 200, 199)]
    for integ, n, skip in dlg:
        rows.append({"integrator": integ, "dlg": True, "steps": n, "n_skip": skip,
                     "nfe": skip + integrator_nfe(integ, n) + 1})
    for tol, est in (("1e-3", 49), ("1e-4", 74)):  # RK45 + DLG at ~60 and ~85: n_skip 10 + adaptive
        rows.append({"integrator": "rk45", "dlg": True, "steps": 1, "n_skip": 10, "tol": tol, "nfe": 10 + est + 1,
                     "nfe_estimated": True})
    # without DLG: NFE = integrator + 1 (Tweedie)
    plain = [("kar1", 6), ("kar1", 11), ("kar1", 26), ("kar1", 501),
             ("kar2", 11), ("kar2", 26), ("kar2", 51), ("kar2", 101), ("kar2", 201), ("kar2", 501),
             ("pf", 199), ("pf", 399), ("pf", 599), ("pf", 999),
             ("rd", 199), ("rd", 399), ("rd", 999),
             ("em", 199), ("em", 399), ("em", 999)]
    for integ, n in plain:
        rows.append({"integrator": integ, "dlg": False, "steps": n, "nfe": integrator_nfe(integ, n) + 1})
    for tol, est in (("1e-3", 74), ("1e-4", 104), ("1e-5", 179)):
        rows.append({"integrator": "rk45", "dlg": False, "steps": 1, "tol": tol, "nfe": est + 1, "nfe_estimated": True})
    for r in rows:
        r["name"] = (f"{'dlg-' if r['dlg'] else ''}{r['integrator']}-"
                     f"{'tol' + r['tol'] if 'tol' in r else 'n' + str(r['steps'])}"
                     f"{'-skip' + str(r['n_skip']) if r['dlg'] else ''}")
        r["nfe_with_burn_in"] = r["nfe"] + (BURN_IN_NFE * CHAINS / NUM if r["dlg"] else 0.0)
        r["command"] = command(r)
    return rows


def command(r: dict) -> str:
    tol = f" --rtol {r['tol']} --atol {r['tol']}" if "tol" in r else ""
    steps = "" if r["integrator"] == "rk45" else f" --steps {r['steps']}"
    if r["dlg"]:
        return (f"ddmkit sample --dmcmc --model {MODEL} --noise-classifier {CLF} --integrator {r['integrator']}{steps}"
                f"{tol} --n-skip {r['n_skip']} --eta 0.5 --chains {CHAINS} --batch-size {CHAINS} --burn-in cifar10 "
                f"--num {NUM} --seed 0 --device cuda --out {OUT}/{r['name']}")
    return (f"ddmkit sample --model {MODEL} --integrator {r['integrator']}{steps}{tol} --num {NUM} "
            f"--batch-size 500 --seed 0 --device cuda --out {OUT}/{r['name']}")


def measure(device: str, batch: int = 200, reps: int = 5) -> float:
    """Seconds per sample-NFE of the NCSN++ CIFAR-10 architecture (random weights) on `device`."""
    import torch

    from ddmkit.models.configs import get_arch
    from ddmkit.models.checkpoints import build_unet
    from ddmkit.models.loading import denoiser_from_unet

    arch = get_arch("cifar10_ncsnpp_continuous")
    torch.manual_seed(0)
    den = denoiser_from_unet(build_unet(arch.unet).eval().to(device), arch.scheduler, name="ncsnpp")
    x = torch.randn(batch, *den.sample_shape, device=device)
    sigma = torch.full((batch,), 1.0, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        den(x, sigma)
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            den(x, sigma)
        sync()
    return (time.perf_counter() - t0) / (reps * batch)


def lpt(jobs: list[dict], key: str, gpus: int) -> list[list[dict]]:
    """Longest-processing-time-first assignment of jobs to gpus."""
    loads, lanes = [0.0] * gpus, [[] for _ in range(gpus)]
    for j in sorted(jobs, key=lambda j: -j[key]):
        k = loads.index(min(loads))
        lanes[k].append(j)
        loads[k] += j[key]
    return lanes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu-sample-nfe-per-s", type=float, default=ASSUMED_GPU_SAMPLE_NFE_PER_S,
                    help="assumed throughput of one GPU (sample-NFE per second) when not measured")
    ap.add_argument("--measure", action="store_true", help="time the architecture on --device instead of assuming")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--measure-batch", type=int, default=CHAINS, help="batch of the timed calls (default 200)")
    ap.add_argument("--gpus", type=int, default=GPUS)
    ap.add_argument("--fid-minutes-per-run", type=float, default=3.0,
                    help="assumed pytorch-fid time for 50k JPEGs on one GPU (minutes)")
    ap.add_argument("--write-jobs", metavar="DIR", default=None, help="write DIR/jobs-gpu<k>.sh")
    ap.add_argument("--out", default=str(RESULTS / "fid_sweep_plan.json"))
    a = ap.parse_args()
    timing = read_json("checkpoint_timing.json", {})
    cpu_row = next(r for r in timing.get("rows", []) if r["arch"] == "cifar10_ncsnpp_continuous")
    cpu_s = float(cpu_row["s_per_sample_nfe"])
    if a.measure:
        gpu_s = measure(a.device, a.measure_batch)
        gpu_source = f"measured on {a.device} (random weights, batch {a.measure_batch}, fp32)"
    else:
        gpu_s, gpu_source = 1.0 / a.gpu_sample_nfe_per_s, (
            f"ASSUMPTION, not a measurement: {a.gpu_sample_nfe_per_s:g} sample-NFE/s per GPU (fp32, batch >= 200)")
    rows = grid()
    for r in rows:
        r["sample_nfe_total"] = round(NUM * r["nfe_with_burn_in"])
        r["gpu_hours"] = r["sample_nfe_total"] * gpu_s / 3600
        r["cpu_thread_hours"] = r["sample_nfe_total"] * cpu_s / 3600
    lanes = lpt(rows, "gpu_hours", a.gpus)
    fid_h = len(rows) * a.fid_minutes_per_run / 60
    total_nfe = sum(r["sample_nfe_total"] for r in rows)
    makespan = max(sum(j["gpu_hours"] for j in lane) for lane in lanes)
    plan = {
        "what": "50,000-sample FID sweep of the DMCMC CIFAR-10 grid (Fig. 3, with and without DLG) on "
                f"{a.gpus} GPUs: commands, NFE, estimated hours",
        "model": "VE NCSN++ CIFAR-10 (score_sde checkpoint_24.pth, 62.8M params), converted to " + MODEL,
        "seconds_per_sample_nfe": {
            "cpu_measured": cpu_s,
            "cpu_source": "benchmarks/results/checkpoint_timing.json (one CPU thread, CPU seconds, batch 16)",
            "gpu": gpu_s, "gpu_source": gpu_source},
        "runs": len(rows),
        "sample_nfe_total": total_nfe,
        "gpu_hours_total": round(total_nfe * gpu_s / 3600, 2),
        "wall_hours_sampling_on_gpus": round(makespan, 2),
        "wall_hours_fid": round(fid_h / a.gpus, 2),
        "fid_assumption": f"{a.fid_minutes_per_run:g} min of pytorch-fid per 50k-sample run on one GPU (ASSUMPTION)",
        "cpu_thread_hours_total": round(total_nfe * cpu_s / 3600, 1),
        "schedule": [{"gpu": k, "hours": round(sum(j["gpu_hours"] for j in lane), 2),
                      "runs": [j["name"] for j in lane]} for k, lane in enumerate(lanes)],
        "results_land_in": {"samples": f"{OUT}/<name>/samples.npz + manifest.json (measured NFE split)",
                            "fid": f"{OUT}/<name>/fid.txt (pytorch-fid output), collected into "
                                   "benchmarks/results/cifar10_fid_sweep.csv"},
        "rows": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
    }
    from ddmkit.io import atomic_write_json

    atomic_write_json(a.out, plan)
    if a.write_jobs:
        d = Path(a.write_jobs)
        d.mkdir(parents=True, exist_ok=True)
        for k, lane in enumerate(lanes):
            lines = ["#!/bin/bash", f"# GPU {k}: {len(lane)} runs, about {sum(j['gpu_hours'] for j in lane):.1f} h",
                     "set -e", f"export CUDA_VISIBLE_DEVICES={k}"]
            # a finished run (manifest.json) is skipped, an interrupted one resumes: rerun the script after a failure
            lines += [f"[ -f {OUT}/{j['name']}/manifest.json ] || {j['command']}" for j in lane]
            (d / f"jobs-gpu{k}.sh").write_text("\n".join(lines) + "\n")
    print(f"{len(rows)} runs, {total_nfe / 1e6:.1f}M sample-NFE; GPU: {plan['gpu_hours_total']} GPU-hours, "
          f"{plan['wall_hours_sampling_on_gpus']} h wall on {a.gpus} GPUs ({gpu_source}); one CPU thread: "
          f"{plan['cpu_thread_hours_total']} h -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
