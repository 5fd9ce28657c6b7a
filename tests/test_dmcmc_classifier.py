"""The noise-level classifier: architecture, grid, training on mixture samples, files, compatibility."""
import json
import math

import numpy as np
import pytest
import torch

from ddmkit.dmcmc.classifier_data import mixture_data
from ddmkit.dmcmc.classifier_training import ClassifierTrainConfig, evaluate_classifier, train_noise_classifier
from ddmkit.dmcmc.noise_classifier import NoiseLevelClassifier, check_compatible, exact_mixture_classifier, load_classifier, paths_for
from ddmkit.dmcmc.noise_net import NoiseLevelNet, pool_strides
from ddmkit.errors import DdmkitError
from ddmkit.mixtures import GMMDenoiser, random_mixture
from ddmkit.schedules import ve_classifier_grid

torch.set_num_threads(1)


def test_pool_strides_match_the_paper():
    assert pool_strides(32) == [2, 2, 2, 2]  # CIFAR10: 32 -> 16 -> 8 -> 4 -> 2
    assert pool_strides(256) == [4, 4, 4, 2]  # CelebA-HQ: 256 -> 64 -> 16 -> 4 -> 2 (pitfall 10)
    assert pool_strides(64) == [4, 2, 2, 2]
    assert pool_strides(16) == [2, 2, 2, 1]
    assert pool_strides(48) == []


def test_cnn_is_the_paper_network():
    net = NoiseLevelNet((3, 32, 32), 1000, input_norm="none")
    # 4 x (conv3x3 -> ReLU -> AvgPool2), 3->32->64->128->256, Linear(1024, 1000): 1.41M parameters
    assert net.head.in_features == 1024 and net.head.out_features == 1000
    assert sum(p.numel() for p in net.parameters()) == 1_413_416
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    big = NoiseLevelNet((3, 256, 256), 1000, input_norm="none")
    assert [m.stride for m in big.features if isinstance(m, torch.nn.AvgPool2d)] == [4, 4, 4, 2]
    assert big(torch.randn(1, 3, 256, 256)).shape == (1, 1000)
    rms = NoiseLevelNet((1, 32, 32), 50)  # ddmkit's default adds log rms(x) and 32 bumps of it to the head
    assert rms.head.in_features == 1024 + 1 + 32 and rms(torch.randn(3, 1, 32, 32)).shape == (3, 50)
    raw = NoiseLevelNet((3, 32, 32), 50, input_norm="raw+logrms")
    assert raw.head.in_features == 1057 and raw(torch.randn(2, 3, 32, 32)).shape == (2, 50)
    odd = NoiseLevelNet((3, 24, 40), 10)
    assert odd(torch.randn(2, 3, 24, 40)).shape == (2, 10)
    mlp = NoiseLevelNet((5,), 20)
    assert mlp(torch.randn(4, 5)).shape == (4, 20)


def test_grid_is_geometric_descending_without_sigma_min():
    g = ve_classifier_grid(0.01, 50.0, 1000).double()
    assert g[0] == pytest.approx(50.0, rel=1e-6)
    assert g[-1] == pytest.approx(0.010086, rel=1e-4)  # the spec's smallest CIFAR10 entry
    ratios = g[1:] / g[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, 0.99152), atol=1e-5)


def _mixture16():
    m = random_mixture(16, 3, seed=3)
    return m, GMMDenoiser(m, sigma_min=0.01, sigma_max=50.0)


def test_trained_classifier_recovers_noise_levels(tmp_path):
    """A few seconds of training on exact 16-D mixture samples; noise levels from 0.5 up are identifiable
    (below the components' std 0.3-0.8 they are not, for any classifier)."""
    m, den = _mixture16()
    cfg = ClassifierTrainConfig(k=64, steps=300, batch_size=256, lr=3e-3, checkpoint_every=10**6)
    meta = train_noise_classifier(mixture_data(m, seed=0), (16,), None, den.sigma_min, den.sigma_max,
                                  tmp_path / "clf", cfg, progress=False)
    assert meta["held_out"]["n"] > 0 and 0 <= meta["held_out"]["top1_accuracy"] <= 1
    clf = load_classifier(tmp_path / "clf")
    gen = torch.Generator().manual_seed(99)
    k = torch.randint(0, 64, (3000,), generator=gen)
    keep = clf.grid[k] >= 0.5
    k = k[keep]
    x0 = m.sample(len(k), gen)[0]
    x = x0 + clf.grid[k][:, None] * torch.randn(x0.shape, generator=gen)
    err = (clf.sigma(x).log() - clf.grid[k].log()).abs()
    spacing = math.log(50 / 0.01) * 0.999 / 63
    assert err.median() < 0.3, err.median()  # within ~2 grid levels (spacing 0.135)
    assert err.median() < 2.5 * spacing
    chance = (torch.log(clf.grid[torch.randint(0, 64, (len(k),), generator=gen)]) - clf.grid[k].log()).abs().median()
    assert err.median() < chance / 5


