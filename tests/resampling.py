"""Hand-written resampling references for the value tests (numpy, float64).

Bilinear resizing with ``align_corners=False`` as a matrix per axis, written from the
definition rather than from torch:

* without antialiasing, output pixel ``i`` reads the source at ``(i + 0.5) * in / out - 0.5``
  (clamped at 0) and mixes the two nearest pixels linearly;
* with antialiasing (PIL's definition), when shrinking the triangle filter is stretched by
  ``in / out``: every source pixel within the stretched support around the output pixel's
  centre gets the weight ``1 - |distance| / stretch``, and the weights are renormalised
  (also at the borders, where the support is cut off).
"""

from __future__ import annotations

import numpy as np
import torch


def bilinear_matrix(size_in: int, size_out: int, *, antialias: bool) -> np.ndarray:
    """``(size_out, size_in)`` weights: ``out = M @ x`` along one axis."""
    ratio = size_in / size_out
    matrix = np.zeros((size_out, size_in))
    if antialias and ratio > 1:
        for i in range(size_out):
            centre = (i + 0.5) * ratio  # in source coordinates where pixel j spans [j, j+1)
            for j in range(size_in):
                distance = abs(j + 0.5 - centre) / ratio
                matrix[i, j] = max(0.0, 1.0 - distance)
            matrix[i] /= matrix[i].sum()
        return matrix
    for i in range(size_out):
        source = max((i + 0.5) * ratio - 0.5, 0.0)
        low = min(int(np.floor(source)), size_in - 1)
        high = min(low + 1, size_in - 1)
        frac = source - low
        matrix[i, low] += 1.0 - frac
        matrix[i, high] += frac
    return matrix


def resize(images: torch.Tensor, size: tuple[int, int], *, antialias: bool) -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` by the hand-written matrices (float64 math)."""
    rows = bilinear_matrix(images.shape[-2], size[0], antialias=antialias)
    cols = bilinear_matrix(images.shape[-1], size[1], antialias=antialias)
    array = images.detach().double().numpy()
    out = np.einsum("ih,bchw,jw->bcij", rows, array, cols)
    return torch.from_numpy(out).to(images.dtype)


def find_window(image: torch.Tensor, crop: torch.Tensor, atol: float = 1e-5):
    """``(top, left)`` of the window of ``image`` ``(C, H, W)`` equal to ``crop`` ``(C, s, s)``
    within ``atol``, or ``None`` (candidates by the corner pixel, then checked in full)."""
    size = crop.shape[-1]
    corners = image[0, : image.shape[1] - size + 1, : image.shape[2] - size + 1]
    for top, left in (corners - crop[0, 0, 0]).abs().le(atol).nonzero().tolist():
        window = image[:, top : top + size, left : left + size]
        if float((window - crop).abs().max()) <= atol:
            return top, left
    return None
