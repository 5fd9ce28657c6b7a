"""Inception FID: weights loaded as tensors only (a crafted pickle never runs), FID against a reference
folder and a pytorch-fid statistics file, ddmkit's Frechet distance against torch-fidelity's own.

No real Inception weights can be downloaded here: the tests use a random-weight Inception-v3 of
torch-fidelity's architecture, saved in the published file's format (a plain state dict of tensors,
as torch-fidelity's converter writes it), with its batch-norm statistics set by one pass over a few
images so that the features are not vanishingly small. torch-fidelity itself must be installed
(scripts/setup.sh does: pip install --no-deps torch-fidelity==0.4.0); without it these tests fail.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from ddmkit.cli import main
from ddmkit.data.faces import sample_faces, to_tensor_range
from ddmkit.errors import DdmkitError
from ddmkit.metrics import fid, fidelity, inception
from ddmkit.metrics import evaluate as ev
from ddmkit.metrics.frechet import frechet_distance_gaussians

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def torch_fidelity_installed():
    try:
        version = importlib.metadata.version("torch-fidelity")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"torch-fidelity is not installed; these tests need it: {fidelity.INSTALL} "
                    "(scripts/setup.sh installs it)", pytrace=False)
    assert version == fidelity.TORCH_FIDELITY_VERSION, f"torch-fidelity {version}; run {fidelity.INSTALL}"


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    """No weights from the environment or a real hub cache; a private FD cache and a tiny FD reference."""
    monkeypatch.delenv("DDMKIT_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("DDMKIT_CACHE_DIR", str(tmp_path / "ddmkit-cache"))
    monkeypatch.setattr(ev, "REFERENCE_NUM", 6)
    monkeypatch.setattr(fid, "REFERENCE_NUM", 6)  # FID's domain reference reads the same constant


def random_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random Inception-v3 of torch-fidelity's architecture as a plain state dict (no
    num_batches_tracked: the published file's keys), batch norms calibrated on 4 images."""
    cls = fidelity.inception_class()

    class Blank(cls):  # the constructor's own load of the (empty) state dict is skipped
        def load_state_dict(self, state_dict, *args, **kwargs):
            return super().load_state_dict(state_dict, *args, **kwargs) if state_dict else None

    buf = io.BytesIO()
    torch.save({}, buf)
    buf.seek(0)
    torch.manual_seed(seed)
    net = Blank("random", ["2048"], feature_extractor_weights_path=buf)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(sample_faces(4, seed=77)[0].transpose(0, 3, 1, 2).copy()))
    return {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    torch.save(random_inception_state(), path)
    return path


def faces_folder(root: Path, n: int, seed: int, size: int = 32) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for i, im in enumerate(sample_faces(n, seed=seed)[0]):
        Image.fromarray(im).resize((size, size)).save(root / "images" / f"{i:06d}.png")
    return root


def sample_folder(root: Path, n: int, seed: int) -> Path:
    """A folder like `ddmkit sample` writes for a model without a domain: samples.npz + manifest."""
    root.mkdir(parents=True)
    x = to_tensor_range(sample_faces(n, seed=seed)[0]) + np.float32(0.01)  # off the uint8 grid
    np.savez(root / "samples.npz", x=np.clip(x, -1, 1), index=np.arange(n))
    (root / "manifest.json").write_text(json.dumps({"command": "sample", "domain": None, "data_range": [-1.0, 1.0]}))
    return root


def run_ok(argv, capsys):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def run_bad(argv, capsys, *words):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith("ddmkit evaluate: error:"), err
    for w in words:
        assert w in err, err
    return err


def listing(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for d in folders for p in sorted(d.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ torch-fidelity, imported safely

def test_torch_fidelity_is_loaded_without_its_package_and_pinned(monkeypatch):
    before = {k for k in sys.modules if k.startswith(("torch_fidelity", "torchvision"))}
    fidelity.inception_class.cache_clear()
    cls = fidelity.inception_class()
    assert cls.__name__ == "FeatureExtractorInceptionV3" and cls.INPUT_IMAGE_SIZE == 299
    # nothing registered in sys.modules, torchvision not imported
    assert {k for k in sys.modules if k.startswith(("torch_fidelity", "torchvision"))} == before
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"torch-fidelity=={fidelity.TORCH_FIDELITY_VERSION}"' in text  # the extra pins the same release
    assert "TORCH_FIDELITY_VERSION" in (ROOT / "scripts" / "setup.sh").read_text()  # setup installs it
    real = importlib.metadata.version
    for version, words in ((None, "needs torch-fidelity"), ("0.3.0", "0.3.0 is installed")):
        def fake(name, version=version):
            if name != "torch-fidelity":
                return real(name)
            if version is None:
                raise importlib.metadata.PackageNotFoundError(name)
            return version
        monkeypatch.setattr(importlib.metadata, "version", fake)
        fidelity.inception_class.cache_clear()
        with pytest.raises(DdmkitError, match=words) as e:
            fidelity.inception_class()
        assert fidelity.INSTALL in str(e.value) and "\n" not in str(e.value)
    monkeypatch.undo()
    fidelity.inception_class.cache_clear()


def test_frechet_distance_equals_torch_fidelity_on_the_same_features():
    """ddmkit.metrics.frechet against torch-fidelity 0.4.0's fid_statistics_to_metric (its module run
    from the installed file; the torchvision-bound helpers it imports are not called and are stubbed)."""
    utils = types.ModuleType("torch_fidelity.utils")
    for name in ("get_cacheable_input_name", "cache_lookup_one_recompute_on_miss",
                 "extract_featuresdict_from_input_id_cached", "create_feature_extractor",
                 "resolve_feature_extractor", "resolve_feature_layer_for_metric"):
        setattr(utils, name, None)
    metric_fid = fidelity.load_modules(("defaults", "deprecations", "helpers", "metric_fid"),
                                       provided={"utils": utils})["torch_fidelity.metric_fid"]
    rng = np.random.default_rng(0)
    for n, d in ((400, 64), (50, 256)):  # full rank, and n < d (singular covariances, as at 2048 dims)
        a = torch.from_numpy(rng.normal(size=(n, d)))
        b = torch.from_numpy(rng.normal(size=(n + 7, d)) * 1.3 + 0.2)
        sa, sb = metric_fid.fid_features_to_statistics(a), metric_fid.fid_features_to_statistics(b)
        theirs = metric_fid.fid_statistics_to_metric(sa, sb, False)["frechet_inception_distance"]
        ours = frechet_distance_gaussians(sa["mu"], sa["sigma"], sb["mu"], sb["sigma"])
        assert ours == pytest.approx(theirs, rel=1e-9 if n > d else 1e-6)


# ------------------------------------------------------------------ weights: tensors only

class Crafted:
    """Unpickling this creates the marker file (what torch.load(weights_only=False) would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_files(root: Path, marker: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    zipped = root / "crafted.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "x": Crafted(marker)}, zipped)
    raw = root / "crafted-raw.pth"
    raw.write_bytes(pickle.dumps({"x": Crafted(marker)}, protocol=2))
    return [zipped, raw]


def test_crafted_file_would_run_code_under_plain_torch_load(tmp_path):
    """The control: the crafted file is effective, so the tests below can fail."""
    marker = tmp_path / "ran"
    torch.load(crafted_files(tmp_path / "w", marker)[0], weights_only=False)
    assert marker.exists()


def test_crafted_pickle_never_runs_through_any_weights_route(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "marker"
    files = crafted_files(tmp_path / "w", marker)
    samples = sample_folder(tmp_path / "s", 4, 1)
    before = listing(samples)
    for f in files:
        run_bad(["evaluate", samples, "--fid", "--inception-weights", f], capsys, "tensors only", str(f))
        run_bad(["evaluate", samples, "--ref", samples, "--inception-weights", f], capsys, "tensors only")
        monkeypatch.setenv("DDMKIT_INCEPTION_WEIGHTS", str(f))
        run_bad(["evaluate", samples, "--fid", "--domain", "faces"], capsys, "tensors only")
        monkeypatch.delenv("DDMKIT_INCEPTION_WEIGHTS")
        with pytest.raises(DdmkitError, match="tensors only"):
            inception.load_extractor(f)
    hub = Path(str(tmp_path / "torch-home")) / "hub" / "checkpoints" / inception.PUBLISHED_FILE
    hub.parent.mkdir(parents=True)
    hub.write_bytes(files[0].read_bytes())
    # under the published name (and whether or not its digest matches the name), the tensors-only load refuses it
    run_bad(["evaluate", samples, "--fid", "--domain", "faces"], capsys, "tensors only", "io.open")
    monkeypatch.setattr(inception, "PUBLISHED_SHA256_PREFIX", hashlib.sha256(hub.read_bytes()).hexdigest()[:8])
    run_bad(["evaluate", samples, "--fid", "--domain", "faces"], capsys, "tensors only", "io.open")
    # the other files FID reads: a statistics file and samples.npz holding pickled objects
    crafted_npz = tmp_path / "w" / "crafted.npz"
    np.savez(crafted_npz, mu=np.array([Crafted(marker)], dtype=object), sigma=np.eye(2))
    run_bad(["evaluate", samples, "--ref-stats", crafted_npz], capsys, "cannot read")
    evil = tmp_path / "evil"
    evil.mkdir()
    np.savez(evil / "samples.npz", x=np.array([Crafted(marker)] * 2, dtype=object))
    run_bad(["evaluate", evil, "--ref-stats", crafted_npz], capsys, "cannot read")
    assert not marker.exists()
    assert listing(samples) == before  # nothing written


def test_weights_routes_and_checks(weights, tmp_path, capsys, monkeypatch):
    """--inception-weights, $DDMKIT_INCEPTION_WEIGHTS and the torch hub cache give the same features."""
    samples = sample_folder(tmp_path / "s", 3, 1)
    ref = faces_folder(tmp_path / "ref", 3, 2)
    run_bad(["evaluate", samples, "--ref", ref], capsys, "torch hub cache", inception.PUBLISHED_FILE, "--inception-weights")
    run_bad(["evaluate", samples, "--ref", ref, "--inception-weights", tmp_path / "x.pth"], capsys,
            "--inception-weights:", "not found")
    monkeypatch.setenv("DDMKIT_INCEPTION_WEIGHTS", str(tmp_path / "y.pth"))
    run_bad(["evaluate", samples, "--ref", ref], capsys, "DDMKIT_INCEPTION_WEIGHTS:", "not found")
    monkeypatch.setenv("DDMKIT_INCEPTION_WEIGHTS", str(weights))
    run_ok(["evaluate", samples, "--save-stats", tmp_path / "env.npz"], capsys)
    monkeypatch.delenv("DDMKIT_INCEPTION_WEIGHTS")
    hub = Path(str(tmp_path / "torch-home")) / "hub" / "checkpoints" / inception.PUBLISHED_FILE
    hub.parent.mkdir(parents=True)
    hub.write_bytes(weights.read_bytes())
    monkeypatch.setattr(inception, "PUBLISHED_SHA256_PREFIX", hashlib.sha256(hub.read_bytes()).hexdigest()[:8])
    run_ok(["evaluate", samples, "--save-stats", tmp_path / "hub.npz"], capsys)
    from safetensors.torch import save_file

    state = torch.load(weights, weights_only=True)
    save_file(state, str(tmp_path / "w.safetensors"))
    run_ok(["evaluate", samples, "--save-stats", tmp_path / "st.npz", "--inception-weights", tmp_path / "w.safetensors"],
           capsys)
    env, cached, st = (np.load(tmp_path / f, allow_pickle=False) for f in ("env.npz", "hub.npz", "st.npz"))
    assert np.array_equal(env["mu"], cached["mu"]) and np.array_equal(env["mu"], st["mu"])
    assert str(cached["weights_sha256"]) == hashlib.sha256(weights.read_bytes()).hexdigest() == str(env["weights_sha256"])
    assert not (samples / "metrics.json").exists()  # statistics only: nothing scored
    # a state dict of the wrong keys, or not a state dict, is refused
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, tmp_path / "nofc.pth")
    run_bad(["evaluate", samples, "--ref", ref, "--inception-weights", tmp_path / "nofc.pth"], capsys,
            "do not fit", "fc.weight")
    torch.save([1, 2], tmp_path / "list.pth")
    run_bad(["evaluate", samples, "--ref", ref, "--inception-weights", tmp_path / "list.pth"], capsys, "state dict")


# ------------------------------------------------------------------ FID against real data

def test_fid_against_folder_and_stats_file_agree_with_direct_features(weights, tmp_path, capsys):
    samples = sample_folder(tmp_path / "s", 4, 11)
    ref = faces_folder(tmp_path / "ref", 5, 12)
    w = ["--inception-weights", weights]
    run_ok(["evaluate", samples, "--ref", ref, "--save-stats", tmp_path / "s.npz", *w], capsys)
    m = json.loads((samples / "metrics.json").read_text())
    assert "fd" not in m and m["n"] == 4 and m["fid_n"] == 4 and m["fid_reference"]["n"] == 5
    out = run_ok(["evaluate", ref, "--save-stats", tmp_path / "ref.npz", *w], capsys)
    assert "5 images written" in out and not (ref / "metrics.json").exists()  # stats only
    run_ok(["evaluate", samples, "--ref-stats", tmp_path / "ref.npz", "--out", tmp_path / "m2.json", *w], capsys)
    assert json.loads((tmp_path / "m2.json").read_text())["fid"] == pytest.approx(m["fid"], rel=1e-9)

    # the statistics are mu / unbiased sigma of the extractor's features of the uint8 images
    model, _ = inception.load_extractor(weights)
    x = np.load(samples / "samples.npz")["x"]
    u8 = np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    with torch.no_grad():
        (feats,) = model(torch.from_numpy(u8))
    feats = feats.double().numpy()
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        assert z["mu"].shape == (2048,) and z["sigma"].shape == (2048, 2048) and int(z["n"]) == 4
        np.testing.assert_allclose(z["mu"], feats.mean(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(z["sigma"], np.cov(feats, rowvar=False), rtol=1e-5, atol=1e-9)
    assert m["fid"] > 1e-6  # different faces: the random network still tells the sets apart

    # the samples' PNGs give exactly the statistics of samples.npz (the same uint8 quantisation)
    from ddmkit.outputs import save_png, to_uint8

    pngs = tmp_path / "pngs"
    for i, im in enumerate(to_uint8(x, (-1.0, 1.0))):
        save_png(pngs / "images" / f"{i:06d}.png", im)
    run_ok(["evaluate", pngs, "--save-stats", tmp_path / "pngs.npz", *w], capsys)
    with np.load(tmp_path / "s.npz") as a, np.load(tmp_path / "pngs.npz") as b:
        assert np.array_equal(a["mu"], b["mu"]) and np.array_equal(a["sigma"], b["sigma"])


def test_fid_against_the_domain_reference_with_fd(weights, tmp_path, capsys):
    d = tmp_path / "s"
    d.mkdir()
    np.savez(d / "samples.npz", x=to_tensor_range(sample_faces(4, seed=5)[0]))
    (d / "manifest.json").write_text(json.dumps({"domain": "faces"}))
    run_ok(["evaluate", d, "--fid", "--no-noise-floor", "--inception-weights", weights], capsys)
    m = json.loads((d / "metrics.json").read_text())
    assert m["domain"] == "faces" and m["fd"] > 0 and m["fid"] > 0 and m["fid_reference"]["n"] == 6
    assert "sample_faces(6" in m["fid_reference"]["images"]


def test_fid_bad_input_one_line_and_nothing_written(weights, tmp_path, capsys):
    from PIL import Image

    samples = sample_folder(tmp_path / "s", 4, 1)
    ref = faces_folder(tmp_path / "ref", 4, 2)
    w = ["--inception-weights", weights]
    save = ["--save-stats", tmp_path / "out.npz"]
    np.savez(tmp_path / "small.npz", mu=np.zeros(64), sigma=np.eye(64))
    np.savez(tmp_path / "nomu.npz", m=np.zeros(2048))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    (tmp_path / "obj.npz").write_bytes((tmp_path / "obj.npy").read_bytes())
    np.savez(tmp_path / "objects.npz", mu=np.array([None] * 2048, dtype=object), sigma=np.eye(2))
    big = faces_folder(tmp_path / "big", 3, 3, size=64)
    mixed = faces_folder(tmp_path / "mixed", 3, 3)
    Image.new("RGB", (40, 40)).save(mixed / "images" / "zz.png")
    bomb = faces_folder(tmp_path / "bomb", 2, 4)
    (bomb / "images" / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    before = listing(samples, ref, big, bomb)
    run_bad(["evaluate", samples, "--ref-stats", tmp_path / "small.npz", *save, *w], capsys,
            "mu has shape (64,)", "(2048, 2048)")
    run_bad(["evaluate", samples, "--ref-stats", tmp_path / "nomu.npz", *w], capsys, "no arrays 'mu' and 'sigma'")
    run_bad(["evaluate", samples, "--ref-stats", tmp_path / "objects.npz", *w], capsys, "cannot read")
    run_bad(["evaluate", samples, "--ref-stats", tmp_path / "obj.npz", *w], capsys, "cannot read")
    run_bad(["evaluate", samples, "--ref-stats", tmp_path / "none.npz", *w], capsys, "does not exist")
    run_bad(["evaluate", samples, "--ref", big, *save, *w], capsys, "64x64", "32x32", "resize")
    run_bad(["evaluate", samples, "--ref", mixed, *w], capsys, "zz.png is 40x40", "one size")
    run_bad(["evaluate", samples, "--ref", tmp_path / "nope", *save, *w], capsys, "reference folder", "does not exist")
    run_bad(["evaluate", samples, "--ref", ref, "--ref-stats", tmp_path / "small.npz", *w], capsys, "not both")
    run_bad(["evaluate", samples, "--ref", bomb, *save, *w], capsys, "bomb.png", "decompression-bomb")
    run_bad(["evaluate", bomb, "--domain", "faces"], capsys, "decompression-bomb")  # as samples too
    run_bad(["evaluate", samples, "--ref", ref, "--save-stats", tmp_path / "out.txt", *w], capsys, ".npz")
    run_bad(["evaluate", samples, "--ref", ref, "--save-stats", tmp_path / "no" / "out.npz", *w], capsys,
            "does not exist")
    np.savez(tmp_path / "valid.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    run_bad(["evaluate", samples, "--ref-stats", tmp_path / "valid.npz", "--save-stats", tmp_path / "valid.npz", *w],
            capsys, "would overwrite the input")
    run_bad(["evaluate", samples, "--save-stats", tmp_path / "x.npz", "--fid", *w], capsys, "needs a reference")
    one = sample_folder(tmp_path / "one", 1, 1)
    run_bad(["evaluate", one, "--ref", ref, *w], capsys, "at least 2")
    assert listing(samples, ref, big, bomb) == before
    assert not (tmp_path / "out.npz").exists() and not (tmp_path / "x.npz").exists()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels (a decompression bomb's shape), no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_fid_under_two_workers_equals_one(weights, tmp_path, capsys):
    """Under torchrun each worker embeds its block of samples and reference; the sums are all-reduced."""
    from test_distributed import torchrun

    samples = sample_folder(tmp_path / "s", 5, 21)
    ref = faces_folder(tmp_path / "ref", 5, 22)
    args = ["evaluate", samples, "--ref", ref, "--inception-weights", weights, "--device", "cpu"]
    run_ok([*args, "--out", tmp_path / "one.json", "--save-stats", tmp_path / "one.npz"], capsys)
    res = torchrun([*args, "--out", tmp_path / "two.json", "--save-stats", tmp_path / "two.npz"], tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert two["world_size"] == 2 and two["fid_n"] == one["fid_n"] == 5
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-6)
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        np.testing.assert_allclose(a["mu"], b["mu"], rtol=1e-6, atol=1e-9)
        assert int(a["n"]) == int(b["n"]) == 5


def test_tune_dmcmc_scores_a_user_model_by_fid_against_a_reference(weights, unet_folder, tmp_path, capsys,
                                                                   monkeypatch):
    """tune-dmcmc on a model without a domain: FID against --ref (a folder) or --ref-stats (what evaluate
    --save-stats writes), each row's value equal to FID computed directly on the same samples. The 2048-D
    Frechet formula (two 11-s eigendecompositions per row here; checked against torch-fidelity above) is
    replaced by its mean and trace terms, which the same Inception statistics feed."""
    import ddmkit
    from ddmkit.dmcmc.tune import fid_metric

    monkeypatch.setattr(fid, "frechet_distance_gaussians",
                        lambda m1, s1, m2, s2: float(((m1 - m2) ** 2).sum() + abs(np.trace(s1) - np.trace(s2))))

    ref = faces_folder(tmp_path / "ref", 6, 3, size=16)
    clf = tmp_path / "clf"
    ddmkit.train_noise_classifier(unet_folder, torch.rand(8, 3, 16, 16) * 2 - 1, out=clf, steps=2, k=16, batch_size=4)
    base = ["tune-dmcmc", "--model", unet_folder, "--noise-classifier", clf, "--integrators", "kar1", "--etas", "0.5",
            "--skip-shares", "0.3", "--outputs-per-chain", "2", "--num", "4", "--score-seeds", "1",
            "--target-nfe", "40", "--inception-weights", weights, "--quiet"]
    run_ok(base + ["--ref", ref / "images", "--out", tmp_path / "t.json"], capsys)
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["metric"] == "fid_vs_images" and len(t["rows"]) == 2 and all(r["metric"] > 0 for r in t["rows"])
    plain = next(r for r in t["rows"] if not r["dlg"])
    den = ddmkit.load_model(unet_folder)
    x = ddmkit.sample(den, 4, seed=0, integrator="kar1", steps=plain["steps"], batch_size=100).images
    assert fid_metric(den, ref / "images", str(weights))[1](x) == pytest.approx(plain["metric"], rel=1e-9)
    run_ok(["evaluate", ref, "--save-stats", tmp_path / "ref.npz", "--inception-weights", weights], capsys)
    run_ok(base + ["--ref-stats", tmp_path / "ref.npz", "--out", tmp_path / "s.json"], capsys)
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["metric"] == "fid_vs_ref.npz"
    assert next(r for r in s["rows"] if not r["dlg"])["metric"] == pytest.approx(plain["metric"], rel=1e-6)
    for flag, message in (("--ref", "is not a folder of images"), ("--ref-stats", "does not exist")):
        rc = main([str(a) for a in base + [flag, tmp_path / "missing", "--out", tmp_path / "u.json"]])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and message in err and "\n" not in err and not (tmp_path / "u.json").exists()