def test_exact_mixture_classifier_is_sharp_at_high_noise():
    m, den = _mixture16()
    clf = exact_mixture_classifier(m, den.sigma_min, den.sigma_max, 100)
    x0 = m.sample(400, torch.Generator().manual_seed(0))[0]
    k = torch.arange(400) % 40  # the 40 highest levels (sigma >= 1.1)
    x = x0 + clf.grid[k][:, None] * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    err = (clf.sigma(x).log() - clf.grid[k].log()).abs()
    assert err.median() < 0.25


def test_training_resumes_to_the_same_weights(tmp_path):
    m = random_mixture(4, 3, seed=0)
    data = mixture_data(m, seed=1, held_out=200)
    cfg = ClassifierTrainConfig(k=16, steps=24, batch_size=32, checkpoint_every=4)
    args = (data, (4,), None, 0.01, 20.0)
    full = train_noise_classifier(*args, tmp_path / "a", cfg, progress=False)
    def interrupt_at_10(info):
        if info["step"] == 10:
            raise KeyboardInterrupt  # as if killed after step 10: the last checkpoint is step 8's

    with pytest.raises(KeyboardInterrupt):
        train_noise_classifier(*args, tmp_path / "b", cfg, progress=False, callback=interrupt_at_10)
    assert not paths_for(tmp_path / "b")[1].exists()
    assert json.loads((tmp_path / "b.ckpt" / "state.json").read_text())["step"] == 8
    resumed = train_noise_classifier(*args, tmp_path / "b", cfg, progress=False)
    assert resumed["training"]["steps_done"] == 24 == full["training"]["steps_done"]
    a, b = load_classifier(tmp_path / "a"), load_classifier(tmp_path / "b")
    for (ka, va), (kb, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert resumed["held_out"] == full["held_out"]
    assert not (tmp_path / "b.ckpt").exists()
    meta = json.loads((tmp_path / "a.json").read_text())
    for key in ("sigma_grid", "input_normalisation", "held_out", "architecture", "training", "format"):
        assert key in meta
    assert meta["sigma_grid"]["k"] == 16 and meta["sigma_grid"]["sigma_max"] == 20.0


def test_compatibility_checks(tmp_path):
    m = random_mixture(4, 3, seed=0)
    den = GMMDenoiser(m, sigma_min=0.01, sigma_max=20.0)
    cfg = ClassifierTrainConfig(k=8, steps=2, batch_size=8, checkpoint_every=100)
    train_noise_classifier(mixture_data(m, 0, 50), (4,), None, 0.01, 20.0, tmp_path / "ok", cfg, progress=False,
                           meta={"model_identity": {"name": "gmm", "sha256": "a" * 64}})
    clf = load_classifier(tmp_path / "ok")
    check_compatible(clf, den, {"name": "gmm", "sha256": "a" * 64})
    check_compatible(clf, den, {"name": "gmm", "sha256": None})
    with pytest.raises(DdmkitError, match="sha256"):
        check_compatible(clf, den, {"name": "other", "sha256": "b" * 64})
    with pytest.raises(DdmkitError, match="sigma_max"):
        check_compatible(clf, GMMDenoiser(m, sigma_min=0.01, sigma_max=80.0))
    with pytest.raises(DdmkitError, match="shape"):
        check_compatible(clf, GMMDenoiser(random_mixture(5, 2, seed=0), sigma_min=0.01, sigma_max=20.0))
    with pytest.raises(DdmkitError, match="not found"):
        load_classifier(tmp_path / "missing")
    paths_for(tmp_path / "ok")[0].write_bytes(b"garbage")
    with pytest.raises(DdmkitError, match="corrupt"):
        load_classifier(tmp_path / "ok")


def test_evaluate_reports_by_decade():
    m, den = _mixture16()
    clf = exact_mixture_classifier(m, den.sigma_min, den.sigma_max, 50)
    res = evaluate_classifier(clf.net, clf.grid, m.sample(200, torch.Generator().manual_seed(0))[0])
    assert set(res) >= {"top1_accuracy", "mean_abs_dlog_sigma", "median_abs_dlog_sigma", "mean_abs_dlog_sigma_by_decade"}
    assert np.isfinite(res["mean_abs_dlog_sigma"])


@pytest.mark.parametrize("domain,shape", [("faces", (3, 32, 32)), ("digits", (1, 32, 32))])
def test_shipped_classifier_matches_the_shipped_model(domain, shape):
    """The shipped file covers the DDPM models' sigma range [0.0100, 157.4] with K = 1000 levels, is
    small, and passes the compatibility check against a model of that schedule, shape and domain."""
    from diffusers import DDPMScheduler

    from ddmkit.denoisers import VPEpsDenoiser
    from ddmkit.dmcmc.run import shipped_classifier_path

    path = shipped_classifier_path("default" if domain == "faces" else domain)
    assert paths_for(path)[0].stat().st_size < 10 * 2**20
    clf = load_classifier(path)
    assert clf.k == 1000 and clf.meta["domain"] == domain
    assert clf.sigma_min == pytest.approx(0.0100, abs=1e-4) and clf.sigma_max == pytest.approx(157.4, abs=0.1)
    assert clf.meta["held_out"]["mean_abs_dlog_sigma"] < 0.3
    den = VPEpsDenoiser(lambda x, t: torch.zeros_like(x), DDPMScheduler().alphas_cumprod, shape)
    den.domain = domain
    check_compatible(clf, den, {"name": "default", "sha256": "f" * 64})
    den.domain = "other"
    with pytest.raises(DdmkitError, match="data"):
        check_compatible(clf, den, None)
    x = torch.randn(2, *shape) * 3.0
    assert clf.sigma(x).shape == (2,)


def test_argmax_prediction_equals_the_argmax_of_the_logits():
    """predict (argmax on the classifier's device, indices only) == argmax of the full logits; one call each."""
    from ddmkit.dmcmc.run import shipped_classifier_path

    clf = load_classifier(shipped_classifier_path("default"))
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32) * torch.logspace(-2, 2, 16).reshape(-1, 1, 1, 1)
    before = clf.calls
    idx = clf.predict(x)
    assert idx.device.type == "cpu" and idx.dtype == torch.int64 and clf.calls == before + 1
    assert torch.equal(idx, clf.logits(x).argmax(dim=1))
    assert torch.equal(clf.sigma(x), clf.grid[idx])
    assert len(set(idx.tolist())) > 8  # noise levels over four decades get different grid levels


