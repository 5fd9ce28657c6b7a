"""DDIM inversion / generation with the official step function and grid (spec section 2)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ddmkit.denoisers import NFECounter, VPEpsDenoiser
from ddmkit.editing.clipping import clipped
from ddmkit.editing.ddim import ddim_grid, ddim_step, generate, invert, reconstruction_error
from ddmkit.editing.hspace import HSpace
from ddmkit.editing.prefix import sample_grid, sample_to_tm
from ddmkit.editing.settings import MixingStep
from ddmkit.errors import DdmkitError
from ddmkit.integrators import PerSampleGenerator


def tiny_denoiser(seed: int = 0) -> VPEpsDenoiser:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()
    return VPEpsDenoiser(unet, DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, (3, 16, 16))


@pytest.fixture(scope="module")
def den():
    return tiny_denoiser()


def images(n=4, seed=0):
    """Smooth images in [-1, 1] (blobs), closer to data than white noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False)


def test_grid_is_the_official_one():
    seq = ddim_grid(500, 40)
    assert seq[:5] == [0, 12, 25, 38, 51] and seq[-3:] == [474, 487, 500] and len(seq) == 40
    assert ddim_grid(10, 11) == list(range(11))
    with pytest.raises(DdmkitError, match="N <= t_m"):
        ddim_grid(10, 12)
    assert sample_grid(500, 1000, 50)[0] == 500 and sample_grid(500, 1000, 50)[-1] == 999
    assert len(sample_grid(500, 1000, 50)) == 51


def test_step_function_matches_the_spec():
    x, e = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    a_t, a_n = 0.5, 0.8
    x0 = (x - (1 - a_t) ** 0.5 * e) / a_t**0.5
    assert torch.allclose(ddim_step(x, e, a_t, a_n), a_n**0.5 * x0 + (1 - a_n) ** 0.5 * e)
    z = torch.randn(2, 3, 4, 4)
    c1 = 1.0 * ((1 - a_t / a_n) * (1 - a_n) / (1 - a_t)) ** 0.5
    c2 = (1 - a_n - c1**2) ** 0.5
    assert torch.allclose(ddim_step(x, e, a_t, a_n, 1.0, z), a_n**0.5 * x0 + c2 * e + c1 * z)
    # the final 0 -> -1 step (abar_{-1} = 1) returns x0 whatever eta
    assert torch.allclose(ddim_step(x, e, a_t, 1.0, 1.0, z), x0)


def test_nfe_and_h_sources(den):
    x = images(2)
    inv = invert(den, x, MixingStep(100, 10))
    assert inv.nfe == 9 and inv.h_t == ddim_grid(100, 10)[-2] and inv.h.shape == (2, 16, 8, 8)
    inv_tm = invert(den, x, MixingStep(100, 10, h_source="tm"))
    assert inv_tm.nfe == 10 and inv_tm.h_t == 100 and torch.equal(inv_tm.z, inv.z)
    with HSpace(den) as hs, torch.no_grad():  # "tm": h is the bottleneck at (z, t_m)
        den.eps(inv.z, torch.full((2,), 100))
        assert torch.equal(hs.h, inv_tm.h)
    out, nfe = generate(den, inv.z, MixingStep(100, 10))
    assert nfe == 10 and out.shape == x.shape
    pre = sample_to_tm(den, torch.randn(2, 3, 16, 16), MixingStep(600), 8)
    assert pre.nfe == 8 and pre.z.shape == (2, 3, 16, 16) and pre.h_t == sample_grid(600, 1000, 8)[1]


