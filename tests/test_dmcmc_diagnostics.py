"""The oracle sigma step (`--noise-classifier oracle`) and the DLG diagnostics (ESS per output, mode
switches, sigma*, the integrator from exact samples, mixture errors)."""
import json

import numpy as np
import pytest
import torch

from ddmkit.cli import main
from ddmkit.dmcmc import diagnostics as dg
from ddmkit.dmcmc.noise_classifier import oracle_classifier
from ddmkit.dmcmc.dlg import DLGConfig, DLGSampler
from ddmkit.errors import DdmkitError
from ddmkit.mixtures import GMMDenoiser, random_mixture

torch.set_num_threads(1)


def _exact_posterior_argmax(mixture, grid, x):
    """argmax_k p(k | x) with k uniform on the grid: the largest log p_{sigma_k}(x), level by level."""
    logp = torch.stack([mixture.log_prob(x, float(s)) for s in grid.double()], dim=1)
    return logp.argmax(dim=1), torch.softmax(logp, dim=1)


@pytest.mark.parametrize("which", ["2d", "16d"])
def test_oracle_sigma_step_is_the_exact_posterior_argmax(which, gmm_2d):
    den = gmm_2d if which == "2d" else GMMDenoiser(random_mixture(16, 4, seed=16))
    mix = den.mixture
    clf = oracle_classifier(den)
    assert clf.k == 1000 and clf.sigma_min == den.sigma_min and clf.sigma_max == den.sigma_max
    gen = torch.Generator().manual_seed(0)
    x0 = mix.sample(400, gen)[0]
    sig = torch.exp(torch.empty(400).uniform_(np.log(0.01), np.log(50.0), generator=gen))
    x = x0 + sig[:, None] * torch.randn(x0.shape, generator=gen)
    want, post = _exact_posterior_argmax(mix, clf.grid, x)
    assert torch.equal(clf.predict(x), want)
    assert torch.allclose(torch.softmax(clf.logits(x).double(), dim=1), post, atol=1e-5)
    sampler = DLGSampler(den, clf, DLGConfig(integrator="kar1", steps=3, eta=0.05, n_skip=1), chains=4)
    assert torch.equal(sampler.sigma_step(x, None), clf.grid[want].float())


def test_oracle_refuses_other_models():
    from ddmkit.denoisers import Denoiser

    class Net(Denoiser):
        sigma_min, sigma_max, sample_shape, name = 0.01, 80.0, (2,), "net"

    with pytest.raises(DdmkitError, match="needs an exact mixture"):
        oracle_classifier(Net())


