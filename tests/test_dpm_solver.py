"""DPM-Solver++(2M) and UniPC-bh2: equal to diffusers' `DPMSolverMultistepScheduler` / `UniPCMultistepScheduler`
on the same UNet and noise, second- / third-order convergence on exact Gaussian mixtures, per-sample schedules,
measured NFE, and use as DLG's integrator."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_unet

from ddmkit.cli import main
from ddmkit.denoisers import VPEpsDenoiser
from ddmkit.dmcmc.noise_classifier import exact_mixture_classifier
from ddmkit.dmcmc.dlg import DLGConfig, dlg_sample
from ddmkit.errors import DdmkitError
from ddmkit.integrators import INTEGRATORS, dpmpp_2m, rk45, unipc
from ddmkit.mixtures import GaussianMixture, GMMDenoiser
from ddmkit.sampling import integrate, make_schedule, sample
from ddmkit.schedules import karras_sigmas

BETAS = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def diffusers_loop(name: str, unet, x_vp: torch.Tensor, steps: int):
    """diffusers' own stepping loop, default config (linspace spacing, final sigma 0, no thresholding):
    DPM-Solver++ 2M, or UniPC (bh2, order 2, corrector on)."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    if name == "dpmpp_2m":
        sched = DPMSolverMultistepScheduler(**BETAS, algorithm_type="dpmsolver++", solver_order=2)
    else:
        sched = UniPCMultistepScheduler(**BETAS)
        assert sched.config.solver_type == "bh2" and sched.config.predict_x0 and not sched.config.disable_corrector
    assert sched.config.solver_order == 2 and sched.config.timestep_spacing == "linspace"
    assert sched.config.final_sigmas_type == "zero" and sched.config.lower_order_final and not sched.config.thresholding
    sched.set_timesteps(steps)
    y = x_vp.clone()
    for t in sched.timesteps:
        y = sched.step(unet(y, t).sample, t, y).prev_sample
    return y, sched


@torch.no_grad()
@pytest.mark.parametrize("name", ["dpmpp_2m", "unipc"])
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10, 26])  # 26: a linspace point on a rounding tie (499.5 -> 500)
def test_matches_diffusers_multistep_scheduler(name, steps):
    unet = tiny_unet(seed=3)
    x_vp = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(steps))
    y, sched = diffusers_loop(name, unet, x_vp, steps)

    den = VPEpsDenoiser(unet, sched.alphas_cumprod, (3, 16, 16), clip_denoised=False)  # diffusers: no clipping
    start = torch.full((2,), den.sigma_max, dtype=torch.float64)
    sigmas = make_schedule(name, steps, start, den.sigma_min, den)
    torch.testing.assert_close(sigmas[0], sched.sigmas.float(), rtol=1e-5, atol=0)  # the same grid
    assert torch.equal(den.sigma_to_t(sigmas[0, :-1]), sched.timesteps)
    # ddmkit runs in VE coordinates x = x_vp sqrt(1 + sigma^2); at the final sigma = 0 the two coincide
    x_ve = x_vp * (1 + sigmas[0, 0].double() ** 2).sqrt().float()
    ours, nfe = integrate(den, x_ve, start, name, steps)
    assert nfe == steps
    assert rel_diff(ours, y) <= 1e-4  # measured <= 4e-7


@torch.no_grad()
def test_unipc_corrector_changes_the_result():
    """UniPC differs from DPM-Solver++(2M) from 3 steps on (with 2, the corrected state is only denoised)."""
    unet = tiny_unet(seed=3)
    from diffusers import DDPMScheduler

    den = VPEpsDenoiser(unet, DDPMScheduler(**BETAS).alphas_cumprod, (3, 16, 16))
    x = den.sigma_max * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    start = torch.full((2,), den.sigma_max, dtype=torch.float64)
    a, b = integrate(den, x, start, "unipc", 5)[0], integrate(den, x, start, "dpmpp_2m", 5)[0]
    assert rel_diff(a, b) > 1e-3


def gaussian_flow(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, s_from: float, s_to: float) -> torch.Tensor:
    """The exact probability-flow map of N(mean, diag std^2) data from noise level s_from to s_to."""
    return mean + (x - mean) * ((std**2 + s_to**2) / (std**2 + s_from**2)).sqrt()