def test_inversion_reconstructs_within_the_stated_error(den):
    """Invert-then-generate (eta = 0) error of a random-weight UNet.

    DDIM inversion uses eps(x_t, t) for the step t -> t' that generation takes with eps(x_t', t'),
    a first-order (Euler) mismatch: the global error shrinks like 1/N. A random network's eps
    changes with t by O(1), so the error is large at few steps: at t_m = 500, three random nets gave
    RMSE 0.23-0.38 (N = 10), 0.13-0.23 (N = 20), 0.07-0.14 (N = 40), 0.035-0.075 (N = 80), i.e. a
    shrink by 2.5-3.4x from N = 10 to 40 (4x in the first-order limit): require monotone and > 2x.
    The floor: generation ends with 0 -> -1, which removes sqrt(1 - abar_0) eps = 0.01 eps from an
    image the inversion treated as x_0 at t = 0; so at small t_m and large N the error is ~0.01 x
    rms(eps) (measured ~0.004 at t_m = 200, N = 40): require < 0.02 there.
    Generation without x0 clipping: the exact reverse of the (never clipping) inversion."""
    x = images(4)
    err = {}
    for n in (10, 20, 40):
        inv = invert(den, x, MixingStep(500, n))
        rec, _ = generate(clipped(den, False), inv.z, MixingStep(500, n))
        err[n] = reconstruction_error(x, rec)["rmse"]
    assert err[10] > err[20] > err[40] and err[40] < err[10] / 2
    inv = invert(den, x, MixingStep(200, 40))
    rec, _ = generate(clipped(den, False), inv.z, MixingStep(200, 40))
    e = reconstruction_error(x, rec)
    assert e["rmse"] < 0.02 and e["psnr_db"] > 40 and len(e["rmse_per_image"]) == 4


def test_eta_noise_is_seeded_per_sample(den):
    x = images(3)
    inv = invert(den, x, MixingStep(100, 6))
    a, _ = generate(den, inv.z, MixingStep(100, 6), eta=1.0, generator=PerSampleGenerator([1, 2, 3]))
    b, _ = generate(den, inv.z, MixingStep(100, 6), eta=1.0, generator=PerSampleGenerator([1, 2, 3]))
    c, _ = generate(den, inv.z[1:2], MixingStep(100, 6), eta=1.0, generator=PerSampleGenerator([2]))
    d, _ = generate(den, inv.z, MixingStep(100, 6), eta=0.0)
    assert torch.equal(a, b) and torch.allclose(a[1:2], c, atol=1e-5) and not torch.allclose(a, d)


@torch.no_grad()
def test_h_injection_single_lagged_none(den):
    """What the decoder sees: h' at the first call; then its own h (single) or the previous call's (lagged)."""
    unet = den.unet
    x = images(2)
    inv = invert(den, x, MixingStep(100, 6))
    h_new = inv.h + 1.0
    natural, decoder_in = [], []
    h1 = unet.mid_block.register_forward_hook(lambda m, i, o: natural.append(o.clone()))  # before HSpace's hook
    h2 = unet.up_blocks[0].register_forward_pre_hook(lambda m, args, kwargs=None: decoder_in.append(args[0].clone()))
    try:
        runs = {}
        for mode in ("single", "lagged", "none"):
            natural.clear(), decoder_in.clear()
            runs[mode], nfe = generate(den, inv.z, MixingStep(100, 6), h=h_new, h_injection=mode)
            nat, dec = list(natural), list(decoder_in)
            assert nfe == 6 and len(nat) == len(dec) == 6
            if mode == "none":
                assert all(torch.equal(a, b) for a, b in zip(nat, dec))
            else:
                assert torch.equal(dec[0], h_new)
            if mode == "single":
                assert all(torch.equal(a, b) for a, b in zip(nat[1:], dec[1:]))
            if mode == "lagged":
                assert all(torch.equal(nat[k - 1], dec[k]) for k in range(1, 6))
    finally:
        h1.remove(), h2.remove()
    plain, _ = generate(den, inv.z, MixingStep(100, 6))
    assert torch.equal(runs["none"], plain)
    assert not torch.allclose(runs["single"], plain) and not torch.allclose(runs["lagged"], runs["single"])


def test_errors(den, gmm_2d):
    with pytest.raises(DdmkitError, match="not a DDPM epsilon model"):
        invert(gmm_2d, torch.zeros(1, 2), MixingStep(10, 3))
    with pytest.raises(DdmkitError, match="h_source"):
        invert(den, images(1), MixingStep(10, 3, h_source="x"))
    with pytest.raises(DdmkitError, match="h_injection"):
        generate(den, images(1), MixingStep(10, 3), h_injection="x")
    with pytest.raises(DdmkitError, match="beyond"):
        invert(den, images(1), MixingStep(1000, 3))
    with pytest.raises(DdmkitError, match="needs noise"):
        ddim_step(torch.zeros(1), torch.zeros(1), 0.5, 0.8, 1.0)
    # an NFE counter around the model is transparent
    inv = invert(NFECounter(den), images(1), MixingStep(20, 3))
    assert inv.nfe == 2 and np.isfinite(inv.z.numpy()).all()


