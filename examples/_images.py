"""Synthetic images for the examples: smooth colour fields with sharp rectangles, something
with edges to super-resolve (offline demos only; real training uses real images)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def edge_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, 3, size, size)`` images in [0, 1], drawn from ``generator``."""
    images = F.interpolate(
        torch.rand(count, 3, 8, 8, generator=generator), size=(size, size), mode="bicubic"
    )
    for image in images:
        for _ in range(4):
            top, left = torch.randint(0, size - size // 4, (2,), generator=generator).tolist()
            image[:, top : top + size // 4, left : left + size // 3] = torch.rand(
                3, 1, 1, generator=generator
            )
    return images.clamp(0, 1)
