"""The oracle sigma step (`--noise-classifier oracle`) and the DLG diagnostics (ESS per output, mode
switches, sigma*, the integrator from exact samples, mixture errors)."""
import json

import numpy as np
import pytest
import torch

from ddmkit.cli import main
from ddmkit.dmcmc import diagnostics as dg
from ddmkit.dmcmc.classifier import oracle_classifier
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
    x, nfe = dg.integrate_from_truth(gmm_2d, x0, np.full(4000, 1.5), "kar1", 30, seed=0)
    assert nfe == 2 * 30 - 3 + 1
    err = dg.mixture_errors(x, mix)
    floor = dg.mixture_errors(mix.sample(4000, torch.Generator().manual_seed(3))[0], mix)
    assert err["weight_error"] < 0.03 and err["std_error"] < 0.05 and err["mean_error"] < 0.06
    assert floor["std_error"] < 0.05 and floor["frechet"] < 0.1
    few, _ = dg.integrate_from_truth(gmm_2d, x0, np.full(4000, 1.5), "kar1", 3, seed=0)
    assert dg.mixture_errors(few, mix)["std_error"] > 3 * err["std_error"]  # two Heun/Euler steps from 1.5: too few