def test_clipping_follows_the_model_and_matches_the_sigma_space_ddim(den):
    """Generation clamps x0 to the data range when the model does (clip_denoised) and recomputes eps:
    the same update as the `ddim` integrator on a clipping denoiser, on the same timesteps."""
    from ddmkit.integrators import ddim

    x, e = torch.randn(2, 3, 4, 4) * 3, torch.randn(2, 3, 4, 4)
    x0 = ((x - 0.5**0.5 * e) / 0.5**0.5).clamp(-1, 1)
    assert torch.allclose(ddim_step(x, e, 0.5, 1.0, clip=(-1, 1)), x0)
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    assert den.clip_denoised
    pre = sample_to_tm(den, x_T, MixingStep(1), 20)
    off = sample_to_tm(clipped(den, False), x_T, MixingStep(1), 20)
    assert not torch.allclose(pre.z, off.z)
    seq = sample_grid(1, 1000, 20)
    sig = den.sigmas[torch.tensor(seq[::-1])].float()
    ve, _ = ddim(den, x_T * (1 + sig[0] ** 2).sqrt(), sig)
    assert torch.allclose(pre.z, ve / (1 + sig[-1] ** 2).sqrt(), atol=2e-3)


def test_stochastic_prefix_is_seeded_and_matches_the_ddim_step(den):
    """sample_to_tm with eta > 0: the same per-sample seeds give the same z; eta = 0 is the deterministic
    path; one step equals ddim_step with the generator's noise (spec 2, eta-DDIM)."""
    from ddmkit.editing.ddim import EpsModel
    from ddmkit.integrators import PerSampleGenerator

    x_T = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = sample_to_tm(den, x_T, MixingStep(600), 4, eta=1.0, generator=PerSampleGenerator([1, 2, 3]))
    b = sample_to_tm(den, x_T, MixingStep(600), 4, eta=1.0, generator=PerSampleGenerator([1, 2, 3]))
    c = sample_to_tm(den, x_T, MixingStep(600), 4, eta=1.0, generator=PerSampleGenerator([1, 2, 4]))
    det = sample_to_tm(den, x_T, MixingStep(600), 4)
    assert torch.equal(a.z, b.z) and torch.equal(a.z[:2], c.z[:2]) and not torch.allclose(a.z[2], c.z[2])
    assert torch.equal(sample_to_tm(den, x_T, MixingStep(600), 4, eta=0.0).z, det.z) and not torch.allclose(a.z, det.z)
    one = sample_to_tm(den, x_T, MixingStep(998), 1, eta=1.0, generator=PerSampleGenerator([5, 6, 7]))
    noise = PerSampleGenerator([5, 6, 7]).randn((3, 3, 16, 16))
    with EpsModel(den) as m, torch.no_grad():
        ref = ddim_step(x_T, m(x_T, 999), m.abar(999), m.abar(998), 1.0, noise, m.clip_range())
    torch.testing.assert_close(one.z, ref)
    with pytest.raises(DdmkitError, match="needs a generator"):
        sample_to_tm(den, x_T, MixingStep(600), 4, eta=1.0)


