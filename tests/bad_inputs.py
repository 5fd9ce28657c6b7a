"""The bad-input campaign as a table: each case is a `ddmkit` command line that must exit 2 with one
line naming the problem, leaving every file under the case's folder unchanged (byte for byte).

Used by tests/test_bad_input.py (every case, in-process) and by benchmarks/bad_input_campaign.py
(writes benchmarks/results/bad_input_campaign.json: case, exit code, message).

A case's argv may use {tmp} (its folder) and the names made by `make_world`: {mix} (a 2-D mixture
JSON), {clf} (a noise classifier for it), {unet} (a random-weight DDPM folder), {img} (a PNG face).
`setup(tmp, world)` prepares extra files before the snapshot is taken.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

MIX = {"weights": [0.5, 0.3, 0.2], "means": [[-3, 0], [3, 1], [0, 4]], "stds": [[0.5, 0.3], [0.4, 0.6], [0.3, 0.3]]}


@dataclass
class Case:
    name: str
    argv: list[str]
    message: str  # a substring the one-line error must contain
    setup: Callable[[Path, dict], None] | None = None
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------------ world

def make_world(root: Path) -> dict[str, str]:
    """The shared inputs (made once): a mixture, its noise classifier, a tiny DDPM folder, a face PNG."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel
    from PIL import Image

    from ddmkit.cli import main
    from ddmkit.data.faces import sample_faces

    root.mkdir(parents=True, exist_ok=True)
    (root / "mix.json").write_text(json.dumps(MIX))
    if not (root / "clf.json").is_file():
        assert main(["noise-classifier", "train", "--model", f"gmm:{root / 'mix.json'}", "--out", str(root / "clf"),
                     "--k", "16", "--steps", "20", "--batch-size", "32", "--quiet"]) == 0
    unet = root / "unet"
    if not unet.is_dir():
        torch.manual_seed(0)
        UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                    norm_num_groups=8).save_pretrained(unet / "unet", safe_serialization=True)
        DDPMScheduler(num_train_timesteps=1000).save_pretrained(unet / "scheduler")
    Image.fromarray(sample_faces(1, seed=0)[0][0]).save(root / "face.png")
    return {"mix": str(root / "mix.json"), "clf": str(root / "clf"), "unet": str(unet), "img": str(root / "face.png")}


def evil_pickle(path: Path, marker: Path) -> Path:
    """A torch file whose unpickling would create `marker` (it must never be unpickled)."""
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"w": Evil()}}, path)
    return path


def bomb_png(path: Path, side: int = 100_000) -> Path:
    """A tiny PNG whose header declares side x side pixels (a decompression bomb if decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------------ setups

def _file(name: str, content: bytes = b"user data\n") -> Callable[[Path, dict], None]:
    def setup(tmp: Path, world: dict) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(content)
    return setup


def _foreign_sample_folder(tmp: Path, world: dict) -> None:
    d = tmp / "theirs"
    (d / "images").mkdir(parents=True)
    np.savez(d / "samples.npz", x=np.zeros((2, 2), np.float32))
    (d / "grid.png").write_bytes(b"not ours")
    (d / "images" / "000000.png").write_bytes(b"their picture")


def _finished_sample_folder(tmp: Path, world: dict) -> None:
    from ddmkit.cli import main

    assert main(["sample", "--model", f"gmm:{world['mix']}", "--num", "4", "--steps", "4",
                 "--out", str(tmp / "done"), "--quiet"]) == 0


def _interrupted(argv: list[str], out: Path, parts_before_stop: int = 1) -> None:
    """Run `argv` and stop it (KeyboardInterrupt) after `parts_before_stop` part files."""
    from ddmkit import outputs
    from ddmkit.cli import main

    real, n = outputs.PartStore.write, [0]

    def write(self, *a, **k):
        real(self, *a, **k)
        n[0] += 1
        if n[0] >= parts_before_stop:
            raise KeyboardInterrupt

    outputs.PartStore.write = write
    try:
        assert main(argv + ["--out", str(out), "--quiet"]) == 130
    finally:
        outputs.PartStore.write = real


PLAIN = ["sample", "--model", "gmm:{mix}", "--num", "12", "--batch-size", "4", "--steps", "4"]
DLG = ["sample", "--model", "gmm:{mix}", "--dmcmc", "--noise-classifier", "{clf}", "--integrator", "kar1", "--steps", "3",
       "--n-skip", "2", "--dlg-eta", "0.05", "--num", "30", "--chains", "10"]


def _resume_with(corrupt: Callable[[Path], None], dlg: bool = False) -> Callable[[Path, dict], None]:
    def setup(tmp: Path, world: dict) -> None:
        out = tmp / "run"
        _interrupted(fill(DLG if dlg else PLAIN, tmp, world), out)
        corrupt(out / "parts")
    return setup


def _truncate_part(parts: Path) -> None:
    f = sorted(parts.glob("part-*.npz"))[0]
    f.write_bytes(f.read_bytes()[:50])


def _object_part(parts: Path) -> None:
    f = sorted(parts.glob("part-*.npz"))[0]
    np.savez(f, index=np.array([0, 1], dtype=object), x=np.zeros((2, 2)), allow_pickle=True)


def _corrupt_json(name: str) -> Callable[[Path], None]:
    def corrupt(parts: Path) -> None:
        (parts / name).write_text("{not json")
    return corrupt


def _foreign_part(tmp: Path, world: dict) -> None:
    """A part file of a run with another seed, dropped into this run's parts folder."""
    _interrupted(fill(PLAIN, tmp, world), tmp / "run")
    _interrupted(fill(PLAIN + ["--seed", "2"], tmp, world), tmp / "other", parts_before_stop=2)
    theirs = sorted((tmp / "other" / "parts").glob("part-*.npz"))[1]
    (tmp / "run" / "parts" / theirs.name).write_bytes(theirs.read_bytes())