@pytest.mark.parametrize("integrator, order", [(dpmpp_2m, 2), (unipc, 3)])
def test_converges_at_its_order_to_the_exact_gaussian_flow(integrator, order):
    """One Gaussian component: the ODE solution is closed-form. The schedule is Karras down to sigma_lo, then
    x = D(x, sigma_lo) (the last, first-order step), so the reference applies that same last step to the
    exact state at sigma_lo. The error falls ~2^order per doubling of the steps (measured: dpmpp_2m 3.3, 4.9,
    4.4; unipc 5.2, 9.3, 8.6 from 8 to 64 steps): UniPC-2 is of order 3."""
    mean, std = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 0.3, 2.0], dtype=torch.float64)
    den = GMMDenoiser(GaussianMixture(torch.ones(1, dtype=torch.float64), mean[None], std[None]), 0.002, 80.0)
    x = 80.0 * torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact_lo = gaussian_flow(x, mean, std, 80.0, 0.002)
    reference = den(exact_lo, torch.full((64,), 0.002, dtype=torch.float64))
    errors = []
    for n in (8, 16, 32, 64):
        out, nfe = integrator(den, x, karras_sigmas(n + 1, 0.002, 80.0).double())
        assert nfe == n
        errors.append((out - reference).norm().item() / reference.norm().item())
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert errors[-1] < {2: 3e-3, 3: 6e-4}[order], errors
    assert all(order - 0.2 < p < order + 0.6 for p in orders[1:]), (errors, orders)


@pytest.mark.parametrize("integrator, order", [(dpmpp_2m, 2), (unipc, 3)])
def test_converges_at_its_order_on_a_mixture_against_tight_rk45(gmm_2d, integrator, order):
    """Three components: the reference is RK45 at rtol = atol = 1e-10. The median error over 200 paths falls
    ~2^order per doubling (measured: dpmpp_2m 4.7, 4.2, 4.1; unipc 8.6, 8.9, 8.3 from 32 to 256 steps); the
    norm over all paths is ruled by the few that start near a boundary between components."""
    x = 80.0 * torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # rk45's schedule [80, 0.002, 0] is the ODE to 0.002, then x = D(x, 0.002): the same last step
    reference, _ = rk45(gmm_2d, x, torch.tensor([80.0, 0.002, 0.0], dtype=torch.float64), rtol=1e-10, atol=1e-10)
    errors = []
    for n in (32, 64, 128, 256):
        out, _ = integrator(gmm_2d, x, karras_sigmas(n + 1, 0.002, 80.0).double())
        errors.append((out - reference).norm(dim=1).median().item())
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert errors[-1] < {2: 5e-4, 3: 3e-5}[order], errors
    assert all(order - 0.2 < p < order + 0.5 for p in orders), (errors, orders)


@pytest.mark.parametrize("integrator", [dpmpp_2m, unipc])
def test_per_sample_rows_equal_separate_single_row_runs(gmm_2d, integrator):
    start = torch.tensor([80.0, 3.0, 0.5, 0.05], dtype=torch.float64)
    sigmas = make_schedule(integrator.__name__, 6, start, 0.002, gmm_2d)
    assert sigmas.shape == (4, 7) and torch.allclose(sigmas[:, 0].double(), start)
    x = start[:, None].float() * torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    together, nfe = integrator(gmm_2d, x, sigmas)
    assert nfe == 6
    for b in range(4):
        alone, _ = integrator(gmm_2d, x[b : b + 1], sigmas[b])
        torch.testing.assert_close(together[b : b + 1], alone, rtol=1e-6, atol=1e-6)


def test_vp_grid_from_a_per_sample_start_sigma():
    """From sigma_max: diffusers' grid; from a lower sigma* (DLG's state): sigma* itself, then the linspace
    DDPM timesteps below t(sigma*), non-increasing, ending in 0; one NFE per step with integrate."""
    from diffusers import DDPMScheduler

    den = VPEpsDenoiser(lambda x, t: 0.1 * x, DDPMScheduler(**BETAS).alphas_cumprod, (3, 4, 4), clip_denoised=False)
    start = torch.tensor([den.sigma_max, 2.5, 0.3], dtype=torch.float64)
    sigmas = make_schedule("dpmpp_2m", 4, start, den.sigma_min, den)
    assert sigmas.shape == (3, 5) and (sigmas[:, -1] == 0).all() and (sigmas[:, 1:] <= sigmas[:, :-1]).all()
    torch.testing.assert_close(sigmas[:, 0], start.float())
    t_star = den.sigma_to_t(start.float())
    for b in range(3):
        expected = np.linspace(0, int(t_star[b]), 5).round()[::-1][1:-1].astype(np.int64)
        assert den.sigma_to_t(sigmas[b, 1:-1]).tolist() == expected.tolist()
    x = start[:, None, None, None].float() * torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out, nfe = integrate(den, x, start, "dpmpp_2m", 4, tweedie_sigma=den.sigma_min)
    assert nfe == 4 + 1 and torch.isfinite(out).all()


