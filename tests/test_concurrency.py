"""One run per output folder (a second run exits 2 at once, the first is untouched and equals a single
run), kill -9 then resume (bit-identical), and `replace_dir` survives a kill at every step."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ddmkit.cli import main
from ddmkit.output_guard import output_lock

RUNNER = Path(__file__).parent / "cli_runner.py"
MIX = {"weights": [0.5, 0.3, 0.2], "means": [[-3, 0], [3, 1], [0, 4]], "stds": [[0.5, 0.3], [0.4, 0.6], [0.3, 0.3]]}


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    e.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return e


def runner(args, *fault) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(RUNNER), *map(str, fault), "--", *map(str, args)], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("conc")
    (d / "mix.json").write_text(json.dumps(MIX))
    assert main(["noise-classifier", "train", "--model", f"gmm:{d / 'mix.json'}", "--out", str(d / "clf"), "--k", "16",
                 "--steps", "30", "--batch-size", "32", "--quiet"]) == 0
    return d


def plain(world, out, seed=1):
    return ["sample", "--model", f"gmm:{world / 'mix.json'}", "--integrator", "kar2", "--steps", "5", "--num", "24",
            "--batch-size", "3", "--seed", str(seed), "--quiet", "--out", str(out)]


def dlg(world, out, seed=1):
    return ["sample", "--model", f"gmm:{world / 'mix.json'}", "--dmcmc", "--noise-classifier", str(world / "clf"),
            "--integrator", "kar1", "--steps", "3", "--n-skip", "2", "--dlg-eta", "0.05", "--num", "24", "--chains", "4",
            "--seed", str(seed), "--quiet", "--out", str(out)]


def samples(out: Path) -> dict:
    with np.load(out / "samples.npz") as z:
        return {k: z[k].copy() for k in z.files}


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["plain", "dlg"])
def test_a_second_run_on_the_same_folder_exits_2_at_once(world, tmp_path, kind):
    make = plain if kind == "plain" else dlg
    assert main(make(world, tmp_path / "single")) == 0
    shared = tmp_path / "shared"
    go = tmp_path / "go"
    first = runner(make(world, shared, seed=1), "--wait-for", go)  # holds after its first part until `go`
    wait_for(shared / "parts" / "settings.json", first)
    t0 = time.time()
    second = subprocess.run([sys.executable, "-m", "ddmkit", *make(world, shared, seed=2)], env=env(),
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    # the message itself shows the runs overlapped: the first held the lock when the second asked
    assert "another ddmkit run is writing to" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert time.time() - t0 < 60
    go.touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    a, b = samples(tmp_path / "single"), samples(shared)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert json.loads((shared / "manifest.json").read_text())["seed"] == 1


@pytest.mark.parametrize("kind", ["plain", "dlg"])
def test_kill_9_then_resume_gives_the_uninterrupted_samples(world, tmp_path, kind):
    make = plain if kind == "plain" else dlg
    assert main(make(world, tmp_path / "single")) == 0
    out = tmp_path / "cut"
    proc = runner(make(world, out), "--exit-after-parts", 3)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 17, err  # died as from kill -9, right after its 3rd part
    assert not (out / "manifest.json").exists() and len(list((out / "parts").glob("part-*.npz"))) == 3
    assert main(make(world, out)) == 0  # the lock of the dead run is gone
    a, b = samples(tmp_path / "single"), samples(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ddmkit.output_guard import output_lock
        with output_lock({str(tmp_path / 'o')!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], env=env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    from ddmkit.errors import DdmkitError

    with pytest.raises(DdmkitError, match="another ddmkit run is writing"):
        with output_lock(tmp_path / "o"):
            pass
    with pytest.raises(DdmkitError):  # the same path spelled otherwise is the same lock
        with output_lock(tmp_path / "x" / ".." / "o"):
            pass
    holder.kill()  # SIGKILL: no cleanup
    holder.wait()
    with output_lock(tmp_path / "o"):
        pass


KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from ddmkit import io
    step, exchange = int(sys.argv[1]), sys.argv[2] == "exchange"
    calls = [0]
    def dying(real):
        def f(*a, **k):
            calls[0] += 1
            if calls[0] == step:
                os._exit(9)  # killed before this filesystem call
            return real(*a, **k)
        return f
    io.os.replace = dying(os.replace)
    io.shutil.rmtree = dying(io.shutil.rmtree)
    if exchange:
        io._exchange = dying(io._exchange)
    else:
        io._EXCHANGE_SUPPORTED = False
    io.replace_dir(Path(sys.argv[3]) / "new.tmp", Path(sys.argv[3]) / "dest")
""")


@pytest.mark.parametrize("mode", ["exchange", "two-renames"])
@pytest.mark.parametrize("step", [1, 2, 3, 4, 5])
def test_replace_dir_survives_a_kill_at_every_step(tmp_path, mode, step):
    """Killed before any of replace_dir's filesystem steps, `dest` (after `recover_dir`, which every
    reader calls) holds the old folder or the new one, complete; never nothing, never a mixture."""
    from ddmkit.io import recover_dir

    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "f").write_text("old")
    (tmp_path / "new.tmp").mkdir()
    (tmp_path / "new.tmp" / "f").write_text("new")
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(step), mode, str(tmp_path)], env=env(), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode in (0, 9), res.stderr
    recover_dir(tmp_path / "dest")
    assert (tmp_path / "dest" / "f").read_text() in ("old", "new")
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["f"]
    if mode == "exchange" and res.returncode == 9 and step >= 2:
        assert (tmp_path / "dest" / "f").read_text() == "new"  # the swap is one step: no roll-back after it