def _corrupt_chains(parts: Path) -> None:
    (parts / "chains.npz").write_bytes(b"PK\x03\x04 truncated")


def _crafted_boundary(tmp: Path, world: dict) -> None:
    from safetensors.numpy import save_file

    meta = {"attribute": "x", "t_m": "a lot", "n_inv": 40, "spaces": {"z": {}}}
    save_file({"z.normal": np.ones((3, 16, 16), np.float32)}, str(tmp / "crafted.safetensors"),
              metadata={"ddmkit_boundary": json.dumps(meta)})


def _truncated_init(tmp: Path, world: dict) -> None:
    import shutil

    shutil.copytree(world["unet"], tmp / "init")
    w = tmp / "init" / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:300])


def _user_model_dir(tmp: Path, world: dict) -> None:
    (tmp / "run" / "model").mkdir(parents=True)
    (tmp / "run" / "model" / "weights.bin").write_bytes(b"someone's model")


def _existing_classifier(tmp: Path, world: dict) -> None:
    (tmp / "c.safetensors").write_bytes(b"an older classifier")
    (tmp / "c.json").write_text("{}")


def _bomb(tmp: Path, world: dict) -> None:
    bomb_png(tmp / "bomb.png")


def _random_bytes(name: str) -> Callable[[Path, dict], None]:
    def setup(tmp: Path, world: dict) -> None:
        (tmp / name).write_bytes(np.random.default_rng(0).bytes(3000))
    return setup


def _object_samples(tmp: Path, world: dict) -> None:
    (tmp / "s").mkdir()
    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp / "s" / "samples.npz").write_bytes(buf.getvalue())
    (tmp / "s" / "manifest.json").write_text(json.dumps({"command": "sample", "domain": "faces"}))


def _metrics_target(tmp: Path, world: dict) -> None:
    (tmp / "s").mkdir()
    np.savez(tmp / "s" / "samples.npz", x=np.zeros((4, 3, 32, 32), np.float32))
    (tmp / "notes.txt").write_text("my notes")


# ------------------------------------------------------------------------------------------ cases

S = ["sample", "--model", "gmm:{mix}", "--quiet"]
SO = S + ["--out", "{tmp}/o"]
E = ["edit", "{img}", "--boundary", "smiling"]
T = ["train", "--data", "digits", "--steps", "2", "--batch-size", "2", "--channels", "16,32", "--attention", "0,0",
     "--quiet"]
NC = ["noise-classifier", "train", "--model", "gmm:{mix}", "--steps", "2", "--quiet"]
BF = ["boundary", "fit", "--faces", "4", "--attribute", "smiling", "--quiet"]

