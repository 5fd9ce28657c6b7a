"""The integrators reproduce exact Gaussian mixtures at high NFE, fail at low NFE, converge at order 2,
and honour per-sample starting sigmas and per-sample seeds.

Statistical tolerances (n samples, component k with weight w_k and n_k = w_k n samples):
- weight: standard error sqrt(w (1 - w) / n); we allow 4.5 SE (a false alarm below 1e-5 per check);
- mean of dimension j: SE = s_kj / sqrt(n_k); variance: SE ~ s_kj^2 sqrt(2 / n_k); over D dimensions
  the largest of D standardised errors is compared with 4.5 + sqrt(2 ln D) (a union bound).
A bias of the integrator larger than these few standard errors fails the test; the seeds are fixed,
so the outcome is deterministic.
"""
from __future__ import annotations

import math

import pytest
import torch

from ddmkit.denoisers import NFECounter
from ddmkit.errors import DdmkitError
from ddmkit.integrators import INTEGRATORS, PerSampleGenerator, get_integrator, kar1, rk45
from ddmkit.mixtures import frechet_to_mixture
from ddmkit.sampling import make_schedule, sample
from ddmkit.schedules import karras_sigmas

# (steps at high NFE, steps at low NFE) per integrator: `steps` is the spec's N.
HIGH_LOW = {
    "kar1": (40, 3),
    "kar2": (60, 4),
    "rd": (250, 6),
    "em": (250, 6),
    "pf": (1000, 6),
    "rk45": (1, 1),  # adaptive: high = tight tolerance, low = loose tolerance (see below)
    "ddim": (150, 3),
    "dpmpp_2m": (60, 3),
    "unipc": (60, 3),
}


def moment_errors(x: torch.Tensor, mixture) -> dict[str, float]:
    """Largest standardised errors of component weights, means and variances (in SE units)."""
    n = len(x)
    comp = mixture.assign(x)
    w_hat = torch.bincount(comp, minlength=mixture.num_components).double() / n
    w = mixture.weights
    w_z = ((w_hat - w).abs() / (w * (1 - w) / n).sqrt()).max().item()
    mean_z, var_z = 0.0, 0.0
    for k in range(mixture.num_components):
        xk = x[comp == k].double()
        nk = len(xk)
        if nk < 2:
            return {"weight": w_z, "mean": math.inf, "var": math.inf}
        s = mixture.stds[k]
        mean_z = max(mean_z, ((xk.mean(0) - mixture.means[k]).abs() / (s / math.sqrt(nk))).max().item())
        var_z = max(var_z, ((xk.var(0) - s**2).abs() / (s**2 * math.sqrt(2 / nk))).max().item())
    return {"weight": w_z, "mean": mean_z, "var": var_z}


def draw(denoiser, integrator, steps, n, seed=0, **options):
    if integrator == "rk45":
        options.setdefault("rtol", 1e-5)
        options.setdefault("atol", 1e-5)
    return sample(denoiser, integrator=integrator, steps=steps, num=n, batch_size=n, seed=seed, options=options)


@pytest.mark.parametrize("integrator", list(INTEGRATORS))
def test_high_nfe_reproduces_2d_mixture_and_low_nfe_fails(integrator, gmm_2d, mixture_2d):
    n = 3000
    high, low = HIGH_LOW[integrator]
    res = draw(gmm_2d, integrator, high, n)
    z = moment_errors(res.x, mixture_2d)
    limit = 4.5 + math.sqrt(2 * math.log(2))
    assert z["weight"] < 4.5, z
    assert z["mean"] < limit and z["var"] < limit, z
    exact, _ = mixture_2d.sample(n, torch.Generator().manual_seed(1))
    floor = frechet_to_mixture(exact, mixture_2d)
    fd_high = frechet_to_mixture(res.x, mixture_2d)
    assert fd_high < 5 * floor + 0.02, (fd_high, floor)
    # the same test at a low budget must fail clearly: the check can detect a wrong sampler
    opts = {"rtol": 0.5, "atol": 0.5} if integrator == "rk45" else {}
    bad = draw(gmm_2d, integrator, low, n, **opts)
    fd_low = frechet_to_mixture(bad.x, mixture_2d)
    assert bad.nfe_per_sample < res.nfe_per_sample
    z_low = moment_errors(bad.x, mixture_2d)
    assert fd_low > 10 * fd_high or max(z_low.values()) > 3 * limit, (fd_low, fd_high, z_low)


@pytest.mark.parametrize("integrator", list(INTEGRATORS))
def test_high_nfe_reproduces_64d_mixture(integrator, gmm_64d, mixture_64d):
    n = 1500
    steps = {"pf": 300, "rd": 150, "em": 150}.get(integrator, HIGH_LOW[integrator][0])
    res = draw(gmm_64d, integrator, steps, n, seed=5)
    z = moment_errors(res.x, mixture_64d)
    limit = 4.5 + math.sqrt(2 * math.log(64))
    assert z["weight"] < 4.5, z
    assert z["mean"] < limit and z["var"] < limit, z


