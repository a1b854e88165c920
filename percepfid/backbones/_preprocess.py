"""Differentiable preprocessing: resize with antialias, crop, normalise, all in torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice
from ._spec import CROPS, PreprocessConfig


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=True)


def tile_grid(height: int, width: int, tile: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of the aligned tile grid used by ``crop='tiles'``.

    The image is resized so that each side is the nearest whole number (at least one) of
    tiles, then split into non-overlapping tiles; every part of the image lands in a tile.
    """
    rows = max(1, int(math.floor(height / tile[0] + 0.5)))
    cols = max(1, int(math.floor(width / tile[1] + 0.5)))
    return rows, cols


class Preprocess(nn.Module):
    """Turn images in ``input_range`` into normalised backbone input, differentiably.

    Args:
        config: the preprocessing record (size, resize, mean/std, interpolation, crop).
        input_range: the value range of incoming images.

    Shape:
        - images: ``(B, 3, H, W)``, any ``H, W``.
        - output: ``(B, 3, h, w)`` for ``'center'`` / ``'squash'``; ``(B * T, 3, h, w)`` for
          ``'tiles'`` (tiles of one image are consecutive), with ``(h, w) = config.image_size``.
    """

    def __init__(self, config: PreprocessConfig, input_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.config = config
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def num_tiles(self, height: int, width: int) -> int:
        """How many tiles ``crop='tiles'`` makes of an ``height x width`` image."""
        rows, cols = tile_grid(height, width, self.config.image_size)
        return rows * cols

    def forward(self, images: torch.Tensor, crop: str | None = None) -> torch.Tensor:
        crop = check_choice(crop or self.config.crop, "crop", CROPS)
        low, high = self.input_range
        if (low, high) != (0.0, 1.0):
            images = (images - low) / (high - low)
        size = self.config.image_size
        mode = self.config.interpolation
        height, width = images.shape[-2:]
        if crop == "squash":
            images = _resize(images, size, mode)
        elif crop == "center":
            shortest = self.config.resize_size or min(size)
            scale = shortest / min(height, width)
            resized = (max(size[0], round(height * scale)), max(size[1], round(width * scale)))
            images = _resize(images, resized, mode)
            top = (resized[0] - size[0]) // 2
            left = (resized[1] - size[1]) // 2
            images = images[..., top : top + size[0], left : left + size[1]]
        else:
            rows, cols = tile_grid(height, width, size)
            images = _resize(images, (rows * size[0], cols * size[1]), mode)
            batch = images.shape[0]
            # (B, 3, rows, h, cols, w) -> (B, rows, cols, 3, h, w) -> (B * T, 3, h, w)
            images = images.reshape(batch, 3, rows, size[0], cols, size[1])
            images = images.permute(0, 2, 4, 1, 3, 5).reshape(batch * rows * cols, 3, *size)
        mean = self.mean.to(images.dtype)
        std = self.std.to(images.dtype)
        return (images - mean) / std

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"image_size={c.image_size}, resize_size={c.resize_size}, crop={c.crop!r}, "
            f"interpolation={c.interpolation!r}, input_range={self.input_range}"
        )
