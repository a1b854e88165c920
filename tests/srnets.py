"""Tiny super-resolution networks with the module structure of SwinIR and RRDBNet (ESRGAN).

They keep the nesting and layer types the LoRA presets recognise (transformer blocks with
a two-linear MLP; residual dense blocks of growing convolutions) at a size that runs in
milliseconds on a CPU. The names deliberately differ from the upstream code so tests show
that the presets do not depend on names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TinySwinIR", "TinyRRDBNet", "TinyPlainNet", "SWINIR_MLP_LAYERS", "RRDB_DENSE_CONVS"]


class _FeedForward(nn.Module):
    def __init__(self, dim: int, ratio: int = 2) -> None:
        super().__init__()
        self.expand = nn.Linear(dim, dim * ratio)
        self.act = nn.GELU()
        self.shrink = nn.Linear(dim * ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shrink(self.act(self.expand(x)))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, dim * 3)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.n1 = nn.LayerNorm(dim)
        self.mix = _Attention(dim)
        self.n2 = nn.LayerNorm(dim)
        self.ff = _FeedForward(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mix(self.n1(x))
        return x + self.ff(self.n2(x))


class _Group(nn.Module):
    def __init__(self, dim: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Block(dim) for _ in range(depth))
        self.tail = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens)
        return x + self.tail(tokens.transpose(1, 2).reshape(b, c, h, w))


class TinySwinIR(nn.Module):
    """SwinIR-shaped: head conv, residual groups of transformer blocks, trunk conv, upsampler."""

    def __init__(self, dim: int = 8, groups: int = 2, depth: int = 2, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, dim, 3, padding=1)
        self.groups = nn.ModuleList(_Group(dim, depth) for _ in range(groups))
        self.norm = nn.LayerNorm(dim)
        self.trunk = nn.Conv2d(dim, dim, 3, padding=1)
        self.up = nn.Sequential(
            nn.Conv2d(dim, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        body = feat
        for group in self.groups:
            body = group(body)
        body = self.norm(body.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.up(self.trunk(body) + feat)


def SWINIR_MLP_LAYERS(net: TinySwinIR) -> list[str]:  # noqa: N802 - reads like a constant
    """The module names the 'swinir-mlp' preset must hit on ``net``, written out by hand."""
    return [
        f"groups.{g}.blocks.{b}.ff.{layer}"
        for g in range(len(net.groups))
        for b in range(len(net.groups[g].blocks))
        for layer in ("expand", "shrink")
    ]


class _DenseBlock(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(nf, gc, 3, padding=1)
        self.c2 = nn.Conv2d(nf + gc, gc, 3, padding=1)
        self.c3 = nn.Conv2d(nf + 2 * gc, gc, 3, padding=1)
        self.c4 = nn.Conv2d(nf + 3 * gc, gc, 3, padding=1)
        self.c5 = nn.Conv2d(nf + 4 * gc, nf, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.act(self.c1(x))
        x2 = self.act(self.c2(torch.cat((x, x1), 1)))
        x3 = self.act(self.c3(torch.cat((x, x1, x2), 1)))
        x4 = self.act(self.c4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.c5(torch.cat((x, x1, x2, x3, x4), 1))
        return x + 0.2 * x5


class _RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.d1 = _DenseBlock(nf, gc)
        self.d2 = _DenseBlock(nf, gc)
        self.d3 = _DenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.d3(self.d2(self.d1(x)))


class TinyRRDBNet(nn.Module):
    """RRDBNet-shaped: first conv, trunk of RRDBs, trunk conv, nearest upsampling convs."""

    def __init__(self, nf: int = 8, gc: int = 4, blocks: int = 1, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.first = nn.Conv2d(3, nf, 3, padding=1)
        self.trunk = nn.Sequential(*(_RRDB(nf, gc) for _ in range(blocks)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.up1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.last = nn.Conv2d(nf, 3, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.first(x)
        feat = feat + self.trunk_conv(self.trunk(feat))
        feat = self.act(self.up1(F.interpolate(feat, scale_factor=self.scale, mode="nearest")))
        return self.last(self.act(self.hr(feat)))


def RRDB_DENSE_CONVS(net: TinyRRDBNet) -> list[str]:  # noqa: N802 - reads like a constant
    """The module names the 'rrdb-convs' preset must hit on ``net``, written out by hand."""
    return [
        f"trunk.{b}.{d}.c{i}"
        for b in range(len(net.trunk))
        for d in ("d1", "d2", "d3")
        for i in range(1, 6)
    ]


class TinyPlainNet(nn.Module):
    """A plain conv net with neither structure ('auto' must refuse it)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


TINY_CLIP = "percepfid-test-tiny-clip"


def register_tiny_clip() -> str:
    """Register a tiny open_clip architecture (random weights only) and return its name.

    CLIP-IQA tests build it in milliseconds instead of seconds; the code path is the same
    as for the real architectures (open_clip's own config loader and tokenizer).
    """
    import json
    import tempfile
    from pathlib import Path

    import open_clip

    if TINY_CLIP in open_clip.list_models():
        return TINY_CLIP
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }
    folder = Path(tempfile.mkdtemp(prefix="percepfid-tiny-clip-"))
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return TINY_CLIP
