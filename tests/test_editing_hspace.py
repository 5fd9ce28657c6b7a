"""h-space hook: reading and writing the UNet bottleneck without forking model code."""
from __future__ import annotations

import pytest
import torch

from ddmkit.errors import DdmkitError
from ddmkit.editing.hspace import HSpace, hspace_shape


def tiny_unet(seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def _inputs(b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 16, 16, generator=g), torch.tensor([10, 400, 900][:b])


@torch.no_grad()
def test_read_then_write_back_is_bit_identical(unet):
    x, t = _inputs()
    plain = unet(x, t).sample
    with HSpace(unet) as hs:
        hooked = unet(x, t).sample  # hook active, no replacement
        h = hs.h.clone()
        assert hs.calls == 1 and h.shape == (3, 16, 8, 8)
        hs.replace(h)
        written = unet(x, t).sample
        assert not hs.pending
    assert torch.equal(plain, hooked)
    assert torch.equal(plain, written)
    # the hook is gone after the block
    assert torch.equal(unet(x, t).sample, plain)


@torch.no_grad()
def test_replacing_h_changes_the_output_only_through_the_decoder(unet):
    x, t = _inputs()
    seen: dict[str, list[torch.Tensor]] = {}

    def recorder(name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            seen.setdefault(name, []).append(out.detach().clone())
        return hook

    handles = [unet.conv_in.register_forward_hook(recorder("conv_in"))]
    handles += [blk.register_forward_hook(recorder(f"down{i}")) for i, blk in enumerate(unet.down_blocks)]
    handles += [unet.time_embedding.register_forward_hook(recorder("temb"))]
    try:
        plain = unet(x, t).sample
        with HSpace(unet) as hs:
            unet(x, t)
            natural = hs.h.clone()
            h_new = natural + torch.randn(natural.shape, generator=torch.Generator().manual_seed(5))
            hs.replace(h_new)
            edited = unet(x, t).sample
            assert torch.equal(hs.h, natural)  # `h` is what the module computed, also when replaced
    finally:
        for h in handles:
            h.remove()
    assert not torch.allclose(plain, edited)
    for name, outs in seen.items():  # encoder, skips and time embedding: identical in all three calls
        assert all(torch.equal(outs[0], o) for o in outs[1:]), name
    # the decoder sees h_new with the current skips: same as a network whose middle block returns h_new
    original_forward = unet.mid_block.forward
    unet.mid_block.forward = lambda *a, **k: h_new
    try:
        forked = unet(x, t).sample
    finally:
        unet.mid_block.forward = original_forward
    assert torch.equal(forked, edited)


@torch.no_grad()
def test_once_persistent_and_clear(unet):
    x, t = _inputs(2)
    with HSpace(unet) as hs:
        base = unet(x, t).sample
        zero = torch.zeros_like(hs.h)
        hs.replace(zero, once=False)
        a = unet(x, t).sample
        b = unet(x, t).sample
        assert torch.equal(a, b) and not torch.equal(a, base)
        hs.clear()
        assert torch.equal(unet(x, t).sample, base)


def test_errors_and_other_modules(unet):
    with pytest.raises(DdmkitError, match="no module 'middle_block'"):
        HSpace(unet, "middle_block")
    x, t = _inputs(2)
    with HSpace(unet) as hs, torch.no_grad():
        hs.replace(torch.zeros(2, 16, 4, 4))
        with pytest.raises(DdmkitError, match="shape"):
            unet(x, t)
    # any module given by a dotted path plugs in (here the second encoder block's resnet)
    with HSpace(unet, "down_blocks.1.resnets.0") as hs, torch.no_grad():
        unet(x, t)
        assert hs.h.shape == (2, 16, 8, 8)
    assert hspace_shape_from_unet(unet) == (16, 8, 8)


def hspace_shape_from_unet(unet):
    from ddmkit.denoisers import VPEpsDenoiser
    from diffusers import DDPMScheduler

    den = VPEpsDenoiser(unet, DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, (3, 16, 16))
    return hspace_shape(den)


def test_no_network_is_a_clear_error(gmm_2d):
    with pytest.raises(DdmkitError, match="no neural network"):
        HSpace(gmm_2d)
