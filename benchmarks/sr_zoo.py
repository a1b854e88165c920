"""The super-resolution architectures of spandrel's main package, in two sizes each.

- ``tiny``: widths 12-16, one or two blocks per stage, no drop-path: builds and runs a
  16x16 input in milliseconds (tests, the coverage table's merge check). Every tiny
  configuration uses hyperparameters that spandrel can detect from the weights, so a
  state dict written from it loads back through ``spandrel.ModelLoader`` as the same
  network.
- ``reference``: the configuration of the released models (the constructor defaults that
  spandrel uses, x4 where those default to x1): adapted-layer counts and adapter sizes in
  the coverage table refer to these.

All weights are random: nothing here is a trained model.

Left out: AuraSR (a GigaGAN generator with modulated kernels that peft cannot wrap), IPT
(a multi-task model whose 48x48 patch embedding needs >= 48-pixel inputs and ~115M
parameters at the reference size) and GRL (the window and stripe sizes spandrel assumes for
SR checkpoints, 32 and 64, pad every input to 64x64: seconds per step on a CPU; its MLPs are
found like SwinIR's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class ZooEntry:
    """One architecture: how to build it small and at its released size."""

    name: str
    tiny: Callable[[], nn.Module]
    reference: Callable[[], nn.Module]
    #: input side for the tiny network (RealCUGAN's U-Net pads by 18 pixels)
    size: int = 16
    #: eval() re-derives inference weights from the training branches (re-parameterised
    #: blocks): an unmerged adapter acts in train() mode only; merging fixes that.
    reparam: bool = False
    notes: str = field(default="")


# SwinIR and Swin2SR take the same hyperparameters (Swin2SR is SwinV2 blocks in SwinIR's body)
SWIN_TINY = dict(
    embed_dim=12,
    depths=[2, 2],
    num_heads=[2, 2],
    window_size=4,
    img_size=16,
    upscale=2,
    upsampler="pixelshuffledirect",
    drop_path_rate=0.0,
)
SWIN_REFERENCE = dict(
    embed_dim=180,
    depths=[6] * 6,
    num_heads=[6] * 6,
    window_size=8,
    mlp_ratio=2.0,
    upscale=4,
    upsampler="pixelshuffle",
)


def _entry(name: str, target: str, tiny: dict, reference: dict, **options) -> ZooEntry:
    """``target`` is ``module.Class`` under ``spandrel.architectures``."""
    import importlib

    module, cls = target.split(".")

    def build(kwargs: dict):
        return lambda: getattr(importlib.import_module(f"spandrel.architectures.{module}"), cls)(
            **kwargs
        )

    return ZooEntry(name, build(tiny), build(reference), **options)


def _entries() -> list[ZooEntry]:
    return [
        _entry("SwinIR", "SwinIR.SwinIR", SWIN_TINY, SWIN_REFERENCE),
        _entry(
            "HAT",
            "HAT.HAT",
            dict(
                embed_dim=12,
                depths=(2, 2),
                num_heads=(2, 2),
                window_size=4,
                img_size=16,
                num_feat=16,
                squeeze_factor=4,
                compress_ratio=2,
                upscale=2,
                drop_path_rate=0.0,
            ),
            dict(
                embed_dim=180,
                depths=(6,) * 6,
                num_heads=(6,) * 6,
                window_size=16,
                mlp_ratio=2.0,
                upscale=4,
            ),
        ),
        _entry("Swin2SR", "Swin2SR.Swin2SR", SWIN_TINY, SWIN_REFERENCE),
        _entry(
            "DAT",
            "DAT.DAT",
            dict(
                embed_dim=16,
                depth=[2, 2],
                num_heads=[2, 2],
                split_size=[2, 4],
                upscale=2,
                drop_path_rate=0.0,
            ),
            dict(embed_dim=180, depth=[6] * 6, num_heads=[6] * 6, split_size=[8, 32], upscale=4),
        ),
        _entry(
            "ATD",
            "ATD.ATD",
            dict(
                embed_dim=12,
                depths=(2, 2),
                num_heads=(2, 2),
                window_size=4,
                num_tokens=8,
                upscale=2,
                upsampler="pixelshuffledirect",
            ),
            dict(
                embed_dim=210,
                depths=(6,) * 6,
                num_heads=(6,) * 6,
                window_size=16,
                num_tokens=128,
                reducted_dim=20,
                convffn_kernel_size=5,
                upscale=4,
                upsampler="pixelshuffle",
            ),
        ),
        _entry(
            "DRCT",
            "DRCT.DRCT",
            dict(
                embed_dim=12,
                depths=(2, 2),
                num_heads=(2, 2),
                window_size=4,
                img_size=16,
                gc=8,
                upscale=2,
                upsampler="pixelshuffle",
                drop_path_rate=0.0,
            ),
            dict(upscale=4, upsampler="pixelshuffle"),
        ),
        _entry(
            "RGT",
            "RGT.RGT",
            dict(
                embed_dim=12,
                depth=[2, 2],
                num_heads=[2, 2],
                split_size=[4, 4],
                upscale=2,
                drop_path_rate=0.0,
            ),
            dict(
                embed_dim=180,
                depth=[6] * 8,
                num_heads=[6] * 8,
                mlp_ratio=2.0,
                split_size=[8, 32],
                upscale=4,
            ),
        ),
        _entry(
            "CRAFT",
            "CRAFT.CRAFT",
            dict(
                embed_dim=12,
                depths=[2, 2],
                num_heads=[2, 2],
                split_size_0=2,
                split_size_1=4,
                upscale=2,
            ),
            dict(upscale=4),
        ),
        _entry(
            "ESRGAN", "ESRGAN.ESRGAN", dict(num_filters=16, num_blocks=2, scale=2), dict(scale=4)
        ),
        _entry(
            "RCAN",
            "RCAN.RCAN",
            dict(n_resgroups=2, n_resblocks=2, n_feats=16, reduction=4, scale=2),
            dict(scale=4),
        ),
        _entry(
            "Compact", "Compact.Compact", dict(num_feat=16, num_conv=4, upscale=2), dict(upscale=4)
        ),
        _entry(
            "SPAN",
            "SPAN.SPAN",
            dict(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=2),
            dict(num_in_ch=3, num_out_ch=3, upscale=4),
            reparam=True,
        ),
        _entry(
            "PLKSR",
            "PLKSR.PLKSR",
            dict(dim=16, n_blocks=3, upscaling_factor=2, kernel_size=7),
            dict(upscaling_factor=4),
        ),
        _entry(
            "RealPLKSR",
            "PLKSR.RealPLKSR",
            dict(dim=16, n_blocks=3, upscaling_factor=2, kernel_size=7),
            dict(upscaling_factor=4),
        ),
        _entry(
            "OmniSR",
            "OmniSR.OmniSR",
            dict(num_feat=16, window_size=4, res_num=2, up_scale=2),
            dict(up_scale=4),
        ),
        _entry(
            "SAFMN",
            "SAFMN.SAFMN",
            dict(dim=16, n_blocks=2, upscaling_factor=2),
            dict(dim=36, n_blocks=8, upscaling_factor=4),
        ),
        _entry("RealCUGAN", "RealCUGAN.UpCunet2x", dict(), dict(), size=40),
        _entry(
            "DITN",
            "DITN.DITN",
            dict(dim=12, ITL_blocks=2, SAL_blocks=2, upscale=2),
            dict(upscale=4),
        ),
        _entry("MoSR", "MoSR.MoSR", dict(n_block=2, dim=16, upscale=2), dict(upscale=4)),
        _entry("DCTLSA", "DCTLSA.DCTLSA", dict(nf=15, upscale=2), dict(upscale=4)),
        _entry(
            "FDAT",
            "FDAT.FDAT",
            dict(
                embed_dim=16,
                num_groups=2,
                depth_per_group=2,
                num_heads=2,
                window_size=4,
                mid_dim=16,
                scale=2,
                drop_path_rate=0.0,
            ),
            dict(scale=4),
        ),
        _entry(
            "MoESR",
            "MoESR.MoESR",
            dict(dim=16, n_blocks=2, n_block=2, scale=2, upsample_dim=16),
            dict(scale=4),
        ),
        _entry(
            "SeemoRe",
            "SeemoRe.SeemoRe",
            dict(scale=2, num_experts=2, num_layers=2, embedding_dim=16),
            dict(scale=4),
        ),
        _entry(
            "SwiftSRGAN",
            "SwiftSRGAN.SwiftSRGAN",
            dict(num_channels=16, num_blocks=2, upscale_factor=2),
            dict(upscale_factor=4),
        ),
        _entry(
            "MMRealSR",
            "MMRealSR.MMRealSR",
            dict(
                num_in_ch=3,
                num_out_ch=3,
                num_feat=16,
                num_block=2,
                num_grow_ch=8,
                scale=4,
                num_feats=[8, 8, 8, 8],
                num_blocks=[1, 1, 1, 1],
            ),
            dict(num_in_ch=3, num_out_ch=3, scale=4),
        ),
    ]


#: name -> entry, in the order of the coverage table
ZOO: dict[str, ZooEntry] = {}


def zoo() -> dict[str, ZooEntry]:
    """The entries (built on first use, so importing this module does not import spandrel)."""
    if not ZOO:
        ZOO.update((entry.name, entry) for entry in _entries())
    return ZOO


def first_output(y):
    """Some architectures return a tuple (MMRealSR: image and degradation degrees)."""
    return y[0] if isinstance(y, (tuple, list)) else y