def test_nfe_is_measured_and_matches_the_spec_counts(gmm_2d):
    x = torch.randn(8, 2) * 80
    for name, n, expected in [("kar1", 10, 2 * 10 - 3), ("kar2", 7, 2 * 7 - 3), ("rd", 9, 9), ("em", 9, 9),
                              ("pf", 9, 9), ("ddim", 12, 12)]:
        sig = make_schedule(name, n, torch.full((8,), 80.0), 0.002, gmm_2d)
        counter = NFECounter(gmm_2d)
        _, nfe = get_integrator(name)(counter, x, sig, generator=PerSampleGenerator(range(8)))
        assert nfe == expected == counter.nfe, name
    counter = NFECounter(gmm_2d)
    _, nfe = rk45(counter, x, make_schedule("rk45", 1, torch.full((8,), 80.0), 0.002), rtol=1e-4, atol=1e-4)
    assert nfe == counter.nfe > 10


def test_kar1_converges_at_second_order(gmm_2d):
    """Heun's error against a tight RK45 reference shrinks ~4x when the steps double."""
    x0 = torch.tensor([[3.0, -2.0], [-1.0, 4.0], [0.5, 0.5], [6.0, 1.0]], dtype=torch.float64) * 2
    start, end = 10.0, 0.1
    ref, _ = rk45(gmm_2d, x0, torch.tensor([start, end], dtype=torch.float64), rtol=1e-11, atol=1e-11)
    errors = []
    for n in (16, 32, 64, 128):
        sig = karras_sigmas(n + 1, end, start)[:, :-1].double()  # n levels ending at `end`, no final 0
        x, _ = kar1(gmm_2d, x0, sig)
        errors.append((x - ref).norm().item())
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(3.2 < r < 4.8 for r in ratios[1:]), (errors, ratios)


@pytest.mark.parametrize("integrator", list(INTEGRATORS))
def test_per_sample_start_sigma_equals_running_alone(integrator, gmm_2d):
    starts = torch.tensor([80.0, 3.0, 0.5, 20.0])
    gen = PerSampleGenerator([11, 12, 13, 14])
    x = gen.randn((4, 2)) * starts[:, None]
    fn = get_integrator(integrator)
    sig = make_schedule(integrator, 8, starts, 0.002, gmm_2d)
    batch, _ = fn(gmm_2d, x, sig, generator=PerSampleGenerator([1, 2, 3, 4]))
    for b in range(4):
        alone, _ = fn(gmm_2d, x[b : b + 1], sig[b : b + 1], generator=PerSampleGenerator([b + 1]))
        tol = 1e-4 if integrator == "rk45" else 1e-6  # rk45 chooses its steps for the whole system
        torch.testing.assert_close(batch[b : b + 1], alone, rtol=tol, atol=tol)
    if integrator != "rk45":  # same schedule for all but different starts: rows really differ
        assert not torch.allclose(sig[0], sig[1])


@pytest.mark.parametrize("integrator", ["kar2", "rd", "em", "ddim"])
def test_same_seed_same_output_and_batch_size_independence(integrator, gmm_2d):
    opts = {"eta": 1.0} if integrator == "ddim" else {}
    a = sample(gmm_2d, integrator=integrator, steps=10, num=12, seed=7, batch_size=12, options=opts).x
    b = sample(gmm_2d, integrator=integrator, steps=10, num=12, seed=7, batch_size=12, options=opts).x
    c = sample(gmm_2d, integrator=integrator, steps=10, num=12, seed=7, batch_size=5, options=opts).x
    d = sample(gmm_2d, integrator=integrator, steps=10, num=12, seed=8, batch_size=12, options=opts).x
    some = sample(gmm_2d, integrator=integrator, steps=10, seed=7, indices=[3, 9], options=opts).x
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a[[3, 9]], some, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(a, d)


def test_per_sample_generator_streams_are_normal_and_independent():
    from scipy import stats

    g = PerSampleGenerator(range(2000))
    z = g.randn((2000, 16)).double()  # the vectorised hash stream (small samples)
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3
    assert abs(z.mean().item()) < 4.5 / math.sqrt(z.numel())
    corr = torch.corrcoef(z[:, :4].T)
    assert (corr - torch.eye(4)).abs().max() < 4.5 / math.sqrt(2000)
    z2 = g.randn((2000, 16)).double()  # the next draw differs
    assert torch.corrcoef(torch.stack([z.flatten(), z2.flatten()]))[0, 1].abs() < 0.02


def test_bad_schedules_raise_clear_errors(gmm_2d):
    x = torch.zeros(2, 2)
    with pytest.raises(DdmkitError, match="unknown integrator"):
        get_integrator("heun3")
    with pytest.raises(DdmkitError, match="non-increasing"):
        kar1(gmm_2d, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(DdmkitError, match="starting sigma"):
        kar1(gmm_2d, x, torch.tensor([0.0, 0.0]))
    with pytest.raises(DdmkitError, match=">= 0"):
        kar1(gmm_2d, x, torch.tensor([1.0, -1.0]))
    with pytest.raises(DdmkitError, match="steps"):
        make_schedule("kar1", 0, torch.ones(2), 0.01)
    with pytest.raises(DdmkitError, match="starting sigma"):
        make_schedule("rd", 5, torch.tensor([-1.0, 1.0]), 0.01)
