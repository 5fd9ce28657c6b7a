"""Scale-out on this machine: samples per second of `ddmkit sample` with 1 and 2 CPU workers (gloo).

Each run is the real command on the shipped faces model (kar1, --steps 10: 17 + 1 Tweedie = 18 NFE per
sample), one torch thread per worker (OMP_NUM_THREADS=1):

    1 worker:  python -m ddmkit sample --model default --integrator kar1 --steps 10 --num N --batch-size B --out ...
    2 workers: torchrun --standalone --nproc_per_node 2 -m ddmkit -- sample ... (the same flags)

Runs alternate (1, 2, 1, 2, ...) so that load from other jobs on the shared machine hits both alike.
Reported per run: wall seconds of the whole command (process start, model load, sampling, merge, PNGs)
and of the sampling phase (the slowest worker's `seconds` in the manifest), CPU seconds of all the
processes, and the machine's load average before/after. The merged 2-worker samples are compared with
the 1-worker samples (max |difference|; 0 means identical sample for sample).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scaling.py            # -> results/scaling.json (a few minutes)
    .venv/bin/python benchmarks/scaling.py --num 64 --reps 1 --out /tmp/s.json   # a quick check
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, machine

BIN = Path(sys.executable).parent


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(workers: int, args: list[str], out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    if workers == 1:
        cmd = [sys.executable, "-m", "ddmkit", *args, "--out", str(out)]
    else:
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(workers), "-m", "ddmkit", "--",
               *args, "--out", str(out)]
    load0 = os.getloadavg()
    cpu0, t0 = child_cpu(), time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, child_cpu() - cpu0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    m = json.loads((out / "manifest.json").read_text())
    sampling = max(r["seconds"] for r in m["ranks"])
    n = m["num"]
    return {"workers": workers, "wall_s": round(wall, 2), "sampling_wall_s": round(sampling, 2),
            "cpu_s_all_processes": round(cpu, 2), "samples_per_s": round(n / wall, 3),
            "samples_per_s_sampling": round(n / sampling, 3), "nfe_per_sample": m["nfe_per_sample"],
            "s_per_sample_nfe_sampling": round(sampling * workers / (n * m["nfe_per_sample"]), 5),
            "load_average_before": [round(v, 2) for v in load0],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "ranks": m["ranks"]}


def summarize(runs: list[dict]) -> dict:
    """Medians per worker count, the speed-ups, and the CPU seconds per sample (all processes): the work
    per sample, which shows the cost of running distributed apart from how many cores were free."""

    def one(workers: int) -> dict:
        rs = [r for r in runs if r["workers"] == workers]
        n = rs[0]["samples_per_s"] * rs[0]["wall_s"]
        return {"samples_per_s_median": round(statistics.median(r["samples_per_s"] for r in rs), 3),
                "samples_per_s_sampling_median": round(statistics.median(r["samples_per_s_sampling"] for r in rs), 3),
                "wall_s_median": round(statistics.median(r["wall_s"] for r in rs), 2),
                "cpu_s_per_sample_median": round(statistics.median(r["cpu_s_all_processes"] for r in rs) / n, 4),
                "cores_used_median": round(statistics.median(r["cpu_s_all_processes"] / r["wall_s"] for r in rs), 2)}

    s1, s2 = one(1), one(2)
    return {"1": s1, "2": s2,
            "speedup_end_to_end": round(s2["samples_per_s_median"] / s1["samples_per_s_median"], 3),
            "speedup_sampling": round(s2["samples_per_s_sampling_median"] / s1["samples_per_s_sampling_median"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "scaling.json"))
    a = ap.parse_args()
    args = ["sample", "--model", "default", "--integrator", "kar1", "--steps", str(a.steps), "--num", str(a.num),
            "--batch-size", str(a.batch_size), "--seed", "0", "--device", "cpu", "--quiet"]
    runs = []
    tmp = Path(tempfile.mkdtemp(prefix="ddmkit-scaling-"))
    try:
        for rep in range(a.reps):
            for workers in (1, 2):
                out = tmp / f"w{workers}-r{rep}"
                r = run_once(workers, args, out)
                r["rep"] = rep
                runs.append(r)
                print(f"rep {rep} workers {workers}: {r['samples_per_s']:.2f} samples/s end to end, "
                      f"{r['samples_per_s_sampling']:.2f} in the sampling phase (load {r['load_average_before'][0]})",
                      flush=True)
        with np.load(tmp / "w1-r0" / "samples.npz") as z1, np.load(tmp / "w2-r0" / "samples.npz") as z2:
            same_index = z1["index"].tolist() == z2["index"].tolist() == list(range(a.num))
            max_diff = float(np.abs(z1["x"] - z2["x"]).max())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "what": "samples per second of `ddmkit sample` (default faces model, kar1 --steps 10) with 1 and 2 CPU "
                "workers (torchrun, gloo), one torch thread each",
        "command_1": "python -m ddmkit " + " ".join(args) + " --out OUT",
        "command_2": "torchrun --standalone --nproc_per_node 2 -m ddmkit -- " + " ".join(args) + " --out OUT",
        "num": a.num, "batch_size": a.batch_size, "steps": a.steps, "reps": a.reps,
        "machine": {**machine(), "note": "2 logical CPUs shared with other work: the load average is recorded per run"},
        "summary": summarize(runs),
        "two_workers_equal_one_worker": {"same_indices": same_index, "max_abs_difference": max_diff},
        "runs": runs,
    }
    from ddmkit.io import atomic_write_json

    atomic_write_json(a.out, result)
    print(json.dumps(result["summary"], indent=2))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
