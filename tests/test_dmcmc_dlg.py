"""The DLG sampler on an exact 2-D Gaussian mixture: distribution, NFE accounting, the selection rule,
persistence, reproducibility and divergence handling."""
import math

import numpy as np
import pytest
import torch

from ddmkit.denoisers import Denoiser
from ddmkit.dmcmc import dlg as dlg_module
from ddmkit.dmcmc.noise_classifier import exact_mixture_classifier
from ddmkit.dmcmc.dlg import DLGConfig, DLGSampler, dlg_sample, parse_burn_in
from ddmkit.errors import DdmkitError
from ddmkit.mixtures import GaussianMixture, GMMDenoiser, frechet_to_mixture
from ddmkit.sampling import sample

torch.set_num_threads(1)

MIX = GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[-3.0, 0.0], [3.0, 1.0], [0.0, 4.0]]),
                      torch.tensor([[0.5, 0.3], [0.4, 0.6], [0.3, 0.3]]))
DEN = GMMDenoiser(MIX)  # sigma in [0.002, 80]
CLF = exact_mixture_classifier(MIX, DEN.sigma_min, DEN.sigma_max, 100)

# a generous budget per integrator: N for kar (2N-3 NFE), rd/em/pf/ddim (N NFE); rk45 is adaptive
BUDGET = {"kar1": 12, "kar2": 12, "rd": 60, "em": 60, "pf": 60, "rk45": 1, "ddim": 30}


@pytest.mark.parametrize("integrator", list(BUDGET))
def test_dlg_with_each_integrator_gives_the_mixture(integrator):
    """2000 chains, one output each. Tolerances: component weights +-0.05 (standard error with 2000 chains,
    whose component hardly ever changes, is 0.011; the burn-in's warm-up at eta 0.5 moves ~0.025 of mass
    on this mixture), means +-0.1 (standard error <= 0.6/sqrt(400) = 0.03), within-component std ratio
    0.8..1.15 (standard error ~0.035; DLG is biased -- no MH correction, argmax sigma, min-sigma choice,
    spec section 11 -- and measured 0.86..1.0 here)."""
    res = dlg_sample(DEN, CLF, DLGConfig(integrator=integrator, steps=BUDGET[integrator], eta=0.05, n_skip=5),
                     num=2000, chains=2000, seed=0)
    x = res.x
    assert x.shape == (2000, 2) and torch.isfinite(x).all()
    comp = MIX.assign(x)
    w = torch.bincount(comp, minlength=3).double() / len(x)
    assert (w - MIX.weights).abs().max() < 0.05, w
    for k in range(3):
        xk = x[comp == k].double()
        assert (xk.mean(0) - MIX.means[k]).abs().max() < 0.1
        ratio = xk.std(0) / MIX.stds[k]
        assert ((ratio > 0.8) & (ratio < 1.15)).all(), (k, ratio)
    # every integration started at its chain's own low sigma, not at sigma_max (pitfall 5)
    assert np.median(res.sigma_star) < 2.0 and res.sigma_star.max() < DEN.sigma_max
    assert sorted(res.chain.tolist()) == list(range(2000))


def test_dlg_beats_plain_sampling_at_a_small_budget():
    res = dlg_sample(DEN, CLF, DLGConfig(integrator="kar1", steps=4, eta=0.05, n_skip=4), num=2000, chains=500, seed=1)
    plain = sample(DEN, integrator="kar1", steps=6, num=2000, seed=1, batch_size=2000)
    assert res.nfe["per_output"] == 4 + 5 + 1 and plain.nfe_per_sample == 9 + 1
    assert frechet_to_mixture(res.x, MIX) < 0.5 * frechet_to_mixture(plain.x, MIX)


@pytest.mark.parametrize("integrator,steps,nfe_int", [("kar1", 5, 7), ("kar2", 4, 5), ("rd", 6, 6), ("em", 5, 5),
                                                      ("pf", 7, 7), ("ddim", 3, 3), ("rk45", 1, None)])
