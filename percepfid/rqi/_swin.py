"""The Swin stages of MANIQA, with the parameter names of the released RQI checkpoint."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The value MANIQA's shifted-window mask puts between tokens of different regions (it is a
# stored buffer of the released checkpoint, so the constant must stay the same).
_MASKED = -100.0


def _drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``rate`` while training."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def _to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * num_windows, window * window, C)``, row-major windows."""
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def _from_windows(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`: -> ``(B, H, W, C)``."""
    channels = windows.shape[-1]
    batch = windows.shape[0] // ((height // window) * (width // window))
    x = windows.reshape(batch, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


def _relative_position_index(window: int) -> torch.Tensor:
    """Index into the ``(2w-1)^2`` bias table for every pair of tokens in a window."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    d_row = rows[:, None] - rows[None, :] + window - 1
    d_col = cols[:, None] - cols[None, :] + window - 1
    return d_row * (2 * window - 1) + d_col


def _shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Additive mask ``(num_windows, w*w, w*w)`` that keeps shifted windows from mixing
    tokens that were not neighbours before the cyclic shift."""

    def bands(size: int) -> torch.Tensor:
        label = torch.zeros(size, dtype=torch.long)
        label[size - window : size - shift] = 1
        label[size - shift :] = 2
        return label

    region = bands(height)[:, None] * 3 + bands(width)[None, :]
    region = _to_windows(region[None, :, :, None].float(), window).squeeze(-1)
    different = region[:, :, None] != region[:, None, :]
    return torch.zeros(different.shape).masked_fill(different, _MASKED)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention of width ``dim`` inside square windows of ``window``
    tokens, with a learned relative-position bias."""

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", _relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B * num_windows, N, C)``; ``mask``: ``(num_windows, N, N)`` or ``None``."""
        windows, tokens, channels = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(windows, tokens, 3, heads, channels // heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B*nW, h, N, d)
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]
        bias = bias.reshape(tokens, tokens, heads).permute(2, 0, 1)  # (h, N, N)
        if mask is None:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias[None])
        else:
            num_windows = mask.shape[0]
            shape = (windows // num_windows, num_windows, heads, tokens, -1)
            attn_mask = bias[None, None] + mask[None, :, None].to(bias.dtype)
            out = F.scaled_dot_product_attention(
                query.reshape(shape), key.reshape(shape), value.reshape(shape), attn_mask=attn_mask
            )
            out = out.reshape(windows, heads, tokens, -1)
        out = out.transpose(1, 2).reshape(windows, tokens, channels)
        return self.proj(out)


class SwinBlock(nn.Module):
    """Pre-norm window attention + MLP on a fixed ``(H, W)`` token grid.

    A window at least as large as the grid becomes the whole grid, unshifted (as in Swin).
    """

    def __init__(
        self,
        dim: int,
        grid: tuple[int, int],
        num_heads: int,
        window: int,
        shift: int,
        dim_mlp: int,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.grid = grid
        if min(grid) <= window:
            window, shift = min(grid), 0
        self.window = window
        self.shift = shift
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, dim_mlp)
        # The mask is a stored buffer of the released checkpoint, present only when shifted.
        mask = _shift_mask(grid[0], grid[1], window, shift) if shift else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.grid
        batch, _, channels = x.shape
        shortcut = x
        x = self.norm1(x).reshape(batch, height, width, channels)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        x = self.attn(_to_windows(x, self.window), mask=self.attn_mask)
        x = _from_windows(x, self.window, height, width)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + _drop_path(
            x.reshape(batch, height * width, channels), self.drop_path, self.training
        )
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class SwinLayer(nn.Module):
    """``depth`` Swin blocks (plain, shifted, plain, ...) followed by ``relu(conv3x3)``."""

    def __init__(
        self,
        dim: int,
        grid: tuple[int, int],
        depth: int,
        num_heads: int,
        window: int,
        dim_mlp: int,
        drop_path: Sequence[float],
    ) -> None:
        super().__init__()
        self.grid = grid
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        self.blocks = nn.ModuleList(
            SwinBlock(dim, grid, num_heads, window, i % 2 * (window // 2), dim_mlp, drop_path[i])
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        batch, _, channels = x.shape
        x = x.transpose(1, 2).reshape(batch, channels, *self.grid)
        return F.relu(self.conv(x)).flatten(2).transpose(1, 2)


class SwinStage(nn.Module):
    """MANIQA's Swin stage on a ``(B, C, H, W)`` map: ``x = scale * layer(x) + x`` per layer.

    ``downsample`` is a strided conv that the released model holds but never calls; it is
    kept so the checkpoint loads with ``strict=True``.
    """

    def __init__(
        self,
        dim: int,
        grid: tuple[int, int],
        depths: Sequence[int],
        num_heads: Sequence[int],
        window: int,
        dim_mlp: int,
        scale: float,
        drop: float,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.scale = scale
        self.dropout = nn.Dropout(drop)
        self.downsample = nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            SwinLayer(dim, grid, depth, heads, window, dim_mlp, rates[start : start + depth])
            for depth, heads, start in zip(depths, num_heads, starts, strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        x = self.dropout(x).flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = self.scale * layer(x) + x
        return x.transpose(1, 2).reshape(batch, channels, *self.grid)
