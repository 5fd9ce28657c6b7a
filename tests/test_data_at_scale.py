"""Image folders are streamed (only a batch's images are read per step), greyscale folders train 1-channel
models, and `boundary fit --num N --balance` reads only a seeded, balanced subset."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import ddmkit.data.folders as folders
import ddmkit.editing.labelled as labelled
from ddmkit.cli import main
from ddmkit.data.folders import ImageFolder, folder_channels, list_images
from ddmkit.dmcmc.classifier_data import folder_data
from ddmkit.training import _ArrayBatches, _FolderBatches


def _write(folder, n, mode="RGB", size=16, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"im{i:04d}.png")
    return folder


@pytest.fixture()
def count_reads(monkeypatch):
    reads = []
    real = folders.load_image

    def counting(p, *a, **k):
        reads.append(p)
        return real(p, *a, **k)

    for module in (folders, labelled):  # labelled binds the function at import: patch it there too
        monkeypatch.setattr(module, "load_image", counting)
    return reads


def test_folder_batches_read_only_the_batch_and_equal_the_in_memory_draws(tmp_path, count_reads):
    d = _write(tmp_path / "rgb", 40)
    folder = ImageFolder(d, 16)
    assert folder.channels == 3 and len(folder) == 40 and count_reads == []  # nothing decoded up front
    streamed = _FolderBatches(folder, 6, seed=3)
    held = _ArrayBatches(folder.batch(range(40)), 6, seed=3, flip=True)
    count_reads.clear()
    for step in (0, 1, 7):
        assert torch.equal(streamed(step), held(step))
    assert len(count_reads) == 3 * 6


def test_classifier_folder_data_is_streamed_and_seeded(tmp_path, count_reads):
    d = _write(tmp_path / "rgb", 50)
    data = folder_data(str(d), 16, 3, seed=1)
    assert data.held_out.shape == (5, 3, 16, 16) and len(count_reads) == 5  # 10% held out, read once
    count_reads.clear()
    a, b = data.batch(4, 8), folder_data(str(d), 16, 3, seed=1).batch(4, 8)
    assert torch.equal(a, b) and len(count_reads) == 8 + 5 + 8
    assert folder_data(str(d), 16, 3, seed=1, max_held_out=3).held_out.shape[0] == 3  # capped, whatever the folder


def test_a_greyscale_folder_trains_a_one_channel_model(tmp_path):
    grey = _write(tmp_path / "grey", 12, mode="L")
    assert folder_channels(list_images(grey)) == 1 and folder_channels(list_images(_write(tmp_path / "c", 2))) == 3
    out = tmp_path / "run"
    assert main(["train", "--data", str(grey), "--resolution", "16", "--steps", "2", "--batch-size", "4", "--channels",
                 "16,32", "--attention", "0,0", "--quiet", "--out", str(out)]) == 0
    cfg = json.loads((out / "model" / "unet" / "config.json").read_text())
    assert cfg["in_channels"] == cfg["out_channels"] == 1


def test_boundary_fit_num_balance_reads_a_balanced_subset(unet_folder, tmp_path, capsys, count_reads):
    pos, neg = _write(tmp_path / "pos", 10, seed=1), _write(tmp_path / "neg", 14, seed=2)
    base = ["boundary", "fit", "--model", str(unet_folder), "--positive", str(pos), "--negative", str(neg),
            "--attribute", "x", "--t-m", "300", "--n-inv", "3", "--test", "2", "--quiet"]
    count_reads.clear()
    assert main(base + ["--num", "8", "--balance", "--out", str(tmp_path / "b.safetensors")]) == 0
    assert len(count_reads) == 8  # only the subset is read
    meta = json.loads((tmp_path / "b.json").read_text())
    data = meta["data"]
    assert data["num_positive"] == data["num_negative"] == 4 and data["subset"] == {"num": 8, "balance": True, "seed": 0}
    capsys.readouterr()
    for extra, message in [(["--balance"], "--balance needs --num N"),
                           (["--num", "30"], "--num 30 is more than the 24 labelled images"),
                           (["--num", "22", "--balance"], "needs 11 images with the label and 11 without; there are 10 and 14")]:
        assert main(base + extra + ["--out", str(tmp_path / "c.safetensors")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "c.safetensors").exists() and not (tmp_path / "c.json").exists()
    assert main(["boundary", "fit", "--model", str(unet_folder), "--faces", "4", "--attribute", "smiling", "--num",
                 "4", "--out", str(tmp_path / "d.safetensors")]) == 2
    assert "--faces N is already balanced" in capsys.readouterr().err