def test_nfe_accounting_is_exact(integrator, steps, nfe_int):
    calls = []

    class Counting(Denoiser):
        sigma_min, sigma_max, sample_shape, data_range = DEN.sigma_min, DEN.sigma_max, DEN.sample_shape, None

        def denoise(self, x, sigma):
            calls.append(len(x))
            return DEN(x, sigma)

    clf = exact_mixture_classifier(MIX, DEN.sigma_min, DEN.sigma_max, 30)
    res = dlg_sample(Counting(), clf, DLGConfig(integrator=integrator, steps=steps, eta=0.05, n_skip=3),
                     num=50, chains=20, seed=0)
    nfe = res.nfe
    if nfe_int is None:
        nfe_int = nfe["integrator_per_output"]  # measured; differs between rounds of 20 and of 10 chains
        assert nfe_int >= 6
    assert nfe["mcmc_per_output"] == 3 and nfe["tweedie_per_output"] == 1
    assert nfe["integrator_per_output"] == nfe_int
    assert nfe["per_output"] == 3 + nfe_int + 1
    # burn-in: KAR2 with N = 20 (2N - 3 = 37) + 10 + 10 warm-up Langevin steps = 57 (spec section 5)
    assert nfe["burn_in_per_chain"] == 57 and nfe["burn_in_total"] == 57 * 20
    assert nfe["burn_in_amortised_per_output"] == pytest.approx(57 * 20 / 50)
    rounds = math.ceil(50 / 20)
    assert nfe["rounds"] == rounds
    # classifier passes: 1 after the perturbation + 20 warm-up + n_skip per round; not in the NFE
    assert nfe["classifier_calls"] == 21 + 3 * rounds
    assert nfe["model_calls_batched"] == len(calls)
    if integrator != "rk45":
        assert len(calls) == 57 + rounds * (3 + nfe_int + 1)
    assert sorted(calls[:57]) == [20] * 57  # the burn-in is batched over the chains


def test_classifier_calls_count_only_this_run_when_the_classifier_is_shared():
    """tune-dmcmc and the benchmarks reuse one classifier across runs: each run reports its own passes."""
    clf = exact_mixture_classifier(MIX, DEN.sigma_min, DEN.sigma_max, 30)
    cfg = DLGConfig(integrator="kar1", steps=3, eta=0.05, n_skip=2)
    first = dlg_sample(DEN, clf, cfg, num=20, chains=10, seed=0).nfe
    second = dlg_sample(DEN, clf, cfg, num=20, chains=10, seed=0).nfe
    assert first["classifier_calls"] == second["classifier_calls"] == 21 + 2 * 2
    assert clf.calls == 2 * (21 + 2 * 2)


def test_min_sigma_selection_is_strict_and_counts_the_segment_start(monkeypatch):
    """Classifier outputs scripted per step; the state handed over is the first strict minimum."""
    sampler = DLGSampler(DEN, CLF, DLGConfig(integrator="kar1", steps=3, eta=0.05, n_skip=4), chains=3, seed=0)
    state = sampler.init_state()
    start = state.sigma.clone()
    script = iter([
        torch.stack([start[0] * 2, start[1] * 0.5, start[2]]),  # chain 2: equal to the start: not taken
        torch.stack([start[0] * 3, start[1] * 0.5, start[2] * 0.5]),  # chain 1: equal, keeps step 1
        torch.stack([start[0] * 2, start[1] * 0.25, start[2] * 0.5]),
        torch.stack([start[0] * 4, start[1] * 0.25, start[2] * 0.7]),
    ])
    seen_x = []
    real_langevin = sampler.langevin

    def langevin(x, sigma, eta, gen):
        out = real_langevin(x, sigma, eta, gen)
        seen_x.append(out.clone())
        return out

    handed = {}

    def fake_integrate(den, x, sigma_start, integrator, steps, **kw):
        handed["x"], handed["sigma"] = x.clone(), sigma_start.clone()
        return x, 0

    monkeypatch.setattr(sampler, "langevin", langevin)
    monkeypatch.setattr(sampler, "sigma_step", lambda x, gen: next(script).float())
    monkeypatch.setattr(dlg_module, "integrate", fake_integrate)
    x_start = state.x.clone()
    out = sampler.run_round(state, num=3)
    expect_sigma = torch.stack([start[0], start[1] * 0.25, start[2] * 0.5]).double()
    assert torch.allclose(handed["sigma"], expect_sigma)
    assert torch.equal(handed["x"][0], x_start[0])  # nothing lower than the segment start
    assert torch.equal(handed["x"][1], seen_x[2][1])  # step 3 (0.25 < 0.5); step 4 ties: not taken
    assert torch.equal(handed["x"][2], seen_x[1][2])  # step 2 (0.5 < start); step 3 ties: not taken
    assert np.allclose(out.sigma_star, expect_sigma.numpy())
    # the chain continues from the last (x, sigma), not from (x*, sigma*) (pitfall 3/4)
    assert torch.equal(state.x, seen_x[-1].cpu())
    assert torch.allclose(state.sigma, torch.stack([start[0] * 4, start[1] * 0.25, start[2] * 0.7]))