def _noisy_faces(n: int = 64, seed: int = 0):
    from ddmkit.data.faces import sample_faces, to_tensor_range

    x0 = torch.from_numpy(to_tensor_range(sample_faces(n, seed=3)[0]))
    g = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.empty(n).uniform_(math.log(0.02), math.log(150.0), generator=g))
    return x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=g), sigma


def test_bf16_classifier_predicts_the_same_levels():
    """bf16 autocast (the GPU speed lever) keeps the shipped classifier's predictions: logits stay float32,
    the error against the true level moves by < 0.01 in log sigma, and bf16 and fp32 predictions differ by
    < 3 grid spacings (0.0097 in log sigma each) on average. fp16 is refused on CPU."""
    from ddmkit.dmcmc.run import shipped_classifier_path

    clf = load_classifier(shipped_classifier_path("default"))
    x, sigma = _noisy_faces()
    s32 = clf.sigma(x)
    assert clf.set_precision("bf16") is clf and clf.dtype == "bf16"
    assert clf.logits(x).dtype == torch.float32
    s16 = clf.sigma(x)
    err32, err16 = ((s.log() - sigma.log()).abs().mean().item() for s in (s32, s16))
    assert err32 < 0.15 and abs(err16 - err32) < 0.01
    assert (s16.log() - s32.log()).abs().mean().item() < 3 * 0.0097
    with pytest.raises(DdmkitError, match="CUDA"):
        clf.set_precision("fp16")
    with pytest.raises(DdmkitError, match="dtype"):
        clf.set_precision("int8")
    assert torch.equal(clf.set_precision("fp32").sigma(x), s32)


def test_compiled_classifier_equals_the_eager_one():
    """torch.compile changes the kernels, not the function: the same levels (float rounding may move a tie)."""
    clf = NoiseLevelClassifier(NoiseLevelNet((16,), 64), 0.01, 50.0)
    torch.manual_seed(1)
    x = torch.randn(32, 16) * torch.logspace(-2, 1.5, 32)[:, None]
    eager = clf.predict(x)
    assert clf.compile() is clf and clf.compiled
    compiled = clf.predict(x)
    assert (compiled == eager).float().mean().item() >= 0.95 and (compiled - eager).abs().max().item() <= 1


def test_default_training_length_depends_on_the_kind_of_data(tmp_path, monkeypatch):
    """steps=None trains for the data kind's default (vectors 20,000, images 3,000: DEFAULT_STEPS), and the
    file records the steps it used; the CLI's --steps default is None, so it follows the same table."""
    from ddmkit.dmcmc import classifier_training as ct

    assert ct.default_steps((16,)) == 20_000 and ct.default_steps((3, 32, 32)) == ct.default_steps((1, 32, 32)) == 3_000
    assert ClassifierTrainConfig().steps is None
    monkeypatch.setitem(ct.DEFAULT_STEPS, "vectors", 7)
    m, den = _mixture16()
    meta = train_noise_classifier(mixture_data(m, seed=0, held_out=200), (16,), None, den.sigma_min, den.sigma_max,
                                  tmp_path / "clf", ClassifierTrainConfig(k=8, batch_size=16), progress=False)
    assert meta["training"]["steps"] == 7 and meta["training"]["steps_done"] == 7
