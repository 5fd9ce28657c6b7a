"""`ddmkit boundary / mixing-step / edit / control` on a tiny random-weight DDPM folder."""
from __future__ import annotations

import json

import pytest
import torch

from ddmkit.cli import main


def _save_model(folder, seed):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).save_pretrained(folder / "unet", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit-models")
    return _save_model(root / "a", 0), _save_model(root / "b", 1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real-image stand-ins of any size and mode: two faces (32 px RGB, 50x40 grey) and a CSV of labels."""
    from PIL import Image

    from ddmkit.data.faces import sample_faces

    root = tmp_path_factory.mktemp("photos")
    faces, labels = sample_faces(12, seed=3)
    (root / "faces").mkdir()
    with open(root / "labels.csv", "w") as f:
        f.write("file,smiling,eyeglasses\n")
        for i, (im, lab) in enumerate(zip(faces, labels)):
            Image.fromarray(im).save(root / "faces" / f"{i:02d}.png")
            f.write(f"faces/{i:02d}.png,{lab[0]},{lab[1]}\n")
    (root / "one").mkdir()
    Image.fromarray(faces[0]).resize((50, 40)).convert("L").save(root / "one" / "grey.jpg")
    Image.fromarray(faces[1]).save(root / "one" / "rgb.png")
    (root / "allpos.csv").write_text("file,smiling\n" + "".join(f"{i:02d}.png,1\n" for i in range(12)))
    return root


@pytest.fixture(scope="module")
def boundary(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "smiling.safetensors"
    rc = main(["boundary", "fit", "--model", str(models[0]), "--faces", "12", "--attribute", "smiling",
               "--t-m", "60", "--n-inv", "4", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def _fails(capsys, argv, *forbidden_paths, match=None):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("ddmkit ") and "\n" not in err, err  # one line
    if match:
        assert match in err, err
    for p in forbidden_paths:
        assert not p.exists(), f"{p} was written"
    return err


def test_boundary_fit_show_list(boundary, models, photos, tmp_path, capsys):
    meta = json.loads(boundary.with_suffix(".json").read_text())
    assert meta["t_m"] == 60 and meta["n_inv"] == 4 and meta["attribute"] == "smiling"
    assert set(meta["spaces"]) == {"z", "h"} and meta["spaces"]["z"]["n_test"] == 6
    assert main(["boundary", "show", str(boundary)]) == 0
    assert json.loads(capsys.readouterr().out)["t_m"] == 60
    assert main(["boundary", "list"]) == 0
    capsys.readouterr()
    # (b) folder + CSV, (c) two folders
    out = tmp_path / "eyeglasses.safetensors"
    assert main(["boundary", "fit", "--model", str(models[0]), "--images", str(photos / "faces"), "--labels",
                 str(photos / "labels.csv"), "--attribute", "eyeglasses", "--t-m", "30", "--n-inv", "3",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["data"]["num"] == 12
    out2 = tmp_path / "two.safetensors"
    assert main(["boundary", "fit", "--model", str(models[0]), "--positive", str(photos / "faces"), "--negative",
                 str(photos / "one"), "--t-m", "30", "--n-inv", "3", "--test", "2", "--out", str(out2), "--quiet"]) == 0
    assert json.loads(out2.with_suffix(".json").read_text())["spaces"]["h"]["n_test"] == 2


def test_boundary_fit_bad_input(models, photos, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    _fails(capsys, ["boundary", "fit", "--model", str(models[0]), "--images", str(photos / "faces"), "--labels",
                    str(photos / "allpos.csv"), "--attribute", "smiling", "--t-m", "30", "--n-inv", "3",
                    "--out", str(out), "--quiet"], out, out.with_suffix(".json"), match="single class")
    _fails(capsys, ["boundary", "fit", "--model", str(models[0]), "--faces", "8", "--out", str(out)], out, match="--attribute")
    _fails(capsys, ["boundary", "fit", "--model", str(models[0]), "--faces", "8", "--attribute", "smiling",
                    "--images", "x", "--out", str(out)], out, match="exactly one source")
    _fails(capsys, ["boundary", "fit", "--model", str(models[0]), "--faces", "8", "--attribute", "beard",
                    "--out", str(out)], out, match="unknown face attribute")


def test_edit_writes_images_strip_and_json(boundary, models, photos, tmp_path):
    out = tmp_path / "edit"
    assert main(["edit", str(photos / "one"), "--model", str(models[0]), "--boundary", str(boundary),
                 "--distance", "3", "--steps", "4", "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "edit.json").read_text())
    assert rec["nfe_per_image"] == {"inversion": 3, "reconstruction": 4, "per_edit": 4, "total_per_image": 11}
    assert rec["settings"]["eta"] == 1.0 and rec["settings"]["h_injection"] == "single"
    assert rec["settings"]["move"] == "set" and rec["settings"]["t_m"] == 60
    assert 0 <= rec["reconstruction_error"]["rmse"] < 1
    names = [im["name"] for im in rec["images"]]
    assert names == ["grey", "rgb"]
    after = rec["images"][0]["projections_after"][0]["smiling"]
    assert abs(after["z"] - 3) < 1e-3 and abs(after["h"] - 3) < 1e-3  # "set" puts the projection at d
    for n in names:
        for f in ("source", "reconstruction", "edit_00"):
            assert (out / "images" / n / f"{f}.png").is_file()
        assert (out / "strips" / f"{n}.png").is_file()
    assert (out / "strip.png").is_file()
    # a sweep, lagged h, z only
    out2 = tmp_path / "sweep"
    assert main(["edit", str(photos / "one" / "rgb.png"), "--model", str(models[0]), "--boundary", str(boundary),
                 "--sweep", "-1x:1x:3", "--steps", "3", "--h-injection", "lagged", "--out", str(out2), "--quiet"]) == 0
    rec2 = json.loads((out2 / "edit.json").read_text())
    assert [e["plan"]["boundaries"][0]["distance"] for e in rec2["edits"]] == ["-1x", "0x", "1x"]
    assert len(list((out2 / "images" / "rgb").glob("edit_*.png"))) == 3


def test_edit_multi_attribute_and_condition(boundary, models, photos, tmp_path):
    other = tmp_path / "eyeglasses.safetensors"
    assert main(["boundary", "fit", "--model", str(models[0]), "--images", str(photos / "faces"), "--labels",
                 str(photos / "labels.csv"), "--attribute", "eyeglasses", "--t-m", "60", "--n-inv", "4",
                 "--out", str(other), "--quiet"]) == 0
    out = tmp_path / "multi"
    assert main(["edit", str(photos / "one" / "rgb.png"), "--model", str(models[0]), "--boundary", str(boundary),
                 "--condition", str(other), "--distance", "2", "--steps", "3", "--space", "z", "--out", str(out), "--quiet"]) == 0
    img = json.loads((out / "edit.json").read_text())["images"][0]
    before, after = img["projections_before"], img["projections_after"][0]
    assert abs(after["eyeglasses"]["z"] - before["eyeglasses"]["z"]) < 1e-3  # held fixed
    out2 = tmp_path / "multi2"
    assert main(["edit", str(photos / "one" / "rgb.png"), "--model", str(models[0]), "--boundary", str(boundary),
                 "--boundary", str(other), "--distance", "2", "--distance", "-1", "--steps", "3", "--out", str(out2),
                 "--quiet"]) == 0
    plan = json.loads((out2 / "edit.json").read_text())["edits"][0]["plan"]
    assert plan["order"] == "sequential" and len(plan["boundaries"]) == 2


def test_edit_bad_input_writes_nothing(boundary, models, photos, tmp_path, capsys):
    out = tmp_path / "never"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    _fails(capsys, ["edit", str(bad), "--model", str(models[0]), "--boundary", str(boundary), "--out", str(out)],
           out, match="cannot read image")
    _fails(capsys, ["edit", str(photos / "one"), "--model", str(models[1]), "--boundary", str(boundary),
                    "--out", str(out)], out, match="fitted for model")
    _fails(capsys, ["edit", str(photos / "one"), "--model", str(models[0]), "--boundary", "nonexistent",
                    "--out", str(out)], out, match="neither a file nor a shipped")
    _fails(capsys, ["edit", str(photos / "one"), "--model", str(models[0]), "--boundary", str(boundary),
                    "--distance", "1", "--sweep", "-1:1:3", "--out", str(out)], out, match="not both")
    _fails(capsys, ["edit", str(tmp_path / "missing.png"), "--model", str(models[0]), "--boundary", str(boundary),
                    "--out", str(out)], out, match="does not exist")
    # --force accepts the other model's boundary
    assert main(["edit", str(photos / "one" / "rgb.png"), "--model", str(models[1]), "--boundary", str(boundary),
                 "--force", "--distance", "-1.5x", "--steps", "3", "--out", str(out), "--quiet"]) == 0


def test_control_and_mixing_step(boundary, models, tmp_path, capsys):
    out = tmp_path / "control"
    assert main(["control", "--model", str(models[0]), "--boundary", str(boundary), "--num", "2", "--distance", "1x",
                 "--prefix-steps", "3", "--steps", "3", "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "control.json").read_text())
    assert rec["nfe_per_sample"] == {"prefix": 3, "original": 3, "per_edit": 3, "total_per_sample": 9}
    assert rec["settings"]["prefix_eta"] == 1.0  # ddmkit's default: ancestral steps down to t_m
    official = tmp_path / "control-eta0"
    assert main(["control", "--model", str(models[0]), "--boundary", str(boundary), "--num", "2", "--distance", "1x",
                 "--prefix-steps", "3", "--steps", "3", "--prefix-eta", "0", "--out", str(official), "--quiet"]) == 0
    assert json.loads((official / "control.json").read_text())["settings"]["prefix_eta"] == 0.0
    before = [s["projections_before"]["smiling"]["z"] for s in rec["samples"]]
    before0 = [s["projections_before"]["smiling"]["z"] for s in json.loads((official / "control.json").read_text())["samples"]]
    assert before != before0  # the prefix's noise changed z
    _fails(capsys, ["control", "--model", str(models[0]), "--boundary", str(boundary), "--prefix-eta", "-1",
                    "--out", str(tmp_path / "bad")], tmp_path / "bad", match="--prefix-eta must be >= 0")
    karras = tmp_path / "control-kar2"
    assert main(["control", "--model", str(models[0]), "--boundary", str(boundary), "--num", "2", "--distance", "1x",
                 "--prefix-integrator", "kar2", "--prefix-steps", "4", "--prefix-s-tmin", "1", "--steps", "3",
                 "--out", str(karras), "--quiet"]) == 0
    rk = json.loads((karras / "control.json").read_text())
    assert rk["nfe_per_sample"] == {"prefix": 5, "original": 3, "per_edit": 3, "total_per_sample": 11}
    assert rk["settings"]["prefix_integrator"] == "kar2" and rk["settings"]["prefix_options"]["s_tmin"] == 1.0
    assert "prefix_eta" not in rk["settings"] and rk["settings"]["prefix_h_source"] == "tm"
    _fails(capsys, ["control", "--model", str(models[0]), "--boundary", str(boundary), "--prefix-integrator", "kar1",
                    "--prefix-eta", "0", "--out", str(tmp_path / "bad")], tmp_path / "bad", match="DDIM prefix only")
    _fails(capsys, ["control", "--model", str(models[0]), "--boundary", str(boundary), "--prefix-s-tmax", "5",
                    "--out", str(tmp_path / "bad")], tmp_path / "bad", match="kar2 only")
    assert (out / "images" / "000001" / "original.png").is_file() and (out / "strips" / "000000.png").is_file()
    d = rec["edits"][0]["distances_used"]["smiling"]
    assert abs(rec["samples"][0]["projections_after"][0]["smiling"]["z"] - d["z"]) < 1e-3
    ms = tmp_path / "mix"
    # a random network separates nothing: the criterion may fall back to the accuracy argmax (a warning)
    assert main(["mixing-step", "--model", str(models[0]), "--faces", "12", "--attribute", "smiling", "--n-inv", "3",
                 "--candidates", "20,40,60", "--radius-samples", "4", "--radius-steps", "5", "--out", str(ms), "--quiet"]) == 0
    curve = json.loads((ms / "mixing_step.json").read_text())
    assert [r["t"] for r in curve["rows"]] == [20, 40, 60] and curve["t_m"] in (20, 40, 60)
    assert all({"acc_z", "acc_h", "r_inv", "r_samp", "radius_gap"} <= set(r) for r in curve["rows"])
    assert (ms / "mixing_step.png").stat().st_size > 1000
    assert ("warning:" in capsys.readouterr().err) == curve["fallback"]
