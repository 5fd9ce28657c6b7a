"""NCSN++ (Song et al. 2021, score_sde's `ncsnpp` with `progressive_input="residual"`, as in the DMCMC
paper's CIFAR-10 model) as a diffusers-style network, assembled from diffusers' blocks. The weights
come from `ddmkit.models.convert_score_sde`."""
from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


# ---------------------------------------------------------------------------------------------------
# the NCSN++ none/residual network, from diffusers layers
# ---------------------------------------------------------------------------------------------------


def _groups(ch: int) -> int:
    return min(ch // 4, 32)


class NCSNppResidualUNet2DModel(ModelMixin, ConfigMixin):
    """NCSN++ with progressive='none', progressive_input='residual' (score_sde CIFAR-10 configs).

    forward(sample, timestep=sigma) -> UNet2DOutput(sample=score), as UNet2DModel with
    time_embedding_type='fourier'. Down level i: `layers_per_block` BigGAN resnets (+ attention at
    `attention_resolutions`), then a FIR down-sampling resnet and the residual input pyramid
    pyr <- (FIRConvDown(pyr) + h) / sqrt(2), h <- pyr. Up level: `layers_per_block + 1` resnets on
    [h, skip], one attention at the attention resolutions, a FIR up-sampling resnet.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 256, 256, 256),
        layers_per_block: int = 4,
        attention_resolutions: tuple[int, ...] = (16,),
        fourier_scale: float = 16.0,
        center_input_sample: bool = True,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
    ):
        super().__init__()
        from diffusers.models.attention_processor import Attention
        from diffusers.models.downsampling import FirDownsample2D
        from diffusers.models.embeddings import GaussianFourierProjection, TimestepEmbedding
        from diffusers.models.resnet import ResnetBlock2D
        from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D

        nf = block_out_channels[0]
        temb = 4 * nf
        rescale = math.sqrt(2.0)

        def resnet(cin: int, cout: int, up: bool = False, down: bool = False) -> nn.Module:
            return ResnetBlock2D(
                in_channels=cin, out_channels=cout, temb_channels=temb, eps=norm_eps, groups=_groups(cin),
                groups_out=_groups(cout), dropout=dropout, non_linearity="silu", output_scale_factor=rescale,
                up=up, down=down, kernel="fir", use_in_shortcut=cin != cout or up or down,
            )

        def attention(ch: int) -> nn.Module:
            return Attention(ch, heads=1, dim_head=ch, rescale_output_factor=rescale, eps=norm_eps,
                             norm_num_groups=_groups(ch), residual_connection=True, bias=True, upcast_softmax=True,
                             _from_deprecated_attn_block=True)

        self.time_proj = GaussianFourierProjection(embedding_size=nf, scale=fourier_scale)
        self.time_embedding = TimestepEmbedding(2 * nf, temb)
        self.conv_in = nn.Conv2d(in_channels, nf, kernel_size=3, padding=1)

        levels = len(block_out_channels)
        res, ch, pyramid_ch, skips = sample_size, nf, in_channels, [nf]
        self.down_blocks = nn.ModuleList()
        for i, cout in enumerate(block_out_channels):
            block = nn.Module()
            block.resnets = nn.ModuleList()
            for _ in range(layers_per_block):
                block.resnets.append(resnet(ch, cout))
                ch = cout
                skips.append(ch)
            at = res in attention_resolutions
            block.attentions = nn.ModuleList([attention(ch) for _ in range(layers_per_block)] if at else [])
            if i != levels - 1:
                block.resnet_down = resnet(ch, ch, down=True)
                block.pyramid_down = FirDownsample2D(pyramid_ch, out_channels=ch, use_conv=True)
                pyramid_ch = ch
                skips.append(ch)
                res //= 2
            self.down_blocks.append(block)

        self.mid_block = UNetMidBlock2D(
            in_channels=ch, temb_channels=temb, dropout=dropout, resnet_eps=norm_eps, resnet_act_fn="silu",
            output_scale_factor=rescale, resnet_time_scale_shift="default", attention_head_dim=ch,
            resnet_groups=_groups(ch), attn_groups=_groups(ch), add_attention=True,
        )

        self.up_blocks = nn.ModuleList()
        for i in reversed(range(levels)):
            block = nn.Module()
            cout = block_out_channels[i]
            block.resnets = nn.ModuleList()
            for _ in range(layers_per_block + 1):
                block.resnets.append(resnet(ch + skips.pop(), cout))
                ch = cout
            at = res in attention_resolutions
            block.attentions = nn.ModuleList([attention(ch)] if at else [])
            if i != 0:
                block.resnet_up = resnet(ch, ch, up=True)
                res *= 2
            self.up_blocks.append(block)
        assert not skips

        self.conv_norm_out = nn.GroupNorm(num_groups=_groups(ch), num_channels=ch, eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch, out_channels, kernel_size=3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float, return_dict: bool = True):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        sigma = torch.as_tensor(timestep, device=sample.device)
        sigma = (sigma.reshape(-1) * torch.ones(sample.shape[0], device=sample.device)).to(sample.dtype)
        emb = self.time_embedding(self.time_proj(sigma).to(self.dtype))
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0

        pyramid = sample
        h = self.conv_in(sample)
        hs = [h]
        for block in self.down_blocks:
            for j, resnet in enumerate(block.resnets):
                h = resnet(h, emb)
                if len(block.attentions):
                    h = block.attentions[j](h)
                hs.append(h)
            if hasattr(block, "resnet_down"):
                h = block.resnet_down(h, emb)
                pyramid = (block.pyramid_down(pyramid) + h) / math.sqrt(2.0)
                h = pyramid
                hs.append(h)

        h = self.mid_block(h, emb)

        for block in self.up_blocks:
            for resnet in block.resnets:
                h = resnet(torch.cat([h, hs.pop()], dim=1), emb)
            if len(block.attentions):
                h = block.attentions[0](h)
            if hasattr(block, "resnet_up"):
                h = block.resnet_up(h, emb)

        h = self.conv_out(self.conv_act(self.conv_norm_out(h)))
        h = h / sigma.reshape(-1, *([1] * (h.ndim - 1)))
        return UNet2DOutput(sample=h) if return_dict else (h,)


# ---------------------------------------------------------------------------------------------------
# the key map: score_sde `all_modules.<i>` -> diffusers names
# ---------------------------------------------------------------------------------------------------