@pytest.mark.parametrize("integrator", [dpmpp_2m, unipc])
def test_registered_deterministic_and_one_nfe_per_step(gmm_2d, integrator):
    name = integrator.__name__
    spec = INTEGRATORS[name]
    assert spec.fn is integrator and spec.kind == "ODE" and not spec.stochastic() and spec.grid == "dpm"
    assert spec.min_steps == 1 and spec.nfe(7) == 7 and spec.max_steps(12) == 12 and spec.options == ()
    for steps in (1, 3, 10):
        a = sample(gmm_2d, integrator=name, steps=steps, num=50, seed=4, use_tweedie=False)
        b = sample(gmm_2d, integrator=name, steps=steps, num=50, seed=4, batch_size=7, use_tweedie=False)
        assert a.nfe_per_sample == steps and torch.allclose(a.x, b.x, atol=1e-6)
    assert sample(gmm_2d, integrator=name, steps=10, num=8, seed=4).nfe_per_sample == 11  # + Tweedie


def test_unipc_refuses_a_zero_level_before_the_end(gmm_2d):
    with pytest.raises(DdmkitError, match="unipc needs every level but the last > 0"):
        unipc(gmm_2d, torch.zeros(2, 2), torch.tensor([[5.0, 1.0, 0.0], [5.0, 0.0, 0.0]]))


@pytest.mark.parametrize("name", ["dpmpp_2m", "unipc"])
def test_dlg_hands_its_states_to_the_multistep_solvers(name):
    mix = GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[-3.0, 0.0], [3.0, 1.0], [0.0, 4.0]]),
                          torch.tensor([[0.5, 0.3], [0.4, 0.6], [0.3, 0.3]]))
    den = GMMDenoiser(mix)
    clf = exact_mixture_classifier(mix, den.sigma_min, den.sigma_max, 100)
    res = dlg_sample(den, clf, DLGConfig(integrator=name, steps=8, eta=0.05, n_skip=4), num=1000, chains=1000, seed=0)
    assert res.nfe["integrator_per_output"] == 8 and res.nfe["per_output"] == 4 + 8 + 1
    assert np.median(res.sigma_star) < 2.0  # started at each chain's own sigma, not sigma_max
    comp = mix.assign(res.x)
    w = torch.bincount(comp, minlength=3).double() / len(res.x)
    assert (w - mix.weights).abs().max() < 0.06, w  # standard error ~0.016 with 1000 chains
    for k in range(3):
        xk = res.x[comp == k].double()
        assert (xk.mean(0) - mix.means[k]).abs().max() < 0.1
        ratio = xk.std(0) / mix.stds[k]
        assert ((ratio > 0.8) & (ratio < 1.15)).all(), (k, ratio)


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", ["dpmpp_2m", "unipc"])
def test_cli_samples_with_the_multistep_solvers_and_lists_them(tmp_path, mixture_json, capsys, name):
    out = tmp_path / "run"
    code, _, err = run_cli(["sample", "--model", f"gmm:{mixture_json}", "--integrator", name, "--steps", "10",
                            "--num", "6", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert np.isfinite(np.load(out / "samples.npz")["x"]).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["integrator"] == name and manifest["nfe_per_sample"] == 10 + 1  # steps + Tweedie
    code, out, _ = run_cli(["sample", "--help"], capsys)
    assert code == 0 and name in out
    code, _, err = run_cli(["sample", "--model", f"gmm:{mixture_json}", "--integrator", name, "--steps", "0",
                            "--out", tmp_path / "bad"], capsys)
    assert code == 2 and "--steps must be >= 1" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
