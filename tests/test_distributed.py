"""Scale-out (`ddmkit.distributed`): 2 CPU workers (gloo) under torchrun give the 1-worker samples exactly,
resume after a killed worker (with 1 or 2 workers), reduce feature statistics, split DLG chains."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ddmkit.cli import main
from ddmkit.distributed import block, split

BIN = Path(sys.executable).parent
MIX = {"weights": [0.5, 0.3, 0.2], "means": [[-3, 0], [3, 1], [0, 4]], "stds": [[0.5, 0.3], [0.4, 0.6], [0.3, 0.3]]}


RUNNER = Path(__file__).parent / "cli_runner.py"


def worker_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def torchrun(args, cwd, nproc: int = 2, timeout: float = 120, fault: list | None = None,
             **env: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N -m ddmkit -- ARGS` (the `--` keeps torchrun off ddmkit's flags);
    with `fault`, the workers run tests/cli_runner.py with those fault options instead (e.g. a worker that dies)."""
    entry = ["-m", "ddmkit"] if fault is None else [str(RUNNER), *[str(f) for f in fault]]
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(nproc), *entry, "--",
           *[str(a) for a in args]]
    return subprocess.run(cmd, cwd=cwd, env=worker_env(**env), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dist")
    (d / "mix.json").write_text(json.dumps(MIX))
    return d / "mix.json"


def plain_args(mix: Path, out: Path) -> list:
    # kar2 is stochastic: every churn draw comes from the sample's own seed
    return ["sample", "--model", f"gmm:{mix}", "--integrator", "kar2", "--steps", "6", "--num", "37",
            "--batch-size", "4", "--seed", "5", "--out", out, "--quiet"]


@pytest.fixture(scope="module")
def reference(mix, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ref") / "one"
    assert main([str(a) for a in plain_args(mix, out)]) == 0
    with np.load(out / "samples.npz") as z:
        return {"x": z["x"].copy(), "index": z["index"].copy(), "manifest": json.loads((out / "manifest.json").read_text())}


def test_split_and_block_cover_every_index_once():
    items = list(range(23))
    assert sorted(i for r in range(3) for i in split(items, r, 3)) == items
    assert [block(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]


def test_two_workers_equal_one_worker_sample_for_sample(mix, reference, tmp_path):
    out = tmp_path / "two"
    res = torchrun(plain_args(mix, out), tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    with np.load(out / "samples.npz") as z:
        assert z["index"].tolist() == list(range(37))
        np.testing.assert_array_equal(z["x"], reference["x"])
    m = json.loads((out / "manifest.json").read_text())
    assert m["world_size"] == 2 and [r["rank"] for r in m["ranks"]] == [0, 1]
    assert [r["samples"] for r in m["ranks"]] == [20, 17]  # batches 0, 2, .., 8 and 1, 3, .., 9 (of 1 sample)
    assert m["nfe_per_sample"] == reference["manifest"]["nfe_per_sample"] == 2 * 6 - 3 + 1
    assert not (out / "parts").exists()
    assert "37 samples" in res.stdout and "on 2 workers" in res.stdout


def test_killed_run_resumes_with_one_or_two_workers(mix, reference, tmp_path):
    cut = tmp_path / "cut"
    res = torchrun(plain_args(mix, cut), tmp_path, fault=["--rank", 1, "--exit-after-parts", 2])  # worker 1 dies
    assert res.returncode != 0 and not (cut / "manifest.json").exists()
    with_parts = {}
    for f in (cut / "parts").glob("part-*.npz"):
        with np.load(f) as z:
            with_parts[f.name] = z["index"].tolist()
    done = sorted(i for v in with_parts.values() for i in v)
    assert 0 < len(done) < 37 and len(done) == len(set(done))
    assert not list((cut / "parts").glob(".*.tmp"))  # atomic writes leave no half-written file
    shutil.copytree(cut, tmp_path / "cut2")
    # resume with one worker (in this process) and, from the same state, with two
    assert main([str(a) for a in plain_args(mix, cut)]) == 0
    res = torchrun(plain_args(mix, tmp_path / "cut2"), tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    for out, workers in ((cut, 1), (tmp_path / "cut2", 2)):
        with np.load(out / "samples.npz") as z:
            assert z["index"].tolist() == list(range(37))  # exactly the requested indices, once each
            np.testing.assert_array_equal(z["x"], reference["x"])
        m = json.loads((out / "manifest.json").read_text())
        assert m["resumed_with_done"] == len(done) and m["world_size"] == workers
        assert sum(r["samples"] for r in m["ranks"]) == 37 - len(done)  # only the missing ones were drawn


REDUCE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from ddmkit import distributed
    from ddmkit.metrics.frechet import FeatureStats, reduce_over_workers
    feats = np.random.default_rng(0).normal(size=(9, 5))
    with distributed.session("cpu") as dist:
        lo, hi = (0, 0) if dist.rank == 0 else (0, 9)  # worker 0 has no features at all
        lo, hi = distributed.block(9, dist.rank, 2) if sys.argv[1] == "block" else (lo, hi)
        s = reduce_over_workers(FeatureStats.from_features(feats[lo:hi]) if hi > lo else FeatureStats(), dist)
        if dist.is_main:
            print(json.dumps({"count": s.count, "sum": s.sum.tolist(), "outer": s.outer.tolist()}))
""")


@pytest.mark.parametrize("how", ["block", "one_empty"])
def test_feature_stats_all_reduce_equals_single_process(tmp_path, how):
    script = tmp_path / "reduce.py"
    script.write_text(REDUCE_SCRIPT)
    res = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(script), how],
                         cwd=tmp_path, env=worker_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    from ddmkit.metrics.frechet import FeatureStats

    want = FeatureStats.from_features(np.random.default_rng(0).normal(size=(9, 5)))
    assert got["count"] == 9
    np.testing.assert_allclose(got["sum"], want.sum, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["outer"], want.outer, rtol=1e-12, atol=1e-12)


def test_evaluate_under_two_workers_equals_one(tmp_path):
    from ddmkit.data.faces import sample_faces, to_tensor_range

    np.savez(tmp_path / "samples.npz", x=to_tensor_range(sample_faces(60, seed=77)[0]))
    assert main(["evaluate", str(tmp_path), "--no-noise-floor", "--out", str(tmp_path / "one.json")]) == 0
    res = torchrun(["evaluate", tmp_path, "--no-noise-floor", "--out", tmp_path / "two.json"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert two["world_size"] == 2 and two["n"] == one["n"] == 60
    assert two["fd"] == pytest.approx(one["fd"], rel=1e-6, abs=1e-9)
    assert two["attribute_frequency"] == pytest.approx(one["attribute_frequency"])
    assert two["confident_fraction"] == pytest.approx(one["confident_fraction"])


@pytest.fixture(scope="module")
def clf(mix):
    d = mix.parent
    assert main(["noise-classifier", "train", "--model", f"gmm:{mix}", "--out", str(d / "clf"), "--k", "32",
                 "--steps", "40", "--batch-size", "64", "--quiet"]) == 0
    return d / "clf"


def dlg_args(mix, clf, out) -> list:
    return ["sample", "--model", f"gmm:{mix}", "--dmcmc", "--noise-classifier", clf, "--integrator", "kar1",
            "--steps", "4", "--n-skip", "3", "--dlg-eta", "0.05", "--num", "21", "--chains", "6", "--seed", "3",
            "--out", out, "--quiet"]


def test_dlg_two_workers_split_chains_and_resume_only_with_two(mix, clf, tmp_path, capsys):
    out = tmp_path / "dlg"
    res = torchrun(dlg_args(mix, clf, out), tmp_path, fault=["--rank", 0, "--exit-after-parts", 1])  # worker 0 dies
    assert res.returncode != 0 and not (out / "manifest.json").exists()
    assert (out / "parts" / "dlg-workers.json").is_file()
    assert main([str(a) for a in dlg_args(mix, clf, out)]) == 2  # one worker cannot take over split chains
    err = capsys.readouterr().err
    assert "resume it with torchrun --nproc_per_node 2" in err and len(err.strip().splitlines()) == 1
    res = torchrun(dlg_args(mix, clf, out), tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    with np.load(out / "samples.npz") as z:
        assert z["index"].tolist() == list(range(21))
        chain = z["chain"].tolist()
        assert np.isfinite(z["x"]).all()
    assert m["chain"] == chain and len(chain) == 21
    # worker 0 runs chains 0-2 and fills indices 0-9, worker 1 chains 3-5 and indices 10-20
    assert set(chain[:10]) == {0, 1, 2} and set(chain[10:]) == {3, 4, 5}
    assert m["outputs_per_chain"] == [np.bincount(chain, minlength=6)[c] for c in range(6)]
    assert m["world_size"] == 2 and [r["chains"] for r in m["ranks"]] == [[0, 3], [3, 6]]
    assert m["nfe"]["per_output"] == 3 + 5 + 1 and m["nfe"]["outputs"] == 21
    assert m["nfe"]["burn_in_total"] == 57 * 6


def test_bf16_on_cpu_is_refused_and_nothing_written(mix, tmp_path, capsys):
    out = tmp_path / "bf"
    assert main(["sample", "--model", f"gmm:{mix}", "--dtype", "bf16", "--device", "cpu", "--num", "4",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--dtype bf16 needs a CUDA device" in err and not out.exists()


def test_single_process_commands_refuse_torchrun(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["data", "faces", "--num", "2", "--out", str(tmp_path / "d")]) == 2
    assert "runs in one process" in capsys.readouterr().err and not (tmp_path / "d").exists()


def descendants(pid: int) -> list[int]:
    """Process ids below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_of_the_whole_run_then_resume_gives_the_same_images(unet_folder, tmp_path):
    import signal
    import time

    args = ["sample", "--model", unet_folder, "--integrator", "ddim", "--steps", "30", "--num", "12",
            "--batch-size", "2", "--quiet", "--out"]
    assert main([str(a) for a in args + [tmp_path / "one"]]) == 0
    out = tmp_path / "two"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "ddmkit", "--",
           *[str(a) for a in args + [out]]]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=worker_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline and not list((out / "parts").glob("part-*.npz")):
        time.sleep(0.05)
    tree = descendants(proc.pid)  # torchrun starts its workers in sessions of their own
    for pid in [proc.pid, *tree]:  # kill -9 torchrun and both workers: no cleanup anywhere
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    for pid in tree:  # wait until the workers are gone (or zombies)
        while True:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            except (OSError, IndexError):
                break
            time.sleep(0.05)
    done = list((out / "parts").glob("part-*.npz"))
    assert done and len(done) < 6 and not (out / "manifest.json").exists()
    res = torchrun(args + [out], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    with np.load(tmp_path / "one" / "samples.npz") as a, np.load(out / "samples.npz") as b:
        assert b["index"].tolist() == list(range(12))
        np.testing.assert_array_equal(a["x"], b["x"])
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.png" for i in range(12)]
    assert (tmp_path / "one" / "grid.png").read_bytes() == (out / "grid.png").read_bytes()
