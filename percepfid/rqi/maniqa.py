"""MANIQA-RQI (PAPERS.md section 2), with the parameter names and shapes of the released
``rqi_weights.pt`` (Hub repo ``shaolin999/rqi``) so it loads with ``strict=True``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._errors import ArgumentError, ShapeError, WeightsError
from ._swin import SwinStage

logger = logging.getLogger(__name__)

#: A small MANIQA-RQI (32 x 32 crops, a 4-block ViT of width 32): random weights only, for
#: tests, dry runs and offline plumbing (``RQILoss(pretrained=False, model_kwargs=...)``).
SMALL_MODEL_KWARGS: dict = dict(
    img_size=32,
    vit_kwargs=dict(embed_dim=32, depth=4, num_heads=2),
    feature_indices=(0, 1, 2, 3),
    embed_dim=32,
    window_size=2,
    num_heads=(2, 2),
    dim_mlp=32,
)

#: The manifest entry of the released MANIQA-RQI weights (trained on PIPAL).
RELEASED_WEIGHTS = "rqi:maniqa-pipal"


class TransposedAttention(nn.Module):
    """MANIQA's transposed attention on ``(B, C, N)``: a ``C x C`` attention with linear
    maps over the ``N`` tokens (784 for a 28 x 28 grid), residual, dropout ``drop``.

    The result is read back with a transpose and a plain reshape (not a transpose back),
    interleaving tokens and channels, as the released weights were trained.
    """

    def __init__(self, tokens: int, drop: float = 0.1) -> None:
        super().__init__()
        self.c_q = nn.Linear(tokens, tokens)
        self.c_k = nn.Linear(tokens, tokens)
        self.c_v = nn.Linear(tokens, tokens)
        self.proj_drop = nn.Dropout(drop)
        self.norm_fact = tokens**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, tokens = x.shape
        attention = torch.softmax(
            self.c_q(x) @ self.c_k(x).transpose(-2, -1) * self.norm_fact, dim=-1
        )
        mixed = (attention @ self.c_v(x)).transpose(1, 2).reshape(batch, channels, tokens)
        return self.proj_drop(mixed) + x


def _score_branch(
    width: int, hidden: int, drop: float, *, gate: bool, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """``Linear -> activation -> Dropout -> Linear(1)``, then a sigmoid when ``gate``."""
    layers = [nn.Linear(width, hidden), activation(), nn.Dropout(drop), nn.Linear(hidden, 1)]
    return nn.Sequential(*layers, *([nn.Sigmoid()] if gate else []))


class MANIQARQI(nn.Module):
    """The two-input MANIQA-RQI model: ``g(a, b)``, the signed quality of ``a`` relative to ``b``.

    ``forward`` is the raw released model (not antisymmetric; > 0 when ``a`` looks better);
    :class:`percepfid.RQILoss` uses ``(g(a, b) - g(b, a)) / 2``, running :meth:`features`
    once per image and :meth:`compare` per ordered pair. The defaults are the released
    model: ViT-B/8 blocks 6-9 fused as ``cat(conv0_x1(f_a), conv0_x1(f_b),
    conv0_x(f_a - f_b))``, transposed attention and Swin stages at 768 then 384, and a
    gated score head averaged over tokens.

    Args:
        img_size: the input side in pixels (the model works at one fixed size).
        vit_name: the timm architecture of the shared feature extractor.
        vit_kwargs: overrides for ``timm.create_model`` (always without pretrained
            weights: the RQI checkpoint holds them).
        feature_indices: the ViT blocks whose outputs are concatenated.
        embed_dim: width after the fusion (768); the second Swin stage runs at half of it.
        depths: Swin blocks per layer of each Swin stage.
        num_heads: attention heads per layer of each Swin stage.
        window_size: Swin window side in tokens.
        dim_mlp: hidden width of the Swin MLPs.
        num_tab: transposed-attention blocks before each Swin stage.
        scale: residual scale of the Swin stages, ``x = scale * layer(x) + x``.
        drop: dropout in the attention blocks, the Swin stage input and the score head.
        drop_path_rate: stochastic depth of the Swin blocks (0 at the first block).

    Shape:
        - a, b: ``(B, 3, img_size, img_size)`` in ``[0, 1]``.
        - output: ``(B,)``.

    Example:
        >>> model = MANIQARQI(**SMALL_MODEL_KWARGS).eval()
        >>> model(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        vit_name: str = "vit_base_patch8_224",
        vit_kwargs: Mapping[str, Any] | None = None,
        feature_indices: Sequence[int] = (6, 7, 8, 9),
        embed_dim: int = 768,
        depths: Sequence[int] = (2, 2),
        num_heads: Sequence[int] = (4, 4),
        window_size: int = 4,
        dim_mlp: int = 768,
        num_tab: int = 2,
        scale: float = 0.8,
        drop: float = 0.1,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        from .._imports import require

        timm = require("timm", "the MANIQA-RQI model")
        if len(depths) != len(num_heads):
            raise ArgumentError(
                f"depths and num_heads must have the same length; got {list(depths)} and {list(num_heads)}"
            )
        if embed_dim % 2:
            raise ArgumentError(
                f"embed_dim must be even (the second stage uses half); got {embed_dim}"
            )
        self.vit = timm.create_model(
            vit_name, pretrained=False, img_size=img_size, **dict(vit_kwargs or {})
        )
        self.img_size = img_size
        self.feature_indices = tuple(int(i) for i in feature_indices)
        depth = len(self.vit.blocks)
        if not self.feature_indices or any(not 0 <= i < depth for i in self.feature_indices):
            raise ArgumentError(
                f"feature_indices must name blocks of the ViT (0..{depth - 1}); got {list(feature_indices)}"
            )
        self.grid = tuple(int(side) for side in self.vit.patch_embed.grid_size)
        tokens = self.grid[0] * self.grid[1]
        features = self.vit.embed_dim * len(self.feature_indices)
        half = embed_dim // 2

        self.conv0_x = nn.Conv2d(features, 2 * embed_dim, 1)
        self.conv0_x1 = nn.Conv2d(features, embed_dim, 1)
        self.conv0_x2 = nn.Conv2d(features, embed_dim, 1)  # in the checkpoint, never used
        self.tablock1 = nn.ModuleList(TransposedAttention(tokens, drop) for _ in range(num_tab))
        self.conv1 = nn.Conv2d(4 * embed_dim, embed_dim, 1)
        stage = (self.grid, depths, num_heads, window_size, dim_mlp, scale, drop, drop_path_rate)
        self.swintransformer1 = SwinStage(embed_dim, *stage)
        self.tablock2 = nn.ModuleList(TransposedAttention(tokens, drop) for _ in range(num_tab))
        self.conv2 = nn.Conv2d(embed_dim, half, 1)
        self.swintransformer2 = SwinStage(half, *stage)
        self.fc_score = _score_branch(half, half, drop, gate=False)
        self.fc_weight = _score_branch(half, half, drop, gate=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The concatenated ViT features ``(B, vit width * len(feature_indices), h, w)`` of
        images ``(B, 3, img_size, img_size)`` in ``[0, 1]``.

        Raises:
            ShapeError: the images are not ``img_size`` square.
        """
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ShapeError(
                f"MANIQA-RQI takes images of shape (B, 3, {self.img_size}, {self.img_size}); "
                f"got {tuple(x.shape)}. Crop or resize first (RQILoss and percepfid.rqi.evaluate do)."
            )
        x = (x - 0.5) / 0.5
        blocks = self.vit.forward_intermediates(
            x,
            indices=list(self.feature_indices),
            norm=False,
            stop_early=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        tokens = torch.cat(blocks, dim=2)  # (B, N, C), prefix tokens already removed
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, *self.grid)

    def compare(self, features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
        """The raw score ``g(a, b)`` from two feature maps of :meth:`features`: ``(B,)``."""
        a, b = self.conv0_x1(features_a), self.conv0_x1(features_b)
        x = torch.cat((a, b, self.conv0_x(features_a - features_b)), dim=1)
        x = self._attend(x, self.tablock1)
        x = self.swintransformer1(self.conv1(x))
        x = self._attend(x, self.tablock2)
        x = self.swintransformer2(self.conv2(x))
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        score, weight = self.fc_score(tokens), self.fc_weight(tokens)
        return ((score * weight).sum(dim=1) / (weight.sum(dim=1) + 1e-8)).squeeze(-1)

    @staticmethod
    def _attend(x: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
        batch, channels, height, width = x.shape
        x = x.flatten(2)
        for block in blocks:
            x = block(x)
        return x.reshape(batch, channels, height, width)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.compare(self.features(a), self.features(b))


def load_released_weights(model: MANIQARQI, weights: str | Any = RELEASED_WEIGHTS) -> MANIQARQI:
    """Load ``weights`` (a manifest name or a local file) into ``model`` with ``strict=True``;
    return ``model``.

    Raises:
        WeightsError: the file cannot be found offline, is not plain weights, or does not fit
            the architecture (the message lists missing and unexpected keys).
    """
    from .. import hub

    path = hub.resolve(weights)
    state = hub.load_state_dict(path, map_location="cpu")
    for key in ("state_dict", "model", "model_state_dict"):  # a state dict nested in a checkpoint
        inner = state.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            state = inner
            break
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise WeightsError(
            f"{path} does not fit the MANIQA-RQI architecture (strict loading): {error}"
        ) from error
    logger.info("loaded MANIQA-RQI weights from %s", path)
    return model


def create_maniqa_rqi(
    pretrained: bool = True, weights: str | Any = RELEASED_WEIGHTS, **kwargs: Any
) -> MANIQARQI:
    """Build MANIQA-RQI in ``eval()`` mode, with the released weights unless
    ``pretrained=False``.

    Args:
        pretrained: load the released checkpoint through :mod:`percepfid.hub` (about 580 MB;
            offline it must be cached). ``False`` gives random weights (tests, plumbing).
        weights: the manifest name or a local file with the checkpoint.
        **kwargs: architecture overrides for :class:`MANIQARQI` (the released weights fit
            only the defaults).

    Raises:
        WeightsError: as :func:`load_released_weights`.
    """
    model = MANIQARQI(**kwargs)
    if pretrained:
        load_released_weights(model, weights)
    return model.eval()
