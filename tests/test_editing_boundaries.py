"""Boundaries: SVM fitting, files, model checks, moves and conditional normals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ddmkit.denoisers import VPEpsDenoiser
from ddmkit.editing.attribute import AttributeBoundary
from ddmkit.editing.files import load_boundary, read_boundary_file, resolve_boundary, save_boundary
from ddmkit.editing.fitting import fit_boundaries
from ddmkit.editing.plan import Distance, EditPlan, parse_distance, parse_sweep
from ddmkit.editing.settings import MixingStep
from ddmkit.editing.svm import condition_normal, fit_svm, move, split_train_test
from ddmkit.editing.labelled import labelled_faces
from ddmkit.errors import DdmkitError


def tiny_denoiser(seed: int = 0) -> VPEpsDenoiser:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()
    return VPEpsDenoiser(unet, DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, (3, 16, 16), name=f"tiny{seed}")


@pytest.fixture(scope="module")
def den():
    return tiny_denoiser(0)


@pytest.fixture(scope="module")
def fitted(den):
    x, y, info = labelled_faces(16, "smiling", resolution=16)
    return fit_boundaries(den, x, y, attribute="smiling", step=MixingStep(60, 5), data=info)


def separable(n=200, d=500, margin=3.0, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, d)) + np.where(y == 1, margin, -margin)[:, None] * u[None, :]
    return x.reshape(n, 5, d // 50, 10), y, u


def test_fit_recovers_the_direction_of_separable_data():
    # classes 16 std apart along u in 500 dims, 150 training points: the max-margin normal also
    # fits some noise (cosine 0.92 at seeds 0-2; a random direction has ~0.045)
    x, y, u = separable(margin=8.0)
    b = fit_svm(x[:150], y[:150], x[150:], y[150:])
    n = b.normal.reshape(-1).astype(np.float64)
    assert b.normal.shape == (5, 10, 10) and abs(np.linalg.norm(n) - 1) < 1e-6
    assert n @ u > 0.88  # points to label 1 and along the true direction
    assert b.stats["test_accuracy"] > 0.95 and b.stats["train_accuracy"] == 1.0
    assert b.stats["kernel"] == "linear" and b.stats["C"] == 1.0
    # -1/+1 labels mean the same; projections are through the origin, the margin adds b/|w|
    b2 = fit_svm(x[:150], np.where(y[:150] == 1, 1, -1))
    assert np.allclose(b2.normal, b.normal)
    p = b.project(torch.from_numpy(x[:3]).float())
    assert np.allclose(b.margin(x[:3]) - p, b.intercept / np.linalg.norm(b.coef), atol=1e-4)
    assert b.recommended_distance > 0


def test_single_class_is_refused():
    x, _, _ = separable(20, 100)
    with pytest.raises(DdmkitError, match="single class"):
        fit_svm(x, np.ones(20))
    with pytest.raises(DdmkitError, match="single class"):
        split_train_test(np.zeros(10), 0.5)
    with pytest.raises(DdmkitError, match="0/1 or -1/\\+1"):
        fit_svm(x, np.arange(20) % 3)


def test_fit_boundaries_end_to_end(fitted, den):
    assert set(fitted.spaces) == {"z", "h"}
    assert fitted["z"].shape == (3, 16, 16) and fitted["h"].shape == (16, 8, 8)
    m = fitted.meta
    assert m["t_m"] == 60 and m["n_inv"] == 5 and m["h_source"] == "last" and m["attribute"] == "smiling"
    assert m["model"]["sha256"] and m["grid_rule"].startswith("int(linspace")
    for s in ("z", "h"):
        st = fitted[s].stats
        assert st["n_train"] == 8 and st["n_test"] == 8 and st["test_accuracy"] is not None


def test_round_trip(tmp_path, fitted, den):
    path = save_boundary(tmp_path / "smile", fitted)
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    back = load_boundary(path, den)
    for s in ("z", "h"):
        assert np.array_equal(back[s].normal, fitted[s].normal)
        assert np.array_equal(back[s].coef, fitted[s].coef)
        assert back[s].intercept == fitted[s].intercept
        assert back[s].stats == json.loads(json.dumps(fitted[s].stats))
    assert back.meta == json.loads(json.dumps(fitted.meta))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["spaces"]["z"]["test_accuracy"] == fitted["z"].stats["test_accuracy"]
    assert resolve_boundary(str(tmp_path / "smile"), den).attribute == "smiling"


def test_mismatch_is_refused_unless_forced(tmp_path, fitted):
    path = save_boundary(tmp_path / "smile.safetensors", fitted)
    other = tiny_denoiser(1)
    with pytest.raises(DdmkitError, match="fitted for model .*--force"):
        load_boundary(path, other)
    assert load_boundary(path, other, force=True).attribute == "smiling"
    with pytest.raises(DdmkitError, match="t_m = 60, not 500"):
        load_boundary(path, tiny_denoiser(0), t_m=500)
    with pytest.raises(DdmkitError, match="shape"):  # shapes cannot be forced
        load_boundary(path, tiny_denoiser(0), force=True, h_shape=(16, 4, 4))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a boundary")
    with pytest.raises(DdmkitError, match="not a ddmkit boundary"):
        read_boundary_file(bad)
    with pytest.raises(DdmkitError, match="neither a file nor a shipped"):
        resolve_boundary("no-such-boundary")


def test_move_set_puts_the_projection_at_d():
    rng = np.random.default_rng(0)
    n = rng.standard_normal((3, 8, 8))
    n /= np.linalg.norm(n)
    x = torch.from_numpy(rng.standard_normal((5, 3, 8, 8))).float() * 3
    flat = lambda t: t.reshape(len(t), -1).double() @ torch.from_numpy(n).reshape(-1)  # noqa: E731
    for d in (-40.0, 0.0, 7.5):
        y = move(x, n, d, "set")
        assert torch.allclose(flat(y), torch.full((5,), d, dtype=torch.float64), atol=1e-4)
        # only the component along n changes
        resid = (y - x).reshape(5, -1).double()
        assert torch.allclose(resid, flat(y - x)[:, None] * torch.from_numpy(n).reshape(1, -1), atol=1e-5)
    y = move(x, n, 2.0, "add")
    assert torch.allclose(flat(y) - flat(x), torch.full((5,), 2.0, dtype=torch.float64), atol=1e-4)
    with pytest.raises(DdmkitError):
        move(x, n, 1.0, "push")
    for mode in ("set", "add"):  # a batch where no sample needs this direction
        assert move(x[:0], n, 1.0, mode).shape == (0, 3, 8, 8)


def test_conditional_normal_is_orthogonal():
    rng = np.random.default_rng(1)
    n1, n2, n3 = (v / np.linalg.norm(v) for v in rng.standard_normal((3, 100)))
    n1 = (n1 + 0.7 * n2) / np.linalg.norm(n1 + 0.7 * n2)
    c = condition_normal(n1, [n2]).astype(np.float64)
    expect = n1 - (n1 @ n2) * n2
    assert np.allclose(c, expect / np.linalg.norm(expect), atol=1e-6)
    assert abs(c @ n2) < 1e-6 and abs(np.linalg.norm(c) - 1) < 1e-6
    c2 = condition_normal(n1, [n2, n3]).astype(np.float64)
    assert abs(c2 @ n2) < 1e-6 and abs(c2 @ n3) < 1e-6
    with pytest.raises(DdmkitError, match="span"):
        condition_normal(n2, [n2])


def _boundary(name, normal, path):
    from ddmkit.editing.svm import Boundary

    b = Boundary("z", normal.astype(np.float32), normal.astype(np.float64), 0.0, {"recommended_distance": 4.0})
    meta = {"attribute": name, "t_m": 10, "n_inv": 3, "h_source": "last"}
    return AttributeBoundary({"z": b, "h": b}, meta, path=path)


def test_plan_with_condition_keeps_the_other_projection():
    rng = np.random.default_rng(2)
    a, c = rng.standard_normal((2, 3, 4, 4))
    a /= np.linalg.norm(a)
    c /= np.linalg.norm(c)
    ba, bc = _boundary("a", a, "a"), _boundary("c", c, "c")
    z = torch.from_numpy(rng.standard_normal((4, 3, 4, 4))).float()
    plan = EditPlan([(ba, Distance(5.0))], [bc], space="z")
    z2, h2, used = plan.apply(z, z)
    assert h2 is None and used == {"a": {"z": 5.0}}
    assert np.allclose(bc["z"].project(z2), bc["z"].project(z), atol=1e-4)  # condition held fixed
    plain, _, _ = EditPlan([(ba, Distance(5.0))], space="z").apply(z, z)
    assert np.allclose(ba["z"].project(plain), 5.0, atol=1e-4)
    # relative distances scale each space's recommended distance
    _, _, used = EditPlan([(ba, Distance(-1.5, relative=True))]).apply(z, z)
    assert used == {"a": {"z": -6.0, "h": -6.0}}
    with pytest.raises(DdmkitError, match="both edited and held fixed"):
        EditPlan([(ba, Distance(1.0))], [ba])


def test_distance_parsing():
    assert parse_distance("1.5x") == Distance(1.5, True) and parse_distance("-20") == Distance(-20.0)
    assert [d.value for d in parse_sweep("-2:2:5")] == [-2, -1, 0, 1, 2]
    assert all(d.relative for d in parse_sweep("-2x:2x:3"))
    for bad in ("abc", "1:2", "1:2x:3", "1:2:0"):
        with pytest.raises(DdmkitError):
            parse_sweep(bad) if ":" in bad else parse_distance(bad)