def test_karras_prefix_integrates_the_same_flow_as_ddim(den):
    """kar1 from sigma_max to sigma(t_m) and DDIM (eta 0) solve the same probability-flow ODE: with more
    Heun steps the Karras prefix's z approaches a 400-step DDIM reference (0.7% at 64 NFE); NFE = 2 x
    (steps // 2) + 1 (h read at (z, t_m), as DDIM's h_source "tm")."""
    from ddmkit.editing.prefix import sample_to_tm_karras

    x_T = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = sample_to_tm(den, x_T, MixingStep(300, h_source="tm"), 400)
    errs = []
    for n in (8, 64):
        k = sample_to_tm_karras(den, x_T, MixingStep(300), n, integrator="kar1")
        assert k.nfe == n + 1 and k.h_source == "tm" and k.h_t == 300 and k.z.shape == x_T.shape
        errs.append(((k.z - ref.z).norm() / ref.z.norm()).item())
        h_err = ((k.h - ref.h).norm() / ref.h.norm()).item()
    assert errs[1] < 0.015 and errs[1] < 0.5 * errs[0]
    assert h_err < 0.02  # h read at (z, t_m): follows z
    assert sample_to_tm_karras(den, x_T, MixingStep(300), 9, integrator="kar1").nfe == 9  # 4 Heun steps + the h call
    # a clipped(den, False) view turns the model's clamp of D off for this call only, the model unchanged
    from ddmkit.integrators import kar1
    from ddmkit.schedules import karras_sigmas

    off = sample_to_tm_karras(clipped(den, False), x_T, MixingStep(300), 8, integrator="kar1")
    assert den.clip_denoised
    s_tm, s_max = float(den.sigmas[300]), float(den.sigmas[999])
    den.clip_denoised = False
    try:
        manual, _ = kar1(den, x_T * (1 + s_max**2) ** 0.5, karras_sigmas(6, s_tm, s_max)[:, :-1])
    finally:
        den.clip_denoised = True
    torch.testing.assert_close(off.z, manual / (1 + s_tm**2) ** 0.5)
    assert not torch.allclose(off.z, sample_to_tm_karras(den, x_T, MixingStep(300), 8, integrator="kar1").z)


def test_karras_prefix_is_seeded_and_checked(den):
    from ddmkit.editing.prefix import sample_to_tm_karras

    x_T = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    window = {"s_tmin": 1.0, "s_tmax": 400.0}  # sigma(500) = 3.4: above the default window's s_tmax = 2
    a = sample_to_tm_karras(den, x_T, MixingStep(500), 6, generator=PerSampleGenerator([1, 2, 3]), options=window)
    b = sample_to_tm_karras(den, x_T, MixingStep(500), 6, generator=PerSampleGenerator([1, 2, 3]), options=window)
    c = sample_to_tm_karras(den, x_T, MixingStep(500), 6, generator=PerSampleGenerator([1, 2, 4]), options=window)
    det = sample_to_tm_karras(den, x_T, MixingStep(500), 6, integrator="kar1")
    assert torch.equal(a.z, b.z) and torch.equal(a.z[:2], c.z[:2]) and not torch.allclose(a.z[2], c.z[2])
    assert not torch.allclose(a.z, det.z)  # churn adds noise
    # the default window (churn at sigma <= 2) never churns above sigma(500): kar2 is then kar1
    torch.testing.assert_close(sample_to_tm_karras(den, x_T, MixingStep(500), 6, generator=PerSampleGenerator([1, 2, 3])).z, det.z)
    no_churn = sample_to_tm_karras(den, x_T, MixingStep(500), 6, generator=PerSampleGenerator([1, 2, 3]), options={"s_churn": 0.0})
    torch.testing.assert_close(no_churn.z, det.z)  # kar2 without churn is kar1
    with pytest.raises(DdmkitError, match="needs a generator"):
        sample_to_tm_karras(den, x_T, MixingStep(500), 6)
    with pytest.raises(DdmkitError, match="kar1 or kar2"):
        sample_to_tm_karras(den, x_T, MixingStep(500), 6, integrator="rd")
    with pytest.raises(DdmkitError, match=">= 2"):
        sample_to_tm_karras(den, x_T, MixingStep(500), 1, integrator="kar1")
    with pytest.raises(DdmkitError, match="t_m must be"):
        sample_to_tm_karras(den, x_T, MixingStep(999), 6, integrator="kar1")


def test_clipped_is_a_view_that_leaves_the_model_alone(den):
    """`clipped` fixes x0 clipping for the calls it is passed to; the shared model keeps its own flag and
    the view shares its network (no copy of the weights)."""
    off, on = clipped(den, False), clipped(NFECounter(den), None)
    assert den.clip_denoised and not off.clip_denoised and on.clip_denoised
    assert off.unet is den.unet and off.sigmas is den.sigmas and off.data_range == den.data_range
    x, s = torch.randn(2, 3, 16, 16) * 5, torch.full((2,), 3.0)
    assert torch.equal(on(x, s), den(x, s)) and not torch.equal(off(x, s), den(x, s))
    assert den(x, s).abs().max() <= 1 and off(x, s).abs().max() > 1
