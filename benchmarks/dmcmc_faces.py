"""DLG vs plain sampling on the shipped default faces DDPM, for each of the seven integrators.

    .venv/bin/python benchmarks/dmcmc_faces.py [--device cuda] [--num 1000] [--quick]
    -> benchmarks/results/dmcmc_faces.json (rows), dmcmc_faces_tuning.json, dmcmc_faces.png
    # on a GPU, one process per integrator (the GPU is launch-bound at 32x32), then merge:
    for i in kar1 kar2 rd em pf rk45 ddim; do
      .venv/bin/python benchmarks/dmcmc_faces.py --integrators $i --part $i & done
    .venv/bin/python benchmarks/dmcmc_faces.py --peers --part peers &
    .venv/bin/python benchmarks/dmcmc_faces.py --costs; wait
    .venv/bin/python benchmarks/dmcmc_faces.py --merge

Needs the shipped default model (src/ddmkit/models/weights/faces/) and its noise-level classifier
(src/ddmkit/models/weights/faces_noise_classifier.*). Resumable: every finished row is written at
once; rerunning skips it. Cost: about (NFE x num / batch) UNet calls per row; on one CPU thread a
1000-sample row at 20 NFE takes minutes, the whole table hours -- use a GPU (--device cuda).

Rows: {"method", "dlg", "nfe" (measured NFE per sample; for DLG the paper's per-output NFE:
n_skip + integrator + 1), "nfe_with_burn_in", "settings", "metrics": {"fd", "fd_noise_floor",
"attribute_frequency", "data_attribute_frequency", "attribute_error" (mean |freq - data freq|)}}
with FD-faces from `ddmkit.metrics.evaluate.evaluate_images` (Frechet distance on the shipped faces
classifier's features; read it against fd_noise_floor, what real faces score at the same n).

DLG settings per (integrator, budget): n_skip = 20/40/60% of the budget, the integrator the most steps
that fit, eta in {0.1, 0.4, 0.8} ([0,1]-data units: x4 for this [-1,1] model); chosen by FD on a
tuning run (seed 0, --tune-num samples) and scored on fresh samples (seed 1, --num samples).
Budgets 10 and 20 (the head-to-head with the peers) run first.

The committed results (stage-3 faces model) ran on an H200 in one `scripts/gpu_session.sh` call: per
integrator one process for the plain rows (`--budgets ""`) and one for DLG (`--skip-plain --etas 0.1,0.4
--shares 0.2,0.4 --tune-num 300 --tune-chains 300 --chains 250 --budgets 5,10,20,35,50`), the peers, then
`--merge`; `--costs` and `--walltime` ran before, with the GPU to themselves. The plain-rows process of
rk45 also tuned and scored DLG rows with the defaults of that time (3 etas, 100 chains; kept, marked by
their settings). On the CPU afterwards: the DLG scoring runs at 50 NFE for kar2, rd and em from the GPU's
tuning rows (`--device cpu --integrators I --part I --skip-plain --budgets 50`, same tuning options, with
the tuning table copied to the part), and plain rd/em/pf at 5 and 35 NFE (`--integrators rd,em,pf
--budgets "" --plain-max-nfe 35`); em at 5 NFE with the default shares 0.2,0.4,0.6 (`--device cpu --threads 2
--integrators em --part em5 --skip-plain --budgets 5 --etas 0.1,0.4 --shares 0.2,0.4,0.6 --tune-num 300
--tune-chains 300 --chains 250`, tuning table copied to the part; its row replaced the 0.2/0.4 one). Row "seconds" include the FD evaluation and come from shared machines:
use dmcmc_faces_walltime.json for timing.

Peers (--peers): diffusers' DPMSolverMultistepScheduler (DPM-Solver++ 2M), UniPCMultistepScheduler and
DDIMScheduler (clip_sample) on the model's own DDPM schedule, NFE = steps, the final sample clipped to
[-1, 1]; DPM-Solver++ and UniPC also with diffusers' dynamic thresholding of the x0 prediction
(`-thresholding`), the fair comparison for a model whose x0 predictions leave the data range (ddmkit's
integrators clip D to the data range by default, as DDPM does).
Costs (--costs -> dmcmc_faces_costs.json): one noise-level classifier call against one UNet call at the
same batch (the classifier's cost per DLG step relative to one NFE).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
INTEGRATORS = ("kar1", "kar2", "rd", "em", "pf", "rk45", "ddim")
BUDGETS = (5, 10, 20, 35, 50, 100)
PLAIN_STEPS = {
    "kar1": (3, 4, 6, 11, 18, 26, 51), "kar2": (3, 4, 6, 11, 18, 26, 51),
    "rd": (4, 9, 19, 34, 49, 99, 199, 399), "em": (4, 9, 19, 34, 49, 99, 199, 399),
    "pf": (4, 9, 19, 34, 49, 99, 199, 399),
    "ddim": (4, 9, 19, 34, 49, 99),
}
RK45_TOLS = (1e-2, 1e-3, 1e-4)
ETAS = (0.1, 0.4, 0.8)
SHARES = (0.2, 0.4, 0.6)


def load(device: str, classifier: str | None = None):
    from ddmkit.dmcmc.run import resolve_classifier
    from ddmkit.models.loading import load_model, model_identity

    den = load_model("default", device=device)
    clf, path = resolve_classifier(classifier, "default", den, model_identity(den), device=device)
    return den, clf


def metrics(x: torch.Tensor) -> dict:
    from ddmkit.metrics.evaluate import evaluate_images

    x = x.detach().float().cpu()
    if not torch.isfinite(x).all():
        return {"fd": None, "non_finite": int((~torch.isfinite(x)).flatten(1).any(1).sum())}
    m = evaluate_images(x.numpy(), "faces")
    freq, data = m["attribute_frequency"], m["data_attribute_frequency"]
    return {"fd": m["fd"], "fd_noise_floor": m.get("fd_noise_floor"), "attribute_frequency": freq,
            "data_attribute_frequency": data,
            "attribute_error": float(np.mean([abs(freq[a] - data[a]) for a in freq]))}


class Table:
    def __init__(self, path: Path):
        self.path = path
        self.rows = json.loads(path.read_text()) if path.is_file() else []

    @staticmethod
    def key(method, dlg, settings) -> str:
        return json.dumps([method, dlg, settings], sort_keys=True)

    def has(self, method, dlg, settings):
        k = self.key(method, dlg, settings)
        return next((r for r in self.rows if self.key(r["method"], r["dlg"], r["settings"]) == k), None)

    def add(self, row):
        from ddmkit.io import atomic_write_json

        self.rows.append(row)
        atomic_write_json(self.path, self.rows)
        return row


def run_plain(den, integrator, steps, options, num, seed, batch):
    from ddmkit.sampling import sample

    t = time.time()
    res = sample(den, integrator=integrator, steps=steps, num=num, seed=seed, batch_size=batch, options=options)
    return {"nfe": res.nfe_per_sample, "metrics": metrics(res.x), "seconds": round(time.time() - t, 1)}


def run_dlg(den, clf, integrator, steps, eta, n_skip, options, num, seed, chains):
    from ddmkit.dmcmc.dlg import DLGConfig, dlg_sample

    t = time.time()
    cfg = DLGConfig(integrator=integrator, steps=steps, eta=eta, n_skip=n_skip, options=options)
    res = dlg_sample(den, clf, cfg, num=num, chains=chains, seed=seed, report=lambda m: None)
    return {"nfe": res.nfe["per_output"], "nfe_with_burn_in": res.nfe["per_output_with_burn_in"],
            "metrics": metrics(res.x), "divergences": len(res.events),
            "sigma_star_median": float(np.median(res.sigma_star)), "seconds": round(time.time() - t, 1)}


def run_peer(den, name, steps, num, seed, batch):
    """A diffusers multistep / DDIM scheduler on the model's DDPM schedule; NFE = steps."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    from ddmkit.denoisers import unwrap
    from ddmkit.integrators import PerSampleGenerator
    from ddmkit.sampling import sample_seed

    inner = unwrap(den)
    cfg = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    thr = dict(thresholding=True, sample_max_value=1.0)  # diffusers' dynamic thresholding of the x0 prediction
    sched = {"dpmsolver++2m": lambda: DPMSolverMultistepScheduler(**cfg, algorithm_type="dpmsolver++", solver_order=2),
             "unipc": lambda: UniPCMultistepScheduler(**cfg),
             "dpmsolver++2m-thresholding": lambda: DPMSolverMultistepScheduler(
                 **cfg, algorithm_type="dpmsolver++", solver_order=2, **thr),
             "unipc-thresholding": lambda: UniPCMultistepScheduler(**cfg, **thr),
             "ddim-diffusers": lambda: DDIMScheduler(**cfg, clip_sample=True)}[name]()
    t0 = time.time()
    outs, calls = [], 0
    with torch.no_grad():
        for i in range(0, num, batch):
            idx = range(i, min(num, i + batch))
            x = PerSampleGenerator([sample_seed(seed, j) for j in idx]).randn((len(idx),) + tuple(inner.sample_shape))
            x = x.to(inner.device) * sched.init_noise_sigma
            sched.set_timesteps(steps)
            calls = 0
            for t in sched.timesteps:
                e = inner.eps(x, t.reshape(1).expand(len(x)).to(x.device))
                calls += 1
                x = sched.step(e, t, x).prev_sample
            outs.append(x.clamp(-1, 1).cpu())
    return {"nfe": calls, "metrics": metrics(torch.cat(outs)), "seconds": round(time.time() - t0, 1),
            "settings_extra": {"scheduler": type(sched).__name__, "timestep_spacing": sched.config.timestep_spacing}}


