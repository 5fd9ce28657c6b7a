"""`evaluate_images`, `ddmkit evaluate` (good and bad input) and `ddmkit data`."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ddmkit.cli import main
from ddmkit.data.faces import ATTRIBUTES, sample_faces, to_tensor_range
from ddmkit.metrics import evaluate as ev


@pytest.fixture(autouse=True)
def small_reference(tmp_path_factory, monkeypatch):
    """A private cache and a 2,000-face reference set keep these tests fast (the default is 10,000)."""
    monkeypatch.setenv("DDMKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ddmkit-cache"))
    monkeypatch.setattr(ev, "REFERENCE_NUM", 2000)


def _faces(n, seed):
    return to_tensor_range(sample_faces(n, seed=seed)[0])


def test_evaluate_images_on_real_faces():
    m = ev.evaluate_images(_faces(400, 901), "faces", noise_floor_repeats=2)
    assert m["n"] == 400 and m["domain"] == "faces"
    assert set(m["attribute_frequency"]) == set(ATTRIBUTES) == set(m["data_attribute_frequency"])
    for a in ATTRIBUTES:
        assert abs(m["attribute_frequency"][a] - 0.5) < 0.1
        assert abs(m["data_attribute_frequency"][a] - 0.5) < 0.05
        assert m["confident_fraction"][a] > 0.97
    assert 0 < m["fd"] < 3 * m["fd_noise_floor"]
    # a crude "generator" (blurred, noisy faces) scores clearly worse than real data
    x = _faces(400, 902)
    x = np.clip((x + np.roll(x, 1, 2) + np.roll(x, 1, 3)) / 3 + 0.2 * np.random.default_rng(0).normal(size=x.shape), -1, 1)
    assert ev.evaluate_images(x.astype(np.float32), "faces", with_noise_floor=False)["fd"] > 3 * m["fd_noise_floor"]


def test_evaluate_images_on_digits():
    from ddmkit.data.folders import load_digits_images
    from ddmkit.metrics.classifiers import digits_split

    x, _ = load_digits_images()
    m = ev.evaluate_images(x[digits_split()[1]], "digits")
    assert m["n"] == 359 and m["fd_noise_floor_n"] == 359
    assert sum(m["class_frequency"].values()) == pytest.approx(1.0)
    assert all(abs(v - 0.1) < 0.05 for v in m["class_frequency"].values())
    assert m["confident_fraction"] > 0.9
    assert m["fd"] < 3 * m["fd_noise_floor"]


def test_cli_evaluate_npz_writes_metrics(tmp_path, capsys):
    np.savez(tmp_path / "samples.npz", x=_faces(200, 903))
    assert main(["evaluate", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("n", "fd", "fd_noise_floor", "attribute_frequency", "data_attribute_frequency", "confident_fraction"):
        assert key in m
    assert m["n"] == 200 and m["source"] == "samples.npz"
    assert "FD-faces" in capsys.readouterr().out


def test_cli_evaluate_pngs_and_manifest_domain(tmp_path):
    assert main(["data", "digits", "--out", str(tmp_path / "d")]) == 0
    folder = tmp_path / "d"
    with open(folder / "labels.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "digit"] and len(rows) == 1798
    (folder / "manifest.json").write_text(json.dumps({"domain": "digits"}))
    assert main(["evaluate", str(folder), "--no-noise-floor"]) == 0
    m = json.loads((folder / "metrics.json").read_text())
    assert m["domain"] == "digits" and m["n"] == 1797 and m["fd"] < 0.5  # the reference itself, via PNG
    assert "fd_noise_floor" not in m


def _bad(tmp_path, capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ddmkit evaluate: error:"), err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "metrics.json").exists()
    return err


def test_cli_evaluate_bad_input(tmp_path, capsys):
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path / "nope")], "does not exist")
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "no samples.npz")  # empty folder
    np.savez(tmp_path / "samples.npz", y=np.zeros(3))
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "no array 'x'")
    np.savez(tmp_path / "samples.npz", x=np.zeros((4, 32, 32, 3), np.float32))  # NHWC
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "channel")
    np.savez(tmp_path / "samples.npz", x=np.zeros((4, 1, 32, 32), np.float32))
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "--domain digits")
    np.savez(tmp_path / "samples.npz", x=np.zeros((4, 3, 64, 64), np.float32))
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "32x32")
    np.savez(tmp_path / "samples.npz", x=np.zeros((3, 32, 32), np.float32))
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "(N, C, H, W)")
    x = np.zeros((4, 3, 32, 32), np.float32)
    x[1, 0, 0, 0] = np.nan
    np.savez(tmp_path / "samples.npz", x=x)
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "NaN")
    np.savez(tmp_path / "samples.npz", x=np.full((4, 3, 32, 32), 200.0, np.float32))
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "[-1, 1]")
    (tmp_path / "samples.npz").write_bytes(b"not a zip")
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "cannot read")
    (tmp_path / "samples.npz").unlink()
    (tmp_path / "manifest.json").write_text(json.dumps({"domain": "mixture"}))
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "mixture")


def test_cli_evaluate_png_of_wrong_size(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "b.png")
    _bad(tmp_path, capsys, ["evaluate", str(tmp_path)], "64x64")


def test_cli_evaluate_reads_every_commands_output_folder(tmp_path, capsys):
    """sample, sample --dmcmc, edit and control folders are scored (edits: the edited images, one per
    source; --panel picks another); a mixing-step folder is refused with a message."""
    runs = tmp_path / "runs"
    quick = ["--quiet"]
    assert main(["sample", "--model", "default", "--integrator", "ddim", "--steps", "3", "--num", "4",
                 "--out", str(runs / "sample"), *quick]) == 0
    assert main(["sample", "--dmcmc", "--model", "default", "--integrator", "kar1", "--steps", "3", "--n-skip", "2",
                 "--num", "4", "--chains", "2", "--out", str(runs / "dmcmc"), *quick]) == 0
    assert main(["data", "faces", "--num", "3", "--seed", "9", "--out", str(tmp_path / "faces")]) == 0
    assert main(["edit", str(tmp_path / "faces" / "images"), "--boundary", "smiling", "--distance", "1x",
                 "--steps", "3", "--out", str(runs / "edit"), *quick]) == 0
    assert main(["control", "--boundary", "smiling", "--sweep", "0x:1x:2", "--num", "3", "--prefix-steps", "3",
                 "--steps", "3", "--out", str(runs / "control"), *quick]) == 0
    assert main(["mixing-step", "--model", "default", "--faces", "12", "--attribute", "smiling", "--n-inv", "3",
                 "--candidates", "20,40", "--radius-samples", "2", "--radius-steps", "3", "--out", str(runs / "mixing"),
                 *quick]) == 0
    capsys.readouterr()

    def score(folder, *extra):
        assert main(["evaluate", str(folder), "--no-noise-floor", "--out", str(tmp_path / "m.json"), *extra]) == 0, \
            capsys.readouterr().err
        return json.loads((tmp_path / "m.json").read_text())

    assert score(runs / "sample")["source"] == score(runs / "dmcmc")["source"] == "samples.npz"
    edit = score(runs / "edit")
    assert edit["n"] == 3 and edit["domain"] == "faces" and "edit_00 images of 'ddmkit edit'" in edit["source"]
    assert "source images" in score(runs / "edit", "--panel", "source")["source"]
    _bad(tmp_path, capsys, ["evaluate", str(runs / "control")], "2 edits per image", "--panel")
    one = score(runs / "control", "--panel", "edit_01")
    zero = score(runs / "control", "--panel", "edit_00")  # distance 0: the unedited sample again
    orig = score(runs / "control", "--panel", "original")
    assert one["n"] == zero["n"] == orig["n"] == 3 and zero["fd"] != one["fd"]
    _bad(tmp_path, capsys, ["evaluate", str(runs / "control"), "--panel", "edit_07"], "'edit_07' is not in",
         "original, edit_00, edit_01")
    _bad(tmp_path, capsys, ["evaluate", str(runs / "sample"), "--panel", "edit_00"], "--panel applies")
    _bad(tmp_path, capsys, ["evaluate", str(runs / "mixing")], "mixing-step", "plot")
    for d in ("sample", "dmcmc", "edit", "control", "mixing"):
        assert not (runs / d / "metrics.json").exists()


def test_cli_data_faces_writes_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "faces"
    assert main(["data", "faces", "--num", "12", "--seed", "5", "--out", str(out)]) == 0
    pngs = sorted((out / "images").glob("*.png"))
    assert [p.name for p in pngs[:2]] == ["000000.png", "000001.png"] and len(pngs) == 12
    with open(out / "labels.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", *ATTRIBUTES]
    _, labels = sample_faces(12, seed=5)
    assert np.array_equal(np.array([[int(v) for v in r[1:]] for r in rows[1:]]), labels)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(pngs[3])), sample_faces(12, seed=5)[0][3])
    assert main(["data", "faces", "--num", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not empty" in err and "--overwrite" in err and "\n" not in err
    assert len(list((out / "images").glob("*.png"))) == 12  # untouched
    assert main(["data", "faces", "--num", "3", "--out", str(out), "--force"]) == 0
    assert len(list((out / "images").glob("*.png"))) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_help_has_examples(capsys):
    for argv in (["evaluate", "--help"], ["data", "--help"], ["data", "faces", "--help"], ["data", "digits", "--help"]):
        assert main(argv) == 0  # --help: the page, exit 0
        assert "example: ddmkit" in capsys.readouterr().out
