"""A crafted pickle handed to every path-taking option of every command never runs: the command exits
2 with one line and the marker file that unpickling would create never appears."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import evil_pickle, fill, make_world
from ddmkit.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


def _evil_file(tmp: Path, world: dict, name: str) -> None:
    evil_pickle(tmp / name, tmp / "MARKER")


def _evil_unet_folder(tmp: Path, world: dict) -> None:
    shutil.copytree(world["unet"], tmp / "m")
    (tmp / "m" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    evil_pickle(tmp / "m" / "unet" / "diffusion_pytorch_model.bin", tmp / "MARKER")


def _evil_classifier(tmp: Path, world: dict) -> None:
    shutil.copy(world["clf"] + ".json", tmp / "c.json")
    evil_pickle(tmp / "c.safetensors", tmp / "MARKER")


def _evil_boundary(tmp: Path, world: dict) -> None:
    evil_pickle(tmp / "b.safetensors", tmp / "MARKER")


def _evil_npz(path: Path, marker: Path, **arrays) -> None:
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    np.savez(path, **arrays, evil=np.array([Evil()], dtype=object))


def _evil_samples(tmp: Path, world: dict) -> None:
    (tmp / "s").mkdir()
    _evil_npz(tmp / "s" / "samples.npz", tmp / "MARKER", x=np.zeros((2, 3, 32, 32), np.float32))


def _evil_samples_x(tmp: Path, world: dict) -> None:
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'MARKER'}",))

    (tmp / "s").mkdir()
    np.savez(tmp / "s" / "samples.npz", x=np.array([Evil()], dtype=object))


PLAIN = ["sample", "--model", "gmm:{mix}", "--num", "12", "--batch-size", "4", "--steps", "4", "--quiet"]


def _evil_part(tmp: Path, world: dict) -> None:
    from bad_inputs import _interrupted

    _interrupted(fill(PLAIN[:-1], tmp, world), tmp / "run")
    part = sorted((tmp / "run" / "parts").glob("part-*.npz"))[0]
    _evil_npz(part, tmp / "MARKER", index=np.arange(4), x=np.zeros((4, 2), np.float32))


def _evil_chain_state(tmp: Path, world: dict) -> None:
    from bad_inputs import DLG, _interrupted

    _interrupted(fill(DLG, tmp, world), tmp / "run")
    _evil_npz(tmp / "run" / "parts" / "chains.npz", tmp / "MARKER", x=np.zeros((10, 2), np.float32))


def _evil_train_checkpoint(tmp: Path, world: dict) -> None:
    argv = ["train", "--data", "digits", "--steps", "2", "--batch-size", "2", "--channels", "16,32", "--attention",
            "0,0", "--checkpoint-every", "1", "--quiet", "--out", str(tmp / "run")]
    assert main(argv) == 0
    evil_pickle(tmp / "run" / "checkpoint" / "optimizer.pt", tmp / "MARKER")
    state = json.loads((tmp / "run" / "checkpoint" / "state.json").read_text())
    state["step"] = 1  # so that the same command with --steps 2 resumes from it
    (tmp / "run" / "checkpoint" / "state.json").write_text(json.dumps(state))


def _evil_classifier_checkpoint(tmp: Path, world: dict) -> None:
    from ddmkit import dmcmc

    real = dmcmc.classifier_training.evaluate_classifier

    def stop(*a, **k):
        raise KeyboardInterrupt

    dmcmc.classifier_training.evaluate_classifier = stop  # stop after training, before the final file
    try:
        assert main(["noise-classifier", "train", "--model", f"gmm:{world['mix']}", "--out", str(tmp / "c"), "--k", "8",
                     "--steps", "3", "--checkpoint-every", "1", "--quiet"]) == 130
    finally:
        dmcmc.classifier_training.evaluate_classifier = real
    evil_pickle(tmp / "c.ckpt" / "optimizer.pt", tmp / "MARKER")


RAW = {"ddpm": "ddpm:{tmp}/e.ckpt@cifar10", "score-sde": "score-sde:{tmp}/e.ckpt@cifar10_ncsnpp_continuous",
       "guided": "guided:{tmp}/e.ckpt@afhqdog_p2"}
E_CKPT = lambda t, w: _evil_file(t, w, "e.ckpt")  # noqa: E731

CASES = [
    *[(f"sample-model-{fmt}", ["sample", "--model", spec, "--out", "{tmp}/o"], E_CKPT) for fmt, spec in RAW.items()],
    ("sample-model-diffusers-bin", ["sample", "--model", "{tmp}/m", "--out", "{tmp}/o"], _evil_unet_folder),
    ("sample-noise-classifier", ["sample", "--model", "gmm:{mix}", "--dmcmc", "--noise-classifier", "{tmp}/c",
                                 "--out", "{tmp}/o"], _evil_classifier),
    ("sample-resume-part", PLAIN + ["--out", "{tmp}/run"], _evil_part),
    ("sample-resume-chain-state", None, _evil_chain_state),
    *[(f"convert-{fmt}", ["convert", "{tmp}/e.ckpt", "--format", fmt, "--config", spec.split("@")[1], "--out",
                          "{tmp}/c"], E_CKPT) for fmt, spec in RAW.items()],
    ("convert-diffusers-bin", ["convert", "{tmp}/m", "--format", "diffusers", "--out", "{tmp}/c"], _evil_unet_folder),
    ("train-init-from-bin", ["train", "--data", "faces", "--resolution", "16", "--channels", "32,64", "--attention",
                             "0,1", "--init-from", "{tmp}/m", "--out", "{tmp}/run"], _evil_unet_folder),
    ("train-resume-optimizer", ["train", "--data", "digits", "--steps", "2", "--batch-size", "2", "--channels", "16,32",
                                "--attention", "0,0", "--checkpoint-every", "1", "--quiet", "--out", "{tmp}/run"],
     _evil_train_checkpoint),
    ("noise-classifier-train-model", ["noise-classifier", "train", "--model", RAW["ddpm"], "--out", "{tmp}/c"], E_CKPT),
    ("noise-classifier-resume-optimizer", ["noise-classifier", "train", "--model", "gmm:{mix}", "--out", "{tmp}/c",
                                           "--k", "8", "--steps", "3", "--checkpoint-every", "1", "--quiet"],
     _evil_classifier_checkpoint),
    ("noise-classifier-evaluate", ["noise-classifier", "evaluate", "--model", "gmm:{mix}", "--classifier", "{tmp}/c"],
     _evil_classifier),
    ("tune-dmcmc-model", ["tune-dmcmc", "--model", RAW["ddpm"], "--target-nfe", "10", "--out", "{tmp}/t.json"], E_CKPT),
    ("tune-dmcmc-classifier", ["tune-dmcmc", "--model", "gmm:{mix}", "--noise-classifier", "{tmp}/c", "--target-nfe",
                               "10", "--out", "{tmp}/t.json"], _evil_classifier),
    ("evaluate-samples-extra-array", ["evaluate", "{tmp}/s", "--domain", "faces"], _evil_samples),
    ("evaluate-samples-x", ["evaluate", "{tmp}/s", "--domain", "faces"], _evil_samples_x),
    ("edit-boundary", ["edit", "{img}", "--boundary", "{tmp}/b.safetensors", "--out", "{tmp}/e"], _evil_boundary),
    ("edit-condition", ["edit", "{img}", "--boundary", "smiling", "--condition", "{tmp}/b.safetensors", "--out",
                        "{tmp}/e"], _evil_boundary),
    ("edit-model", ["edit", "{img}", "--boundary", "smiling", "--model", RAW["ddpm"], "--out", "{tmp}/e"], E_CKPT),
    ("control-boundary", ["control", "--boundary", "{tmp}/b.safetensors", "--out", "{tmp}/e"], _evil_boundary),
    ("boundary-show", ["boundary", "show", "{tmp}/b.safetensors"], _evil_boundary),
    ("boundary-fit-model", ["boundary", "fit", "--model", RAW["ddpm"], "--faces", "4", "--attribute", "smiling",
                            "--out", "{tmp}/b2.safetensors"], E_CKPT),
    ("mixing-step-model", ["mixing-step", "--model", RAW["ddpm"], "--faces", "4", "--attribute", "smiling", "--out",
                           "{tmp}/m2"], E_CKPT),
]


@pytest.mark.parametrize("name, argv, setup", CASES, ids=[c[0] for c in CASES])
def test_a_crafted_pickle_never_runs(name, argv, setup, world, tmp_path, capsys):
    from bad_inputs import DLG

    setup(tmp_path, world)
    marker = tmp_path / "MARKER"
    assert not marker.exists()
    if argv is None:  # the DLG resume case reuses the interrupted command
        argv = DLG + ["--out", "{tmp}/run", "--quiet"]
    capsys.readouterr()
    code = main(fill(argv, tmp_path, world))
    err = capsys.readouterr().err
    assert not marker.exists(), f"{name}: the pickle ran"
    if name == "evaluate-samples-extra-array":  # the pickled array is never read: x alone is scored
        assert code == 0, err
        return
    assert code == 2, err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