CLASSIFIER_VARIANTS = (("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True))


def noisy_faces(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n held-out faces (the classifier's own held-out seed range is not needed: any fresh faces) noised at
    log-uniform sigma over [0.02, 150]: inputs to compare classifier variants on."""
    import math

    from ddmkit.data.faces import sample_faces, to_tensor_range

    x0 = torch.from_numpy(to_tensor_range(sample_faces(n, seed=70_000_000 + seed)[0]))
    g = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.empty(n).uniform_(math.log(0.02), math.log(150.0), generator=g))
    return x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=g), sigma


def measure_costs(den, clf, device: str, batch: int, variants=(("fp32", False),)) -> list[dict]:
    """Seconds per call of the UNet and of the noise-level classifier at the same batch (median of 20), for
    each classifier variant (dtype, torch.compile); with each variant's predicted levels on noisy faces
    against the fp32 classifier's and against the truth (mean |delta log sigma|)."""
    from ddmkit.denoisers import unwrap

    inner = unwrap(den)
    x = torch.randn((batch,) + tuple(inner.sample_shape), device=inner.device)
    sigma = torch.full((batch,), 1.0, device=inner.device)
    xq, sq = noisy_faces(batch)
    xq = xq.to(inner.device)

    reps, warm = (25, 5) if device.startswith("cuda") else (6, 1)

    def timed(fn):
        times = []
        with torch.no_grad():
            for k in range(reps):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if k >= warm:
                    times.append(time.perf_counter() - t)
        return float(np.median(times))

    unet = timed(lambda: den(x, sigma))
    rows, ref = [], None
    for dtype, compiled in variants:
        c = copy.copy(clf)  # shares the weights; own dtype and compiled function
        c.set_precision(dtype)
        if compiled:
            c.compile()
            c.predict(x)  # compile outside the timing
        cls = timed(lambda: c.predict(x))
        pred = c.sigma(xq).double()
        ref = pred if ref is None else ref
        rows.append({"device": device, "batch": batch, "classifier_dtype": dtype, "classifier_compiled": compiled,
                     "unet_seconds_per_call": unet, "classifier_seconds_per_call": cls,
                     "classifier_over_nfe": cls / unet, "target": 0.05,
                     "mean_abs_dlog_sigma_vs_truth": float((pred.log() - sq.double().log()).abs().mean()),
                     "mean_abs_dlog_sigma_vs_fp32_eager": float((pred.log() - ref.log()).abs().mean())})
        print(rows[-1], flush=True)
    return rows


def merge_costs(path: Path, new: list[dict], device: str) -> dict:
    """Add this run's cost rows (tagged with the machine) to the file's, replacing rows of the same
    machine, batch and classifier variant. Rows from before the variants were fp32, eager; the first
    GPU rows came from an H200 and the CPU row from that machine's CPU."""
    from common import machine

    info = machine()
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else None
    for r in new:
        r["device_name"] = gpu if r["device"].startswith("cuda") else f"cpu ({info['cpus']} cores)"
        r["command"] = "benchmarks/dmcmc_faces.py " + " ".join(sys.argv[1:])
        r["date"] = info["date"]
    old = json.loads(path.read_text()).get("costs", []) if path.is_file() else []
    for r in old:
        r.setdefault("classifier_dtype", "fp32")
        r.setdefault("classifier_compiled", False)
        r.setdefault("device_name", "NVIDIA H200" if r["device"].startswith("cuda") else "cpu (the H200 machine, 16 cores)")

    def key(r):
        return (r["device_name"], r["batch"], r["classifier_dtype"], r["classifier_compiled"])

    keys = {key(r) for r in new}
    return {"costs": [r for r in old if key(r) not in keys] + new}


WALLTIME_SETTINGS = (  # (budget, plain kar1 steps, DLG n_skip, DLG kar1 steps): NFE 10 and 20 either way
    (10, 6, 2, 5), (20, 11, 8, 7))


def measure_walltime(den, clf, device: str, chains: int, num: int = 1000) -> dict:
    """Seconds of sampling alone (no metrics) per `num` samples: plain kar1 vs DLG + kar1 at equal NFE.

    DLG's burn-in (`DLGSampler.init_state`) and its rounds (`DLGSampler.run` from that state) are timed
    separately in one run: the rounds are the steady-state cost per sample, the burn-in is reported apart.
    """
    from ddmkit.denoisers import unwrap
    from ddmkit.dmcmc.dlg import DLGConfig, DLGSampler, nfe_summary
    from ddmkit.sampling import sample

    def timed(fn):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t, out

    sample(den, integrator="kar1", steps=6, num=chains, seed=9, batch_size=chains)  # warm-up (kernels, allocator)
    with torch.no_grad():  # a compiled classifier compiles here, at the chains' batch, not inside a timing
        clf.predict(torch.randn((chains,) + tuple(unwrap(den).sample_shape), device=unwrap(den).device))
    rows = []
    for budget, plain_steps, n_skip, steps in WALLTIME_SETTINGS:
        t_plain, res = timed(lambda: sample(den, integrator="kar1", steps=plain_steps, num=num, seed=1, batch_size=chains))
        cfg = DLGConfig(integrator="kar1", steps=steps, eta=0.4, n_skip=n_skip)
        sampler = DLGSampler(den, clf, cfg, chains=chains, seed=1, report=lambda m: None)
        t_burn, state = timed(sampler.init_state)
        t_rounds, state = timed(lambda: sampler.run(num, state=state))
        nfe = nfe_summary(state, chains)
        rows.append({"budget": budget, "num": num, "chains": chains, "batch": chains,
                     "plain": {"integrator": "kar1", "steps": plain_steps, "nfe": res.nfe_per_sample,
                               "seconds": round(t_plain, 3)},
                     "dlg": {"integrator": "kar1", "steps": steps, "n_skip": n_skip, "nfe": nfe["per_output"],
                             "classifier_calls_batched": nfe["classifier_calls"],
                             "seconds_total": round(t_burn + t_rounds, 3),
                             "seconds_without_burn_in": round(t_rounds, 3), "burn_in_seconds": round(t_burn, 3)},
                     "dlg_over_plain_without_burn_in": round(t_rounds / t_plain, 3),
                     "dlg_over_plain_with_burn_in": round((t_burn + t_rounds) / t_plain, 3)})
        print(rows[-1], flush=True)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    return {"device": device, "device_name": name, "what": "wall-clock seconds of sampling only, one process alone",
            "classifier_dtype": clf.dtype, "classifier_compiled": clf.compiled, "rows": rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=100)
    ap.add_argument("--tune-num", type=int, default=300)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--integrators", default=",".join(INTEGRATORS))
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--quick", action="store_true", help="one eta (0.4), one share (0.4): 9x fewer tuning runs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--etas", default=",".join(map(str, ETAS)))
    ap.add_argument("--shares", default=",".join(map(str, SHARES)))
    ap.add_argument("--tune-chains", type=int, default=None, help="chains of a tuning run (default: min(chains, tune-num))")
    ap.add_argument("--plain-max-nfe", type=int, default=100, help="plain rows up to this NFE")
    ap.add_argument("--part", default="", help="write dmcmc_faces.<part>.json (parallel processes; then --merge)")
    ap.add_argument("--peers", action="store_true", help="only the diffusers peers at --peer-steps")
    ap.add_argument("--peer-steps", default="5,10,20,35,50")
    ap.add_argument("--peer-names", default="dpmsolver++2m,unipc,ddim-diffusers,dpmsolver++2m-thresholding,unipc-thresholding")
    ap.add_argument("--costs", action="store_true", help="only the classifier-vs-UNet cost measurement")
    ap.add_argument("--walltime", action="store_true",
                    help="only the wall-clock of DLG vs plain kar1 at 10 and 20 NFE (run it alone on the device)")
    ap.add_argument("--skip-plain", action="store_true", help="no plain rows (another process runs them)")
    ap.add_argument("--classifier", default=None,
                    help="another noise-level classifier (default: the shipped one); recorded in the DLG rows' settings")
    ap.add_argument("--classifier-dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                    help="the DLG rows' and --walltime's classifier precision (recorded in the rows' settings)")
    ap.add_argument("--classifier-compile", action="store_true", help="torch.compile the classifier (DLG rows, --walltime)")
    ap.add_argument("--merge", action="store_true", help="merge dmcmc_faces.*.json parts, then plot")
    ap.add_argument("--deadline", type=float, default=None, help="start no new run after this many seconds")
    ap.add_argument("--fixed", default="", metavar="ETA:SHARE",
                    help="no tuning: score DLG at each budget with this eta and n_skip = SHARE x budget")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    suffix = f".{args.part}" if args.part else ""
    if args.merge:
        merge()
        return
    den, clf = load(args.device, args.classifier)
    clf_setting = {"classifier": Path(args.classifier).name} if args.classifier else {}
    if not args.costs:  # --costs measures every variant itself
        clf.set_precision(args.classifier_dtype)
        if args.classifier_compile:
            clf.compile()
        if args.classifier_dtype != "fp32" or args.classifier_compile:
            clf_setting.update(classifier_dtype=args.classifier_dtype, classifier_compiled=args.classifier_compile)
    from ddmkit.dmcmc.tune import max_steps
    from ddmkit.io import atomic_write_json

    if args.costs:
        batches = (100, 250, 1000) if args.device.startswith("cuda") else (64,)
        variants = CLASSIFIER_VARIANTS if args.device.startswith("cuda") else CLASSIFIER_VARIANTS[:2]
        new = [r for b in batches for r in measure_costs(den, clf, args.device, b, variants)]
        if args.device != "cpu":
            den_cpu, clf_cpu = load("cpu")
            new += measure_costs(den_cpu, clf_cpu, "cpu", 64, CLASSIFIER_VARIANTS[:2])
        out = merge_costs(RESULTS / f"dmcmc_faces_costs{suffix}.json", new, args.device)
        atomic_write_json(RESULTS / f"dmcmc_faces_costs{suffix}.json", out)
        print(json.dumps(out, indent=1))
        return
    if args.walltime:
        out = measure_walltime(den, clf, args.device, args.chains, args.num)
        atomic_write_json(RESULTS / f"dmcmc_faces_walltime{suffix}.json", out)
        print(json.dumps(out, indent=1))
        return
    etas = (0.4,) if args.quick else tuple(float(v) for v in args.etas.split(",") if v)
    shares = (0.4,) if args.quick else tuple(float(v) for v in args.shares.split(",") if v)
    integrators = [i for i in args.integrators.split(",") if i]
    budgets = [int(b) for b in args.budgets.split(",") if b]
    budgets = [b for b in (10, 20) if b in budgets] + [b for b in budgets if b not in (10, 20)]
    table = Table(RESULTS / f"dmcmc_faces{suffix}.json")
    tuning = Table(RESULTS / f"dmcmc_faces_tuning{suffix}.json")
    t0 = time.time()
    log = lambda msg: print(f"[{time.time() - t0:8.1f}s] {msg}", flush=True)  # noqa: E731
    late = lambda: args.deadline is not None and time.time() - t0 > args.deadline  # noqa: E731
    if args.peers:
        for name in args.peer_names.split(","):
            for n in (int(v) for v in args.peer_steps.split(",") if v):
                s = {"steps": n, "num": args.num, "seed": 1}
                if not table.has(name, False, s) and not late():
                    r = run_peer(den, name, n, args.num, 1, args.batch)
                    extra = r.pop("settings_extra")
                    table.add({"method": name, "dlg": False, "peer": True, **r, "settings": {**s, **extra}})
                    log(f"peer {name} {n}: nfe {r['nfe']} fd {r['metrics'].get('fd')}")
        return
    from ddmkit.dmcmc.tune import integrator_nfe

    for integ in integrators if not (args.fixed or args.skip_plain) else ():  # plain
        grid = [{"steps": n, "options": {}} for n in PLAIN_STEPS.get(integ, ())
                if integrator_nfe(integ, n) + 1 <= args.plain_max_nfe]
        if integ == "rk45":
            grid = [{"steps": 1, "options": {"rtol": t, "atol": t}} for t in RK45_TOLS]
        for g in grid:
            s = {**g, "num": args.num, "seed": 1}
            if not table.has(integ, False, s) and not late():
                r = run_plain(den, integ, g["steps"], g["options"], args.num, 1, args.batch)
                table.add({"method": integ, "dlg": False, **r, "settings": s})
                log(f"plain {integ} {g}: nfe {r['nfe']:.1f} fd {r['metrics'].get('fd')}")
    if args.fixed:  # DLG without tuning (e.g. a CPU run completing a GPU table)
        eta, share = (float(v) for v in args.fixed.split(":"))
        for integ in integrators:
            for budget in budgets:
                n_skip = max(1, int(round(share * budget)))
                steps, opts = max_steps(integ, budget - n_skip - 1), {}
                if integ == "rk45":
                    steps, opts = 1, {"rtol": 1e-2, "atol": 1e-2}
                if steps is None:
                    continue
                s = {"budget": budget, "n_skip": n_skip, "steps": steps, "eta": eta, "options": opts, "num": args.num,
                     "seed": 1, "chains": args.chains, "selected_on": f"fixed, not tuned: eta {eta:g}, n_skip {share:g} x budget",
                     **clf_setting}
                if not table.has(integ, True, s) and not late():
                    r = run_dlg(den, clf, integ, steps, eta, n_skip, opts, args.num, 1, args.chains)
                    table.add({"method": integ, "dlg": True, **r, "settings": s})
                    log(f"dlg {integ} budget {budget} (fixed): nfe {r['nfe']:.1f} fd {r['metrics'].get('fd')}")
        return
    for integ in integrators if budgets else ():  # DLG: tune (seed 0), then score (seed 1); --budgets "" = plain only
        if integ == "rk45":
            cands = {f"tol{t:g}": [(n, 1, {"rtol": t, "atol": t}) for n in (2, 5, 10)] for t in RK45_TOLS}
        else:
            cands = {}
            for b in budgets:
                splits = set()
                for share in shares:
                    n_skip = max(1, int(round(share * b)))
                    steps = max_steps(integ, b - n_skip - 1)
                    if steps is not None:
                        splits.add((n_skip, steps, ()))
                cands[b] = [(n, st, {}) for n, st, _ in sorted(splits)]
        for budget, splits in cands.items():
            tried = []
            for n_skip, steps, opts in splits:
                for eta in etas:
                    s = {"budget": budget, "n_skip": n_skip, "steps": steps, "eta": eta, "options": opts,
                         "num": args.tune_num, "seed": 0, "chains": args.tune_chains or min(args.chains, args.tune_num),
                         **clf_setting}
                    row = tuning.has(integ, True, s)
                    if row is None and late():
                        continue
                    if row is None:
                        r = run_dlg(den, clf, integ, steps, eta, n_skip, opts, args.tune_num, 0, s["chains"])
                        row = tuning.add({"method": integ, "dlg": True, **r, "settings": s})
                        log(f"tune dlg {integ} {s}: fd {r['metrics'].get('fd')}")
                    tried.append(row)
            ok = [r for r in tried if r["metrics"].get("fd") is not None]
            if not ok:
                continue
            bs = min(ok, key=lambda r: r["metrics"]["fd"])["settings"]
            s = {"budget": budget, "n_skip": bs["n_skip"], "steps": bs["steps"], "eta": bs["eta"], "options": bs["options"],
                 "num": args.num, "seed": 1, "chains": args.chains, "selected_on": f"fd, seed 0, {args.tune_num} samples",
                 **clf_setting}
            if not table.has(integ, True, s) and not late():
                r = run_dlg(den, clf, integ, bs["steps"], bs["eta"], bs["n_skip"], bs["options"], args.num, 1, args.chains)
                table.add({"method": integ, "dlg": True, **r, "settings": s})
                log(f"dlg {integ} budget {budget}: nfe {r['nfe']:.1f} fd {r['metrics'].get('fd')}")
    if not args.part:
        plot(table.rows)


def merge() -> None:
    """Fold dmcmc_faces.<part>.json (and tuning / costs parts) into the main files; plot."""
    from ddmkit.io import atomic_write_json

    for base in ("dmcmc_faces", "dmcmc_faces_tuning"):
        table = Table(RESULTS / f"{base}.json")
        for part in sorted(RESULTS.glob(f"{base}.*.json")):
            if base == "dmcmc_faces" and part.name.startswith("dmcmc_faces_tuning"):
                continue
            for row in json.loads(part.read_text()):
                if not table.has(row["method"], row["dlg"], row["settings"]):
                    table.rows.append(row)
            part.unlink()
        atomic_write_json(table.path, table.rows)
    plot(Table(RESULTS / "dmcmc_faces.json").rows)


def plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(18, 8.5), sharey=True)
    floors = [r["metrics"]["fd_noise_floor"] for r in rows if r["metrics"].get("fd_noise_floor") is not None]
    for ax, integ in zip(axes.flat, INTEGRATORS):
        for dlg, style, label in ((False, "o-", "plain"), (True, "s-", "DLG (per-output NFE)")):
            pts = sorted((r["nfe"], r["metrics"]["fd"], r.get("nfe_with_burn_in")) for r in rows
                         if r["method"] == integ and r["dlg"] == dlg and r["metrics"].get("fd") is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=4, label=label)
                if dlg:
                    ax.plot([p[2] for p in pts], [p[1] for p in pts], "s:", alpha=0.5, ms=3,
                            color=ax.lines[-1].get_color(), label="DLG incl. amortised burn-in")
        for peer, style in (("ddim-diffusers", "x--"), ("dpmsolver++2m", "+--"), ("unipc", "1--"),
                            ("dpmsolver++2m-thresholding", "+:"), ("unipc-thresholding", "1:")):
            pts = sorted((r["nfe"], r["metrics"]["fd"]) for r in rows if r["method"] == peer and r["metrics"].get("fd") is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color="grey", alpha=0.6, ms=5,
                        label=f"peer: diffusers {peer}")
        if floors:
            ax.axhline(float(np.mean(floors)), color="green", lw=0.8, label="noise floor (real faces, same n)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(integ)
        ax.set_xlabel("NFE per sample")
        ax.grid(alpha=0.3, which="both")
    axes.flat[0].set_ylabel("FD-faces")
    axes.flat[4].set_ylabel("FD-faces")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    axes.flat[-1].axis("off")
    axes.flat[-1].legend(handles, labels, loc="center")
    fig.tight_layout()
    fig.savefig(RESULTS / "dmcmc_faces.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
