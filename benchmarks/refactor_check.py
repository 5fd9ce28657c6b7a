"""Behaviour fingerprint of a fixed set of CLI commands: the digests of every array, image and model
file they write and their manifests (NFE counts included) without timings, so that a refactor can be
shown to change nothing, bit for bit.

    python benchmarks/refactor_check.py --write benchmarks/results/refactor_check_before.json   # before
    python benchmarks/refactor_check.py --compare benchmarks/results/refactor_check_before.json # after

Runs on the shipped faces and digits models and on an exact mixture (about 3 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddmkit.cli import main as ddmkit

MIX = {"weights": [0.5, 0.3, 0.2], "means": [[-3, 0], [3, 1], [0, 4]], "stds": [[0.5, 0.3], [0.4, 0.6], [0.3, 0.3]]}
VOLATILE = ("seconds", "time", "host", "ddmkit_version", "version", "_diffusers_version", "loss_log", "device", "created", "provenance")


def commands(t: Path) -> list[tuple[str, list[str]]]:
    mix = f"gmm:{t / 'mix.json'}"
    gs = ["sample", "--model", mix, "--num", "20", "--steps", "6", "--batch-size", "7", "--quiet"]
    dlg = ["sample", "--model", mix, "--dmcmc", "--noise-classifier", str(t / "clf"), "--num", "30", "--chains", "10",
           "--steps", "4", "--n-skip", "3", "--dlg-eta", "0.05", "--quiet"]
    out = [(f"gmm-{i}", gs + ["--integrator", i, "--out", str(t / f"gmm-{i}")])
           for i in ("kar1", "kar2", "rd", "em", "pf", "rk45", "ddim")]
    out += [
        ("gmm-ddim-eta", gs + ["--integrator", "ddim", "--ddim-eta", "0.5", "--out", str(t / "gmm-ddim-eta")]),
        ("gmm-kar2-window", gs + ["--integrator", "kar2", "--s-tmin", "0.5", "--s-tmax", "30", "--out",
                                  str(t / "gmm-kar2-window")]),
        ("classifier", ["noise-classifier", "train", "--model", mix, "--out", str(t / "clf"), "--k", "16", "--steps",
                        "30", "--batch-size", "32", "--quiet"]),
        ("gmm-dlg-kar1", dlg + ["--integrator", "kar1", "--out", str(t / "gmm-dlg-kar1")]),
        ("gmm-dlg-kar2-last", dlg + ["--integrator", "kar2", "--select", "last", "--sigma-step", "sample", "--out",
                                     str(t / "gmm-dlg-kar2-last")]),
        ("gmm-dlg-rd", dlg + ["--integrator", "rd", "--burn-in", "10:0.5:5@0.5,5@eta", "--out", str(t / "gmm-dlg-rd")]),
        ("faces-kar2", ["sample", "--integrator", "kar2", "--steps", "5", "--num", "4", "--quiet", "--out",
                        str(t / "faces-kar2")]),
        ("faces-ddim", ["sample", "--integrator", "ddim", "--steps", "5", "--num", "3", "--quiet", "--out",
                        str(t / "faces-ddim")]),
        ("digits-kar1", ["sample", "--model", "digits", "--integrator", "kar1", "--steps", "4", "--num", "4", "--quiet",
                         "--out", str(t / "digits-kar1")]),
        ("faces-dlg", ["sample", "--dmcmc", "--integrator", "kar1", "--steps", "3", "--n-skip", "2", "--num", "4",
                       "--chains", "2", "--burn-in", "6:0.5:2@0.5,2@eta", "--quiet", "--out", str(t / "faces-dlg")]),
        ("evaluate", ["evaluate", str(t / "faces-kar2"), "--no-noise-floor"]),
        ("data", ["data", "faces", "--num", "6", "--seed", "3", "--out", str(t / "data")]),
        ("edit", ["edit", str(t / "data" / "images" / "000000.png"), "--boundary", "smiling", "--steps", "5",
                  "--quiet", "--out", str(t / "edit")]),
        ("edit-sweep", ["edit", str(t / "data" / "images"), "--boundary", "eyeglasses", "--sweep", "-1x:1x:3",
                        "--condition", "smiling", "--steps", "4", "--quiet", "--out", str(t / "edit-sweep")]),
        ("control", ["control", "--boundary", "eyeglasses", "--num", "2", "--prefix-steps", "6", "--steps", "5",
                     "--quiet", "--out", str(t / "control")]),
        ("control-kar2", ["control", "--boundary", "dark_hair", "--distance", "-1x", "--num", "2", "--prefix-steps", "8",
                          "--prefix-integrator", "kar2", "--prefix-s-tmin", "1", "--prefix-s-tmax", "400", "--steps", "4",
                          "--h-injection", "lagged", "--quiet", "--out", str(t / "control-kar2")]),
        ("boundary-fit", ["boundary", "fit", "--faces", "10", "--attribute", "smiling", "--n-inv", "5", "--t-m", "100",
                          "--quiet", "--out", str(t / "b.safetensors")]),
        ("mixing-step", ["mixing-step", "--faces", "8", "--attribute", "smiling", "--n-inv", "4", "--candidates",
                         "100,300", "--radius-samples", "2", "--radius-steps", "4", "--quiet", "--out", str(t / "mix-step")]),
        ("tune", ["tune-dmcmc", "--model", mix, "--noise-classifier", str(t / "clf"), "--target-nfe", "8", "--num", "20",
                  "--outputs-per-chain", "20", "--score-seeds", "1", "--etas", "0.05", "--skip-shares", "0.4", "--integrators", "kar1,ddim", "--quiet",
                  "--out", str(t / "tune.json")]),
        ("train", ["train", "--data", "digits", "--steps", "3", "--batch-size", "4", "--channels", "16,32",
                   "--attention", "0,0", "--checkpoint-every", "2", "--quiet", "--out", str(t / "train")]),
    ]
    return out


def clean(obj, tmp: str):
    """JSON without timings and versions, with the run folder written as <tmp>."""
    if isinstance(obj, dict):
        return {k: clean(v, tmp) for k, v in sorted(obj.items()) if not any(w in k for w in VOLATILE)}
    if isinstance(obj, list):
        return [clean(v, tmp) for v in obj]
    if isinstance(obj, str):
        return obj.replace(tmp, "<tmp>")
    return obj


def digest_file(p: Path, tmp: str):
    data = p.read_bytes()
    if p.suffix == ".json":
        return clean(json.loads(data), tmp)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return {k: hashlib.sha256(np.ascontiguousarray(z[k]).tobytes()).hexdigest()[:16] for k in sorted(z.files)}
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: hashlib.sha256(f.get_tensor(k).contiguous().numpy().tobytes()).hexdigest()[:16] for k in f.keys()}
        return {"tensors": tensors, "metadata": {k: clean(json.loads(v), tmp) if v.startswith("{") else v
                                                 for k, v in meta.items()}}
    if p.suffix in (".csv", ".pt", ".html") or p.name.endswith(".lock"):
        return "(not compared)"
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint() -> dict:
    torch.set_num_threads(1)
    result = {}
    with tempfile.TemporaryDirectory() as d:
        t = Path(d)
        (t / "mix.json").write_text(json.dumps(MIX))
        for name, argv in commands(t):
            t0 = time.time()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                code = ddmkit(argv)
            if code != 0:
                raise SystemExit(f"{name} failed ({code}): {err.getvalue()[-500:]}")
            print(f"{name}: {time.time() - t0:.1f} s", file=sys.stderr)
        for p in sorted(t.rglob("*")):
            if p.is_file() and p.name != "mix.json":
                result[str(p.relative_to(t))] = digest_file(p, d)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", type=Path)
    g.add_argument("--compare", type=Path)
    a = ap.parse_args()
    got = fingerprint()
    if a.write:
        a.write.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"{len(got)} files fingerprinted -> {a.write}")
        return 0
    want = json.loads(a.compare.read_text())
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    for k in diff[:40]:
        print(f"DIFFERS: {k}\n  before: {json.dumps(want.get(k))[:300]}\n  after:  {json.dumps(got.get(k))[:300]}")
    print(f"{len(got)} files, {len(diff)} differ from {a.compare}")
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main())