CASES: list[Case] = [
    # --out paths
    Case("sample-out-is-a-file", S + ["--out", "{tmp}/f"], "is a file, not a folder", _file("f")),
    Case("sample-out-parent-is-a-file", S + ["--out", "{tmp}/f/sub"], "is a file, so nothing", _file("f")),
    Case("sample-out-unwritable", S + ["--out", "/proc/self/ddmkit-out"], "not writable"),
    Case("sample-out-empty", S + ["--out", ""], "--out must not be empty"),
    Case("sample-out-foreign-folder", S + ["--out", "{tmp}/theirs"], "holds files that ddmkit did not write",
         _foreign_sample_folder),
    Case("sample-out-finished-run", S + ["--out", "{tmp}/done"], "already holds a finished run", _finished_sample_folder),
    Case("sample-out-is-the-model", ["sample", "--model", "gmm:{tmp}/m.json", "--out", "{tmp}/m.json"],
         "is a file, not a folder", _file("m.json", json.dumps(MIX).encode())),
    Case("sample-overwrite-onto-input", ["sample", "--model", "gmm:{tmp}/d/m.json", "--out", "{tmp}/d", "--overwrite"],
         "would overwrite the input", _file("d/m.json", json.dumps(MIX).encode())),
    # numbers
    Case("sample-steps-0", SO + ["--steps", "0"], "--steps must be >= 1"),
    Case("sample-steps-1e9", SO + ["--steps", "1e9"], "--steps must be >= 1 and <= 10000"),
    Case("sample-steps-nan", SO + ["--steps", "nan"], "--steps must be a whole number"),
    Case("sample-num-0", SO + ["--num", "0"], "--num must be >= 1"),
    Case("sample-num-1e12", SO + ["--num", "1000000000000"], "--num must be >= 1 and <= 10000000"),
    Case("sample-batch-0", SO + ["--batch-size", "0"], "--batch-size must be >= 1"),
    Case("sample-seed-negative", SO + ["--seed", "-1"], "--seed must be in [0, 2^64)"),
    Case("sample-seed-2^64", SO + ["--seed", str(2**64)], "--seed must be in [0, 2^64)"),
    Case("rk45-rtol-nan", SO + ["--integrator", "rk45", "--rtol", "nan"], "--rtol must be a finite number"),
    Case("rk45-atol-nan", SO + ["--integrator", "rk45", "--atol", "nan"], "--atol must be a finite number"),
    Case("rk45-atol-negative", SO + ["--integrator", "rk45", "--atol", "-1"], "--atol must be > 0"),
    Case("rk45-rtol-0", SO + ["--integrator", "rk45", "--rtol", "0"], "--rtol must be >= 1e-12"),
    Case("rk45-rtol-1e9", SO + ["--integrator", "rk45", "--rtol", "1e9"], "--rtol must be >= 1e-12 and <= 1"),
    Case("kar2-churn-negative", SO + ["--integrator", "kar2", "--s-churn", "-1"], "--s-churn must be >= 0"),
    Case("kar2-noise-nan", SO + ["--integrator", "kar2", "--s-noise", "nan"], "--s-noise must be a finite number"),
    Case("ddim-eta-negative", SO + ["--integrator", "ddim", "--eta", "-1"], "--eta must be >= 0"),
    Case("kar1-steps-1", SO + ["--integrator", "kar1", "--steps", "1"], "needs --steps >= 2"),
    Case("unknown-integrator", SO + ["--integrator", "heun9"], "unknown integrator 'heun9'"),
    Case("option-of-another-integrator", SO + ["--integrator", "kar1", "--rtol", "1e-3"], "applies to rk45 only"),
    Case("dmcmc-flag-without-dmcmc", SO + ["--n-skip", "2"], "applies to --dmcmc sampling only"),
    Case("dlg-eta-0", SO + ["--dmcmc", "--noise-classifier", "{clf}", "--dlg-eta", "0"], "--dlg-eta must be > 0"),
    Case("dlg-tweedie-sigma-0", SO + ["--dmcmc", "--noise-classifier", "{clf}", "--tweedie-sigma", "0"],
         "--tweedie-sigma must be > 0"),
    Case("dlg-unknown-classifier", SO + ["--dmcmc", "--noise-classifier", "{tmp}/nope"], "not found"),
    Case("dlg-bad-burn-in", SO + ["--dmcmc", "--noise-classifier", "{clf}", "--burn-in", "x:y"], "--burn-in 'x:y' not"),
    # resume folders
    Case("resume-truncated-part", PLAIN + ["--out", "{tmp}/run", "--quiet"], "is unreadable",
         _resume_with(_truncate_part)),
    Case("resume-object-array-part", PLAIN + ["--out", "{tmp}/run", "--quiet"], "is unreadable",
         _resume_with(_object_part)),
    Case("resume-foreign-part", PLAIN + ["--out", "{tmp}/run", "--quiet"], "a part of a run with other settings",
         _foreign_part),
    Case("resume-corrupt-settings", PLAIN + ["--out", "{tmp}/run", "--quiet"], "not valid JSON",
         _resume_with(_corrupt_json("settings.json"))),
    Case("resume-other-batch-size", PLAIN[:-4] + ["--batch-size", "3", "--steps", "4", "--out", "{tmp}/run", "--quiet"],
         "other settings (batch_size)", _resume_with(lambda p: None)),
    Case("resume-corrupt-chain-state", DLG + ["--out", "{tmp}/run", "--quiet"],
         "chain state", _resume_with(_corrupt_chains, dlg=True)),
    Case("resume-dlg-other-eta", [a if a != "0.05" else "0.1" for a in DLG]
         + ["--out", "{tmp}/run", "--quiet"], "dmcmc.eta", _resume_with(lambda p: None, dlg=True)),
    # model files
    Case("checkpoint-empty", SO[:2] + ["ddpm:{tmp}/e.ckpt@cifar10"] + SO[3:], "truncated or not a PyTorch checkpoint",
         _file("e.ckpt", b"")),
    Case("checkpoint-random-bytes", SO[:2] + ["ddpm:{tmp}/r.ckpt@cifar10"] + SO[3:], "not a PyTorch checkpoint",
         _random_bytes("r.ckpt")),
    Case("checkpoint-missing", SO[:2] + ["ddpm:{tmp}/none.ckpt@cifar10"] + SO[3:], "does not exist"),
    Case("mixture-not-json", SO[:2] + ["gmm:{tmp}/m.json"] + SO[3:], "not valid JSON", _file("m.json", b"{")),
    # train
    Case("train-checkpoint-every-0", T + ["--checkpoint-every", "0", "--out", "{tmp}/run"], "--checkpoint-every must be >= 1"),
    Case("train-lr-nan", T + ["--lr", "nan", "--out", "{tmp}/run"], "--lr must be a finite number"),
    Case("train-resolution-0", T + ["--resolution", "0", "--out", "{tmp}/run"], "--resolution must be >= 8"),
    Case("train-channels-not-16", ["train", "--data", "digits", "--channels", "20,40", "--attention", "0,0", "--out",
                                   "{tmp}/run", "--quiet"], "multiple of 16"),
    Case("train-ema-decay-5", T + ["--ema-decay", "5", "--out", "{tmp}/run"], "--ema-decay must be >= 0 and < 1"),
    Case("train-init-from-truncated", ["train", "--data", "faces", "--resolution", "16", "--channels", "32,64",
                                       "--attention", "0,1", "--init-from", "{tmp}/init", "--out", "{tmp}/run",
                                       "--quiet"], "unreadable", _truncated_init),
    Case("train-out-holds-user-model", T + ["--out", "{tmp}/run"], "holds files that ddmkit did not write", _user_model_dir),
    # noise classifier
    Case("noise-classifier-lr-nan", NC + ["--lr", "nan", "--out", "{tmp}/c"], "--lr must be a finite number"),
    Case("noise-classifier-k-1", NC + ["--k", "1", "--out", "{tmp}/c"], "--k must be >= 2"),
    Case("noise-classifier-out-is-the-model", ["noise-classifier", "train", "--model", "gmm:{tmp}/mix.json", "--out",
                                               "{tmp}/mix", "--quiet"], "would overwrite the input",
         _file("mix.json", json.dumps(MIX).encode())),
    Case("noise-classifier-exists", NC + ["--out", "{tmp}/c"], "exists; choose another --out", _existing_classifier),
    # boundaries and edits
    Case("boundary-fit-C-negative", BF + ["--C", "-1", "--out", "{tmp}/b.safetensors"], "--C must be > 0"),
    Case("boundary-fit-json-exists", BF + ["--out", "{tmp}/c.safetensors"], "c.json exists", _file("c.json")),
    Case("boundary-fit-exists", BF + ["--out", "{tmp}/c.safetensors"], "c.safetensors exists", _file("c.safetensors")),
    Case("boundary-crafted-metadata", ["edit", "{img}", "--boundary", "{tmp}/crafted.safetensors", "--out", "{tmp}/e"],
         "boundary metadata has no integer t_m", _crafted_boundary),
    Case("edit-out-unwritable", E + ["--out", "/proc/self/ddmkit-edit"], "not writable"),
    Case("edit-out-is-a-file", E + ["--out", "{tmp}/f"], "is a file, not a folder", _file("f")),
    Case("edit-out-not-empty", E + ["--out", "{tmp}/d"], "not an empty folder", _file("d/x.txt")),
    Case("edit-png-scale-negative", E + ["--png-scale", "-3", "--out", "{tmp}/e"], "--png-scale must be >= 1"),
    Case("edit-bomb-image", ["edit", "{tmp}/bomb.png", "--boundary", "smiling", "--out", "{tmp}/e"],
         "more pixels than ddmkit reads", _bomb),
    Case("edit-input-is-out", ["edit", "{tmp}/d", "--boundary", "smiling", "--out", "{tmp}/d", "--overwrite"],
         "would overwrite the input", _file("d/x.png")),
    Case("control-out-is-a-file", ["control", "--boundary", "smiling", "--out", "{tmp}/f"], "is a file", _file("f")),
    # evaluate
    Case("evaluate-missing-dir", ["evaluate", "{tmp}/none"], "does not exist"),
    Case("evaluate-object-samples", ["evaluate", "{tmp}/s"], "cannot read", _object_samples),
    Case("evaluate-out-foreign-file", ["evaluate", "{tmp}/s", "--out", "{tmp}/notes.txt"], "notes.txt exists",
         _metrics_target),
    Case("evaluate-out-is-samples", ["evaluate", "{tmp}/s", "--out", "{tmp}/s/samples.npz", "--overwrite"],
         "would overwrite the input", _metrics_target),
    # others
    Case("tune-skip-share-2", ["tune-dmcmc", "--model", "gmm:{mix}", "--noise-classifier", "{clf}", "--target-nfe", "10",
                               "--skip-shares", "2", "--out", "{tmp}/t.json"], "--skip-shares must be > 0 and < 1"),
    Case("tune-out-foreign", ["tune-dmcmc", "--model", "gmm:{mix}", "--noise-classifier", "{clf}", "--target-nfe", "10",
                              "--out", "{tmp}/t.json"], "t.json exists", _file("t.json", b'{"x": 1}')),
    Case("mixing-step-tol-negative", ["mixing-step", "--faces", "4", "--attribute", "smiling", "--tol-acc", "-1",
                                      "--out", "{tmp}/m"], "--tol-acc must be >= 0"),
    Case("data-num-0", ["data", "faces", "--num", "0", "--out", "{tmp}/d"], "--num must be >= 1"),
    Case("data-out-not-empty", ["data", "faces", "--num", "2", "--out", "{tmp}/d"], "is not empty", _file("d/x")),
    Case("convert-random-bytes", ["convert", "{tmp}/r.ckpt", "--format", "ddpm", "--config", "cifar10", "--out",
                                  "{tmp}/c"], "not a PyTorch checkpoint", _random_bytes("r.ckpt")),
    Case("convert-out-exists", ["convert", "{unet}", "--format", "diffusers", "--out", "{tmp}/d"], "already exists",
         _file("d/x")),
    Case("demo-out-foreign", ["demo", "--quick", "--out", "{tmp}/d"], "holds files that ddmkit did not write",
         _file("d/index.html", b"<html>mine</html>")),
]


def fill(argv: list[str], tmp: Path, world: dict[str, str]) -> list[str]:
    """argv with {tmp} and the world's names filled in."""
    names = {"tmp": str(tmp), **world}
    return [a.format(**names) for a in argv]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with the SHA-256 of its bytes (folders marked 'dir')."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out
