"""`ddmkit sample`: outputs, manifest, resume after interruption, and bad input (exit 2, nothing written)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ddmkit.cli import main


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sample_gmm_writes_npz_and_manifest(tmp_path, mixture_json, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["sample", "--model", f"gmm:{mixture_json}", "--integrator", "kar1", "--steps", "6",
                               "--num", "10", "--batch-size", "4", "--seed", "3", "--out", out, "--quiet"], capsys)
    assert code == 0, stdout
    x = np.load(out / "samples.npz")["x"]
    assert x.shape == (10, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["nfe_per_sample"] == 2 * 6 - 3 + 1  # Heun grid + Tweedie, measured
    assert manifest["seed"] == 3 and manifest["integrator"] == "kar1" and manifest["num"] == 10
    assert not (out / "parts").exists()


def test_sample_diffusers_folder_writes_images(tmp_path, unet_folder, capsys):
    out = tmp_path / "img"
    code, _, err = run_cli(["sample", "--model", unet_folder, "--integrator", "ddim", "--steps", "2", "--num", "3",
                            "--out", out, "--quiet"], capsys)
    assert code == 0, err
    x = np.load(out / "samples.npz")["x"]
    assert x.shape == (3, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert (out / "grid.png").is_file()
    assert json.loads((out / "manifest.json").read_text())["nfe_per_sample"] == 3


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path, mixture_json, capsys, monkeypatch):
    args = ["sample", "--model", f"gmm:{mixture_json}", "--integrator", "kar2", "--steps", "5", "--num", "11",
            "--batch-size", "3", "--out"]
    code, _, _ = run_cli(args + [tmp_path / "whole", "--quiet"], capsys)
    assert code == 0
    from ddmkit import outputs

    real_write, calls = outputs.PartStore.write, []

    def flaky_write(self, indices, x, **extra):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if killed after two batches
        calls.append(list(indices))
        real_write(self, indices, x, **extra)

    monkeypatch.setattr(outputs.PartStore, "write", flaky_write)
    code, _, err = run_cli(args + [tmp_path / "cut", "--quiet"], capsys)
    assert code == 130 and "resume" in err
    assert not (tmp_path / "cut" / "manifest.json").exists()
    monkeypatch.setattr(outputs.PartStore, "write", real_write)
    code, _, _ = run_cli(args + [tmp_path / "cut", "--quiet"], capsys)
    assert code == 0
    whole = np.load(tmp_path / "whole" / "samples.npz")
    resumed = np.load(tmp_path / "cut" / "samples.npz")
    assert list(resumed["index"]) == list(range(11))
    np.testing.assert_allclose(resumed["x"], whole["x"], rtol=1e-6, atol=1e-6)
    assert json.loads((tmp_path / "cut" / "manifest.json").read_text())["resumed_with_done"] == 6


def test_resume_with_other_settings_is_refused(tmp_path, mixture_json, capsys, monkeypatch):
    out = tmp_path / "r"
    (out / "parts").mkdir(parents=True)
    (out / "parts" / "settings.json").write_text(json.dumps({"command": "sample", "steps": 99}))
    code, _, err = run_cli(["sample", "--model", f"gmm:{mixture_json}", "--out", out], capsys)
    assert code == 2 and "other settings" in err


def corrupt_folder(tmp_path, unet_folder, kind):
    bad = tmp_path / kind
    shutil.copytree(unet_folder, bad)
    if kind == "config":
        (bad / "unet" / "config.json").write_text("{not json")
    elif kind == "truncated":
        w = bad / "unet" / "diffusion_pytorch_model.safetensors"
        w.write_bytes(w.read_bytes()[:1000])
    elif kind == "noweights":
        (bad / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    return bad


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("integrator", ["--integrator", "heun9"], "unknown integrator 'heun9'"),
        ("steps", ["--steps", "0"], "--steps must be >= 1 and <= 10000, got 0"),
        ("kar-steps", ["--integrator", "kar1", "--steps", "1"], "needs --steps >= 2"),
        ("num", ["--num", "0"], "--num"),
        ("option", ["--integrator", "kar1", "--eta", "1"], "applies to ddim only"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, mixture_json, capsys, case, extra, message):
    out = tmp_path / "out"
    code, _, err = run_cli(["sample", "--model", f"gmm:{mixture_json}", "--out", out, *extra], capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not valid JSON"),
        ('{"weights": [1, 2]}', "needs"),
        ('{"weights": [1], "means": [[0, 0]], "stds": [[1]]}', "shape of 'means'"),
        ('{"weights": [-1], "means": [[0]], "stds": [[1]]}', "weights must be > 0"),
        ('{"weights": [1], "means": [[0]], "stds": [[0]]}', "stds must be > 0"),
        ('{"weights": [1], "means": [[0]], "stds": [[1]], "sigma_min": -1}', "0 < sigma_min"),
        ('{"weights": ["a"], "means": [[0]], "stds": [[1]]}', "lists of numbers"),
    ],
)
def test_malformed_mixture_json(tmp_path, capsys, content, message):
    path = tmp_path / "m.json"
    path.write_text(content)
    out = tmp_path / "out"
    code, _, err = run_cli(["sample", "--model", f"gmm:{path}", "--out", out], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("kind, message", [("config", "not a readable JSON"), ("truncated", "truncated"),
                                           ("noweights", "no diffusion_pytorch_model")])
def test_corrupt_model_folder(tmp_path, unet_folder, capsys, kind, message):
    bad = corrupt_folder(tmp_path, unet_folder, kind)
    out = tmp_path / "out"
    code, _, err = run_cli(["sample", "--model", bad, "--out", out], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_model_and_hub_id(tmp_path, capsys):
    code, _, err = run_cli(["sample", "--model", tmp_path / "nothing", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "not found" in err
    code, _, err = run_cli(["sample", "--model", "google/ddpm-cifar10-32", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "never downloads" in err
    assert not (tmp_path / "o").exists()


def test_kar2_churn_window_flags(tmp_path, mixture_json, capsys):
    """--s-tmin above every sigma switches the churn off: kar2 is then exactly kar1 (Alg. 2 -> Alg. 1);
    a window over all sigmas changes the samples; the flags are refused for other integrators."""
    base = ["sample", "--model", f"gmm:{mixture_json}", "--steps", "6", "--num", "8", "--quiet", "--out"]
    runs = {"kar1": [], "kar2_off": ["--s-tmin", "1e9"], "kar2_all": ["--s-tmin", "0", "--s-tmax", "1e9"]}
    x = {}
    for name, extra in runs.items():
        integ = "kar1" if name == "kar1" else "kar2"
        code, _, err = run_cli(base + [tmp_path / name, "--integrator", integ] + extra, capsys)
        assert code == 0, err
        x[name] = np.load(tmp_path / name / "samples.npz")["x"]
        if name != "kar1":
            opts = json.loads((tmp_path / name / "manifest.json").read_text())["options"]
            assert opts["s_tmin"] == float(extra[1])
    np.testing.assert_array_equal(x["kar2_off"], x["kar1"])
    assert np.abs(x["kar2_all"] - x["kar1"]).max() > 1e-3
    code, _, err = run_cli(base + [tmp_path / "bad", "--integrator", "kar1", "--s-tmax", "5"], capsys)
    assert code != 0 and "--s-tmax applies to kar2 only" in err


def test_seeds_use_all_64_bits(tmp_path, mixture_json, capsys):
    """Seeds equal modulo 2^32 give different samples (no aliasing); seeds below 2^32 keep their streams."""
    from ddmkit.sampling import sample_seed

    assert sample_seed(5, 3) != sample_seed(5 + 2**32, 3)
    x = {}
    for s in (7, 7 + 2**32, 2**64 - 1):
        code, _, err = run_cli(["sample", "--model", f"gmm:{mixture_json}", "--integrator", "kar1", "--steps", "4",
                                "--num", "6", "--seed", s, "--out", tmp_path / str(s), "--quiet"], capsys)
        assert code == 0, err
        x[s] = np.load(tmp_path / str(s) / "samples.npz")["x"]
    assert not np.allclose(x[7], x[7 + 2**32]) and not np.allclose(x[7], x[2**64 - 1])


def test_settings_diff_names_nested_keys():
    from ddmkit.outputs import settings_diff

    assert settings_diff({"a": 1, "dmcmc": {"eta": 0.1, "n": 2}}, {"a": 1, "dmcmc": {"eta": 0.2, "n": 2}}) == ["dmcmc.eta"]
    assert settings_diff({"a": 1}, {"a": 1, "b": {"c": 1}}) == ["b"]


def test_overwrite_replaces_a_finished_run_and_only_its_images(tmp_path, mixture_json, unet_folder, capsys):
    args = ["sample", "--model", unet_folder, "--integrator", "ddim", "--steps", "2", "--quiet"]
    out = tmp_path / "r"
    assert run_cli(args + ["--num", "3", "--out", out], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(args + ["--num", "2", "--out", out], capsys)
    assert code == 2 and "already holds a finished run" in err
    code, _, err = run_cli(args + ["--num", "2", "--seed", "4", "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png"]
    assert (out / "notes.txt").read_text() == "mine" and np.load(out / "samples.npz")["x"].shape[0] == 2


def test_manifest_records_the_command_line_versions_and_commit(tmp_path, mixture_json, capsys):
    import re

    import diffusers
    import torch

    import ddmkit

    argv = ["sample", "--model", f"gmm:{mixture_json}", "--steps", "4", "--num", "3", "--out", str(tmp_path / "r"),
            "--quiet"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    prov = json.loads((tmp_path / "r" / "manifest.json").read_text())["provenance"]
    assert prov["command_line"] == ["ddmkit", *argv]
    v = prov["versions"]
    assert v["ddmkit"] == ddmkit.__version__ and v["torch"] == torch.__version__ and v["diffusers"] == diffusers.__version__
    assert prov["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["git_commit"])
    assert run_cli(["--version"], capsys) == (0, f"ddmkit {ddmkit.__version__}\n", "")