def test_sample_dmcmc_with_the_oracle(tmp_path, mixture_json):
    out = tmp_path / "o"
    assert main(["sample", "--model", f"gmm:{mixture_json}", "--dmcmc", "--noise-classifier", "oracle", "--integrator",
                 "kar1", "--steps", "4", "--n-skip", "2", "--dlg-eta", "0.05", "--num", "20", "--chains", "10",
                 "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["dmcmc"]["noise_classifier"] == "oracle" and m["dmcmc"]["noise_classifier_sha256"] is None
    assert m["nfe"]["per_output"] == 2 + 5 + 1


def test_unknown_noise_classifier_name_exits_2_and_writes_nothing(tmp_path, mixture_json, capsys):
    out = tmp_path / "bad"
    assert main(["sample", "--model", f"gmm:{mixture_json}", "--dmcmc", "--noise-classifier", "orakel", "--num", "4",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'orakel' is not a known name (oracle" in err and "not found" in err
    assert not out.exists()
    assert main(["sample", "--model", "digits", "--dmcmc", "--noise-classifier", "oracle", "--num", "4",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "oracle needs an exact mixture" in err
    assert not out.exists()


def test_ess_per_output_reads_frozen_independent_and_ar1_chains():
    rng = np.random.default_rng(0)
    m, t = 400, 50
    frozen = np.repeat(rng.normal(size=(m, 1, 3)), t, axis=1)
    assert np.allclose(dg.ess_per_output(frozen), 1 / t)
    indep = rng.normal(size=(m, t, 3))
    assert np.all(np.abs(dg.ess_per_output(indep) - 1) < 0.15)  # chain means' variance from 400 chains: +-7%
    rho = 0.8
    ar = np.zeros((m, t, 2))
    ar[:, 0] = rng.normal(size=(m, 2))
    for i in range(1, t):
        ar[:, i] = rho * ar[:, i - 1] + np.sqrt(1 - rho**2) * rng.normal(size=(m, 2))
    lags = np.arange(1, t)
    want = 1 / (1 + 2 * ((1 - lags / t) * rho**lags).sum())
    assert np.all(np.abs(dg.ess_per_output(ar) / want - 1) < 0.2)
    assert np.all(np.abs(dg.autocorrelation(ar, [1, 2])[:, 0] - [rho, rho**2]) < 0.05)
    assert np.allclose(dg.ess_per_output(indep[:, :1]), 1.0)  # one output per chain: independent by construction
    assert np.isnan(dg.ess_per_output(np.zeros((5, 4, 1))))[0]


def test_chain_trace_and_switch_rate():
    chain = np.array([0, 1, 2, 0, 1, 2, 0, 1])  # chain 2 made only 2 outputs: T = 2
    v = np.arange(8)
    assert dg.chain_trace(chain, v).tolist() == [[0, 3], [1, 4], [2, 5]]
    frozen = np.repeat(np.arange(4)[:, None], 10, axis=1)
    s = dg.switch_rate(frozen)
    assert s["rate"] == 0 and s["independent_rate"] == pytest.approx(0.75)
    rng = np.random.default_rng(1)
    s = dg.switch_rate(rng.integers(0, 3, size=(300, 40)))
    assert abs(s["rate"] - 2 / 3) < 0.02 and abs(s["relative"] - 1) < 0.03
    summ = dg.sigma_star_summary(np.array([0.1, 1.0, 10.0]))
    assert summ["median"] == 1.0 and sum(summ["hist_counts"]) == 3


def test_integrator_from_exact_samples_recovers_the_mixture(gmm_2d):
    mix = gmm_2d.mixture
    x0 = mix.sample(4000, torch.Generator().manual_seed(2))[0]
    x, nfe, start = dg.integrate_from_truth(gmm_2d, x0, np.full(4000, 1.5), "kar1", 30, seed=0)
    assert np.all(start == 1.5)
    assert nfe == 2 * 30 - 3 + 1
    err = dg.mixture_errors(x, mix)
    floor = dg.mixture_errors(mix.sample(4000, torch.Generator().manual_seed(3))[0], mix)
    assert err["weight_error"] < 0.03 and err["std_error"] < 0.05 and err["mean_error"] < 0.06
    assert floor["std_error"] < 0.05 and floor["frechet"] < 0.1
    few, _, _ = dg.integrate_from_truth(gmm_2d, x0, np.full(4000, 1.5), "kar1", 3, seed=0)
    assert dg.mixture_errors(few, mix)["std_error"] > 3 * err["std_error"]  # two Heun/Euler steps from 1.5: too few
    clf = oracle_classifier(gmm_2d)
    _, _, est = dg.integrate_from_truth(gmm_2d, x0[:500], np.full(500, 1.5), "kar1", 3, start_sigma=clf.sigma)
    assert np.median(np.abs(np.log(est / 1.5))) < 0.5 and len(np.unique(est)) > 10  # the oracle's estimates of 1.5


# ----------------------------------------------------------------------------- the fixes' switches

def _overshooting_vp():
    """A VP 'model' whose epsilon is -3 everywhere: D = x + 3 sigma leaves [-1, 1], so clipping matters."""
    from diffusers import DDPMScheduler

    from ddmkit.denoisers import VPEpsDenoiser

    acp = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod
    return VPEpsDenoiser(lambda x, t: torch.full_like(x, -3.0), acp, (2,))


def test_clip_view_changes_only_the_view():
    from ddmkit.denoisers import view

    den = _overshooting_vp()
    x, s = torch.tensor([[0.2, -0.5], [0.9, 0.1]]), torch.tensor([0.5, 2.0])
    raw = x + 3 * s[:, None]
    assert torch.allclose(den(x, s), raw.clamp(-1, 1)) and den.clip_denoised
    assert torch.allclose(view(den, clip_denoised=False)(x, s), raw) and den.clip_denoised  # the shared model is unchanged
    assert torch.allclose(view(den, clip_denoised=True)(x, s), raw.clamp(-1, 1))


@pytest.mark.parametrize("clip", [None, True, False])
def test_langevin_clip_sets_the_score_and_counts_its_calls(clip):
    from ddmkit.dmcmc.noise_classifier import NoiseLevelClassifier
    from ddmkit.dmcmc.noise_net import NoiseLevelNet
    from ddmkit.integrators import PerSampleGenerator

    den = _overshooting_vp()
    clf = NoiseLevelClassifier(NoiseLevelNet((2,), 10, data_range=(-1, 1)), den.sigma_min, den.sigma_max)
    sampler = DLGSampler(den, clf, DLGConfig(integrator="kar1", steps=3, eta=0.1, n_skip=1, langevin_clip=clip), chains=3)
    x, s = torch.tensor([[0.2, -0.5], [0.9, 0.1], [0.0, 0.0]]), torch.tensor([0.5, 2.0, 1.0])
    eta = sampler.eta
    got = sampler.langevin(x, s, eta, PerSampleGenerator([1, 2, 3]))
    z = PerSampleGenerator([1, 2, 3]).randn((3, 2))
    d = x + 3 * s[:, None]
    d = d if clip is False else d.clamp(-1, 1)  # None: as the model, which clips
    assert torch.allclose(got, x + 0.5 * eta * (d - x) / s[:, None] ** 2 + eta**0.5 * z, atol=1e-5)
    assert sampler.counter.nfe == 1 and den.clip_denoised


def test_burn_in_stopped_at_a_noise_level(gmm_2d):
    from ddmkit.dmcmc.dlg import dlg_sample, parse_burn_in

    b = parse_burn_in("8:0:2@eta:0.5")
    assert (b.kar2_steps, b.perturb, b.warmup, b.stop) == (8, 0.0, ((2, None),), 0.5) and b.describe() == "8:0:2@eta:0.5"
    assert parse_burn_in("20:0.5:10@0.5,10@eta").stop == 0 and parse_burn_in("auto").describe() == "20:0.5:10@0.5,10@eta"
    for bad in ("8:0:2@eta:-1", "2:0:2@eta:0.5", "8:0:2@eta:0.5:1"):
        with pytest.raises(DdmkitError, match="--burn-in"):
            parse_burn_in(bad)
    clf = oracle_classifier(gmm_2d)
    sampler = DLGSampler(gmm_2d, clf, DLGConfig(integrator="kar1", steps=3, eta=0.01, n_skip=1, burn_in=b), chains=400)
    x, sigma, nfe = sampler.burn_in(list(range(400)), [0] * 400)
    assert nfe == 2 * (8 - 2) + 2  # Heun steps between sigma_max and 0.5, no step to 0, two warm-up steps
    assert 0.3 < float(sigma.median()) < 0.8  # the oracle reads the level the integration stopped at
    res = dlg_sample(gmm_2d, clf, DLGConfig(integrator="kar1", steps=3, eta=0.01, n_skip=1, burn_in=b), num=20, chains=10)
    assert res.nfe["burn_in_per_chain"] == 14 and res.nfe["per_output"] == 1 + 3 + 1


def test_langevin_clip_flag(tmp_path, mixture_json, capsys):
    base = ["sample", "--model", f"gmm:{mixture_json}", "--num", "4", "--quiet"]
    assert main(base + ["--dmcmc", "--noise-classifier", "oracle", "--langevin-clip", "off", "--steps", "3", "--n-skip", "1",
                        "--chains", "4", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["dmcmc"]["langevin_clip"] is False
    assert main(base + ["--langevin-clip", "off", "--out", str(tmp_path / "b")]) == 2
    assert "--langevin-clip applies to --dmcmc" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_manifest_reports_the_mixing_and_warns_about_near_copies(tmp_path, mixture_json, capsys):
    """Chains that barely move (tiny eta, 4 outputs each) read about 1/4 effective samples per output."""
    base = ["sample", "--model", f"gmm:{mixture_json}", "--dmcmc", "--noise-classifier", "oracle", "--integrator", "kar1",
            "--steps", "3", "--n-skip", "1", "--quiet"]
    assert main(base + ["--dlg-eta", "1e-5", "--num", "400", "--chains", "100", "--out", str(tmp_path / "m")]) == 0
    mix = json.loads((tmp_path / "m" / "manifest.json").read_text())["mixing"]
    assert mix["outputs_per_chain"] == 4 and 0.2 < mix["ess_per_output"]["median"] < 0.35
    assert mix["lag1_autocorrelation"]["median"] > 0.9 and mix["sigma_star"]["n"] == 400
    assert "near-copies" in capsys.readouterr().err
    assert main(base + ["--dlg-eta", "0.05", "--num", "100", "--chains", "100", "--out", str(tmp_path / "one")]) == 0
    assert json.loads((tmp_path / "one" / "manifest.json").read_text())["mixing"]["ess_per_output"]["median"] == 1.0
    assert "near-copies" not in capsys.readouterr().err