def test_select_last_hands_over_the_last_state(monkeypatch):
    sampler = DLGSampler(DEN, CLF, DLGConfig(integrator="kar1", steps=3, eta=0.05, n_skip=3, select="last"), chains=4)
    state = sampler.init_state()
    handed = {}
    monkeypatch.setattr(dlg_module, "integrate", lambda den, x, s, *a, **k: (handed.setdefault("x", x.clone()), 0))
    sampler.run_round(state, num=4)
    assert torch.equal(handed["x"], state.x)


def test_langevin_step_is_not_scaled_by_sigma_squared():
    sampler = DLGSampler(DEN, CLF, DLGConfig(eta=0.3), chains=5)
    x = torch.randn(5, 2)
    sigma = torch.tensor([0.01, 0.1, 1.0, 5.0, 20.0])
    gen_a = sampler._streams(range(5), [0] * 5, tag=2, round_=7)
    gen_b = sampler._streams(range(5), [0] * 5, tag=2, round_=7)
    got = sampler.langevin(x, sigma, 0.3, gen_a)
    want = x + 0.15 * DEN.score(x, sigma) + math.sqrt(0.3) * gen_b.randn((5, 2))
    assert torch.allclose(got, want, atol=1e-6)


def test_eta_and_burn_in_scale_with_the_data_range():
    class Unit(Denoiser):  # a [-1, 1] model: eta x 4, perturbation x 2 (spec section 10)
        sigma_min, sigma_max, sample_shape, data_range = 0.01, 80.0, (2,), (-1.0, 1.0)

        def denoise(self, x, sigma):
            return DEN(x, sigma)

    s = DLGSampler(Unit(), CLF, DLGConfig(eta=0.8), chains=2)
    assert s.eta == pytest.approx(3.2) and s.scale == 2.0
    assert parse_burn_in("auto", DEN).describe() == "20:0.5:10@0.5,10@eta"
    assert parse_burn_in("celebahq").warmup == ((50, 1.6), (20, None))
    assert parse_burn_in("5:1:2@0.1,3@eta").warmup == ((2, 0.1), (3, None))
    with pytest.raises(DdmkitError):
        parse_burn_in("nonsense")


def test_runs_are_reproducible_and_sample_mode_works():
    cfg = DLGConfig(integrator="kar2", steps=4, eta=0.05, n_skip=2, sigma_step="sample")
    a = dlg_sample(DEN, CLF, cfg, num=30, chains=10, seed=5)
    b = dlg_sample(DEN, CLF, cfg, num=30, chains=10, seed=5)
    c = dlg_sample(DEN, CLF, cfg, num=30, chains=10, seed=6)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert a.chain.tolist() == list(range(10)) * 3


def test_a_diverging_chain_is_restarted_and_reported():
    class NaNOnce(Denoiser):
        """Row 3 becomes NaN on the 70th call (a Langevin step of the second round)."""
        sigma_min, sigma_max, sample_shape, data_range = DEN.sigma_min, DEN.sigma_max, DEN.sample_shape, None

        def __init__(self):
            self.calls = 0

        def denoise(self, x, sigma):
            self.calls += 1
            out = DEN(x, sigma)
            if self.calls == 70 and len(x) > 3:
                out = out.clone()
                out[3] = float("nan")
            return out

    msgs = []
    res = dlg_sample(NaNOnce(), CLF, DLGConfig(integrator="kar1", steps=4, eta=0.05, n_skip=4), num=40, chains=8,
                     seed=0, report=msgs.append)
    assert res.x.shape == (40, 2) and torch.isfinite(res.x).all()
    assert len(res.events) == 1 and res.events[0]["chain"] == 3 and res.events[0]["restart"] == 1
    assert "non-finite" in res.events[0]["reason"] and len(msgs) == 1 and "chain 3" in msgs[0]
    assert res.nfe["restart_burn_in_total"] == 57
    assert sorted(set(res.index.tolist())) == list(range(40))
    # round 1 (0-based) had no output from chain 3
    per_round = [res.chain[i * 8:(i + 1) * 8].tolist() for i in range(2)]
    assert 3 in per_round[0] and 3 not in per_round[1]


def test_exploding_states_count_as_divergence():
    s = DLGSampler(DEN, CLF, DLGConfig(), chains=3)
    x = torch.zeros(3, 2)
    x[1] = 1e6
    x[2, 0] = float("inf")
    bad, why = s.diverged(x)
    assert bad.tolist() == [False, True, True] and "RMS" in why[1] and "non-finite" in why[2]
    assert s.limit == pytest.approx(10 * (80 + 1))
